//! Scoring Spider-format predictions: one gold `SQL\tdb_id` per line, one
//! predicted query per line, databases under `<db_dir>/<db_id>/<db_id>.sqlite`.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::exact::{self, ForeignKeyMap};
use crate::exec::{self, ByteLimits, ExecError, ExecLimits, Sandbox};
use crate::hardness::Hardness;
use crate::parse::{parse_sql, Sql};
use crate::schema::{sqlite_path, Schema, Tables};

/// One gold example.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GoldExample {
    pub sql: String,
    pub db_id: String,
    #[serde(default)]
    pub question: Option<String>,
}

/// How to score.
#[derive(Debug, Clone, Copy)]
pub struct EvalOptions {
    pub limits: ExecLimits,
    /// Keep DISTINCT when executing (the test-suite evaluator removes it by
    /// default, `--keep_distinct` off).
    pub keep_distinct: bool,
    /// Run queries (execution accuracy, valid SQL). Off: exact match only.
    pub execute: bool,
}

impl Default for EvalOptions {
    fn default() -> Self {
        EvalOptions {
            limits: ExecLimits::default(),
            keep_distinct: false,
            execute: true,
        }
    }
}

/// Outcome of running the prediction.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecStatus {
    /// Not executed (execution disabled).
    Skipped,
    /// Ran; `rows` rows.
    Ok {
        rows: usize,
    },
    Failed(ExecError),
}

/// Everything known about one scored example (one JSONL record).
#[derive(Debug, Clone, Serialize)]
pub struct ExampleResult {
    pub index: usize,
    pub question: Option<String>,
    pub db_id: String,
    pub gold: String,
    pub prediction: String,
    /// Hardness of the gold query; `None` when the official parser rejects it.
    pub hardness: Option<Hardness>,
    /// The prediction parses with the official Spider parser.
    pub parsed: bool,
    pub parse_error: Option<String>,
    /// Prepares in SQLite against the database (and passes the sandbox).
    pub valid_sql: bool,
    /// Valid, and every table/column it reads is declared in tables.json.
    pub schema_valid: bool,
    pub exec_status: ExecStatus,
    /// The gold failed to run (scored as wrong).
    pub gold_error: Option<String>,
    /// Rows the gold query returned (an empty gold result is matched by any empty
    /// prediction, so reports also give execution accuracy over non-empty golds).
    pub gold_rows: Option<usize>,
    pub exact_match: bool,
    pub exec_match: bool,
}

impl ExampleResult {
    pub fn timed_out(&self) -> bool {
        matches!(
            self.exec_status,
            ExecStatus::Failed(ExecError::Timeout | ExecError::CompareTimeout)
        )
    }
}

/// Per-database state, built once.
struct DbContext {
    schema: Schema,
    kmap: ForeignKeyMap,
    declared: HashMap<String, HashSet<String>>,
    sandbox: Option<Sandbox>,
}

/// Scores predictions against gold queries, caching schemas and connections.
pub struct Evaluator {
    tables: Tables,
    db_dir: PathBuf,
    options: EvalOptions,
    bytes: ByteLimits,
    dbs: HashMap<String, DbContext>,
}

impl Evaluator {
    pub fn new(tables_json: &Path, db_dir: &Path, options: EvalOptions) -> Result<Self> {
        if !db_dir.is_dir() {
            return Err(Error::BadInput {
                path: db_dir.to_path_buf(),
                message: "database directory not found".into(),
            });
        }
        Ok(Evaluator {
            tables: Tables::load(tables_json)?,
            db_dir: db_dir.to_path_buf(),
            options,
            bytes: ByteLimits::default(),
            dbs: HashMap::new(),
        })
    }

    /// Byte budgets of the sandboxes opened from now on (default
    /// [`ByteLimits::default`]).
    pub fn with_byte_limits(mut self, bytes: ByteLimits) -> Self {
        self.bytes = bytes;
        self
    }

    fn db(&mut self, db_id: &str) -> Result<&DbContext> {
        if !self.dbs.contains_key(db_id) {
            let entry = self.tables.get(db_id)?;
            let path = sqlite_path(&self.db_dir, db_id);
            if !path.is_file() {
                return Err(Error::BadInput {
                    path,
                    message: format!("no database file for `{db_id}`"),
                });
            }
            let sandbox = if self.options.execute {
                Some(Sandbox::open_with(&path, self.options.limits, self.bytes)?)
            } else {
                None
            };
            let ctx = DbContext {
                schema: Schema::from_sqlite(&path)?,
                kmap: entry.foreign_key_map(),
                declared: entry.declared_columns(),
                sandbox,
            };
            self.dbs.insert(db_id.to_string(), ctx);
        }
        Ok(&self.dbs[db_id])
    }

    /// Parse a query with the official parser against `db_id`'s schema.
    pub fn parse(&mut self, db_id: &str, sql: &str) -> Result<Sql> {
        parse_sql(&self.db(db_id)?.schema, sql)
    }

    /// Score one prediction.
    pub fn score(&mut self, index: usize, gold: &GoldExample, prediction: &str) -> Result<ExampleResult> {
        let execute = self.options.execute;
        let keep_distinct = self.options.keep_distinct;
        let ctx = self.db(&gold.db_id)?;

        // Exact match (official evaluation.py).
        let gold_sql = parse_sql(&ctx.schema, &gold.sql).ok();
        let hardness = gold_sql.as_ref().map(Hardness::of);
        let (pred_sql, parse_error) = match parse_sql(&ctx.schema, prediction) {
            Ok(s) => (Some(s), None),
            Err(e) => (None, Some(e.to_string())),
        };
        let parsed = pred_sql.is_some();
        let exact_match = match &gold_sql {
            Some(g) => {
                let g = exact::normalize(g.clone(), &ctx.schema, &ctx.kmap);
                let p = exact::normalize(pred_sql.unwrap_or_else(Sql::empty), &ctx.schema, &ctx.kmap);
                exact::exact_match(&p, &g)
            }
            None => false,
        };

        let mut result = ExampleResult {
            index,
            question: gold.question.clone(),
            db_id: gold.db_id.clone(),
            gold: gold.sql.clone(),
            prediction: prediction.to_string(),
            hardness,
            parsed,
            parse_error,
            valid_sql: false,
            schema_valid: false,
            exec_status: ExecStatus::Skipped,
            gold_error: None,
            gold_rows: None,
            exact_match,
            exec_match: false,
        };
        if !execute {
            return Ok(result);
        }
        let sandbox = ctx.sandbox.as_ref().expect("sandbox opened when executing");

        // Valid SQL: prepares against this database inside the sandbox.
        let pred_fixed = exec::postprocess(prediction);
        if let Ok(access) = sandbox.check(&pred_fixed) {
            result.valid_sql = true;
            result.schema_valid = access
                .reads
                .iter()
                .all(|(t, c)| ctx.declared.get(t).is_some_and(|cols| c.is_empty() || cols.contains(c)));
        }

        // Execution (test-suite evaluator on a single database).
        let (mut p_str, mut g_str) = (pred_fixed, exec::postprocess(&gold.sql));
        if !keep_distinct {
            p_str = exec::remove_distinct(&p_str);
            g_str = exec::remove_distinct(&g_str);
        }
        let order_matters = g_str.to_lowercase().contains("order by");
        let gold_rows = sandbox.query(&exec::replace_cur_year(&g_str));
        let pred_rows = sandbox.query(&exec::replace_cur_year(&p_str));
        result.exec_status = match &pred_rows {
            Ok(rows) => ExecStatus::Ok { rows: rows.len() },
            Err(e) => ExecStatus::Failed(e.clone()),
        };
        result.gold_rows = gold_rows.as_ref().ok().map(Vec::len);
        match (gold_rows, pred_rows) {
            // The comparison gets a time limit of its own.
            (Ok(g), Ok(p)) => {
                let deadline = Instant::now() + self.options.limits.timeout;
                match exec::result_eq_within(&g, &p, order_matters, Some(deadline)) {
                    Ok(m) => result.exec_match = m,
                    Err(e) => result.exec_status = ExecStatus::Failed(e),
                }
            }
            (Err(e), _) => result.gold_error = Some(e.to_string()),
            _ => {}
        }
        Ok(result)
    }
}

fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Gold file in the official format: `SQL<TAB>db_id` per non-empty line.
pub fn read_gold_file(path: &Path) -> Result<Vec<GoldExample>> {
    read_text(path)?
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(n, line)| {
            let mut parts = line.trim().split('\t');
            match (parts.next(), parts.next()) {
                (Some(sql), Some(db)) => Ok(GoldExample {
                    sql: sql.to_string(),
                    db_id: db.trim().to_string(),
                    question: None,
                }),
                _ => Err(Error::BadInput {
                    path: path.to_path_buf(),
                    message: format!("line {}: expected `SQL<TAB>db_id`", n + 1),
                }),
            }
        })
        .collect()
}

/// Predictions, one query per line (text after a tab is ignored, as upstream).
/// Empty lines are kept as empty predictions when that makes the count match
/// `expected`; otherwise they are skipped like the official reader does.
pub fn read_pred_file(path: &Path, expected: usize) -> Result<Vec<String>> {
    let text = read_text(path)?;
    let first_field = |l: &str| l.trim().split('\t').next().unwrap_or("").to_string();
    let mut all: Vec<&str> = text.lines().collect();
    while all.last().is_some_and(|l| l.trim().is_empty()) {
        all.pop();
    }
    let preds: Vec<String> = if all.len() == expected {
        all.iter().map(|l| first_field(l)).collect()
    } else {
        all.iter()
            .filter(|l| !l.trim().is_empty())
            .map(|l| first_field(l))
            .collect()
    };
    if preds.len() != expected {
        return Err(Error::BadInput {
            path: path.to_path_buf(),
            message: format!("{} predictions for {expected} gold queries", preds.len()),
        });
    }
    Ok(preds)
}

/// Spider's dev.json / train_spider.json: question, query, db_id.
pub fn read_spider_json(path: &Path) -> Result<Vec<GoldExample>> {
    #[derive(Deserialize)]
    struct Raw {
        db_id: String,
        query: String,
        question: String,
    }
    let raw: Vec<Raw> = serde_json::from_str(&read_text(path)?).map_err(|source| Error::Json {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(raw
        .into_iter()
        .map(|r| GoldExample {
            sql: r.query,
            db_id: r.db_id,
            question: Some(r.question),
        })
        .collect())
}
