//! Text-to-SQL datasets → [`Example`]s: Spider (`train_spider.jsonl`/`.json`,
//! `train_others.jsonl`, `dev.json`, with `tables.json`) and WikiSQL (the
//! original `{table_id, question, sql{sel,agg,conds}}` lines with a headers
//! file, or the `*_text.jsonl` lines that carry their own header). A malformed
//! record stops loading with file and line, or is skipped and counted.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;
use sqlora_core::schema::{Column, Schema, SpiderTables, Table};

/// A WikiSQL table as its logical form refers to it: columns by index.
#[derive(Debug, Clone, PartialEq)]
struct WikiTable {
    name: String,
    /// (header as written, declared type)
    columns: Vec<(String, String)>,
}

impl WikiTable {
    /// The one-table schema core renders into prompts (it quotes free-text names itself).
    fn schema(&self) -> Schema {
        Schema {
            tables: vec![Table {
                name: self.name.clone(),
                columns: self
                    .columns
                    .iter()
                    .map(|(n, t)| Column {
                        name: n.clone(),
                        ty: t.clone(),
                    })
                    .collect(),
                primary_key: vec![],
            }],
            foreign_keys: vec![],
        }
    }
}

/// One question with its gold SQL and the schema it is asked against.
#[derive(Debug, Clone)]
pub struct Example {
    /// Spider database / WikiSQL table id (for evaluation and messages).
    #[allow(dead_code)]
    pub db_id: String,
    pub question: String,
    pub sql: String,
    pub schema: Arc<Schema>,
}

/// Loaded examples and how many malformed records were skipped.
#[derive(Debug, Default)]
pub struct Loaded {
    pub examples: Vec<Example>,
    pub skipped: usize,
}

/// Load one dataset file. `tables` is Spider's `tables.json` or WikiSQL's
/// headers file (needed unless the records carry their own header).
pub fn load(path: &Path, tables: Option<&Path>, skip_malformed: bool) -> Result<Loaded> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}: cannot read", path.display()))?;
    let records = records(path, &text)?;
    let mut spider: Option<HashMap<String, Arc<Schema>>> = None;
    let mut wiki: Option<HashMap<String, Arc<WikiTable>>> = None;
    let mut out = Loaded::default();
    for (line, rec) in records {
        let rec = match rec {
            Ok(v) => v,
            Err(_) if skip_malformed => {
                out.skipped += 1;
                continue;
            }
            Err(e) => bail!("{}:{line}: malformed JSON: {e}", path.display()),
        };
        let parsed = (|| -> Result<Example> {
            if rec.get("db_id").is_some() {
                let schemas = match &spider {
                    Some(s) => s,
                    None => spider.insert(load_spider_tables(
                        tables.ok_or_else(|| anyhow!("Spider data needs `tables` (tables.json)"))?,
                    )?),
                };
                spider_example(&rec, schemas)
            } else if rec.get("header").is_some() {
                wikisql_inline_example(&rec)
            } else if rec.get("table_id").is_some() {
                let schemas = match &wiki {
                    Some(s) => s,
                    None => wiki.insert(load_wikisql_headers(tables.ok_or_else(|| {
                        anyhow!("WikiSQL lines without a header need `tables` (a *.tables_headers.jsonl file)")
                    })?)?),
                };
                wikisql_example(&rec, schemas)
            } else {
                bail!("neither a Spider record (db_id, question, query) nor a WikiSQL one (table_id or header, question, sql)")
            }
        })();
        match parsed {
            Ok(ex) => out.examples.push(ex),
            Err(_) if skip_malformed => out.skipped += 1,
            Err(e) => bail!("{}:{line}: {e:#}", path.display()),
        }
    }
    Ok(out)
}

/// (line number, parsed record): one per line for `.jsonl`, the array's items
/// (numbered from 1) for `.json`.
fn records(path: &Path, text: &str) -> Result<Vec<(usize, std::result::Result<Value, serde_json::Error>)>> {
    if path.extension().is_some_and(|e| e == "json") {
        let v: Value = serde_json::from_str(text).with_context(|| format!("{}: malformed JSON", path.display()))?;
        let Value::Array(items) = v else {
            bail!("{}: expected a JSON array of examples", path.display());
        };
        return Ok(items.into_iter().enumerate().map(|(i, v)| (i + 1, Ok(v))).collect());
    }
    Ok(text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| (i + 1, serde_json::from_str(l)))
        .collect())
}

fn str_field<'a>(rec: &'a Value, key: &str) -> Result<&'a str> {
    rec.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("missing or non-string field `{key}`"))
}

fn spider_example(rec: &Value, schemas: &HashMap<String, Arc<Schema>>) -> Result<Example> {
    let db_id = str_field(rec, "db_id")?;
    let schema = schemas
        .get(db_id)
        .ok_or_else(|| anyhow!("db_id `{db_id}` is not in tables.json"))?;
    Ok(Example {
        db_id: db_id.to_string(),
        question: str_field(rec, "question")?.trim().to_string(),
        sql: normalize_sql(str_field(rec, "query")?),
        schema: schema.clone(),
    })
}

/// Spider's gold SQL has doubled spaces and stray semicolons; train on a tidy form.
fn normalize_sql(sql: &str) -> String {
    sql.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .trim_end_matches(';')
        .trim()
        .to_string()
}

/// Spider `tables.json` → schemas by db_id (original names, types, keys), via core.
pub fn load_spider_tables(path: &Path) -> Result<HashMap<String, Arc<Schema>>> {
    let tables = SpiderTables::from_file(path)?;
    Ok(tables
        .db_ids()
        .iter()
        .filter_map(|id| tables.get(id).map(|s| (id.clone(), Arc::new(s.clone()))))
        .collect())
}

/// WikiSQL headers file (`{id, name, header, types}` per line) → one-table schemas by id.
fn load_wikisql_headers(path: &Path) -> Result<HashMap<String, Arc<WikiTable>>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}: cannot read", path.display()))?;
    let mut out = HashMap::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let v: Value =
            serde_json::from_str(line).with_context(|| format!("{}:{}: malformed JSON", path.display(), i + 1))?;
        let id = str_field(&v, "id").with_context(|| format!("{}:{}", path.display(), i + 1))?;
        let schema = wikisql_table(&v).with_context(|| format!("{}:{}", path.display(), i + 1))?;
        out.insert(id.to_string(), Arc::new(schema));
    }
    Ok(out)
}

fn wikisql_table(v: &Value) -> Result<WikiTable> {
    let name = v
        .get("table_name")
        .or_else(|| v.get("name"))
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("missing `name`/`table_name`"))?;
    let strings = |key: &str| -> Result<Vec<String>> {
        v.get(key)
            .and_then(Value::as_array)
            .ok_or_else(|| anyhow!("missing list `{key}`"))?
            .iter()
            .map(|x| {
                x.as_str()
                    .map(String::from)
                    .ok_or_else(|| anyhow!("`{key}` holds a non-string"))
            })
            .collect()
    };
    let header = strings("header")?;
    let types = strings("types").unwrap_or_else(|_| vec!["text".into(); header.len()]);
    if types.len() != header.len() {
        bail!("`header` and `types` differ in length");
    }
    Ok(WikiTable {
        name: name.to_string(),
        columns: header.into_iter().zip(types).collect(),
    })
}

/// WikiSQL headers are free text ("School/Club Team"): quote them as SQL identifiers.
fn quote_ident(h: &str) -> String {
    if !h.is_empty()
        && h.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !h.starts_with(|c: char| c.is_ascii_digit())
    {
        h.to_string()
    } else {
        format!("\"{}\"", h.replace('"', "\"\""))
    }
}

const AGG: [&str; 6] = ["", "MAX", "MIN", "COUNT", "SUM", "AVG"];
const OPS: [&str; 3] = ["=", ">", "<"];

/// WikiSQL's logical form `{sel, agg, conds}` → executable SQL over the schema's table.
fn wikisql_sql(sql: &Value, table: &WikiTable) -> Result<String> {
    let idx = |v: &Value, what: &str| {
        v.as_u64()
            .map(|x| x as usize)
            .ok_or_else(|| anyhow!("`{what}` must be a number"))
    };
    let col = |i: usize| {
        table
            .columns
            .get(i)
            .map(|c| quote_ident(&c.0))
            .ok_or_else(|| anyhow!("column index {i} out of range"))
    };
    let sel = col(idx(sql.get("sel").unwrap_or(&Value::Null), "sel")?)?;
    let agg = AGG
        .get(idx(sql.get("agg").unwrap_or(&Value::Null), "agg")?)
        .ok_or_else(|| anyhow!("agg out of range"))?;
    let mut out = if agg.is_empty() {
        format!("SELECT {sel} FROM {}", table.name)
    } else {
        format!("SELECT {agg}({sel}) FROM {}", table.name)
    };
    let conds = sql
        .get("conds")
        .and_then(Value::as_array)
        .ok_or_else(|| anyhow!("missing list `conds`"))?;
    for (k, c) in conds.iter().enumerate() {
        let c = c
            .as_array()
            .filter(|c| c.len() == 3)
            .ok_or_else(|| anyhow!("each cond must be [column, op, value]"))?;
        let (ci, op) = (idx(&c[0], "cond column")?, idx(&c[1], "cond op")?);
        let (name, ty) = table
            .columns
            .get(ci)
            .ok_or_else(|| anyhow!("cond column {ci} out of range"))?;
        let op = OPS.get(op).ok_or_else(|| anyhow!("cond op {op} out of range"))?;
        let value = match &c[2] {
            Value::Number(n) => n.to_string(),
            Value::String(s) if ty == "real" && s.trim().parse::<f64>().is_ok() => s.trim().to_string(),
            Value::String(s) => format!("'{}'", s.replace('\'', "''")),
            other => bail!("cond value {other} is neither text nor number"),
        };
        out.push_str(if k == 0 { " WHERE " } else { " AND " });
        out.push_str(&format!("{} {op} {value}", quote_ident(name)));
    }
    Ok(out)
}

fn wikisql_example(rec: &Value, tables: &HashMap<String, Arc<WikiTable>>) -> Result<Example> {
    let id = str_field(rec, "table_id")?;
    let table = tables
        .get(id)
        .ok_or_else(|| anyhow!("table_id `{id}` is not in the headers file"))?;
    let sql = rec.get("sql").ok_or_else(|| anyhow!("missing `sql`"))?;
    Ok(Example {
        db_id: id.to_string(),
        question: str_field(rec, "question")?.trim().to_string(),
        sql: wikisql_sql(sql, table)?,
        schema: Arc::new(table.schema()),
    })
}

/// `*_text.jsonl`: the header is inline; SQL from the logical form when present,
/// else re-read from the human-readable `sql_text` against the header.
fn wikisql_inline_example(rec: &Value) -> Result<Example> {
    let table = &wikisql_table(rec)?;
    let header: Vec<String> = rec["header"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|h| h.as_str().map(String::from))
        .collect();
    let sql = match rec.get("sql") {
        Some(sql) if sql.is_object() => wikisql_sql(sql, table)?,
        _ => wikisql_sql(
            &parse_readable(str_field(rec, "sql_text")?, &table.name, &header)?,
            table,
        )?,
    };
    Ok(Example {
        db_id: table.name.clone(),
        question: str_field(rec, "question")?.trim().to_string(),
        sql,
        schema: Arc::new(table.schema()),
    })
}

/// `SELECT [AGG ]col FROM t [WHERE col op value [AND ...]]` with unquoted
/// free-text names → the logical form, matching header names longest first.
fn parse_readable(text: &str, table: &str, header: &[String]) -> Result<Value> {
    let bad = || anyhow!("cannot read sql_text `{text}` against the header");
    let rest = text.strip_prefix("SELECT ").ok_or_else(bad)?;
    let from = format!(" FROM {table}");
    let at = rest.find(&from).ok_or_else(bad)?;
    let (sel_part, tail) = (&rest[..at], &rest[at + from.len()..]);
    let find = |s: &str| header.iter().position(|h| h == s);
    let (agg, sel) = match find(sel_part) {
        Some(i) => (0, i),
        None => AGG
            .iter()
            .enumerate()
            .skip(1)
            .find_map(|(a, name)| {
                sel_part
                    .strip_prefix(&format!("{name} "))
                    .and_then(find)
                    .map(|i| (a, i))
            })
            .ok_or_else(bad)?,
    };
    let mut conds = vec![];
    if let Some(mut w) = tail.strip_prefix(" WHERE ") {
        let mut by_len: Vec<(usize, &String)> = header.iter().enumerate().collect();
        by_len.sort_by_key(|(_, h)| std::cmp::Reverse(h.len()));
        let cond_start = |s: &str| -> Option<(usize, usize, usize)> {
            by_len.iter().find_map(|(i, h)| {
                let r = s.strip_prefix(h.as_str())?;
                OPS.iter()
                    .position(|op| r.starts_with(&format!(" {op} ")))
                    .map(|op| (*i, op, h.len() + op_len(op)))
            })
        };
        loop {
            let (ci, op, skip) = cond_start(w).ok_or_else(bad)?;
            w = &w[skip..];
            // The value runs to the next " AND <column> <op> " or the end.
            let mut end = w.len();
            let mut from_pos = 0;
            while let Some(p) = w[from_pos..].find(" AND ") {
                let p = from_pos + p;
                if cond_start(&w[p + 5..]).is_some() {
                    end = p;
                    break;
                }
                from_pos = p + 5;
            }
            conds.push(serde_json::json!([ci, op, &w[..end]]));
            if end == w.len() {
                break;
            }
            w = &w[end + 5..];
        }
    } else if !tail.is_empty() {
        return Err(bad());
    }
    Ok(serde_json::json!({"sel": sel, "agg": agg, "conds": conds}))
}

/// Length of " <op> " for the op index.
fn op_len(op: usize) -> usize {
    OPS[op].len() + 2
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared() -> std::path::PathBuf {
        std::env::var_os("SQLORA_SHARED")
            .map(Into::into)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared"))
    }

    fn tmp(name: &str, body: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("sqlora-data-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, body).unwrap();
        p
    }

    #[test]
    fn spider_train_and_dev_load_with_schemas() {
        let d = shared().join("data/spider");
        let tables = d.join("tables.json");
        let train = load(&d.join("train_spider.jsonl"), Some(&tables), false).unwrap();
        assert_eq!((train.examples.len(), train.skipped), (7000, 0));
        let ex = &train.examples[0];
        assert_eq!(ex.sql, "SELECT count(*) FROM head WHERE age > 56");
        let head = ex
            .schema
            .table("head")
            .expect("db department_management has table head");
        assert_eq!(
            (head.columns[0].name.as_str(), head.columns[0].ty.as_str()),
            ("head_ID", "number")
        );
        assert_eq!(head.primary_key, ["head_ID"]);
        assert!(!ex.schema.foreign_keys.is_empty());
        let dev = load(&d.join("dev.json"), Some(&tables), false).unwrap();
        assert_eq!(dev.examples.len(), 1034);
        assert_eq!(
            load(&d.join("train_others.jsonl"), Some(&tables), false)
                .unwrap()
                .examples
                .len(),
            1659
        );
    }

    #[test]
    fn wikisql_both_formats_give_executable_sql() {
        let d = shared().join("data/wikisql");
        let dev = load(&d.join("dev.jsonl"), Some(&d.join("dev.tables_headers.jsonl")), false).unwrap();
        assert_eq!(dev.examples.len(), 8421);
        assert_eq!(
            dev.examples[0].sql,
            "SELECT Position FROM table_10015132_11 WHERE \"School/Club Team\" = 'Butler CC (KS)'"
        );
        assert_eq!(
            dev.examples[1].sql,
            "SELECT COUNT(\"School/Club Team\") FROM table_10015132_11 WHERE \"No.\" = '3'"
        );
        let text = load(&d.join("train_subset1000_text.jsonl"), None, true).unwrap();
        assert!(
            text.examples.len() + text.skipped == 1000 && text.skipped < 20,
            "skipped {}",
            text.skipped
        );
        assert_eq!(
            text.examples[0].sql,
            "SELECT Notes FROM table_1000181_1 WHERE \"Current slogan\" = 'SOUTH AUSTRALIA'"
        );
    }

    #[test]
    fn malformed_records_name_file_and_line_or_are_counted() {
        let tables = shared().join("data/spider/tables.json");
        let body = "{\"db_id\":\"concert_singer\",\"question\":\"q\",\"query\":\"SELECT 1\"}\n{oops\n{\"db_id\":\"nope\",\"question\":\"q\",\"query\":\"x\"}\n";
        let p = tmp("bad.jsonl", body);
        let e = load(&p, Some(&tables), false).unwrap_err().to_string();
        assert!(e.contains("bad.jsonl:2") && e.contains("malformed JSON"), "{e}");
        let got = load(&p, Some(&tables), true).unwrap();
        assert_eq!((got.examples.len(), got.skipped), (1, 2));
        let p = tmp(
            "bad2.jsonl",
            "{\"db_id\":\"nope\",\"question\":\"q\",\"query\":\"x\"}\n",
        );
        let e = load(&p, Some(&tables), false).unwrap_err().to_string();
        assert!(e.contains("bad2.jsonl:1") && e.contains("nope"), "{e}");
        let e = load(&p, None, false).unwrap_err().to_string();
        assert!(e.contains("tables"), "{e}");
    }
}
