//! Is a generated query usable? Parse it (sqlparser, SQLite dialect), refuse
//! anything that writes, and flag tables and columns the schema does not have.
//!
//! Name resolution follows SQL scoping closely enough for text-to-SQL output:
//! each query (sub-query, CTE body, derived table) is a scope holding its FROM
//! tables (under their alias when aliased), CTE names and projection aliases;
//! a column resolves in its own scope or an enclosing one (correlated
//! sub-queries). Columns of CTEs and derived tables are not tracked, so any
//! column of those is accepted. An unresolved double-quoted identifier is
//! taken as a string literal, as SQLite does (`WHERE name = "Joe"`).

use std::ops::ControlFlow;

use serde::{Deserialize, Serialize};
use sqlparser::ast::{
    Expr, Ident, ObjectName, Query, SelectItem, SelectItemQualifiedWildcardKind, SetExpr, Statement, TableFactor,
    TableWithJoins, Visit, Visitor,
};
use sqlparser::dialect::SQLiteDialect;
use sqlparser::parser::Parser;

use crate::schema::Schema;

/// What [`check`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SqlCheck {
    /// The parser's message when the SQL does not parse (or is empty).
    pub parse_error: Option<String>,
    /// Only `SELECT` / `WITH … SELECT` statements.
    pub read_only: bool,
    /// Why the SQL is not read-only (e.g. "INSERT writes to the database").
    pub write_error: Option<String>,
    /// Number of statements parsed.
    pub statements: usize,
    /// Tables named in FROM/JOIN that neither the schema nor a CTE defines.
    pub unknown_tables: Vec<String>,
    /// Column references that resolve nowhere (`t.col` or `col`).
    pub unknown_columns: Vec<String>,
}

impl SqlCheck {
    /// Parses, is one read-only statement, and names only known tables/columns.
    pub fn is_ok(&self) -> bool {
        self.parse_error.is_none()
            && self.read_only
            && self.statements == 1
            && self.unknown_tables.is_empty()
            && self.unknown_columns.is_empty()
    }

    /// Human-readable problems, empty when [`SqlCheck::is_ok`].
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(e) = &self.parse_error {
            out.push(format!("does not parse: {e}"));
            return out;
        }
        if let Some(e) = &self.write_error {
            out.push(e.clone());
        }
        if self.statements != 1 {
            out.push(format!("expected one statement, found {}", self.statements));
        }
        for t in &self.unknown_tables {
            out.push(format!("unknown table `{t}`"));
        }
        for c in &self.unknown_columns {
            out.push(format!("unknown column `{c}`"));
        }
        out
    }
}

/// Parses `sql` (SQLite dialect).
pub fn parse(sql: &str) -> crate::Result<Vec<Statement>> {
    Parser::parse_sql(&SQLiteDialect {}, sql).map_err(|e| crate::Error::Sql(e.to_string()))
}

/// Checks `sql` against `schema` (see the module docs for the rules).
pub fn check(sql: &str, schema: &Schema) -> SqlCheck {
    let mut out = SqlCheck::default();
    if sql.trim().trim_matches(';').trim().is_empty() {
        out.parse_error = Some("empty SQL".into());
        return out;
    }
    let stmts = match parse(sql) {
        Ok(s) => s,
        Err(e) => {
            out.parse_error = Some(e.to_string().trim_start_matches("SQL: ").to_string());
            return out;
        }
    };
    out.statements = stmts.len();
    out.read_only = true;
    for st in &stmts {
        if let Some(why) = write_reason(st) {
            out.read_only = false;
            out.write_error.get_or_insert(format!(
                "{why}: only read-only queries (SELECT, WITH … SELECT) are allowed"
            ));
        }
    }
    let mut r = Resolver {
        schema,
        scopes: Vec::new(),
        stack: Vec::new(),
        refs: Vec::new(),
        unknown_tables: Vec::new(),
    };
    for st in &stmts {
        if let Statement::Query(_) = st {
            let _ = st.visit(&mut r);
        }
    }
    out.unknown_tables = r.unknown_tables.clone();
    out.unknown_columns = r.unresolved();
    out
}

/// Why a statement is not a read-only query, if it is not.
fn write_reason(st: &Statement) -> Option<String> {
    match st {
        Statement::Query(q) => query_write_reason(q),
        other => {
            let text = other.to_string();
            let kw: Vec<&str> = text.split_whitespace().take(2).collect();
            let verb = match kw.first().map(|s| s.to_ascii_uppercase()) {
                Some(k) if k == "CREATE" || k == "DROP" || k == "ALTER" => kw.join(" ").to_uppercase(),
                Some(k) => k,
                None => "statement".into(),
            };
            Some(format!("{verb} is not a query"))
        }
    }
}

fn query_write_reason(q: &Query) -> Option<String> {
    fn set_expr(e: &SetExpr) -> Option<String> {
        match e {
            SetExpr::Select(s) if s.into.is_some() => Some("SELECT … INTO writes a table".into()),
            SetExpr::Select(_) | SetExpr::Values(_) | SetExpr::Table(_) => None,
            SetExpr::Query(q) => query_write_reason(q),
            SetExpr::SetOperation { left, right, .. } => set_expr(left).or_else(|| set_expr(right)),
            SetExpr::Insert(_) => Some("INSERT writes to the database".into()),
            SetExpr::Update(_) => Some("UPDATE writes to the database".into()),
            SetExpr::Delete(_) => Some("DELETE writes to the database".into()),
            SetExpr::Merge(_) => Some("MERGE writes to the database".into()),
        }
    }
    if let Some(w) = &q.with {
        for cte in &w.cte_tables {
            if let Some(r) = query_write_reason(&cte.query) {
                return Some(r);
            }
        }
    }
    set_expr(&q.body)
}

/// A name visible in a scope.
#[derive(Debug, Clone)]
enum Source {
    /// A schema table (index) under this name or alias.
    Table(usize),
    /// A CTE, derived table or table function: columns unknown.
    Opaque,
}

#[derive(Debug, Default)]
struct Scope {
    parent: Option<usize>,
    sources: Vec<(String, Source)>,
    ctes: Vec<String>,
    aliases: Vec<String>,
}

struct Resolver<'a> {
    schema: &'a Schema,
    scopes: Vec<Scope>,
    stack: Vec<usize>,
    /// (qualifier, column, scope) for every column reference.
    refs: Vec<(Option<String>, Ident, usize)>,
    unknown_tables: Vec<String>,
}

fn last_ident(n: &ObjectName) -> String {
    n.0.last()
        .and_then(|p| p.as_ident())
        .map(|i| i.value.clone())
        .unwrap_or_else(|| n.to_string())
}

impl Resolver<'_> {
    fn cte_visible(&self, scope: usize, name: &str) -> bool {
        let mut s = Some(scope);
        while let Some(i) = s {
            if self.scopes[i].ctes.iter().any(|c| c.eq_ignore_ascii_case(name)) {
                return true;
            }
            s = self.scopes[i].parent;
        }
        false
    }

    fn add_factor(&mut self, scope: usize, f: &TableFactor) {
        match f {
            TableFactor::Table { name, alias, .. } => {
                let tname = last_ident(name);
                let visible = alias.as_ref().map(|a| a.name.value.clone()).unwrap_or(tname.clone());
                let source = if self.cte_visible(scope, &tname) {
                    Source::Opaque
                } else if let Some(i) = self
                    .schema
                    .tables
                    .iter()
                    .position(|t| t.name.eq_ignore_ascii_case(&tname))
                {
                    Source::Table(i)
                } else {
                    if !self.unknown_tables.iter().any(|u| u.eq_ignore_ascii_case(&tname)) {
                        self.unknown_tables.push(tname.clone());
                    }
                    // Opaque, so its columns are not reported a second time.
                    Source::Opaque
                };
                self.scopes[scope].sources.push((visible, source));
            }
            TableFactor::NestedJoin {
                table_with_joins,
                alias,
            } => {
                self.add_from(scope, table_with_joins);
                if let Some(a) = alias {
                    self.scopes[scope].sources.push((a.name.value.clone(), Source::Opaque));
                }
            }
            other => {
                // Derived tables, table functions …: visible under their alias.
                if let Some(a) = factor_alias(other) {
                    self.scopes[scope].sources.push((a, Source::Opaque));
                }
            }
        }
    }

    fn add_from(&mut self, scope: usize, twj: &TableWithJoins) {
        self.add_factor(scope, &twj.relation);
        for j in &twj.joins {
            self.add_factor(scope, &j.relation);
        }
    }

    fn add_set_expr(&mut self, scope: usize, e: &SetExpr) {
        match e {
            SetExpr::Select(s) => {
                for twj in &s.from {
                    self.add_from(scope, twj);
                }
                for item in &s.projection {
                    match item {
                        SelectItem::ExprWithAlias { alias, .. } => self.scopes[scope].aliases.push(alias.value.clone()),
                        SelectItem::QualifiedWildcard(SelectItemQualifiedWildcardKind::ObjectName(n), _) => {
                            self.refs.push((Some(last_ident(n)), Ident::new("*"), scope));
                        }
                        _ => {}
                    }
                }
            }
            SetExpr::SetOperation { left, right, .. } => {
                self.add_set_expr(scope, left);
                self.add_set_expr(scope, right);
            }
            _ => {}
        }
    }

    /// Does `col` (qualified by `qual`) resolve from `scope` outwards?
    fn resolves(&self, qual: Option<&str>, col: &str, scope: usize) -> bool {
        let has_col = |src: &Source| match src {
            Source::Table(i) => {
                col == "*"
                    || self.schema.tables[*i]
                        .columns
                        .iter()
                        .any(|c| c.name.eq_ignore_ascii_case(col))
            }
            Source::Opaque => true,
        };
        let mut s = Some(scope);
        while let Some(i) = s {
            let sc = &self.scopes[i];
            match qual {
                Some(q) => {
                    // The branches of a UNION/INTERSECT share a scope here, so
                    // an alias may name several tables: any of them will do.
                    let mut named = sc.sources.iter().filter(|(n, _)| n.eq_ignore_ascii_case(q));
                    let mut any_named = false;
                    if named.any(|(_, src)| {
                        any_named = true;
                        has_col(src)
                    }) {
                        return true;
                    }
                    if any_named {
                        return false;
                    }
                }
                None => {
                    if sc.sources.iter().any(|(_, src)| has_col(src))
                        || sc.aliases.iter().any(|a| a.eq_ignore_ascii_case(col))
                    {
                        return true;
                    }
                }
            }
            s = sc.parent;
        }
        false
    }

    fn unresolved(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for (qual, ident, scope) in &self.refs {
            if self.resolves(qual.as_deref(), &ident.value, *scope) {
                continue;
            }
            // SQLite reads an unresolved "x" as the string 'x'.
            if qual.is_none() && ident.quote_style == Some('"') {
                continue;
            }
            if qual.is_none() && is_keyword_value(&ident.value) {
                continue;
            }
            let name = match qual {
                Some(q) => format!("{q}.{}", ident.value),
                None => ident.value.clone(),
            };
            if !out.contains(&name) {
                out.push(name);
            }
        }
        out
    }
}

fn factor_alias(f: &TableFactor) -> Option<String> {
    // Every non-table factor prints as `… AS alias`; the alias field exists on
    // most variants, so read it through Display-free matching where we can.
    match f {
        TableFactor::Derived { alias, .. }
        | TableFactor::TableFunction { alias, .. }
        | TableFactor::Function { alias, .. }
        | TableFactor::UNNEST { alias, .. }
        | TableFactor::JsonTable { alias, .. }
        | TableFactor::Pivot { alias, .. }
        | TableFactor::Unpivot { alias, .. } => alias.as_ref().map(|a| a.name.value.clone()),
        _ => None,
    }
}

/// Bare words SQLite evaluates as values, not columns.
fn is_keyword_value(s: &str) -> bool {
    matches!(
        s.to_ascii_uppercase().as_str(),
        "CURRENT_DATE" | "CURRENT_TIME" | "CURRENT_TIMESTAMP" | "TRUE" | "FALSE" | "NULL"
    )
}

impl Visitor for Resolver<'_> {
    type Break = ();

    fn pre_visit_query(&mut self, q: &Query) -> ControlFlow<()> {
        let id = self.scopes.len();
        self.scopes.push(Scope {
            parent: self.stack.last().copied(),
            ..Scope::default()
        });
        self.stack.push(id);
        if let Some(w) = &q.with {
            self.scopes[id].ctes = w.cte_tables.iter().map(|c| c.alias.name.value.clone()).collect();
        }
        self.add_set_expr(id, &q.body);
        ControlFlow::Continue(())
    }

    fn post_visit_query(&mut self, _q: &Query) -> ControlFlow<()> {
        self.stack.pop();
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
        let Some(&scope) = self.stack.last() else {
            return ControlFlow::Continue(());
        };
        match e {
            Expr::Identifier(i) => self.refs.push((None, i.clone(), scope)),
            Expr::CompoundIdentifier(parts) if parts.len() >= 2 => {
                let col = parts[parts.len() - 1].clone();
                let table = parts[parts.len() - 2].value.clone();
                self.refs.push((Some(table), col, scope));
            }
            _ => {}
        }
        ControlFlow::Continue(())
    }
}
