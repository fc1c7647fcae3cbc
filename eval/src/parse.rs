//! The official Spider SQL → component parser (`process_sql.get_sql`).
//!
//! The structure mirrors upstream's nested tuples so the comparison rules of
//! the official scorer apply unchanged. Columns are identified by the official
//! strings (`__table.column__`, `__all__`), tables by `__table__`. Parsing
//! follows upstream's greedy, assertion-driven walk: whatever it rejects (an
//! unknown column, a select alias, `IS NOT NULL`, ...) is an error here too,
//! and whatever it accepts is accepted, so exact-match figures agree.

use std::collections::HashMap;

use crate::error::{Error, Result};
use crate::schema::Schema;
use crate::tokenize::tokenize;

const CLAUSE_KEYWORDS: [&str; 9] = [
    "select",
    "from",
    "where",
    "group",
    "order",
    "limit",
    "intersect",
    "union",
    "except",
];
const JOIN_KEYWORDS: [&str; 3] = ["join", "on", "as"];
/// Index = official `op_id`.
pub const WHERE_OPS: [&str; 12] = [
    "not", "between", "=", ">", "<", ">=", "<=", "!=", "in", "like", "is", "exists",
];
/// Index = official `unit_op`.
pub const UNIT_OPS: [&str; 5] = ["none", "-", "+", "*", "/"];
/// Index = official `agg_id`.
pub const AGG_OPS: [&str; 6] = ["none", "max", "min", "count", "sum", "avg"];
pub const OP_BETWEEN: usize = 1;
pub const OP_IN: usize = 8;
pub const OP_LIKE: usize = 9;

/// `(agg_id, col_id, isDistinct)`; `distinct` becomes `None` once the scorer
/// normalises it away.
#[derive(Debug, Clone, PartialEq)]
pub struct ColUnit {
    pub agg: usize,
    pub col: String,
    pub distinct: Option<bool>,
}

/// `(unit_op, col_unit1, col_unit2)`.
#[derive(Debug, Clone, PartialEq)]
pub struct ValUnit {
    pub op: usize,
    pub col1: ColUnit,
    pub col2: Option<ColUnit>,
}

/// A condition's right-hand side.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Absent (`None` upstream, also what values become when ignored).
    None,
    Number(f64),
    /// A string literal, with its (double) quotes.
    Str(String),
    Col(ColUnit),
    Sql(Box<Sql>),
}

/// `(not_op, op_id, val_unit, val1, val2)`.
#[derive(Debug, Clone, PartialEq)]
pub struct CondUnit {
    pub not: bool,
    pub op: usize,
    pub val_unit: ValUnit,
    pub val1: Value,
    pub val2: Value,
}

/// One element of upstream's flat condition list `[cond, 'and', cond, ...]`.
#[derive(Debug, Clone, PartialEq)]
pub enum CondItem {
    Unit(CondUnit),
    And,
    Or,
}

/// Helpers reading a condition list the way upstream slices it.
pub trait Condition {
    /// `conds[::2]`: the condition units.
    fn units(&self) -> Vec<&CondUnit>;
    /// `conds[1::2]`: the conjunctions, as `"and"` / `"or"`.
    fn conjunctions(&self) -> Vec<&'static str>;
}

impl Condition for [CondItem] {
    fn units(&self) -> Vec<&CondUnit> {
        self.iter()
            .step_by(2)
            .filter_map(|c| match c {
                CondItem::Unit(u) => Some(u),
                _ => None,
            })
            .collect()
    }
    fn conjunctions(&self) -> Vec<&'static str> {
        self.iter()
            .skip(1)
            .step_by(2)
            .filter_map(|c| match c {
                CondItem::And => Some("and"),
                CondItem::Or => Some("or"),
                CondItem::Unit(_) => None,
            })
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum TableUnit {
    /// `__table__`
    Table(String),
    Sql(Box<Sql>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Select {
    pub distinct: Option<bool>,
    /// `(agg_id, val_unit)` per selected expression.
    pub items: Vec<(usize, ValUnit)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OrderBy {
    /// `"asc"` or `"desc"` (the last one given wins, as upstream).
    pub direction: &'static str,
    pub items: Vec<ValUnit>,
}

/// The parsed query (`sql` dict upstream).
#[derive(Debug, Clone, PartialEq)]
pub struct Sql {
    pub select: Select,
    pub from_tables: Vec<TableUnit>,
    pub from_conds: Vec<CondItem>,
    pub where_: Vec<CondItem>,
    pub group_by: Vec<ColUnit>,
    pub having: Vec<CondItem>,
    pub order_by: Option<OrderBy>,
    pub limit: Option<i64>,
    pub intersect: Option<Box<Sql>>,
    pub except: Option<Box<Sql>>,
    pub union: Option<Box<Sql>>,
}

impl Sql {
    /// What the scorer compares against when a prediction does not parse.
    pub fn empty() -> Self {
        Sql {
            select: Select {
                distinct: Some(false),
                items: vec![],
            },
            from_tables: vec![],
            from_conds: vec![],
            where_: vec![],
            group_by: vec![],
            having: vec![],
            order_by: None,
            limit: None,
            intersect: None,
            except: None,
            union: None,
        }
    }
}

/// Parse `query` against `schema` exactly as the official scorer does.
pub fn parse_sql(schema: &Schema, query: &str) -> Result<Sql> {
    let toks = tokenize(query)?;
    let aliases = tables_with_alias(schema, &toks)?;
    let parser = Parser {
        toks: &toks,
        schema,
        aliases,
    };
    Ok(parser.sql(0)?.1)
}

fn err(msg: impl Into<String>) -> Error {
    Error::Parse(msg.into())
}

/// `alias -> table` from every `x as y`, plus each table to itself.
fn tables_with_alias(schema: &Schema, toks: &[String]) -> Result<HashMap<String, String>> {
    let mut aliases = HashMap::new();
    for (i, t) in toks.iter().enumerate() {
        if t == "as" {
            let next = toks.get(i + 1).ok_or_else(|| err("`as` at the end"))?;
            // upstream's toks[idx-1] wraps around for idx == 0
            let prev = if i == 0 { &toks[toks.len() - 1] } else { &toks[i - 1] };
            aliases.insert(next.clone(), prev.clone());
        }
    }
    for table in schema.tables.keys() {
        if aliases.contains_key(table) {
            return Err(err(format!("alias {table} has the same name as a table")));
        }
        aliases.insert(table.clone(), table.clone());
    }
    Ok(aliases)
}

struct Parser<'a> {
    toks: &'a [String],
    schema: &'a Schema,
    aliases: HashMap<String, String>,
}

fn is_clause(t: &str) -> bool {
    CLAUSE_KEYWORDS.contains(&t)
}

fn is_join(t: &str) -> bool {
    JOIN_KEYWORDS.contains(&t)
}

impl<'a> Parser<'a> {
    fn tok(&self, idx: usize) -> Result<&'a str> {
        self.toks
            .get(idx)
            .map(String::as_str)
            .ok_or_else(|| err("unexpected end of query"))
    }

    /// `toks[idx] == t` with idx possibly past the end (false then).
    fn at(&self, idx: usize, t: &str) -> bool {
        self.toks.get(idx).is_some_and(|x| x == t)
    }

    fn expect(&self, idx: usize, t: &str) -> Result<()> {
        if self.tok(idx)? == t {
            Ok(())
        } else {
            Err(err(format!("expected `{t}` at token {idx}")))
        }
    }

    fn alias(&self, name: &str) -> Result<&str> {
        self.aliases
            .get(name)
            .map(String::as_str)
            .ok_or_else(|| err(format!("unknown table or alias `{name}`")))
    }

    fn col(&self, toks: &[String], idx: usize, default_tables: &[String]) -> Result<(usize, String)> {
        let tok = toks.get(idx).ok_or_else(|| err("unexpected end of query"))?;
        if tok == "*" {
            return Ok((idx + 1, self.schema.id("*").unwrap_or("__all__").to_string()));
        }
        if tok.contains('.') {
            let parts: Vec<&str> = tok.split('.').collect();
            let [alias, col] = parts[..] else {
                return Err(err(format!("bad column `{tok}`")));
            };
            let key = format!("{}.{col}", self.alias(alias)?);
            let id = self
                .schema
                .id(&key)
                .ok_or_else(|| err(format!("unknown column `{key}`")))?;
            return Ok((idx + 1, id.to_string()));
        }
        if default_tables.is_empty() {
            return Err(err(format!("column `{tok}` without tables")));
        }
        for alias in default_tables {
            let table = self.alias(alias)?;
            let cols = self
                .schema
                .tables
                .get(table)
                .ok_or_else(|| err(format!("unknown table `{table}`")))?;
            if cols.iter().any(|c| c == tok) {
                let key = format!("{table}.{tok}");
                let id = self
                    .schema
                    .id(&key)
                    .ok_or_else(|| err(format!("unknown column `{key}`")))?;
                return Ok((idx + 1, id.to_string()));
            }
        }
        Err(err(format!("unknown column `{tok}`")))
    }

    fn col_unit(&self, toks: &[String], start: usize, default_tables: &[String]) -> Result<(usize, ColUnit)> {
        let get = |i: usize| {
            toks.get(i)
                .map(String::as_str)
                .ok_or_else(|| err("unexpected end of query"))
        };
        let mut idx = start;
        let mut block = false;
        let mut distinct = false;
        if get(idx)? == "(" {
            block = true;
            idx += 1;
        }
        if let Some(agg) = AGG_OPS.iter().position(|a| *a == get(idx).unwrap_or("")) {
            idx += 1;
            if get(idx)? != "(" {
                return Err(err("expected `(` after aggregate"));
            }
            idx += 1;
            if get(idx)? == "distinct" {
                idx += 1;
                distinct = true;
            }
            let (next, col) = self.col(toks, idx, default_tables)?;
            idx = next;
            if get(idx)? != ")" {
                return Err(err("expected `)` after aggregate"));
            }
            // Upstream returns here without consuming the block's `)`.
            return Ok((
                idx + 1,
                ColUnit {
                    agg,
                    col,
                    distinct: Some(distinct),
                },
            ));
        }
        if get(idx)? == "distinct" {
            idx += 1;
            distinct = true;
        }
        let (next, col) = self.col(toks, idx, default_tables)?;
        idx = next;
        if block {
            if get(idx)? != ")" {
                return Err(err("expected `)`"));
            }
            idx += 1;
        }
        Ok((
            idx,
            ColUnit {
                agg: 0,
                col,
                distinct: Some(distinct),
            },
        ))
    }

    fn val_unit(&self, start: usize, default_tables: &[String]) -> Result<(usize, ValUnit)> {
        let mut idx = start;
        let mut block = false;
        if self.tok(idx)? == "(" {
            block = true;
            idx += 1;
        }
        let (next, col1) = self.col_unit(self.toks, idx, default_tables)?;
        idx = next;
        let mut op = 0;
        let mut col2 = None;
        if let Some(o) = self.toks.get(idx).and_then(|t| UNIT_OPS.iter().position(|u| u == t)) {
            op = o;
            idx += 1;
            let (next, c2) = self.col_unit(self.toks, idx, default_tables)?;
            idx = next;
            col2 = Some(c2);
        }
        if block {
            self.expect(idx, ")")?;
            idx += 1;
        }
        Ok((idx, ValUnit { op, col1, col2 }))
    }

    fn table_unit(&self, idx: usize) -> Result<(usize, String, String)> {
        let key = self.alias(self.tok(idx)?)?.to_string();
        let next = if self.at(idx + 1, "as") { idx + 3 } else { idx + 1 };
        let id = self
            .schema
            .id(&key)
            .ok_or_else(|| err(format!("unknown table `{key}`")))?;
        Ok((next, id.to_string(), key))
    }

    fn value(&self, start: usize, default_tables: &[String]) -> Result<(usize, Value)> {
        let mut idx = start;
        let mut block = false;
        if self.tok(idx)? == "(" {
            block = true;
            idx += 1;
        }
        let tok = self.tok(idx)?;
        let val = if tok == "select" {
            let (next, sql) = self.sql(idx)?;
            idx = next;
            Value::Sql(Box::new(sql))
        } else if tok.contains('"') {
            idx += 1;
            Value::Str(tok.to_string())
        } else if let Ok(number) = tok.parse::<f64>() {
            idx += 1;
            Value::Number(number)
        } else {
            // A column: upstream re-parses the slice from `start` (so a
            // parenthesised column fails) and then jumps to the slice end.
            let mut end = idx;
            while let Some(t) = self.toks.get(end) {
                if t == "," || t == ")" || t == "and" || is_clause(t) || is_join(t) {
                    break;
                }
                end += 1;
            }
            let (_, unit) = self.col_unit(&self.toks[start..end], 0, default_tables)?;
            idx = end;
            Value::Col(unit)
        };
        if block {
            self.expect(idx, ")")?;
            idx += 1;
        }
        Ok((idx, val))
    }

    fn condition(&self, start: usize, default_tables: &[String]) -> Result<(usize, Vec<CondItem>)> {
        let mut idx = start;
        let mut conds = Vec::new();
        while idx < self.toks.len() {
            let (next, val_unit) = self.val_unit(idx, default_tables)?;
            idx = next;
            let mut not = false;
            if self.tok(idx)? == "not" {
                not = true;
                idx += 1;
            }
            let op_tok = self.tok(idx)?;
            let op = WHERE_OPS
                .iter()
                .position(|o| *o == op_tok)
                .ok_or_else(|| err(format!("bad condition operator `{op_tok}`")))?;
            idx += 1;
            let (val1, val2);
            if op == OP_BETWEEN {
                let (next, v1) = self.value(idx, default_tables)?;
                self.expect(next, "and")?;
                let (next, v2) = self.value(next + 1, default_tables)?;
                idx = next;
                (val1, val2) = (v1, v2);
            } else {
                let (next, v1) = self.value(idx, default_tables)?;
                idx = next;
                (val1, val2) = (v1, Value::None);
            }
            conds.push(CondItem::Unit(CondUnit {
                not,
                op,
                val_unit,
                val1,
                val2,
            }));
            if let Some(t) = self.toks.get(idx) {
                if is_clause(t) || t == ")" || t == ";" || is_join(t) {
                    break;
                }
                if t == "and" || t == "or" {
                    conds.push(if t == "and" { CondItem::And } else { CondItem::Or });
                    idx += 1;
                }
            }
        }
        Ok((idx, conds))
    }

    fn select(&self, start: usize, default_tables: &[String]) -> Result<(usize, Select)> {
        let mut idx = start;
        self.expect(idx, "select")?;
        idx += 1;
        let mut distinct = false;
        if self.at(idx, "distinct") {
            idx += 1;
            distinct = true;
        }
        let mut items = Vec::new();
        while let Some(t) = self.toks.get(idx) {
            if is_clause(t) {
                break;
            }
            let mut agg = 0;
            if let Some(a) = AGG_OPS.iter().position(|a| a == t) {
                agg = a;
                idx += 1;
            }
            let (next, val_unit) = self.val_unit(idx, default_tables)?;
            idx = next;
            items.push((agg, val_unit));
            if self.at(idx, ",") {
                idx += 1;
            }
        }
        Ok((
            idx,
            Select {
                distinct: Some(distinct),
                items,
            },
        ))
    }

    /// Returns (next idx, table units, join conditions, default tables).
    #[allow(clippy::type_complexity)]
    fn from(&self, start: usize) -> Result<(usize, Vec<TableUnit>, Vec<CondItem>, Vec<String>)> {
        let from_pos = self.toks[start.min(self.toks.len())..]
            .iter()
            .position(|t| t == "from")
            .ok_or_else(|| err("`from` not found"))?;
        let mut idx = start + from_pos + 1;
        let mut default_tables = Vec::new();
        let mut units = Vec::new();
        let mut conds = Vec::new();
        while idx < self.toks.len() {
            let mut block = false;
            if self.tok(idx)? == "(" {
                block = true;
                idx += 1;
            }
            if self.tok(idx)? == "select" {
                let (next, sql) = self.sql(idx)?;
                idx = next;
                units.push(TableUnit::Sql(Box::new(sql)));
            } else {
                if self.at(idx, "join") {
                    idx += 1;
                }
                let (next, id, name) = self.table_unit(idx)?;
                idx = next;
                units.push(TableUnit::Table(id));
                default_tables.push(name);
            }
            if self.at(idx, "on") {
                idx += 1;
                let (next, these) = self.condition(idx, &default_tables)?;
                idx = next;
                if !conds.is_empty() {
                    conds.push(CondItem::And);
                }
                conds.extend(these);
            }
            if block {
                self.expect(idx, ")")?;
                idx += 1;
            }
            if let Some(t) = self.toks.get(idx) {
                if is_clause(t) || t == ")" || t == ";" {
                    break;
                }
            }
        }
        Ok((idx, units, conds, default_tables))
    }

    fn group_by(&self, start: usize, default_tables: &[String]) -> Result<(usize, Vec<ColUnit>)> {
        let mut idx = start;
        let mut units = Vec::new();
        if !self.at(idx, "group") {
            return Ok((idx, units));
        }
        self.expect(idx + 1, "by")?;
        idx += 2;
        while let Some(t) = self.toks.get(idx) {
            if is_clause(t) || t == ")" || t == ";" {
                break;
            }
            let (next, unit) = self.col_unit(self.toks, idx, default_tables)?;
            idx = next;
            units.push(unit);
            if self.at(idx, ",") {
                idx += 1;
            } else {
                break;
            }
        }
        Ok((idx, units))
    }

    fn order_by(&self, start: usize, default_tables: &[String]) -> Result<(usize, Option<OrderBy>)> {
        let mut idx = start;
        if !self.at(idx, "order") {
            return Ok((idx, None));
        }
        self.expect(idx + 1, "by")?;
        idx += 2;
        let mut direction = "asc";
        let mut items = Vec::new();
        while let Some(t) = self.toks.get(idx) {
            if is_clause(t) || t == ")" || t == ";" {
                break;
            }
            let (next, unit) = self.val_unit(idx, default_tables)?;
            idx = next;
            items.push(unit);
            match self.toks.get(idx).map(String::as_str) {
                Some("asc") => {
                    direction = "asc";
                    idx += 1;
                }
                Some("desc") => {
                    direction = "desc";
                    idx += 1;
                }
                _ => {}
            }
            if self.at(idx, ",") {
                idx += 1;
            } else {
                break;
            }
        }
        Ok((idx, Some(OrderBy { direction, items })))
    }

    fn limit(&self, idx: usize) -> Result<(usize, Option<i64>)> {
        if !self.at(idx, "limit") {
            return Ok((idx, None));
        }
        let t = self.tok(idx + 1)?;
        let n = t.parse::<i64>().map_err(|_| err(format!("bad LIMIT `{t}`")))?;
        Ok((idx + 2, Some(n)))
    }

    fn skip_semicolons(&self, mut idx: usize) -> usize {
        while self.at(idx, ";") {
            idx += 1;
        }
        idx
    }

    fn sql(&self, start: usize) -> Result<(usize, Sql)> {
        let mut idx = start;
        let mut block = false;
        if self.tok(idx)? == "(" {
            block = true;
            idx += 1;
        }
        let (from_end, from_tables, from_conds, default_tables) = self.from(start)?;
        let (_, select) = self.select(idx, &default_tables)?;
        idx = from_end;
        let (idx, where_) = self.where_or_having(idx, "where", &default_tables)?;
        let (idx, group_by) = self.group_by(idx, &default_tables)?;
        let (idx, having) = self.where_or_having(idx, "having", &default_tables)?;
        let (idx, order_by) = self.order_by(idx, &default_tables)?;
        let (idx, limit) = self.limit(idx)?;
        let mut idx = self.skip_semicolons(idx);
        if block {
            self.expect(idx, ")")?;
            idx += 1;
        }
        idx = self.skip_semicolons(idx);
        let mut sql = Sql {
            select,
            from_tables,
            from_conds,
            where_,
            group_by,
            having,
            order_by,
            limit,
            intersect: None,
            except: None,
            union: None,
        };
        if let Some(op) = self
            .toks
            .get(idx)
            .map(String::as_str)
            .filter(|t| matches!(*t, "intersect" | "union" | "except"))
        {
            let (next, nested) = self.sql(idx + 1)?;
            idx = next;
            let nested = Some(Box::new(nested));
            match op {
                "intersect" => sql.intersect = nested,
                "union" => sql.union = nested,
                _ => sql.except = nested,
            }
        }
        Ok((idx, sql))
    }

    fn where_or_having(&self, idx: usize, keyword: &str, default_tables: &[String]) -> Result<(usize, Vec<CondItem>)> {
        if !self.at(idx, keyword) {
            return Ok((idx, vec![]));
        }
        self.condition(idx + 1, default_tables)
    }
}
