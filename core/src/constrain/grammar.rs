//! Is a text the beginning of one read-only SQLite query over a schema?
//!
//! A recursive-descent parser of SQLite's SELECT (compound selects, joins,
//! sub-queries, CASE, CAST, the usual functions) run over the whole partial
//! text. Where the text runs out, the parse stops with [`Halt::Prefix`]:
//! everything so far fits and more may follow. Names are checked as they are
//! written (see [`super::scope`]); a partial name at the very end passes only
//! if it begins a name that would pass.
//!
//! Re-parsing the whole text for each candidate token is simpler than keeping
//! parser states and is cheap at these lengths (a few hundred characters):
//! see the constrained decoding figures in BENCHMARKS.md.

use super::lexer::{lex, Tail, Tok};
use super::scope::{feasible, pending_feasible, resolve, ColRef, Columns, Item, Phase, Resolution, SchemaIndex, Scope};

/// Why a parse stopped early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Halt {
    /// The text ran out where the query may go on: a valid prefix.
    Prefix,
    /// No query starts with this text.
    Invalid,
}

type P<T> = Result<T, Halt>;

/// What a text is, as the start of a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Invalid,
    /// A valid prefix (it may or may not already be a whole query).
    Prefix,
    /// A whole query ended by `;`: nothing but white space may follow.
    Ended,
}

/// Verdict on `text` as the beginning of a query.
pub fn prefix(schema: &SchemaIndex, text: &str) -> Verdict {
    let Ok(lexed) = lex(text, false) else {
        return Verdict::Invalid;
    };
    let mut p = Parser::new(schema, &lexed.toks, lexed.tail.as_ref(), false);
    match p.statement() {
        Ok(()) => Verdict::Ended,
        Err(Halt::Prefix) => Verdict::Prefix,
        Err(Halt::Invalid) => Verdict::Invalid,
    }
}

/// Whether `text` is a whole query (it may end here).
pub fn complete(schema: &SchemaIndex, text: &str) -> bool {
    let Ok(lexed) = lex(text, true) else {
        return false;
    };
    Parser::new(schema, &lexed.toks, None, true).statement().is_ok()
}

/// Words that are never names (unless quoted).
const RESERVED: &[&str] = &[
    "ALL",
    "AND",
    "AS",
    "ASC",
    "BETWEEN",
    "BY",
    "CASE",
    "CAST",
    "COLLATE",
    "CROSS",
    "DESC",
    "DISTINCT",
    "ELSE",
    "END",
    "ESCAPE",
    "EXCEPT",
    "EXISTS",
    "FROM",
    "FULL",
    "GLOB",
    "GROUP",
    "HAVING",
    "IN",
    "INNER",
    "INTERSECT",
    "IS",
    "ISNULL",
    "JOIN",
    "LEFT",
    "LIKE",
    "LIMIT",
    "NATURAL",
    "NOT",
    "NOTNULL",
    "NULL",
    "OFFSET",
    "ON",
    "OR",
    "ORDER",
    "OUTER",
    "RIGHT",
    "SELECT",
    "THEN",
    "UNION",
    "USING",
    "WHEN",
    "WHERE",
];

/// Keywords that may follow a table in FROM without ending the clause.
const FROM_GOES_ON: &[&str] = &["AS", "JOIN", "INNER", "LEFT", "CROSS", "NATURAL", "ON", "USING"];

/// Words that begin an operand.
const OPERAND_WORDS: &[&str] = &[
    "NULL",
    "TRUE",
    "FALSE",
    "NOT",
    "EXISTS",
    "CASE",
    "CAST",
    "CURRENT_DATE",
    "CURRENT_TIME",
    "CURRENT_TIMESTAMP",
];

/// SQLite's functions that a query over a schema needs, with their arity. Left out on purpose:
/// `randomblob`, `zeroblob`, `printf`/`format` (unbounded output), `random`,
/// `load_extension` and the like.
const FUNCTIONS: &[(&str, usize, usize)] = &[
    ("abs", 1, 1),
    ("avg", 1, 1),
    ("coalesce", 2, 64),
    ("count", 1, 1),
    ("date", 0, 64),
    ("datetime", 0, 64),
    ("group_concat", 1, 2),
    ("ifnull", 2, 2),
    ("iif", 3, 3),
    ("instr", 2, 2),
    ("julianday", 1, 64),
    ("length", 1, 1),
    ("lower", 1, 1),
    ("ltrim", 1, 2),
    ("max", 1, 64),
    ("min", 1, 64),
    ("nullif", 2, 2),
    ("replace", 3, 3),
    ("round", 1, 2),
    ("rtrim", 1, 2),
    ("strftime", 1, 64),
    ("substr", 2, 3),
    ("substring", 2, 3),
    ("sum", 1, 1),
    ("time", 0, 64),
    ("total", 1, 1),
    ("trim", 1, 2),
    ("typeof", 1, 1),
    ("upper", 1, 1),
];

/// `(fewest, most)` arguments of a known function.
fn arity(name: &str) -> Option<(usize, usize)> {
    FUNCTIONS.iter().find(|f| f.0 == name).map(|f| (f.1, f.2))
}

/// Deeper nesting than any real query: refuse rather than overflow the stack.
const MAX_DEPTH: usize = 48;

fn reserved(w: &str) -> bool {
    RESERVED.iter().any(|k| k.eq_ignore_ascii_case(w))
}

/// Table aliases are short (`T1`, `s`, `sc`): a model let free writes
/// long made-up qualifiers in the select list (`pet_weight_records.age`) that
/// no FROM clause it goes on to write will define.
fn short_alias(w: &str) -> bool {
    let b = w.as_bytes();
    (1..=3).contains(&b.len()) && b[0].is_ascii_alphabetic() && b.iter().all(|c| c.is_ascii_alphanumeric())
}

/// Does `full` begin with `part`, ignoring ASCII case?
fn begins(full: &str, part: &str) -> bool {
    full.len() >= part.len() && full.as_bytes()[..part.len()].eq_ignore_ascii_case(part.as_bytes())
}

enum Peek<'a> {
    Tok(&'a Tok),
    Tail(&'a Tail),
    End,
}

struct Parser<'a> {
    schema: &'a SchemaIndex,
    toks: &'a [Tok],
    tail: Option<&'a Tail>,
    pos: usize,
    /// The text is whole: running out is an error, not a prefix.
    complete: bool,
    scopes: Vec<Scope>,
    depth: usize,
    /// `q.*` is allowed (a result column being parsed).
    star_ok: bool,
}

impl<'a> Parser<'a> {
    fn new(schema: &'a SchemaIndex, toks: &'a [Tok], tail: Option<&'a Tail>, complete: bool) -> Self {
        Parser {
            schema,
            toks,
            tail,
            pos: 0,
            complete,
            scopes: Vec::new(),
            depth: 0,
            star_ok: false,
        }
    }

    // ------------------------------------------------------------ tokens

    fn peek(&self) -> Peek<'a> {
        self.peek_at(0)
    }

    fn peek_at(&self, k: usize) -> Peek<'a> {
        match self.toks.get(self.pos + k) {
            Some(t) => Peek::Tok(t),
            None if self.pos + k == self.toks.len() => self.tail.map_or(Peek::End, Peek::Tail),
            None => Peek::End,
        }
    }

    fn bump(&mut self) {
        self.pos += 1;
    }

    /// The text ran out where something is required.
    fn ran_out(&self) -> Halt {
        match self.complete {
            true => Halt::Invalid,
            false => Halt::Prefix,
        }
    }

    /// Takes the keyword `kw` if it is next. A partial word at the end that
    /// begins it, or the end of a partial text, halts as a valid prefix.
    fn eat_kw(&mut self, kw: &str) -> P<bool> {
        match self.peek() {
            Peek::Tok(Tok::Word(w)) if w.eq_ignore_ascii_case(kw) => {
                self.bump();
                Ok(true)
            }
            Peek::Tail(Tail::Word(w)) if begins(kw, w) => Err(Halt::Prefix),
            Peek::End if !self.complete => Err(Halt::Prefix),
            _ => Ok(false),
        }
    }

    fn expect_kw(&mut self, kw: &str) -> P<()> {
        match self.eat_kw(kw)? {
            true => Ok(()),
            false => Err(Halt::Invalid),
        }
    }

    fn eat_op(&mut self, op: &str) -> P<bool> {
        match self.peek() {
            Peek::Tok(Tok::Op(o)) if *o == op => {
                self.bump();
                Ok(true)
            }
            Peek::Tail(Tail::Op(c)) if op.starts_with(*c) => Err(Halt::Prefix),
            Peek::End if !self.complete => Err(Halt::Prefix),
            _ => Ok(false),
        }
    }

    fn expect_op(&mut self, op: &str) -> P<()> {
        match self.eat_op(op)? {
            true => Ok(()),
            false => Err(Halt::Invalid),
        }
    }

    fn at_kw(&self, kw: &str) -> bool {
        matches!(self.peek(), Peek::Tok(Tok::Word(w)) if w.eq_ignore_ascii_case(kw))
    }

    fn enter(&mut self) -> P<()> {
        self.depth += 1;
        match self.depth > MAX_DEPTH {
            true => Err(Halt::Invalid),
            false => Ok(()),
        }
    }

    fn leave(&mut self) {
        self.depth -= 1;
    }

    /// A name that `ok` accepts; a partial name passes if it begins one of
    /// `candidates` that `ok` accepts.
    fn name_in(&mut self, candidates: &[&str], ok: &dyn Fn(&str) -> bool) -> P<String> {
        let name = self.name_at(candidates, ok)?;
        self.bump();
        Ok(name)
    }

    /// [`Self::name_in`] without taking the token.
    fn name_at(&self, candidates: &[&str], ok: &dyn Fn(&str) -> bool) -> P<String> {
        match self.peek() {
            Peek::Tok(Tok::Word(w)) | Peek::Tok(Tok::Quoted(w)) | Peek::Tok(Tok::DoubleQuoted(w))
                if !(matches!(self.peek(), Peek::Tok(Tok::Word(_))) && reserved(w)) =>
            {
                let name = w.to_ascii_lowercase();
                match ok(&name) {
                    true => Ok(name),
                    false => Err(Halt::Invalid),
                }
            }
            Peek::Tail(Tail::Word(w)) | Peek::Tail(Tail::Quoted(w, _)) => {
                match candidates.iter().any(|c| begins(c, w) && ok(c)) {
                    true => Err(Halt::Prefix),
                    false => Err(Halt::Invalid),
                }
            }
            Peek::End => Err(self.ran_out()),
            _ => Err(Halt::Invalid),
        }
    }

    /// Any name (an alias being defined).
    fn free_name(&mut self) -> P<String> {
        self.name_in(&[], &|_| true).map_err(|h| match self.peek() {
            // Any partial name can become a fresh one.
            Peek::Tail(Tail::Word(_)) | Peek::Tail(Tail::Quoted(..)) => Halt::Prefix,
            _ => h,
        })
    }

    /// `[AS] alias`, if there is one. A table's alias must be short (see
    /// [`short_alias`]); a result column's may be any name.
    fn alias(&mut self, table: bool) -> P<Option<String>> {
        let fits = |w: &str| !table || short_alias(w);
        if self.eat_kw("AS")? {
            return match self.peek() {
                Peek::Tail(Tail::Word(w)) | Peek::Tail(Tail::Quoted(w, _)) => match fits(w) {
                    true => Err(Halt::Prefix),
                    false => Err(Halt::Invalid),
                },
                _ => self.name_in(&[], &fits).map(Some),
            };
        }
        match self.peek() {
            Peek::Tok(Tok::Word(w)) | Peek::Tok(Tok::Quoted(w))
                if !(matches!(self.peek(), Peek::Tok(Tok::Word(_))) && reserved(w)) =>
            {
                match fits(w) {
                    true => {
                        let name = w.to_ascii_lowercase();
                        self.bump();
                        Ok(Some(name))
                    }
                    false => Err(Halt::Invalid),
                }
            }
            // A partial word may be an alias or a keyword still being written;
            // after a table, a keyword that ends FROM only if the select list
            // is bound by then (else the query could not go on past it).
            Peek::Tail(Tail::Word(w)) | Peek::Tail(Tail::Quoted(w, _)) => {
                let keyword = match table {
                    false => RESERVED.iter().any(|k| begins(k, w)),
                    true => {
                        FROM_GOES_ON.iter().any(|k| begins(k, w))
                            || (RESERVED.iter().any(|k| begins(k, w)) && self.pending_bound())
                    }
                };
                match fits(w) || keyword {
                    true => Err(Halt::Prefix),
                    false => Err(Halt::Invalid),
                }
            }
            _ => Ok(None),
        }
    }

    // ------------------------------------------------------------ names

    fn scope(&mut self) -> &mut Scope {
        self.scopes.last_mut().expect("inside a SELECT")
    }

    /// Whether the reference may be written here (see [`super::scope`]).
    fn ref_ok(&self, r: &ColRef) -> bool {
        let scope = self.scopes.last().expect("inside a SELECT");
        match scope.phase {
            Phase::Select => feasible(self.schema, scope, r),
            Phase::From | Phase::Bound => resolve(self.schema, &self.scopes, r) == Resolution::Found,
        }
    }

    fn column_ref(&mut self, r: ColRef) -> P<()> {
        if !self.ref_ok(&r) {
            return Err(Halt::Invalid);
        }
        if self.scope().phase == Phase::Select {
            self.scope().pending.push(r);
        }
        Ok(())
    }

    /// Whether `q` can qualify a column here.
    fn qualifier_ok(&self, q: &str) -> bool {
        for (depth, s) in self.scopes.iter().rev().enumerate() {
            if s.phase == Phase::Select || (depth > 0 && s.phase != Phase::Bound) {
                // FROM may still name it: a table, or under a short alias.
                return self.schema.table(q).is_some() || short_alias(q);
            }
            if s.items.iter().any(|i| i.exposed == q) {
                return true;
            }
        }
        false
    }

    /// Names an operand may begin with here: columns and qualifiers in reach.
    fn names_in_reach(&self) -> Vec<String> {
        let mut out = Vec::new();
        for s in self.scopes.iter().rev() {
            if s.phase != Phase::Bound && s.phase != Phase::From {
                out.extend(self.schema.columns.iter().cloned());
                out.extend(self.schema.tables.iter().map(|t| t.name.clone()));
                break;
            }
            for i in &s.items {
                out.push(i.exposed.clone());
                out.extend(i.columns(self.schema).iter().cloned());
            }
            out.extend(s.outputs.iter().cloned());
        }
        out
    }

    /// Could a partial word `w` begin an operand here?
    fn operand_word_ok(&self, w: &str) -> bool {
        if OPERAND_WORDS.iter().any(|k| begins(k, w)) || FUNCTIONS.iter().any(|f| begins(f.0, w)) {
            return true;
        }
        if self.scopes.last().is_some_and(|s| s.phase == Phase::Select) && short_alias(w) {
            return true; // an alias that FROM will define
        }
        let lw = w.to_ascii_lowercase();
        self.names_in_reach().iter().any(|n| {
            begins(n, &lw)
                && (self.qualifier_ok(n)
                    || self.ref_ok(&ColRef {
                        qual: None,
                        col: n.clone(),
                    }))
        })
    }

    // ------------------------------------------------------------ statements

    fn statement(&mut self) -> P<()> {
        self.select_stmt()?;
        self.eat_op(";")?;
        match self.peek() {
            Peek::End => Ok(()),
            _ => Err(Halt::Invalid),
        }
    }

    /// A full SELECT (compound parts, ORDER BY, LIMIT); returns the output
    /// names of its first part (a derived table's columns).
    fn select_stmt(&mut self) -> P<Vec<String>> {
        self.enter()?;
        let (names, mut last) = self.select_core()?;
        loop {
            let compound = if self.eat_kw("UNION")? {
                self.eat_kw("ALL")?;
                true
            } else {
                self.eat_kw("INTERSECT")? || self.eat_kw("EXCEPT")?
            };
            if !compound {
                break;
            }
            last = self.select_core()?.1;
        }
        self.scopes.push(last);
        if self.eat_kw("ORDER")? {
            self.expect_kw("BY")?;
            loop {
                self.expr()?;
                if !self.eat_kw("ASC")? {
                    self.eat_kw("DESC")?;
                }
                if !self.eat_op(",")? {
                    break;
                }
            }
        }
        if self.eat_kw("LIMIT")? {
            self.expr()?;
            if self.eat_kw("OFFSET")? || self.eat_op(",")? {
                self.expr()?;
            }
        }
        self.scopes.pop();
        self.leave();
        Ok(names)
    }

    /// `SELECT … [FROM …] [WHERE …] [GROUP BY … [HAVING …]]`; returns the
    /// output names and the finished scope (for ORDER BY).
    fn select_core(&mut self) -> P<(Vec<String>, Scope)> {
        self.expect_kw("SELECT")?;
        self.scopes.push(Scope::new());
        if !self.eat_kw("DISTINCT")? {
            self.eat_kw("ALL")?;
        }
        let mut names = Vec::new();
        let mut star = false;
        loop {
            if self.eat_op("*")? {
                star = true;
            } else {
                let start = self.pos;
                self.star_ok = true;
                let r = self.expr();
                self.star_ok = false;
                r?;
                let simple = self.simple_column(start);
                match self.alias(false)? {
                    Some(a) => {
                        self.scope().outputs.push(a.clone());
                        names.push(a);
                    }
                    None => names.push(simple.unwrap_or_default()),
                }
            }
            if !self.eat_op(",")? {
                break;
            }
        }
        if self.eat_kw("FROM")? {
            self.scope().phase = Phase::From;
            self.join_clause()?;
        }
        let schema = self.schema;
        let pending = std::mem::take(&mut self.scope().pending);
        self.scope().phase = Phase::Bound;
        if pending
            .iter()
            .any(|r| resolve(schema, &self.scopes, r) != Resolution::Found)
        {
            return Err(Halt::Invalid);
        }
        if star {
            let items = self.scope().items.clone();
            names.extend(items.iter().flat_map(|i| i.columns(schema).to_vec()));
        }
        if self.eat_kw("WHERE")? {
            self.expr()?;
        }
        if self.eat_kw("GROUP")? {
            self.expect_kw("BY")?;
            self.expr()?;
            while self.eat_op(",")? {
                self.expr()?;
            }
            if self.eat_kw("HAVING")? {
                self.expr()?;
            }
        }
        let scope = self.scopes.pop().expect("pushed above");
        Ok((names, scope))
    }

    /// The column name of a result column that is a bare or qualified column.
    fn simple_column(&self, start: usize) -> Option<String> {
        let name = |t: &Tok| match t {
            Tok::Word(w) | Tok::Quoted(w) | Tok::DoubleQuoted(w) => Some(w.to_ascii_lowercase()),
            _ => None,
        };
        match &self.toks[start..self.pos] {
            [t] => name(t),
            [_, Tok::Op("."), t] => name(t),
            _ => None,
        }
    }

    fn join_clause(&mut self) -> P<()> {
        let mut joined = false;
        loop {
            self.table_or_subquery()?;
            if joined {
                if self.eat_kw("ON")? {
                    self.expr()?;
                } else if self.eat_kw("USING")? {
                    self.expect_op("(")?;
                    loop {
                        self.free_name()?;
                        if !self.eat_op(",")? {
                            break;
                        }
                    }
                    self.expect_op(")")?;
                }
            }
            joined = true;
            if self.eat_op(",")? {
                continue;
            }
            let natural = self.eat_kw("NATURAL")?;
            if self.eat_kw("LEFT")? {
                self.eat_kw("OUTER")?;
                self.expect_kw("JOIN")?;
            } else if self.eat_kw("INNER")? || self.eat_kw("CROSS")? {
                self.expect_kw("JOIN")?;
            } else if !self.eat_kw("JOIN")? {
                return match natural {
                    true => Err(Halt::Invalid),
                    false => Ok(()),
                };
            }
        }
    }

    /// A table (or sub-query) with its alias, checked against the pending
    /// select-list references.
    fn table_or_subquery(&mut self) -> P<()> {
        let schema = self.schema;
        let columns = if self.eat_op("(")? {
            // A derived table sees nothing of the query around it.
            let outer = std::mem::take(&mut self.scopes);
            let names = self.select_stmt();
            self.scopes = outer;
            let names = names?;
            self.expect_op(")")?;
            Columns::Derived(names)
        } else {
            let tables: Vec<&str> = schema.tables.iter().map(|t| t.name.as_str()).collect();
            let scope = self.scopes.last().expect("inside a SELECT").clone();
            // A table that makes a select-list column ambiguous can never be undone.
            let ok = |name: &str| {
                let Some(t) = schema.table(name) else {
                    return false;
                };
                let mut s = scope.clone();
                s.items.push(Item {
                    exposed: String::new(),
                    columns: Columns::Table(t),
                });
                s.pending
                    .iter()
                    .filter(|r| r.qual.is_none())
                    .all(|r| feasible(schema, &s, r))
            };
            let name = self.name_in(&tables, &ok)?;
            Columns::Table(schema.table(&name).expect("checked by name_in"))
        };
        let default_name = match &columns {
            Columns::Table(t) => schema.tables[*t].name.clone(),
            Columns::Derived(_) => String::new(),
        };
        // In scope before its alias is read, so that a keyword ending FROM
        // can be checked against the select list (see `alias`).
        self.scope().items.push(Item {
            exposed: default_name,
            columns,
        });
        if let Some(a) = self.alias(true)? {
            self.scope().items.last_mut().expect("pushed above").exposed = a;
        }
        let scope = self.scope();
        let (last, others) = scope.items.split_last().expect("pushed above");
        if !last.exposed.is_empty() && others.iter().any(|i| i.exposed == last.exposed) {
            return Err(Halt::Invalid);
        }
        match pending_feasible(schema, self.scope()) {
            true => Ok(()),
            false => Err(Halt::Invalid),
        }
    }

    /// Would every select-list reference resolve if FROM ended here?
    fn pending_bound(&self) -> bool {
        let scope = self.scopes.last().expect("inside a SELECT");
        scope
            .pending
            .iter()
            .all(|r| resolve(self.schema, &self.scopes, r) == Resolution::Found)
    }

    // ------------------------------------------------------------ expressions

    fn expr(&mut self) -> P<()> {
        self.enter()?;
        self.and_expr()?;
        while self.eat_kw("OR")? {
            self.and_expr()?;
        }
        self.leave();
        Ok(())
    }

    fn and_expr(&mut self) -> P<()> {
        self.not_expr()?;
        while self.eat_kw("AND")? {
            self.not_expr()?;
        }
        Ok(())
    }

    fn not_expr(&mut self) -> P<()> {
        if self.eat_kw("NOT")? {
            self.enter()?;
            self.not_expr()?;
            self.leave();
            return Ok(());
        }
        self.comparison()
    }

    fn comparison(&mut self) -> P<()> {
        self.additive()?;
        loop {
            if self.eat_any_op(&["=", "==", "!=", "<>", "<", "<=", ">", ">="])? {
                self.additive()?;
                continue;
            }
            let negated = self.eat_kw("NOT")?;
            if self.eat_kw("LIKE")? || self.eat_kw("GLOB")? {
                self.additive()?;
                if self.eat_kw("ESCAPE")? {
                    self.additive()?;
                }
            } else if self.eat_kw("BETWEEN")? {
                self.additive()?;
                self.expect_kw("AND")?;
                self.additive()?;
            } else if self.eat_kw("IN")? {
                self.expect_op("(")?;
                if self.at_kw("SELECT") || matches!(self.peek(), Peek::Tail(Tail::Word(w)) if begins("SELECT", w)) {
                    self.select_stmt()?;
                } else {
                    self.expr_list()?;
                }
                self.expect_op(")")?;
            } else if negated {
                self.expect_kw("NULL")?;
            } else if self.eat_kw("IS")? {
                self.eat_kw("NOT")?;
                self.additive()?;
            } else if !(self.eat_kw("ISNULL")? || self.eat_kw("NOTNULL")?) {
                return Ok(());
            }
        }
    }

    fn eat_any_op(&mut self, ops: &[&str]) -> P<bool> {
        for op in ops {
            if self.eat_op(op)? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn expr_list(&mut self) -> P<()> {
        self.expr()?;
        while self.eat_op(",")? {
            self.expr()?;
        }
        Ok(())
    }

    fn additive(&mut self) -> P<()> {
        self.multiplicative()?;
        while self.eat_any_op(&["+", "-", "||"])? {
            self.multiplicative()?;
        }
        Ok(())
    }

    fn multiplicative(&mut self) -> P<()> {
        self.unary()?;
        while self.eat_any_op(&["*", "/", "%"])? {
            self.unary()?;
        }
        Ok(())
    }

    fn unary(&mut self) -> P<()> {
        if self.eat_any_op(&["-", "+"])? {
            self.enter()?;
            self.unary()?;
            self.leave();
            return Ok(());
        }
        self.primary()
    }

    fn primary(&mut self) -> P<()> {
        match self.peek() {
            Peek::Tok(Tok::Num) | Peek::Tok(Tok::Str) => self.bump(),
            // A column when one has the name, else a string (SQLite's rule).
            Peek::Tok(Tok::DoubleQuoted(_)) => self.bump(),
            Peek::Tok(Tok::Quoted(w)) => {
                let w = w.to_ascii_lowercase();
                self.bump();
                self.after_name(w)?;
            }
            Peek::Tok(Tok::Op("(")) => {
                self.bump();
                if self.at_kw("SELECT") || matches!(self.peek(), Peek::Tail(Tail::Word(w)) if begins("SELECT", w)) {
                    self.select_stmt()?;
                } else {
                    self.expr_list()?;
                }
                self.expect_op(")")?;
            }
            Peek::Tok(Tok::Word(w)) => {
                let upper = w.to_ascii_uppercase();
                match upper.as_str() {
                    "NULL" | "TRUE" | "FALSE" | "CURRENT_DATE" | "CURRENT_TIME" | "CURRENT_TIMESTAMP" => self.bump(),
                    "CASE" => self.case_expr()?,
                    "CAST" => self.cast_expr()?,
                    "EXISTS" => {
                        self.bump();
                        self.expect_op("(")?;
                        self.select_stmt()?;
                        self.expect_op(")")?;
                    }
                    _ if reserved(&upper) => return Err(Halt::Invalid),
                    _ => {
                        let w = w.to_ascii_lowercase();
                        self.bump();
                        self.after_name(w)?;
                    }
                }
            }
            Peek::Tail(Tail::Word(w)) => {
                return Err(match self.operand_word_ok(w) {
                    true => Halt::Prefix,
                    false => Halt::Invalid,
                })
            }
            Peek::Tail(Tail::Str) | Peek::Tail(Tail::Quoted(_, true)) => return Err(Halt::Prefix),
            Peek::Tail(Tail::Quoted(w, false)) => {
                return Err(match self.operand_word_ok(w) {
                    true => Halt::Prefix,
                    false => Halt::Invalid,
                })
            }
            Peek::End => return Err(self.ran_out()),
            _ => return Err(Halt::Invalid),
        }
        Ok(())
    }

    /// After a name in an operand: a function call, a qualified column or a column.
    fn after_name(&mut self, name: String) -> P<()> {
        match self.peek() {
            Peek::Tok(Tok::Op("(")) => self.call(&name),
            Peek::Tok(Tok::Op(".")) => {
                if !self.qualifier_ok(&name) {
                    return Err(Halt::Invalid);
                }
                self.bump();
                self.qualified_column(name)
            }
            // `name ` then the end: a column, or a function or qualifier still to come.
            Peek::End if !self.complete => {
                let col = ColRef {
                    qual: None,
                    col: name.clone(),
                };
                match arity(&name).is_some() || self.qualifier_ok(&name) || self.ref_ok(&col) {
                    true => Err(Halt::Prefix),
                    false => Err(Halt::Invalid),
                }
            }
            _ => self.column_ref(ColRef { qual: None, col: name }),
        }
    }

    fn qualified_column(&mut self, qual: String) -> P<()> {
        let q = Some(qual);
        match self.peek() {
            Peek::Tok(Tok::Op("*")) if self.star_ok => {
                self.bump();
                self.column_ref(ColRef {
                    qual: q,
                    col: "*".into(),
                })
            }
            _ => {
                let cols: Vec<String> = self
                    .schema
                    .columns
                    .iter()
                    .cloned()
                    .chain(self.names_in_reach())
                    .collect();
                let cols: Vec<&str> = cols.iter().map(String::as_str).collect();
                let ok = |c: &str| {
                    self.ref_ok(&ColRef {
                        qual: q.clone(),
                        col: c.to_string(),
                    })
                };
                let col = self.name_at(&cols, &ok)?;
                self.bump();
                self.column_ref(ColRef { qual: q, col })
            }
        }
    }

    fn call(&mut self, name: &str) -> P<()> {
        let Some(arity) = arity(name) else {
            return Err(Halt::Invalid);
        };
        self.expect_op("(")?;
        let star_ok = std::mem::replace(&mut self.star_ok, false);
        let r = self.call_args(name, arity);
        self.star_ok = star_ok;
        r
    }

    /// Arguments and `)`, their number within `(fewest, most)`.
    fn call_args(&mut self, name: &str, (fewest, most): (usize, usize)) -> P<()> {
        if name == "count" && self.eat_op("*")? {
            return self.expect_op(")");
        }
        if fewest == 0 && self.eat_op(")")? {
            return Ok(());
        }
        self.eat_kw("DISTINCT")?;
        let mut n = 1;
        self.expr()?;
        while n < most && self.eat_op(",")? {
            self.expr()?;
            n += 1;
        }
        match n >= fewest {
            true => self.expect_op(")"),
            false => Err(Halt::Invalid),
        }
    }

    fn case_expr(&mut self) -> P<()> {
        self.bump(); // CASE
        if !self.eat_kw("WHEN")? {
            self.expr()?;
            self.expect_kw("WHEN")?;
        }
        loop {
            self.expr()?;
            self.expect_kw("THEN")?;
            self.expr()?;
            if !self.eat_kw("WHEN")? {
                break;
            }
        }
        if self.eat_kw("ELSE")? {
            self.expr()?;
        }
        self.expect_kw("END")
    }

    fn cast_expr(&mut self) -> P<()> {
        self.bump(); // CAST
        self.expect_op("(")?;
        self.expr()?;
        self.expect_kw("AS")?;
        self.free_name()?;
        if self.eat_op("(")? {
            self.expect_num()?;
            if self.eat_op(",")? {
                self.expect_num()?;
            }
            self.expect_op(")")?;
        }
        self.expect_op(")")
    }

    fn expect_num(&mut self) -> P<()> {
        match self.peek() {
            Peek::Tok(Tok::Num) => {
                self.bump();
                Ok(())
            }
            Peek::End => Err(self.ran_out()),
            _ => Err(Halt::Invalid),
        }
    }
}
