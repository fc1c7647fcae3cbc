//! What names mean inside a query: the schema's tables and columns, and per
//! SELECT the FROM items in reach, so that a column reference can be checked
//! the moment it is written.
//!
//! SQL names its columns before its tables (`SELECT T1.name FROM singer AS
//! T1`), so references in the select list wait in [`Scope::pending`] until the
//! FROM clause binds them; until then they are held only to what some
//! completion could still bind, so a prefix never commits to a dead end.

use std::collections::HashSet;

use crate::schema::Schema;

/// The schema in lower case, for case-insensitive lookups.
#[derive(Debug, Clone, Default)]
pub struct SchemaIndex {
    pub tables: Vec<TableNames>,
    /// Every column name of every table.
    pub columns: HashSet<String>,
}

#[derive(Debug, Clone)]
pub struct TableNames {
    pub name: String,
    pub columns: Vec<String>,
}

impl SchemaIndex {
    pub fn new(schema: &Schema) -> Self {
        let tables: Vec<TableNames> = schema
            .tables
            .iter()
            .map(|t| TableNames {
                name: t.name.to_ascii_lowercase(),
                columns: t.columns.iter().map(|c| c.name.to_ascii_lowercase()).collect(),
            })
            .collect();
        let columns = tables.iter().flat_map(|t| t.columns.iter().cloned()).collect();
        SchemaIndex { tables, columns }
    }

    pub fn table(&self, name: &str) -> Option<usize> {
        self.tables.iter().position(|t| t.name == name)
    }
}

/// A column reference, lower-cased; `col` is `*` for `q.*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColRef {
    pub qual: Option<String>,
    pub col: String,
}

/// What a FROM item offers.
#[derive(Debug, Clone)]
pub enum Columns {
    Table(usize),
    /// A sub-query's output names.
    Derived(Vec<String>),
}

/// A table or sub-query in FROM, under the name it is referred to by.
#[derive(Debug, Clone)]
pub struct Item {
    pub exposed: String,
    pub columns: Columns,
}

/// Where a SELECT is in its own clauses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The select list: references wait for FROM.
    Select,
    /// Inside FROM: items are being added.
    From,
    /// FROM is done: references resolve at once.
    Bound,
}

/// One SELECT's names.
#[derive(Debug, Clone)]
pub struct Scope {
    pub phase: Phase,
    pub items: Vec<Item>,
    /// `AS` names of the select list (usable in WHERE/GROUP BY/HAVING/ORDER BY).
    pub outputs: Vec<String>,
    /// Select-list references, checked when FROM is done.
    pub pending: Vec<ColRef>,
}

impl Scope {
    pub fn new() -> Self {
        Scope {
            phase: Phase::Select,
            items: Vec::new(),
            outputs: Vec::new(),
            pending: Vec::new(),
        }
    }
}

impl Default for Scope {
    fn default() -> Self {
        Self::new()
    }
}

impl Item {
    pub fn columns<'a>(&'a self, schema: &'a SchemaIndex) -> &'a [String] {
        match &self.columns {
            Columns::Table(t) => &schema.tables[*t].columns,
            Columns::Derived(names) => names,
        }
    }

    pub fn has(&self, schema: &SchemaIndex, col: &str) -> bool {
        col == "*" || self.columns(schema).iter().any(|c| c == col)
    }
}

/// How a reference fares against the scopes in reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    Found,
    /// In more than one FROM item of the nearest scope that has it.
    Ambiguous,
    Missing,
}

/// Resolves `r` from the innermost scope (the last) outwards, as SQLite does:
/// a bare column in exactly one item of the nearest scope that has it, or an
/// output name of the innermost scope; a qualified one by its item's name.
/// An enclosing scope still in its select list or FROM (a sub-query written
/// before its outer FROM is done) accepts any column the schema has.
pub fn resolve(schema: &SchemaIndex, scopes: &[Scope], r: &ColRef) -> Resolution {
    for (depth, s) in scopes.iter().rev().enumerate() {
        if depth > 0 && s.phase != Phase::Bound {
            return match schema.columns.contains(&r.col) || r.col == "*" {
                true => Resolution::Found,
                false => Resolution::Missing,
            };
        }
        match &r.qual {
            Some(q) => {
                if let Some(item) = s.items.iter().find(|i| &i.exposed == q) {
                    return match item.has(schema, &r.col) {
                        true => Resolution::Found,
                        false => Resolution::Missing,
                    };
                }
            }
            None => {
                match s.items.iter().filter(|i| i.has(schema, &r.col)).count() {
                    0 => {}
                    1 => return Resolution::Found,
                    _ => return Resolution::Ambiguous,
                }
                if depth == 0 && s.outputs.contains(&r.col) {
                    return Resolution::Found;
                }
            }
        }
    }
    Resolution::Missing
}

/// Can a select-list reference still be bound by some FROM clause that
/// extends the current one? Checked when the reference is written and again
/// as each FROM item is added.
pub fn feasible(schema: &SchemaIndex, scope: &Scope, r: &ColRef) -> bool {
    match &r.qual {
        None => {
            let holders = scope.items.iter().filter(|i| i.has(schema, &r.col)).count();
            // A second holder makes it ambiguous for good; no holder yet is
            // fine while another table can still be added.
            holders == 1 || (holders == 0 && schema.columns.contains(&r.col))
        }
        Some(q) => match scope.items.iter().find(|i| &i.exposed == q) {
            Some(item) => scope
                .pending
                .iter()
                .chain(std::iter::once(r))
                .filter(|p| p.qual.as_ref() == Some(q))
                .all(|p| item.has(schema, &p.col)),
            // Unbound yet: the table `q` names, or under an alias some
            // table, must hold every column used with `q`.
            None => {
                let cols: Vec<&str> = scope
                    .pending
                    .iter()
                    .chain(std::iter::once(r))
                    .filter(|p| p.qual.as_ref() == Some(q) && p.col != "*")
                    .map(|p| p.col.as_str())
                    .collect();
                schema
                    .tables
                    .iter()
                    .any(|t| cols.iter().all(|c| t.columns.iter().any(|x| x == c)))
            }
        },
    }
}

/// Whether every pending reference of `scope` can still be bound (after an
/// item was added).
pub fn pending_feasible(schema: &SchemaIndex, scope: &Scope) -> bool {
    scope.pending.iter().all(|r| feasible(schema, scope, r))
}
