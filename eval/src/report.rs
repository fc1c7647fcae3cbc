//! Aggregate report: per-hardness counts and accuracies, JSON and a terminal
//! table, plus per-example JSONL.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::hardness::Hardness;
use crate::spider::ExampleResult;

/// The five columns of every figure.
pub const LEVELS: [&str; 5] = ["easy", "medium", "hard", "extra", "all"];

/// One figure broken down by hardness (keys exactly `easy`…`extra`, `all`).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct ByLevel<T> {
    pub easy: T,
    pub medium: T,
    pub hard: T,
    pub extra: T,
    pub all: T,
}

impl<T: Copy> ByLevel<T> {
    pub fn get(&self, level: &str) -> T {
        match level {
            "easy" => self.easy,
            "medium" => self.medium,
            "hard" => self.hard,
            "extra" => self.extra,
            _ => self.all,
        }
    }
    fn values(&self) -> [T; 5] {
        [self.easy, self.medium, self.hard, self.extra, self.all]
    }
}

/// The report written as `report.json`.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub counts: ByLevel<usize>,
    pub exact_match: ByLevel<f64>,
    pub execution: ByLevel<f64>,
    pub valid_sql: ByLevel<f64>,
    /// Valid and reads only tables/columns declared in tables.json.
    pub schema_valid: ByLevel<f64>,
    /// Predictions stopped by the time limit (scored as wrong).
    pub timeouts: usize,
    /// Predictions the official Spider parser rejects (scored as empty queries).
    pub parse_failures: usize,
    /// Gold queries that failed to execute (those examples score as wrong).
    pub gold_errors: usize,
    /// Examples whose gold query returns at least one row...
    pub gold_nonempty: usize,
    /// ...and the fraction of those that execute correctly: an empty gold result is
    /// matched by any prediction that returns nothing, often by luck.
    pub execution_gold_nonempty: f64,
    /// Whether execution was run (false: `execution`/`valid_sql` are zero).
    pub executed: bool,
    /// Free-form labels (e.g. dataset, evaluation kind).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub notes: BTreeMap<String, String>,
}

/// Per-level counter.
#[derive(Default, Clone, Copy)]
struct Tally {
    n: usize,
    exact: usize,
    exec: usize,
    valid: usize,
    schema_valid: usize,
}

impl Report {
    pub fn from_results(results: &[ExampleResult], executed: bool) -> Report {
        let mut tallies: BTreeMap<&str, Tally> = LEVELS.iter().map(|l| (*l, Tally::default())).collect();
        for r in results {
            let levels = [r.hardness.map(Hardness::as_str), Some("all")];
            for level in levels.into_iter().flatten() {
                let t = tallies.get_mut(level).expect("level exists");
                t.n += 1;
                t.exact += usize::from(r.exact_match);
                t.exec += usize::from(r.exec_match);
                t.valid += usize::from(r.valid_sql);
                t.schema_valid += usize::from(r.schema_valid);
            }
        }
        let by = |f: &dyn Fn(&Tally) -> f64| ByLevel {
            easy: f(&tallies["easy"]),
            medium: f(&tallies["medium"]),
            hard: f(&tallies["hard"]),
            extra: f(&tallies["extra"]),
            all: f(&tallies["all"]),
        };
        let frac = |k: usize, n: usize| if n == 0 { 0.0 } else { k as f64 / n as f64 };
        let nonempty: Vec<&ExampleResult> = results.iter().filter(|r| r.gold_rows.is_some_and(|n| n > 0)).collect();
        Report {
            counts: ByLevel {
                easy: tallies["easy"].n,
                medium: tallies["medium"].n,
                hard: tallies["hard"].n,
                extra: tallies["extra"].n,
                all: tallies["all"].n,
            },
            exact_match: by(&|t| frac(t.exact, t.n)),
            execution: by(&|t| frac(t.exec, t.n)),
            valid_sql: by(&|t| frac(t.valid, t.n)),
            schema_valid: by(&|t| frac(t.schema_valid, t.n)),
            timeouts: results.iter().filter(|r| r.timed_out()).count(),
            parse_failures: results.iter().filter(|r| !r.parsed).count(),
            gold_errors: results.iter().filter(|r| r.gold_error.is_some()).count(),
            gold_nonempty: nonempty.len(),
            execution_gold_nonempty: frac(nonempty.iter().filter(|r| r.exec_match).count(), nonempty.len()),
            executed,
            notes: BTreeMap::new(),
        }
    }

    /// The terminal table (same layout as the official scorer's).
    pub fn table(&self) -> String {
        let mut s = String::new();
        let row = |name: &str, vals: [String; 5]| {
            format!(
                "{name:<20} {}\n",
                vals.iter().map(|v| format!("{v:<20}")).collect::<Vec<_>>().join(" ")
            )
        };
        s += &row("", LEVELS.map(String::from));
        s += &row("count", self.counts.values().map(|v| v.to_string()));
        let mut figures = vec![("exact match", &self.exact_match)];
        if self.executed {
            figures.extend([
                ("execution", &self.execution),
                ("valid SQL", &self.valid_sql),
                ("schema-valid SQL", &self.schema_valid),
            ]);
        }
        for (name, fig) in figures {
            s += &row(name, fig.values().map(|v| format!("{v:.3}")));
        }
        s += &format!(
            "timeouts: {}   unparsed predictions: {}   gold errors: {}\n",
            self.timeouts, self.parse_failures, self.gold_errors
        );
        if self.executed {
            s += &format!(
                "execution where the gold result is not empty: {:.3} of {}\n",
                self.execution_gold_nonempty, self.gold_nonempty
            );
        }
        s
    }

    /// Written whole or not at all (a temporary renamed into place).
    pub fn write_json(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).expect("report serialises");
        Ok(sqlora_atomic::write(path, text + "\n")?)
    }
}

/// One JSON object per line, written whole or not at all.
pub fn write_jsonl<T: Serialize>(path: &Path, records: &[T]) -> Result<()> {
    let mut out = sqlora_atomic::AtomicFile::create(path)?;
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    for r in records {
        // Records always serialise; what can fail here is the disk.
        serde_json::to_writer(&mut out, r).map_err(|e| io(e.into()))?;
        out.write_all(b"\n").map_err(io)?;
    }
    Ok(out.commit()?)
}
