//! Database schemas: read from Spider `tables.json`, from pasted `CREATE TABLE`
//! DDL, or from a simple `table: col, col` form; written out for prompts
//! (one format used by training, evaluation and the browser alike), and cut
//! to a token budget.
//!
//! The prompt format ([`SchemaFormat::Compact`], the default) is one line per
//! table, types and keys inline, names quoted only when they are not plain
//! identifiers:
//!
//! ```text
//! singer(Singer_ID number PK, Name text, Age number)
//! singer_in_concert(concert_ID number PK -> concert.concert_ID, Singer_ID text -> singer.Singer_ID)
//! ```
//!
//! Why this shape: types cost one token each this way (`(number)` costs three)
//! and there is no `CREATE TABLE`/`PRIMARY KEY (…)` boilerplate. With SmolLM2's
//! tokenizer and the default prompt, 325 of the first 600 Spider training
//! examples fit 256 tokens uncut, against 266 with [`Schema::to_create_table`].
//! [`Schema::parse`] reads it back (it is the simple form).

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};
use sqlparser::ast::{ColumnOption, Expr, ObjectName, Statement, TableConstraint};
use sqlparser::dialect::SQLiteDialect;
use sqlparser::keywords::Keyword;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Token, TokenWithSpan, Tokenizer as SqlTokenizer};

use crate::{Error, Result};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Column {
    pub name: String,
    /// Declared type as written (`number`, `text`, `varchar(20)`); empty if none.
    pub ty: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Table {
    pub name: String,
    pub columns: Vec<Column>,
    /// Column names forming the primary key (empty if none).
    pub primary_key: Vec<String>,
}

/// `table(columns) REFERENCES ref_table(ref_columns)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForeignKey {
    pub table: String,
    pub columns: Vec<String>,
    pub ref_table: String,
    pub ref_columns: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schema {
    pub tables: Vec<Table>,
    pub foreign_keys: Vec<ForeignKey>,
}

/// How a schema is written into a prompt.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SchemaFormat {
    /// `t(col type PK, col type -> other.col)` (see module docs).
    #[default]
    Compact,
    /// `CREATE TABLE t (col type, …, PRIMARY KEY (…), FOREIGN KEY (…) REFERENCES …);`
    CreateTable,
}

fn schema_err(msg: impl std::fmt::Display) -> Error {
    Error::Schema(msg.to_string())
}

/// Names that are plain identifiers are written bare, others double-quoted.
fn quote(name: &str) -> String {
    let mut chars = name.chars();
    let plain = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if plain {
        name.to_string()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

fn eq_ci(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

impl Schema {
    /// Parses pasted text: `CREATE TABLE` DDL when it contains `CREATE TABLE`,
    /// else the simple form (see [`Schema::from_simple`]).
    pub fn parse(text: &str) -> Result<Schema> {
        if text.to_ascii_lowercase().contains("create table") || text.to_ascii_lowercase().contains("create temp") {
            Self::from_ddl(text)
        } else {
            Self::from_simple(text)
        }
    }

    pub fn table(&self, name: &str) -> Option<&Table> {
        self.tables.iter().find(|t| eq_ci(&t.name, name))
    }

    /// Foreign keys going out of `table`.
    pub fn foreign_keys_of<'a>(&'a self, table: &'a str) -> impl Iterator<Item = &'a ForeignKey> {
        self.foreign_keys.iter().filter(move |f| eq_ci(&f.table, table))
    }

    // ---------------------------------------------------------------- DDL

    /// From `CREATE TABLE` statements (SQLite dialect). Other statements
    /// (INSERT, PRAGMA, CREATE INDEX …) are skipped. Column-level
    /// `PRIMARY KEY` / `REFERENCES` and table-level `PRIMARY KEY (…)` /
    /// `FOREIGN KEY (…) REFERENCES t(…)` are read. Errors name the line and
    /// column.
    pub fn from_ddl(text: &str) -> Result<Schema> {
        let dialect = SQLiteDialect {};
        let tokens = SqlTokenizer::new(&dialect, text)
            .tokenize_with_location()
            .map_err(|e| schema_err(format!("DDL: {e}")))?;
        let mut schema = Schema::default();
        for stmt_tokens in tokens.split(|t| t.token == Token::SemiColon) {
            if !is_create_table(stmt_tokens) {
                continue;
            }
            let stmt_tokens = add_missing_constraint_commas(stmt_tokens);
            let stmt_tokens = stmt_tokens.as_slice();
            let stmt = Parser::new(&dialect)
                .with_tokens_with_locations(stmt_tokens.to_vec())
                .parse_statement()
                .map_err(|e| schema_err(format!("DDL: {e}")))?;
            if let Statement::CreateTable(ct) = stmt {
                schema.add_create_table(ct, stmt_tokens)?;
            }
        }
        if schema.tables.is_empty() {
            return Err(schema_err("DDL: no CREATE TABLE statement found"));
        }
        schema.resolve_foreign_keys();
        Ok(schema)
    }

    fn add_create_table(&mut self, ct: sqlparser::ast::CreateTable, tokens: &[TokenWithSpan]) -> Result<()> {
        let name = object_name(&ct.name);
        if self.table(&name).is_some() {
            return Err(schema_err(format!("DDL: table `{name}` is defined twice")));
        }
        let mut table = Table {
            name: name.clone(),
            columns: Vec::new(),
            primary_key: Vec::new(),
        };
        for col in &ct.columns {
            let cname = col.name.value.clone();
            // sqlparser re-spells known types (`int` → `INT`); keep the text as
            // written so prompts show what the user pasted.
            let ty = match &col.data_type {
                sqlparser::ast::DataType::Unspecified => String::new(),
                t => type_as_written(tokens, &col.name).unwrap_or_else(|| t.to_string()),
            };
            for opt in &col.options {
                match &opt.option {
                    ColumnOption::Unique { is_primary: true, .. } => table.primary_key.push(cname.clone()),
                    ColumnOption::ForeignKey {
                        foreign_table,
                        referred_columns,
                        ..
                    } => self.foreign_keys.push(ForeignKey {
                        table: name.clone(),
                        columns: vec![cname.clone()],
                        ref_table: object_name(foreign_table),
                        ref_columns: referred_columns.iter().map(|i| i.value.clone()).collect(),
                    }),
                    _ => {}
                }
            }
            table.columns.push(Column { name: cname, ty });
        }
        for c in &ct.constraints {
            match c {
                TableConstraint::PrimaryKey { columns, .. } => {
                    table.primary_key = columns.iter().map(|c| expr_name(&c.column.expr)).collect();
                }
                TableConstraint::ForeignKey {
                    columns,
                    foreign_table,
                    referred_columns,
                    ..
                } => self.foreign_keys.push(ForeignKey {
                    table: name.clone(),
                    columns: columns.iter().map(|i| i.value.clone()).collect(),
                    ref_table: object_name(foreign_table),
                    ref_columns: referred_columns.iter().map(|i| i.value.clone()).collect(),
                }),
                _ => {}
            }
        }
        self.tables.push(table);
        Ok(())
    }

    /// `REFERENCES t` without columns means t's primary key; names are
    /// normalised to the referenced table's spelling; duplicates (Spider has
    /// some) are dropped.
    fn resolve_foreign_keys(&mut self) {
        let tables = self.tables.clone();
        let mut seen = Vec::with_capacity(self.foreign_keys.len());
        for mut fk in std::mem::take(&mut self.foreign_keys) {
            if let Some(t) = tables.iter().find(|t| eq_ci(&t.name, &fk.ref_table)) {
                fk.ref_table = t.name.clone();
                if fk.ref_columns.is_empty() {
                    fk.ref_columns = t.primary_key.clone();
                }
            }
            if !seen.contains(&fk) {
                seen.push(fk);
            }
        }
        self.foreign_keys = seen;
    }

    // ---------------------------------------------------------------- simple form

    /// The simple form, one table per line: `table: col, col type, col(type)`
    /// or `table(col, col type)`; an optional leading `Table `; a column may
    /// end with `PK` (or `PRIMARY KEY`) and `-> other_table.col`. This is also
    /// [`SchemaFormat::Compact`], which it reads back. Blank lines and `#`/`--` comments are
    /// ignored. Errors name the line and column.
    pub fn from_simple(text: &str) -> Result<Schema> {
        let mut schema = Schema::default();
        for (lineno, line) in text.lines().enumerate() {
            let trimmed = line.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with("--") {
                continue;
            }
            let at = |col: usize, msg: &str| schema_err(format!("line {}, column {}: {msg}", lineno + 1, col + 1));
            let indent = line.len() - line.trim_start().len();
            let mut body = trimmed;
            let mut offset = indent;
            if body.len() > 6 && body.get(..6).is_some_and(|w| w.eq_ignore_ascii_case("table ")) {
                body = &body[6..];
                offset += 6;
            }
            let (name, rest_at) = read_name(body).ok_or_else(|| at(offset, "expected a table name"))?;
            let rest = body[rest_at..].trim_start();
            let rest_offset = offset + body.len() - rest.len();
            let cols_text = if let Some(r) = rest.strip_prefix(':') {
                r
            } else if let Some(r) = rest.strip_prefix('(') {
                r.trim_end()
                    .strip_suffix(')')
                    .ok_or_else(|| at(rest_offset + rest.len(), "missing `)` closing the column list"))?
            } else {
                return Err(at(
                    rest_offset,
                    &format!("expected `:` or `(` after table name `{name}`"),
                ));
            };
            if schema.table(&name).is_some() {
                return Err(at(offset, &format!("table `{name}` is defined twice")));
            }
            let cols_offset = rest_offset + 1;
            let mut table = Table {
                name: name.clone(),
                columns: Vec::new(),
                primary_key: Vec::new(),
            };
            for (item_at, item) in split_top_level(cols_text) {
                let col_at = cols_offset + item_at + (item.len() - item.trim_start().len());
                let item = item.trim();
                if item.is_empty() {
                    return Err(at(col_at, "empty column name"));
                }
                let spec = parse_column_spec(item).map_err(|(p, m)| at(col_at + p, &m))?;
                if spec.pk {
                    table.primary_key.push(spec.name.clone());
                }
                for (rt, rc) in spec.references {
                    schema.foreign_keys.push(ForeignKey {
                        table: name.clone(),
                        columns: vec![spec.name.clone()],
                        ref_table: rt,
                        ref_columns: rc.into_iter().collect(),
                    });
                }
                table.columns.push(Column {
                    name: spec.name,
                    ty: spec.ty,
                });
            }
            if table.columns.is_empty() {
                return Err(at(offset, &format!("table `{name}` has no columns")));
            }
            schema.tables.push(table);
        }
        if schema.tables.is_empty() {
            return Err(schema_err(
                "no tables found (expected `table: col, col` lines or CREATE TABLE statements)",
            ));
        }
        schema.resolve_foreign_keys();
        Ok(schema)
    }

    // ---------------------------------------------------------------- output

    /// The schema text for a prompt.
    pub fn render(&self, format: SchemaFormat) -> String {
        match format {
            SchemaFormat::Compact => self.to_compact(),
            SchemaFormat::CreateTable => self.to_create_table(),
        }
    }

    /// [`SchemaFormat::Compact`].
    pub fn to_compact(&self) -> String {
        let mut lines = Vec::with_capacity(self.tables.len());
        for t in &self.tables {
            let cols: Vec<String> = t
                .columns
                .iter()
                .map(|c| {
                    let mut s = quote(&c.name);
                    if !c.ty.is_empty() {
                        s.push(' ');
                        s.push_str(&c.ty);
                    }
                    if t.primary_key.iter().any(|k| eq_ci(k, &c.name)) {
                        s.push_str(" PK");
                    }
                    for fk in self.foreign_keys_of(&t.name) {
                        if let Some(i) = fk.columns.iter().position(|k| eq_ci(k, &c.name)) {
                            match fk.ref_columns.get(i) {
                                Some(rc) => s.push_str(&format!(" -> {}.{}", quote(&fk.ref_table), quote(rc))),
                                None => s.push_str(&format!(" -> {}", quote(&fk.ref_table))),
                            }
                        }
                    }
                    s
                })
                .collect();
            lines.push(format!("{}({})", quote(&t.name), cols.join(", ")));
        }
        lines.join("\n")
    }

    /// `CREATE TABLE` statements, one per line (SQLite accepts them).
    pub fn to_create_table(&self) -> String {
        let mut out = Vec::with_capacity(self.tables.len());
        for t in &self.tables {
            let mut parts: Vec<String> = t
                .columns
                .iter()
                .map(|c| {
                    if c.ty.is_empty() {
                        quote(&c.name)
                    } else {
                        format!("{} {}", quote(&c.name), c.ty)
                    }
                })
                .collect();
            if !t.primary_key.is_empty() {
                let k: Vec<String> = t.primary_key.iter().map(|k| quote(k)).collect();
                parts.push(format!("PRIMARY KEY ({})", k.join(", ")));
            }
            for fk in self.foreign_keys_of(&t.name) {
                let cols: Vec<String> = fk.columns.iter().map(|k| quote(k)).collect();
                let refs: Vec<String> = fk.ref_columns.iter().map(|k| quote(k)).collect();
                let refs = if refs.is_empty() {
                    String::new()
                } else {
                    format!("({})", refs.join(", "))
                };
                parts.push(format!(
                    "FOREIGN KEY ({}) REFERENCES {}{}",
                    cols.join(", "),
                    quote(&fk.ref_table),
                    refs
                ));
            }
            out.push(format!("CREATE TABLE {} ({});", quote(&t.name), parts.join(", ")));
        }
        out.join("\n")
    }

    // ---------------------------------------------------------------- budget

    /// The schema without the given tables (by index) and columns (by
    /// (table, column) index); keys that mention removed parts are dropped.
    pub fn without(&self, tables: &HashSet<usize>, columns: &HashSet<(usize, usize)>) -> Schema {
        let mut out = Schema::default();
        for (ti, t) in self.tables.iter().enumerate() {
            if tables.contains(&ti) {
                continue;
            }
            let cols: Vec<Column> = t
                .columns
                .iter()
                .enumerate()
                .filter(|(ci, _)| !columns.contains(&(ti, *ci)))
                .map(|(_, c)| c.clone())
                .collect();
            let has = |n: &str| cols.iter().any(|c| eq_ci(&c.name, n));
            let pk = if t.primary_key.iter().all(|k| has(k)) {
                t.primary_key.clone()
            } else {
                Vec::new()
            };
            out.tables.push(Table {
                name: t.name.clone(),
                columns: cols,
                primary_key: pk,
            });
        }
        out.foreign_keys = self
            .foreign_keys
            .iter()
            .filter(|fk| {
                let has = |table: &str, cols: &[String]| {
                    out.table(table)
                        .is_some_and(|t| cols.iter().all(|c| t.columns.iter().any(|x| eq_ci(&x.name, c))))
                };
                has(&fk.table, &fk.columns) && has(&fk.ref_table, &fk.ref_columns)
            })
            .cloned()
            .collect();
        out
    }

    /// Cuts the schema until `fits(rendered schema text)` says yes.
    ///
    /// The rule, in order of what goes first:
    /// 1. whole tables `named` does not mention (no word of the table's name or
    ///    of its columns' names occurs in it), last first; `named` is the
    ///    question (never an answer: see `PromptSettings::schema_text`);
    /// 2. columns that are neither keys nor mentioned in the question, from
    ///    the last table's last column backwards;
    /// 3. the remaining tables, last first.
    ///
    /// "Mentioned" compares lower-cased words (split at non-alphanumerics and
    /// `_`, a trailing `s` ignored, words of 3+ letters). The question and the
    /// answer are never cut: the caller's `fits` accounts for them. Returns
    /// `None` when even the empty schema does not fit.
    pub fn fit(
        &self,
        format: SchemaFormat,
        named: &str,
        mut fits: impl FnMut(&str) -> Result<bool>,
    ) -> Result<Option<FittedSchema>> {
        let full = self.render(format);
        if fits(&full)? {
            return Ok(Some(FittedSchema {
                text: full,
                dropped_tables: 0,
                dropped_columns: 0,
            }));
        }
        let steps = self.cut_steps(named);
        if steps.is_empty() {
            return Ok(None);
        }
        let apply = |k: usize| -> (Schema, usize, usize) {
            let mut tables = HashSet::new();
            let mut columns = HashSet::new();
            for s in &steps[..k] {
                match *s {
                    Cut::Table(t) => {
                        tables.insert(t);
                    }
                    Cut::Column(t, c) => {
                        columns.insert((t, c));
                    }
                }
            }
            let dropped_cols = columns.iter().filter(|(t, _)| !tables.contains(t)).count();
            (self.without(&tables, &columns), tables.len(), dropped_cols)
        };
        // Text shrinks as steps are applied, so binary-search the fewest steps.
        let (mut lo, mut hi) = (1usize, steps.len());
        let empty_fits = {
            let (s, _, _) = apply(hi);
            fits(&s.render(format))?
        };
        if !empty_fits {
            return Ok(None);
        }
        while lo < hi {
            let mid = (lo + hi) / 2;
            let (s, _, _) = apply(mid);
            if fits(&s.render(format))? {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        let (s, dropped_tables, dropped_columns) = apply(hi);
        Ok(Some(FittedSchema {
            text: s.render(format),
            dropped_tables,
            dropped_columns,
        }))
    }

    fn cut_steps(&self, named: &str) -> Vec<Cut> {
        let qwords: HashSet<String> = words(named).collect();
        let mentioned = |name: &str| words(name).any(|w| qwords.contains(&w));
        let table_mentioned: Vec<bool> = self
            .tables
            .iter()
            .map(|t| mentioned(&t.name) || t.columns.iter().any(|c| mentioned(&c.name)))
            .collect();
        let is_key = |t: &Table, c: &Column| {
            t.primary_key.iter().any(|k| eq_ci(k, &c.name))
                || self.foreign_keys.iter().any(|f| {
                    (eq_ci(&f.table, &t.name) && f.columns.iter().any(|k| eq_ci(k, &c.name)))
                        || (eq_ci(&f.ref_table, &t.name) && f.ref_columns.iter().any(|k| eq_ci(k, &c.name)))
                })
        };
        let mut steps = Vec::new();
        for ti in (0..self.tables.len()).rev() {
            if !table_mentioned[ti] {
                steps.push(Cut::Table(ti));
            }
        }
        for ti in (0..self.tables.len()).rev() {
            if !table_mentioned[ti] {
                continue;
            }
            let t = &self.tables[ti];
            for ci in (0..t.columns.len()).rev() {
                let c = &t.columns[ci];
                if !is_key(t, c) && !mentioned(&c.name) {
                    steps.push(Cut::Column(ti, ci));
                }
            }
        }
        for ti in (0..self.tables.len()).rev() {
            if table_mentioned[ti] {
                steps.push(Cut::Table(ti));
            }
        }
        steps
    }
}

/// A schema text cut to fit a budget, with what was cut.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FittedSchema {
    pub text: String,
    pub dropped_tables: usize,
    pub dropped_columns: usize,
}

impl FittedSchema {
    pub fn was_cut(&self) -> bool {
        self.dropped_tables + self.dropped_columns > 0
    }
}

#[derive(Debug, Clone, Copy)]
enum Cut {
    Table(usize),
    Column(usize, usize),
}

fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.chars().count() >= 3)
        .map(|w| {
            let w = w.to_lowercase();
            match w.strip_suffix('s') {
                Some(stem) if stem.len() >= 3 => stem.to_string(),
                _ => w,
            }
        })
}

/// The source text of a column's type: the tokens after the column name up
/// to a constraint keyword or a `,`/`)` at the same nesting depth.
fn type_as_written(tokens: &[TokenWithSpan], name: &sqlparser::ast::Ident) -> Option<String> {
    let at = tokens.iter().position(|t| t.span.start == name.span.start)?;
    let mut out = String::new();
    let mut depth = 0i32;
    for t in &tokens[at + 1..] {
        match &t.token {
            Token::LParen => depth += 1,
            Token::RParen if depth == 0 => break,
            Token::RParen => depth -= 1,
            Token::Comma if depth == 0 => break,
            Token::Word(w)
                if depth == 0
                    && matches!(
                        w.keyword,
                        Keyword::PRIMARY
                            | Keyword::NOT
                            | Keyword::NULL
                            | Keyword::DEFAULT
                            | Keyword::REFERENCES
                            | Keyword::UNIQUE
                            | Keyword::CHECK
                            | Keyword::COLLATE
                            | Keyword::CONSTRAINT
                            | Keyword::GENERATED
                            | Keyword::AS
                            | Keyword::AUTOINCREMENT
                    ) =>
            {
                break
            }
            _ => {}
        }
        out.push_str(&t.token.to_string());
    }
    let ty = out.split_whitespace().collect::<Vec<_>>().join(" ");
    (!ty.is_empty()).then_some(ty)
}

fn object_name(n: &ObjectName) -> String {
    n.0.last()
        .and_then(|p| p.as_ident())
        .map(|i| i.value.clone())
        .unwrap_or_else(|| n.to_string())
}

fn expr_name(e: &Expr) -> String {
    match e {
        Expr::Identifier(i) => i.value.clone(),
        Expr::CompoundIdentifier(v) => v.last().map(|i| i.value.clone()).unwrap_or_default(),
        other => other.to_string(),
    }
}

/// Whether a statement's tokens start with `CREATE [TEMP|TEMPORARY] TABLE`.
fn is_create_table(tokens: &[TokenWithSpan]) -> bool {
    let mut words = tokens.iter().filter_map(|t| match &t.token {
        Token::Whitespace(_) => None,
        Token::Word(w) => Some(Some(w.keyword)),
        _ => Some(None),
    });
    if words.next() != Some(Some(Keyword::CREATE)) {
        return false;
    }
    match words.next() {
        Some(Some(Keyword::TABLE)) => true,
        Some(Some(Keyword::TEMP | Keyword::TEMPORARY)) => words.next() == Some(Some(Keyword::TABLE)),
        _ => false,
    }
}

/// SQLite accepts table constraints without a separating comma
/// (`PRIMARY KEY (a) FOREIGN KEY (b) REFERENCES t(b)`, as in several Spider
/// files); sqlparser does not. Insert the comma where a constraint keyword
/// follows a `)` that closed a table-constraint item.
fn add_missing_constraint_commas(tokens: &[TokenWithSpan]) -> Vec<TokenWithSpan> {
    let is_constraint_kw = |t: &Token| {
        matches!(t, Token::Word(w) if matches!(
            w.keyword,
            Keyword::PRIMARY | Keyword::FOREIGN | Keyword::UNIQUE | Keyword::CHECK | Keyword::CONSTRAINT
        ))
    };
    let mut out: Vec<TokenWithSpan> = Vec::with_capacity(tokens.len() + 2);
    let mut depth = 0i32;
    let mut item_first: Option<bool> = None; // is the current item a table constraint?
    let mut prev: Option<Token> = None;
    for t in tokens {
        if matches!(t.token, Token::Whitespace(_)) {
            out.push(t.clone());
            continue;
        }
        if depth == 1 {
            match item_first {
                None => item_first = Some(is_constraint_kw(&t.token)),
                Some(true) if is_constraint_kw(&t.token) && prev == Some(Token::RParen) => {
                    out.push(TokenWithSpan::new(Token::Comma, t.span));
                }
                _ => {}
            }
        }
        match t.token {
            Token::LParen => depth += 1,
            Token::RParen => depth -= 1,
            Token::Comma if depth == 1 => item_first = None,
            _ => {}
        }
        if depth == 1 && t.token == Token::LParen {
            item_first = None;
        }
        prev = Some(t.token.clone());
        out.push(t.clone());
    }
    out
}

/// A name at the start of `s`: double-quoted, backticked, bracketed, or a run
/// of characters up to whitespace or punctuation. Returns it and the byte
/// offset after it.
fn read_name(s: &str) -> Option<(String, usize)> {
    let first = s.chars().next()?;
    let close = match first {
        '"' => Some('"'),
        '`' => Some('`'),
        '[' => Some(']'),
        _ => None,
    };
    if let Some(close) = close {
        let mut name = String::new();
        let mut chars = s.char_indices().skip(1).peekable();
        while let Some((i, c)) = chars.next() {
            if c == close {
                // A doubled quote is an escaped quote.
                if close != ']' && chars.peek().map(|&(_, n)| n) == Some(close) {
                    chars.next();
                    name.push(c);
                    continue;
                }
                return Some((name, i + c.len_utf8()));
            }
            name.push(c);
        }
        return None;
    }
    let end = s
        .char_indices()
        .find(|&(_, c)| c.is_whitespace() || matches!(c, ':' | '(' | ')' | ',' | '.'))
        .map(|(i, _)| i)
        .unwrap_or(s.len());
    if end == 0 {
        None
    } else {
        Some((s[..end].to_string(), end))
    }
}

/// Splits at commas outside parentheses and quotes; yields (byte offset, item).
fn split_top_level(s: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let (mut depth, mut quote, mut start) = (0i32, None::<char>, 0usize);
    for (i, c) in s.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '`') => quote = Some(c),
            (None, '(') => depth += 1,
            (None, ')') => depth -= 1,
            (None, ',') if depth == 0 => {
                out.push((start, &s[start..i]));
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push((start, &s[start..]));
    out
}

struct ColumnSpec {
    name: String,
    ty: String,
    pk: bool,
    references: Vec<(String, Option<String>)>,
}

/// `name`, `name type words`, `name(type)`, then optional `PK` and
/// `-> table.col`. Errors carry a byte offset within `item`.
fn parse_column_spec(item: &str) -> std::result::Result<ColumnSpec, (usize, String)> {
    let (name, mut pos) = read_name(item).ok_or_else(|| (0, "expected a column name".to_string()))?;
    let mut rest = &item[pos..];
    // Every `-> table.col` after the type is a reference (a column may
    // reference several tables).
    let mut references = Vec::new();
    if let Some(first_arrow) = rest.find("->") {
        let mut at = pos + first_arrow;
        for part in rest[first_arrow..].split("->").skip(1) {
            let target = part.trim();
            let target_at = at + 2 + (part.len() - part.trim_start().len());
            let (rt, after) =
                read_name(target).ok_or_else(|| (target_at, "expected `table.column` after `->`".to_string()))?;
            let rc = match target[after..].strip_prefix('.') {
                Some(c) => Some(
                    read_name(c)
                        .ok_or_else(|| (target_at + after + 1, "expected a column after `.`".to_string()))?
                        .0,
                ),
                None => None,
            };
            references.push((rt, rc));
            at += 2 + part.len();
        }
        rest = &rest[..first_arrow];
    }
    let mut ty = String::new();
    let mut pk = false;
    let trimmed = rest.trim_start();
    pos += rest.len() - trimmed.len();
    let mut rest = trimmed.trim_end();
    if let Some(r) = rest.strip_prefix('(') {
        // The type may hold parentheses itself: `varchar(20)`.
        let mut depth = 1;
        let close = r
            .char_indices()
            .find(|&(_, c)| {
                depth += match c {
                    '(' => 1,
                    ')' => -1,
                    _ => 0,
                };
                depth == 0
            })
            .map(|(i, _)| i)
            .ok_or_else(|| (pos, "missing `)` after the column type".to_string()))?;
        ty = r[..close].trim().to_string();
        rest = r[close + 1..].trim();
    }
    let mut words: Vec<&str> = rest.split_whitespace().collect();
    if words.last().is_some_and(|w| w.eq_ignore_ascii_case("pk")) {
        pk = true;
        words.pop();
    } else if words.len() >= 2
        && words[words.len() - 2].eq_ignore_ascii_case("primary")
        && words[words.len() - 1].eq_ignore_ascii_case("key")
    {
        pk = true;
        words.truncate(words.len() - 2);
    }
    if !words.is_empty() {
        if !ty.is_empty() {
            return Err((pos, format!("unexpected `{}` after the column type", words.join(" "))));
        }
        ty = words.join(" ");
    }
    Ok(ColumnSpec {
        name,
        ty,
        pk,
        references,
    })
}

// -------------------------------------------------------------------- Spider

/// Spider's `tables.json`: one schema per `db_id`, with the original
/// (case-preserving) table and column names.
#[derive(Debug, Clone, Default)]
pub struct SpiderTables {
    order: Vec<String>,
    dbs: HashMap<String, Schema>,
}

#[derive(Deserialize)]
struct SpiderEntry {
    db_id: String,
    table_names_original: Vec<String>,
    column_names_original: Vec<(i64, String)>,
    column_types: Vec<String>,
    #[serde(default)]
    primary_keys: Vec<serde_json::Value>,
    #[serde(default)]
    foreign_keys: Vec<(usize, usize)>,
}

impl SpiderTables {
    /// Parses the text of a `tables.json`.
    pub fn parse(json: &str) -> Result<Self> {
        let entries: Vec<SpiderEntry> =
            serde_json::from_str(json).map_err(|e| schema_err(format!("tables.json: {e}")))?;
        let mut out = SpiderTables::default();
        for e in entries {
            let schema = spider_schema(&e).map_err(|m| schema_err(format!("tables.json: db_id `{}`: {m}", e.db_id)))?;
            if out.dbs.insert(e.db_id.clone(), schema).is_none() {
                out.order.push(e.db_id);
            }
        }
        Ok(out)
    }

    #[cfg(not(target_arch = "wasm32"))]
    pub fn from_file(path: impl AsRef<std::path::Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text).map_err(|e| Error::file(path, e))
    }

    pub fn get(&self, db_id: &str) -> Option<&Schema> {
        self.dbs.get(db_id)
    }

    /// Like [`SpiderTables::get`], with an error naming the missing id.
    pub fn schema(&self, db_id: &str) -> Result<&Schema> {
        self.get(db_id)
            .ok_or_else(|| schema_err(format!("tables.json has no db_id `{db_id}`")))
    }

    /// The db_ids in file order.
    pub fn db_ids(&self) -> &[String] {
        &self.order
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

fn spider_schema(e: &SpiderEntry) -> std::result::Result<Schema, String> {
    if e.column_types.len() != e.column_names_original.len() {
        return Err(format!(
            "{} column types for {} columns",
            e.column_types.len(),
            e.column_names_original.len()
        ));
    }
    let mut tables: Vec<Table> = e
        .table_names_original
        .iter()
        .map(|n| Table {
            name: n.clone(),
            columns: Vec::new(),
            primary_key: Vec::new(),
        })
        .collect();
    // Column index → (table index, name); index 0 is Spider's `*`.
    let mut col_ref: Vec<Option<(usize, String)>> = Vec::with_capacity(e.column_names_original.len());
    for ((ti, name), ty) in e.column_names_original.iter().zip(&e.column_types) {
        if *ti < 0 {
            col_ref.push(None);
            continue;
        }
        let t = tables
            .get_mut(*ti as usize)
            .ok_or_else(|| format!("column `{name}` names table #{ti}, which does not exist"))?;
        t.columns.push(Column {
            name: name.clone(),
            ty: ty.clone(),
        });
        col_ref.push(Some((*ti as usize, name.clone())));
    }
    let column = |i: usize| -> std::result::Result<(usize, String), String> {
        col_ref
            .get(i)
            .cloned()
            .flatten()
            .ok_or_else(|| format!("key refers to column #{i}, which does not exist"))
    };
    // primary_keys: column indices, or lists of them for composite keys.
    for pk in &e.primary_keys {
        let ids: Vec<u64> = match pk {
            serde_json::Value::Number(n) => n.as_u64().into_iter().collect(),
            serde_json::Value::Array(a) => a.iter().filter_map(|x| x.as_u64()).collect(),
            other => return Err(format!("bad primary key entry {other}")),
        };
        for i in ids {
            let (ti, name) = column(i as usize)?;
            tables[ti].primary_key.push(name);
        }
    }
    let mut foreign_keys = Vec::new();
    for &(from, to) in &e.foreign_keys {
        let (ft, fc) = column(from)?;
        let (tt, tc) = column(to)?;
        foreign_keys.push(ForeignKey {
            table: tables[ft].name.clone(),
            columns: vec![fc],
            ref_table: tables[tt].name.clone(),
            ref_columns: vec![tc],
        });
    }
    let mut schema = Schema { tables, foreign_keys };
    schema.resolve_foreign_keys();
    Ok(schema)
}
