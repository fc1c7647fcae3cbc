//! WikiSQL scoring. The shared data has table headers but no table rows, so
//! execution accuracy cannot be measured: predictions are scored by
//! **logical-form exact match** (WikiSQL's `Query.__eq__`: same selected
//! column, same aggregate, same set of conditions with case-insensitive
//! values), plus whether they prepare against an empty table with the header.

use std::path::Path;

use rusqlite::Connection;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

const AGGS: [&str; 6] = ["", "MAX", "MIN", "COUNT", "SUM", "AVG"];
const OPS: [&str; 3] = ["=", ">", "<"];

/// WikiSQL's logical form.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LogicalForm {
    pub sel: usize,
    pub agg: usize,
    /// (column, operator, normalised value), sorted.
    pub conds: Vec<(usize, usize, String)>,
}

/// One example of `*_text.jsonl` (header inline).
#[derive(Debug, Clone, Deserialize)]
pub struct WikiExample {
    pub table_id: String,
    pub table_name: String,
    pub header: Vec<String>,
    pub question: String,
    pub sql: RawLogicalForm,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RawLogicalForm {
    pub sel: usize,
    pub agg: usize,
    pub conds: Vec<(usize, usize, serde_json::Value)>,
}

impl RawLogicalForm {
    pub fn normalised(&self) -> LogicalForm {
        let mut conds: Vec<_> = self
            .conds
            .iter()
            .map(|(c, o, v)| {
                let text = match v {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (*c, *o, normalise_value(&text))
            })
            .collect();
        conds.sort();
        LogicalForm {
            sel: self.sel,
            agg: self.agg,
            conds,
        }
    }
}

/// Case-insensitive text; numbers compared by value (`2005` = `2005.0`).
fn normalise_value(v: &str) -> String {
    let t = v.trim();
    match t.parse::<f64>() {
        Ok(x) if x.is_finite() => format!("{x}"),
        _ => t.to_lowercase(),
    }
}

pub fn read_examples(path: &Path) -> Result<Vec<WikiExample>> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| Error::BadInput {
                path: path.to_path_buf(),
                message: format!("line {}: {e}", i + 1),
            })
        })
        .collect()
}

/// Strip one layer of identifier/string quoting.
fn unquote(s: &str) -> String {
    let s = s.trim();
    let pairs = [('"', '"'), ('`', '`'), ('[', ']'), ('\'', '\'')];
    for (open, close) in pairs {
        if s.len() >= 2 && s.starts_with(open) && s.ends_with(close) {
            let inner = &s[open.len_utf8()..s.len() - close.len_utf8()];
            return if open == close {
                inner.replace(&format!("{open}{open}"), &open.to_string())
            } else {
                inner.to_string()
            };
        }
    }
    s.to_string()
}

/// Byte offsets of case-insensitive `word` (surrounded by whitespace) outside quotes.
fn split_keyword<'a>(s: &'a str, word: &str) -> Vec<&'a str> {
    let lower = s.to_ascii_lowercase();
    let bytes = s.as_bytes();
    let mut parts = Vec::new();
    let (mut start, mut i, mut quote) = (0, 0, None::<u8>);
    let pat = format!(" {} ", word.to_ascii_lowercase());
    while i < bytes.len() {
        let b = bytes[i];
        match quote {
            Some(q) if b == q => quote = None,
            Some(_) => {}
            None if b == b'\'' || b == b'"' || b == b'`' => quote = Some(b),
            None if lower.as_bytes()[i..].starts_with(pat.as_bytes()) => {
                parts.push(&s[start..i]);
                i += pat.len();
                start = i;
                continue;
            }
            None => {}
        }
        i += 1;
    }
    parts.push(&s[start..]);
    parts
}

fn find_column(name: &str, header: &[String]) -> Option<usize> {
    let name = unquote(name);
    header.iter().position(|h| h.trim().eq_ignore_ascii_case(name.trim()))
}

/// Read a predicted query back into a logical form against `header`.
/// Accepts quoted (`"School/Club Team"`) or bare header names, `AGG(col)` or
/// `AGG col`, and `AND`-joined conditions with `=`, `>`, `<`.
pub fn parse_prediction(sql: &str, header: &[String]) -> Option<LogicalForm> {
    let sql = sql.trim().trim_end_matches(';').trim();
    if !sql.get(..7)?.eq_ignore_ascii_case("select ") {
        return None;
    }
    let rest = &sql[7..];
    let from_parts = split_keyword(rest, "from");
    if from_parts.len() != 2 {
        return None;
    }
    let sel_text = from_parts[0].trim();
    let (agg, col_text) = AGGS
        .iter()
        .enumerate()
        .skip(1)
        .find_map(|(i, a)| {
            let upper = sel_text.to_ascii_uppercase();
            let after = upper.strip_prefix(a)?;
            let tail = &sel_text[a.len()..];
            if after.trim_start().starts_with('(') && tail.trim_end().ends_with(')') {
                let inner = tail.trim();
                Some((i, inner[1..inner.len() - 1].to_string()))
            } else if after.starts_with(' ') {
                Some((i, tail.trim().to_string()))
            } else {
                None
            }
        })
        .unwrap_or((0, sel_text.to_string()));
    let sel = find_column(&col_text, header)?;

    let where_parts = split_keyword(from_parts[1], "where");
    let mut conds = Vec::new();
    match where_parts.len() {
        1 => {}
        2 => {
            for cond in split_keyword(where_parts[1], "and") {
                conds.push(parse_condition(cond.trim(), header)?);
            }
        }
        _ => return None,
    }
    conds.sort();
    Some(LogicalForm { sel, agg, conds })
}

/// `column op value`, the column quoted or a (longest matching) header name.
fn parse_condition(cond: &str, header: &[String]) -> Option<(usize, usize, String)> {
    let mut candidates: Vec<(usize, usize)> = Vec::new(); // (column, byte length of column text)
    if let Some(q) = cond.chars().next().filter(|c| matches!(c, '"' | '`' | '[')) {
        let close = if q == '[' { ']' } else { q };
        let end = cond[1..].find(close)? + 2;
        candidates.push((find_column(&cond[..end], header)?, end));
    } else {
        for (i, h) in header.iter().enumerate() {
            let h = h.trim();
            if cond
                .get(..h.len())
                .is_some_and(|p| p.to_lowercase() == h.to_lowercase())
            {
                candidates.push((i, h.len()));
            }
        }
        candidates.sort_by_key(|c| std::cmp::Reverse(c.1));
    }
    for (col, len) in candidates {
        let rest = cond.get(len..)?.trim_start();
        if let Some(op) = OPS.iter().position(|o| rest.starts_with(o)) {
            let value = unquote(rest[1..].trim());
            return Some((col, op, normalise_value(&value)));
        }
    }
    None
}

/// Per-example WikiSQL outcome.
#[derive(Debug, Clone, Serialize)]
pub struct WikiResult {
    pub index: usize,
    pub question: String,
    pub table_id: String,
    pub prediction: String,
    /// Read back into a logical form.
    pub parsed: bool,
    /// Prepares in SQLite against an empty table with the header's columns.
    pub valid_sql: bool,
    pub logical_form_match: bool,
}

/// Aggregate WikiSQL figures (no execution: tables have no rows here).
#[derive(Debug, Clone, Serialize)]
pub struct WikiReport {
    pub evaluation: &'static str,
    pub count: usize,
    pub logical_form_accuracy: f64,
    pub parsed: f64,
    pub valid_sql: f64,
}

/// An in-memory, empty copy of the example's table for validity checks.
fn empty_table(ex: &WikiExample) -> rusqlite::Result<Connection> {
    let conn = Connection::open_in_memory()?;
    let cols: Vec<String> = ex
        .header
        .iter()
        .map(|h| format!("\"{}\"", h.replace('"', "\"\"")))
        .collect();
    conn.execute_batch(&format!(
        "CREATE TABLE \"{}\" ({})",
        ex.table_name.replace('"', "\"\""),
        cols.join(", ")
    ))?;
    Ok(conn)
}

pub fn evaluate(examples: &[WikiExample], predictions: &[String]) -> (WikiReport, Vec<WikiResult>) {
    let results: Vec<WikiResult> = examples
        .iter()
        .zip(predictions)
        .enumerate()
        .map(|(index, (ex, pred))| {
            let parsed = parse_prediction(pred, &ex.header);
            let valid_sql = empty_table(ex).is_ok_and(|c| c.prepare(pred).is_ok_and(|s| s.readonly()));
            WikiResult {
                index,
                question: ex.question.clone(),
                table_id: ex.table_id.clone(),
                prediction: pred.clone(),
                parsed: parsed.is_some(),
                valid_sql,
                logical_form_match: parsed.is_some_and(|p| p == ex.sql.normalised()),
            }
        })
        .collect();
    let n = results.len();
    let frac = |k: usize| if n == 0 { 0.0 } else { k as f64 / n as f64 };
    let report = WikiReport {
        evaluation: "logical-form exact match (WikiSQL tables have no rows here; no execution accuracy)",
        count: n,
        logical_form_accuracy: frac(results.iter().filter(|r| r.logical_form_match).count()),
        parsed: frac(results.iter().filter(|r| r.parsed).count()),
        valid_sql: frac(results.iter().filter(|r| r.valid_sql).count()),
    };
    (report, results)
}
