//! The official Spider hardness classes, computed on the gold query.

use serde::{Deserialize, Serialize};

use crate::parse::{CondItem, CondUnit, Condition, Sql, Value, OP_LIKE};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Hardness {
    Easy,
    Medium,
    Hard,
    Extra,
}

impl Hardness {
    pub const ALL: [Hardness; 4] = [Hardness::Easy, Hardness::Medium, Hardness::Hard, Hardness::Extra];

    pub fn as_str(self) -> &'static str {
        match self {
            Hardness::Easy => "easy",
            Hardness::Medium => "medium",
            Hardness::Hard => "hard",
            Hardness::Extra => "extra",
        }
    }

    /// Classify a parsed (gold) query with the official thresholds.
    pub fn of(sql: &Sql) -> Hardness {
        let c1 = count_component1(sql);
        let c2 = count_component2(sql);
        let others = count_others(sql);
        if c1 <= 1 && others == 0 && c2 == 0 {
            Hardness::Easy
        } else if (others <= 2 && c1 <= 1 && c2 == 0) || (c1 <= 2 && others < 2 && c2 == 0) {
            Hardness::Medium
        } else if (others > 2 && c1 <= 2 && c2 == 0)
            || (2 < c1 && c1 <= 3 && others <= 2 && c2 == 0)
            || (c1 <= 1 && others == 0 && c2 <= 1)
        {
            Hardness::Hard
        } else {
            Hardness::Extra
        }
    }
}

/// Condition units of FROM ... ON, WHERE and HAVING together.
fn all_cond_units(sql: &Sql) -> Vec<&CondUnit> {
    let mut out = sql.from_conds.units();
    out.extend(sql.where_.units());
    out.extend(sql.having.units());
    out
}

fn all_conjunctions(sql: &Sql) -> Vec<&'static str> {
    let mut out = sql.from_conds.conjunctions();
    out.extend(sql.where_.conjunctions());
    out.extend(sql.having.conjunctions());
    out
}

/// WHERE, GROUP BY, ORDER BY, LIMIT, each extra joined table, each OR, each LIKE.
fn count_component1(sql: &Sql) -> usize {
    let mut count = [
        !sql.where_.is_empty(),
        !sql.group_by.is_empty(),
        sql.order_by.is_some(),
        sql.limit.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    count += sql.from_tables.len().saturating_sub(1);
    count += all_conjunctions(sql).iter().filter(|c| **c == "or").count();
    count += all_cond_units(sql).iter().filter(|u| u.op == OP_LIKE).count();
    count
}

/// Nested queries: sub-queries in conditions plus INTERSECT/EXCEPT/UNION.
pub fn nested_sqls(sql: &Sql) -> Vec<&Sql> {
    let mut nested = Vec::new();
    for unit in all_cond_units(sql) {
        for v in [&unit.val1, &unit.val2] {
            if let Value::Sql(s) = v {
                nested.push(s.as_ref());
            }
        }
    }
    nested.extend(
        [&sql.intersect, &sql.except, &sql.union]
            .into_iter()
            .flatten()
            .map(|b| b.as_ref()),
    );
    nested
}

fn count_component2(sql: &Sql) -> usize {
    nested_sqls(sql).len()
}

fn count_others(sql: &Sql) -> usize {
    // Upstream's `has_agg` reads element 0 of whatever it is given: for
    // condition units that is the NOT flag, and the strings 'and'/'or' in the
    // HAVING list count as aggregates. Reproduced for identical classes.
    let mut agg = sql.select.items.iter().filter(|(a, _)| *a != 0).count();
    agg += sql.where_.units().iter().filter(|u| u.not).count();
    agg += sql.group_by.iter().filter(|c| c.agg != 0).count();
    if let Some(order) = &sql.order_by {
        agg += order.items.iter().filter(|v| v.col1.agg != 0).count();
        agg += order
            .items
            .iter()
            .filter_map(|v| v.col2.as_ref())
            .filter(|c| c.agg != 0)
            .count();
    }
    agg += sql
        .having
        .iter()
        .filter(|item| match item {
            CondItem::Unit(u) => u.not,
            CondItem::And | CondItem::Or => true,
        })
        .count();
    let mut count = 0;
    if agg > 1 {
        count += 1;
    }
    if sql.select.items.len() > 1 {
        count += 1;
    }
    if sql.where_.len() > 1 {
        count += 1;
    }
    if sql.group_by.len() > 1 {
        count += 1;
    }
    count
}
