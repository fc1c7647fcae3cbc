//! Spider's exact-set-match (the current official `evaluation.py`).
//!
//! Both queries are first normalised as upstream does: values are dropped
//! (`rebuild_sql_val`), DISTINCT flags are dropped and columns in a
//! foreign-key class are replaced by the class representative when their
//! table is in the FROM clause (`rebuild_sql_col`). Then every component must
//! match as a multiset and the FROM tables must agree.

use std::collections::{HashMap, HashSet};

use crate::parse::{ColUnit, CondItem, CondUnit, Condition, Select, Sql, TableUnit, ValUnit, Value, OP_IN, OP_LIKE};
use crate::schema::Schema;

/// Foreign-key map of one database (`__t.c__` → class representative).
pub type ForeignKeyMap = HashMap<String, String>;

/// Which components matched (all must for an exact match).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct ComponentMatch {
    pub select: bool,
    pub select_no_agg: bool,
    pub where_: bool,
    pub where_no_op: bool,
    pub group_no_having: bool,
    pub group: bool,
    pub order: bool,
    pub and_or: bool,
    pub iuen: bool,
    pub keywords: bool,
}

impl ComponentMatch {
    fn all(&self) -> bool {
        self.select
            && self.select_no_agg
            && self.where_
            && self.where_no_op
            && self.group_no_having
            && self.group
            && self.order
            && self.and_or
            && self.iuen
            && self.keywords
    }
}

/// Normalise a parsed query for comparison (values, DISTINCT, foreign keys).
pub fn normalize(sql: Sql, schema: &Schema, kmap: &ForeignKeyMap) -> Sql {
    let valid = valid_col_units(&sql.from_tables, schema);
    rebuild_col(&valid, rebuild_val(sql), kmap)
}

/// Exact-set-match of two normalised queries.
pub fn exact_match(pred: &Sql, gold: &Sql) -> bool {
    if !partial_match(pred, gold).all() {
        return false;
    }
    if gold.from_tables.is_empty() {
        return true;
    }
    sorted_tables(&gold.from_tables) == sorted_tables(&pred.from_tables)
}

/// Upstream sorts `(type, value)` tuples: sub-queries (`'sql'`) before tables,
/// tables by name.
fn sorted_tables(units: &[TableUnit]) -> Vec<&TableUnit> {
    let mut out: Vec<&TableUnit> = units.iter().collect();
    out.sort_by(|a, b| match (a, b) {
        (TableUnit::Table(x), TableUnit::Table(y)) => x.cmp(y),
        (TableUnit::Sql(_), TableUnit::Table(_)) => std::cmp::Ordering::Less,
        (TableUnit::Table(_), TableUnit::Sql(_)) => std::cmp::Ordering::Greater,
        (TableUnit::Sql(_), TableUnit::Sql(_)) => std::cmp::Ordering::Equal,
    });
    out
}

/// Every component's verdict (official `eval_partial_match`, F1 == 1).
pub fn partial_match(pred: &Sql, gold: &Sql) -> ComponentMatch {
    let (sel, sel_no_agg) = eval_select(pred, gold);
    let (where_, where_no_op) = eval_where(pred, gold);
    ComponentMatch {
        select: sel,
        select_no_agg: sel_no_agg,
        where_,
        where_no_op,
        group_no_having: eval_group(pred, gold),
        group: eval_having(pred, gold),
        order: eval_order(pred, gold),
        and_or: eval_and_or(pred, gold),
        iuen: eval_iuen(pred, gold),
        keywords: eval_keywords(pred, gold),
    }
}

/// Count how many `pred` items can be matched one-to-one in `gold`.
fn multiset_hits<T: PartialEq>(pred: &[T], gold: &[T]) -> usize {
    let mut remaining: Vec<&T> = gold.iter().collect();
    let mut hits = 0;
    for p in pred {
        if let Some(pos) = remaining.iter().position(|g| *g == p) {
            remaining.remove(pos);
            hits += 1;
        }
    }
    hits
}

/// Official `get_scores(...)` has F1 1 only when totals and hits all agree.
fn full(hits: usize, pred_total: usize, gold_total: usize) -> bool {
    pred_total == gold_total && hits == pred_total
}

fn eval_select(pred: &Sql, gold: &Sql) -> (bool, bool) {
    let (p, g) = (&pred.select.items, &gold.select.items);
    let p_units: Vec<&ValUnit> = p.iter().map(|(_, v)| v).collect();
    let g_units: Vec<&ValUnit> = g.iter().map(|(_, v)| v).collect();
    (
        full(multiset_hits(p, g), p.len(), g.len()),
        full(multiset_hits(&p_units, &g_units), p.len(), g.len()),
    )
}

fn eval_where(pred: &Sql, gold: &Sql) -> (bool, bool) {
    let (p, g) = (pred.where_.units(), gold.where_.units());
    let p_units: Vec<&ValUnit> = p.iter().map(|u| &u.val_unit).collect();
    let g_units: Vec<&ValUnit> = g.iter().map(|u| &u.val_unit).collect();
    (
        full(multiset_hits(&p, &g), p.len(), g.len()),
        full(multiset_hits(&p_units, &g_units), p.len(), g.len()),
    )
}

/// GROUP BY columns compared by column name only (`"__t.c__"` → `"c__"`).
fn eval_group(pred: &Sql, gold: &Sql) -> bool {
    let strip = |sql: &Sql| -> Vec<String> {
        sql.group_by
            .iter()
            .map(|c| {
                c.col
                    .split('.')
                    .nth(1)
                    .map(str::to_string)
                    .unwrap_or_else(|| c.col.clone())
            })
            .collect()
    };
    let (p, g) = (strip(pred), strip(gold));
    full(multiset_hits(&p, &g), p.len(), g.len())
}

fn eval_having(pred: &Sql, gold: &Sql) -> bool {
    let pt = usize::from(!pred.group_by.is_empty());
    let gt = usize::from(!gold.group_by.is_empty());
    let cols = |sql: &Sql| sql.group_by.iter().map(|c| c.col.clone()).collect::<Vec<_>>();
    let hit = pt == 1 && gt == 1 && cols(pred) == cols(gold) && pred.having == gold.having;
    full(usize::from(hit), pt, gt)
}

fn eval_order(pred: &Sql, gold: &Sql) -> bool {
    let pt = usize::from(pred.order_by.is_some());
    let gt = usize::from(gold.order_by.is_some());
    let hit = gold.order_by.is_some() && pred.order_by == gold.order_by && pred.limit.is_some() == gold.limit.is_some();
    full(usize::from(hit), pt, gt)
}

fn eval_and_or(pred: &Sql, gold: &Sql) -> bool {
    let p: HashSet<&str> = pred.where_.conjunctions().into_iter().collect();
    let g: HashSet<&str> = gold.where_.conjunctions().into_iter().collect();
    p == g
}

fn eval_iuen(pred: &Sql, gold: &Sql) -> bool {
    let (mut pt, mut gt, mut hits) = (0, 0, 0);
    for (p, g) in [
        (&pred.intersect, &gold.intersect),
        (&pred.except, &gold.except),
        (&pred.union, &gold.union),
    ] {
        pt += usize::from(p.is_some());
        gt += usize::from(g.is_some());
        if let (Some(p), Some(g)) = (p, g) {
            hits += usize::from(exact_match(p, g));
        }
    }
    full(hits, pt, gt)
}

fn keywords(sql: &Sql) -> HashSet<&'static str> {
    let mut res = HashSet::new();
    let flags = [
        (!sql.where_.is_empty(), "where"),
        (!sql.group_by.is_empty(), "group"),
        (!sql.having.is_empty(), "having"),
        (sql.limit.is_some(), "limit"),
        (sql.except.is_some(), "except"),
        (sql.union.is_some(), "union"),
        (sql.intersect.is_some(), "intersect"),
    ];
    res.extend(flags.iter().filter(|(on, _)| *on).map(|(_, k)| *k));
    if let Some(order) = &sql.order_by {
        res.insert(order.direction);
        res.insert("order");
    }
    let mut conj = sql.from_conds.conjunctions();
    conj.extend(sql.where_.conjunctions());
    conj.extend(sql.having.conjunctions());
    if conj.contains(&"or") {
        res.insert("or");
    }
    let mut units: Vec<&CondUnit> = sql.from_conds.units();
    units.extend(sql.where_.units());
    units.extend(sql.having.units());
    if units.iter().any(|u| u.not) {
        res.insert("not");
    }
    if units.iter().any(|u| u.op == OP_IN) {
        res.insert("in");
    }
    if units.iter().any(|u| u.op == OP_LIKE) {
        res.insert("like");
    }
    res
}

fn eval_keywords(pred: &Sql, gold: &Sql) -> bool {
    let (p, g) = (keywords(pred), keywords(gold));
    full(p.iter().filter(|k| g.contains(*k)).count(), p.len(), g.len())
}

// ---- normalisation (`rebuild_sql_val`, `rebuild_sql_col`) ----

/// Drop literal values and column right-hand sides; recurse into sub-queries
/// in conditions and set operations (not into FROM sub-queries, as upstream).
fn rebuild_val(mut sql: Sql) -> Sql {
    let cond = |items: Vec<CondItem>| -> Vec<CondItem> {
        items
            .into_iter()
            .map(|item| match item {
                CondItem::Unit(mut u) => {
                    u.val1 = strip_value(u.val1);
                    u.val2 = strip_value(u.val2);
                    CondItem::Unit(u)
                }
                other => other,
            })
            .collect()
    };
    sql.from_conds = cond(sql.from_conds);
    sql.having = cond(sql.having);
    sql.where_ = cond(sql.where_);
    sql.intersect = sql.intersect.map(|s| Box::new(rebuild_val(*s)));
    sql.except = sql.except.map(|s| Box::new(rebuild_val(*s)));
    sql.union = sql.union.map(|s| Box::new(rebuild_val(*s)));
    sql
}

fn strip_value(v: Value) -> Value {
    match v {
        Value::Sql(s) => Value::Sql(Box::new(rebuild_val(*s))),
        _ => Value::None,
    }
}

/// Columns of the tables named in FROM, as official ids.
fn valid_col_units(tables: &[TableUnit], schema: &Schema) -> HashSet<String> {
    let prefixes: HashSet<&str> = tables
        .iter()
        .filter_map(|t| match t {
            TableUnit::Table(id) => id.get(..id.len().saturating_sub(2)),
            TableUnit::Sql(_) => None,
        })
        .collect();
    schema
        .ids()
        .filter(|id| id.find('.').is_some_and(|dot| prefixes.contains(&id[..dot])))
        .map(str::to_string)
        .collect()
}

fn rebuild_col_unit(valid: &HashSet<String>, mut unit: ColUnit, kmap: &ForeignKeyMap) -> ColUnit {
    if valid.contains(&unit.col) {
        if let Some(root) = kmap.get(&unit.col) {
            unit.col = root.clone();
        }
    }
    unit.distinct = None;
    unit
}

fn rebuild_val_unit(valid: &HashSet<String>, mut v: ValUnit, kmap: &ForeignKeyMap) -> ValUnit {
    v.col1 = rebuild_col_unit(valid, v.col1, kmap);
    v.col2 = v.col2.map(|c| rebuild_col_unit(valid, c, kmap));
    v
}

/// Condition units get their left side rebuilt; right-hand sub-queries are
/// left as they are (upstream does not recurse there).
fn rebuild_cond_col(valid: &HashSet<String>, items: Vec<CondItem>, kmap: &ForeignKeyMap) -> Vec<CondItem> {
    items
        .into_iter()
        .map(|item| match item {
            CondItem::Unit(mut u) => {
                u.val_unit = rebuild_val_unit(valid, u.val_unit, kmap);
                CondItem::Unit(u)
            }
            other => other,
        })
        .collect()
}

fn rebuild_col(valid: &HashSet<String>, mut sql: Sql, kmap: &ForeignKeyMap) -> Sql {
    sql.select = Select {
        distinct: None,
        items: sql
            .select
            .items
            .into_iter()
            .map(|(agg, v)| (agg, rebuild_val_unit(valid, v, kmap)))
            .collect(),
    };
    sql.from_conds = rebuild_cond_col(valid, sql.from_conds, kmap);
    sql.where_ = rebuild_cond_col(valid, sql.where_, kmap);
    sql.group_by = sql
        .group_by
        .into_iter()
        .map(|c| rebuild_col_unit(valid, c, kmap))
        .collect();
    if let Some(order) = sql.order_by.as_mut() {
        order.items = std::mem::take(&mut order.items)
            .into_iter()
            .map(|v| rebuild_val_unit(valid, v, kmap))
            .collect();
    }
    sql.having = rebuild_cond_col(valid, sql.having, kmap);
    sql.intersect = sql.intersect.map(|s| Box::new(rebuild_col(valid, *s, kmap)));
    sql.except = sql.except.map(|s| Box::new(rebuild_col(valid, *s, kmap)));
    sql.union = sql.union.map(|s| Box::new(rebuild_col(valid, *s, kmap)));
    sql
}
