//! Sandboxed execution of untrusted SQL on SQLite, and the test-suite
//! evaluator's denotation comparison.
//!
//! Safety: the database is opened read-only; an authorizer allows only
//! reading (SELECT, column reads, functions, recursive CTEs) and denies
//! writes, schema changes, ATTACH/DETACH, PRAGMA and transactions at prepare
//! time; a progress handler interrupts a statement past its deadline; and the
//! number of result rows is capped.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};

use crate::error::{Error, Result};

/// Limits for one query.
#[derive(Debug, Clone, Copy)]
pub struct ExecLimits {
    /// Wall-clock budget per statement.
    pub timeout: Duration,
    /// Maximum number of rows a result may have.
    pub max_rows: usize,
}

impl Default for ExecLimits {
    fn default() -> Self {
        ExecLimits {
            timeout: Duration::from_secs(5),
            max_rows: 100_000,
        }
    }
}

/// One SQL value as Python's sqlite3 returns it.
#[derive(Debug, Clone)]
pub enum Cell {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

impl PartialEq for Cell {
    /// Python equality: `1 == 1.0`; NaN equals itself only by identity, which
    /// we approximate as never equal.
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Cell::Null, Cell::Null) => true,
            (Cell::Int(a), Cell::Int(b)) => a == b,
            (Cell::Real(a), Cell::Real(b)) => a == b,
            (Cell::Int(a), Cell::Real(b)) | (Cell::Real(b), Cell::Int(a)) => (*a as f64) == *b && b.fract() == 0.0,
            (Cell::Text(a), Cell::Text(b)) => a == b,
            (Cell::Blob(a), Cell::Blob(b)) => a == b,
            _ => false,
        }
    }
}

impl Eq for Cell {}

impl std::hash::Hash for Cell {
    /// Consistent with `eq`: integral reals hash like the integer.
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        match self {
            Cell::Null => 0u8.hash(state),
            Cell::Int(i) => {
                1u8.hash(state);
                i.hash(state);
            }
            Cell::Real(r) => {
                if r.fract() == 0.0 && r.abs() < 9.2e18 {
                    1u8.hash(state);
                    (*r as i64).hash(state);
                } else {
                    2u8.hash(state);
                    r.to_bits().hash(state);
                }
            }
            Cell::Text(s) => {
                3u8.hash(state);
                s.hash(state);
            }
            Cell::Blob(b) => {
                4u8.hash(state);
                b.hash(state);
            }
        }
    }
}

impl Cell {
    /// `str(x) + str(type(x))` of the test-suite's `unorder_row` sort key.
    fn python_sort_key(&self) -> String {
        match self {
            Cell::Null => "None<class 'NoneType'>".to_string(),
            Cell::Int(i) => format!("{i}<class 'int'>"),
            Cell::Real(r) => format!("{}<class 'float'>", python_float_repr(*r)),
            Cell::Text(s) => format!("{s}<class 'str'>"),
            Cell::Blob(b) => format!("{b:?}<class 'bytes'>"),
        }
    }

    fn from_ref(v: ValueRef<'_>) -> Cell {
        match v {
            ValueRef::Null => Cell::Null,
            ValueRef::Integer(i) => Cell::Int(i),
            ValueRef::Real(r) => Cell::Real(r),
            // The reference decodes text with errors="ignore".
            ValueRef::Text(t) => Cell::Text(String::from_utf8_lossy(t).replace('\u{FFFD}', "")),
            ValueRef::Blob(b) => Cell::Blob(b.to_vec()),
        }
    }
}

fn python_float_repr(r: f64) -> String {
    if r.is_nan() {
        "nan".into()
    } else if r.is_infinite() {
        if r > 0.0 {
            "inf".into()
        } else {
            "-inf".into()
        }
    } else if r.fract() == 0.0 && r.abs() < 1e16 {
        format!("{r:.1}")
    } else {
        format!("{r}")
    }
}

pub type Row = Vec<Cell>;

/// Why a query produced no result.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", content = "message", rename_all = "snake_case")]
pub enum ExecError {
    /// Ran past the time limit and was interrupted.
    Timeout,
    /// More rows than the limit.
    TooManyRows,
    /// Denied by the sandbox (write, ATTACH, PRAGMA, ...).
    Denied(String),
    /// Did not prepare or failed while running.
    Sql(String),
}

impl std::fmt::Display for ExecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExecError::Timeout => write!(f, "timed out"),
            ExecError::TooManyRows => write!(f, "too many result rows"),
            ExecError::Denied(m) => write!(f, "denied by sandbox: {m}"),
            ExecError::Sql(m) => write!(f, "{m}"),
        }
    }
}

/// What a prepared statement touches: tables/columns read.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// (table, column) pairs read, lower-cased; column empty for whole-table reads.
    pub reads: Vec<(String, String)>,
}

/// A read-only, sandboxed connection to one database file.
pub struct Sandbox {
    conn: Connection,
    limits: ExecLimits,
    deadline: Arc<Mutex<Option<Instant>>>,
    denied: Arc<Mutex<Vec<String>>>,
    reads: Arc<Mutex<Vec<(String, String)>>>,
}

impl Sandbox {
    pub fn open(path: &Path, limits: ExecLimits) -> Result<Self> {
        let sqlite_err = |source| Error::Sqlite {
            path: path.to_path_buf(),
            source,
        };
        if !path.is_file() {
            return Err(Error::BadInput {
                path: path.to_path_buf(),
                message: "database file not found".into(),
            });
        }
        let conn =
            Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
                .map_err(sqlite_err)?;
        // Spider's gold queries use double-quoted string literals; allow them
        // whatever the library's compile-time default.
        conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_DQS_DML, true)
            .map_err(sqlite_err)?;
        let deadline: Arc<Mutex<Option<Instant>>> = Arc::new(Mutex::new(None));
        let d = Arc::clone(&deadline);
        conn.progress_handler(
            1000,
            Some(move || {
                d.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .is_some_and(|t| Instant::now() > t)
            }),
        );
        let denied = Arc::new(Mutex::new(Vec::new()));
        let reads = Arc::new(Mutex::new(Vec::new()));
        let (den, rd) = (Arc::clone(&denied), Arc::clone(&reads));
        conn.authorizer(Some(move |ctx: AuthContext<'_>| authorize(ctx, &den, &rd)));
        Ok(Sandbox {
            conn,
            limits,
            deadline,
            denied,
            reads,
        })
    }

    /// Prepare `sql` without running it: `Ok(access)` when it is a single,
    /// permitted statement that SQLite accepts against this schema.
    pub fn check(&self, sql: &str) -> std::result::Result<Access, ExecError> {
        self.reset_hooks();
        let res = self.prepare(sql).map(|_| ());
        self.finish(res)?;
        Ok(Access {
            reads: self.reads.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        })
    }

    /// Run `sql` and fetch every row, within the limits.
    pub fn query(&self, sql: &str) -> std::result::Result<Vec<Row>, ExecError> {
        self.reset_hooks();
        *self.deadline.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now() + self.limits.timeout);
        let res = self.run(sql);
        *self.deadline.lock().unwrap_or_else(|e| e.into_inner()) = None;
        match res {
            Err(ExecError::Sql(m)) if m.contains("interrupted") => Err(ExecError::Timeout),
            other => self.finish(other),
        }
    }

    fn run(&self, sql: &str) -> std::result::Result<Vec<Row>, ExecError> {
        let sql_err = |e: rusqlite::Error| ExecError::Sql(e.to_string());
        let mut stmt = self.prepare(sql)?;
        let ncols = stmt.column_count();
        let mut rows = stmt.query([]).map_err(sql_err)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(sql_err)? {
            if out.len() >= self.limits.max_rows {
                return Err(ExecError::TooManyRows);
            }
            let mut cells = Vec::with_capacity(ncols);
            for i in 0..ncols {
                cells.push(Cell::from_ref(row.get_ref(i).map_err(sql_err)?));
            }
            out.push(cells);
        }
        Ok(out)
    }

    /// Prepare one statement and insist it is a read-only query: statements
    /// the authorizer never sees (e.g. `VACUUM INTO`) are refused here.
    fn prepare(&self, sql: &str) -> std::result::Result<rusqlite::Statement<'_>, ExecError> {
        let stmt = self.conn.prepare(sql).map_err(|e| ExecError::Sql(e.to_string()))?;
        if !stmt.readonly() || stmt.column_count() == 0 {
            return Err(ExecError::Denied("not a read-only query".into()));
        }
        Ok(stmt)
    }

    fn reset_hooks(&self) {
        self.denied.lock().unwrap_or_else(|e| e.into_inner()).clear();
        self.reads.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// Report a sandbox denial as such rather than as a generic SQL error.
    fn finish<T>(&self, res: std::result::Result<T, ExecError>) -> std::result::Result<T, ExecError> {
        let denied = self.denied.lock().unwrap_or_else(|e| e.into_inner());
        match res {
            Err(_) if !denied.is_empty() => Err(ExecError::Denied(denied.join(", "))),
            other => other,
        }
    }
}

fn authorize(ctx: AuthContext<'_>, denied: &Mutex<Vec<String>>, reads: &Mutex<Vec<(String, String)>>) -> Authorization {
    match ctx.action {
        AuthAction::Select | AuthAction::Function { .. } | AuthAction::Recursive => Authorization::Allow,
        AuthAction::Read {
            table_name,
            column_name,
        } => {
            reads
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((table_name.to_lowercase(), column_name.to_lowercase()));
            Authorization::Allow
        }
        other => {
            denied
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(format!("{other:?}"));
            Authorization::Deny
        }
    }
}

// ---- result comparison (test-suite `result_eq`) ----

/// Test-suite denotation equality: equal bags of rows (lists when
/// `order_matters`), allowing the prediction's columns to be permuted.
pub fn result_eq(gold: &[Row], pred: &[Row], order_matters: bool) -> bool {
    if gold.is_empty() && pred.is_empty() {
        return true;
    }
    if gold.len() != pred.len() {
        return false;
    }
    let ncols = gold[0].len();
    if pred[0].len() != ncols {
        return false;
    }
    if !quick_rej(gold, pred, order_matters) {
        return false;
    }
    let gold_col_sets: Vec<HashSet<&Cell>> = (0..ncols)
        .map(|i| gold.iter().filter_map(|r| r.get(i)).collect())
        .collect();
    for perm in candidate_permutations(&gold_col_sets, pred, ncols) {
        let permuted: Vec<Row> = if ncols == 1 {
            pred.to_vec()
        } else {
            pred.iter()
                .map(|r| perm.iter().map(|&i| r.get(i).cloned().unwrap_or(Cell::Null)).collect())
                .collect()
        };
        let ok = if order_matters {
            gold == permuted.as_slice()
        } else {
            let gs: HashSet<&Row> = gold.iter().collect();
            let ps: HashSet<&Row> = permuted.iter().collect();
            gs == ps && multiset_eq(gold, &permuted)
        };
        if ok {
            return true;
        }
    }
    false
}

/// Rows with their cells sorted compare equal (as a set, or as a list when
/// order matters): a cheap necessary condition.
fn quick_rej(a: &[Row], b: &[Row], order_matters: bool) -> bool {
    let unorder = |row: &Row| -> Row {
        let mut r = row.clone();
        r.sort_by_cached_key(Cell::python_sort_key);
        r
    };
    let sa: Vec<Row> = a.iter().map(unorder).collect();
    let sb: Vec<Row> = b.iter().map(unorder).collect();
    if order_matters {
        sa == sb
    } else {
        sa.iter().collect::<HashSet<_>>() == sb.iter().collect::<HashSet<_>>()
    }
}

fn multiset_eq(a: &[Row], b: &[Row]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut counts: HashMap<&Row, i64> = HashMap::new();
    for r in a {
        *counts.entry(r).or_default() += 1;
    }
    for r in b {
        let c = counts.entry(r).or_default();
        *c -= 1;
        if *c < 0 {
            return false;
        }
    }
    true
}

/// Column permutations worth trying. Upstream samples 20 random prediction
/// rows to prune candidates for more than 3 columns; pruning with every row
/// is deterministic and keeps only permutations that can still succeed.
fn candidate_permutations(gold_col_sets: &[HashSet<&Cell>], pred: &[Row], ncols: usize) -> Vec<Vec<usize>> {
    let mut allowed: Vec<Vec<usize>> = vec![(0..ncols).collect(); ncols];
    if ncols > 3 {
        for (g, allowed_g) in allowed.iter_mut().enumerate() {
            allowed_g.retain(|&p| {
                pred.iter()
                    .all(|row| row.get(p).is_some_and(|c| gold_col_sets[g].contains(c)))
            });
        }
    }
    let mut out = Vec::new();
    let mut current = Vec::with_capacity(ncols);
    let mut used = vec![false; ncols];
    permute(&allowed, 0, &mut current, &mut used, &mut out);
    out
}

fn permute(allowed: &[Vec<usize>], pos: usize, cur: &mut Vec<usize>, used: &mut [bool], out: &mut Vec<Vec<usize>>) {
    if pos == allowed.len() {
        out.push(cur.clone());
        return;
    }
    // Cap the search: beyond this many candidates the answer is decided by
    // the first ones found in practice, and factorial blow-up must not hang.
    if out.len() >= 10_000 {
        return;
    }
    for &c in &allowed[pos] {
        if !used[c] {
            used[c] = true;
            cur.push(c);
            permute(allowed, pos + 1, cur, used, out);
            cur.pop();
            used[c] = false;
        }
    }
}

// ---- query pre-processing of the test-suite evaluator ----

/// `'> ='` → `'>='` etc., as the test-suite evaluator does before running.
pub fn postprocess(query: &str) -> String {
    query.replace("> =", ">=").replace("< =", "<=").replace("! =", "!=")
}

/// `YEAR(CURDATE())` → `2020` (MySQL-ism in some predictions).
pub fn replace_cur_year(query: &str) -> String {
    static RE: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r"(?i)YEAR\s*\(\s*CURDATE\s*\(\s*\)\s*\)\s*").expect("static regex")
    });
    RE.replace_all(query, "2020").into_owned()
}

/// Drop every DISTINCT keyword outside string literals and quoted names
/// (the test-suite evaluator's default, `keep_distinct=False`).
pub fn remove_distinct(query: &str) -> String {
    let mut out = String::with_capacity(query.len());
    let chars: Vec<char> = query.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if matches!(c, '\'' | '"' | '`') {
            // copy the quoted span verbatim (doubled quote = escaped quote)
            let mut j = i + 1;
            while j < chars.len() {
                if chars[j] == c {
                    if chars.get(j + 1) == Some(&c) {
                        j += 2;
                        continue;
                    }
                    break;
                }
                j += 1;
            }
            let end = (j + 1).min(chars.len());
            out.extend(&chars[i..end]);
            i = end;
        } else if c.is_alphanumeric() || c == '_' {
            let mut j = i;
            while j < chars.len() && (chars[j].is_alphanumeric() || chars[j] == '_' || chars[j] == '$') {
                j += 1;
            }
            let word: String = chars[i..j].iter().collect();
            if !word.eq_ignore_ascii_case("distinct") {
                out.push_str(&word);
            }
            i = j;
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(v: &[&[i64]]) -> Vec<Row> {
        v.iter().map(|r| r.iter().map(|&x| Cell::Int(x)).collect()).collect()
    }

    #[test]
    fn result_eq_follows_bag_semantics_and_column_permutation() {
        let g = rows(&[&[1, 2], &[3, 4]]);
        assert!(result_eq(&g, &rows(&[&[3, 4], &[1, 2]]), false));
        assert!(!result_eq(&g, &rows(&[&[3, 4], &[1, 2]]), true));
        assert!(result_eq(&g, &rows(&[&[2, 1], &[4, 3]]), true));
        assert!(!result_eq(&g, &rows(&[&[1, 2], &[1, 2]]), false));
        assert!(!result_eq(&g, &rows(&[&[1, 2]]), false));
        assert!(result_eq(&[vec![Cell::Int(2)]], &[vec![Cell::Real(2.0)]], false));
        assert!(result_eq(&[], &[], true));
    }

    #[test]
    fn remove_distinct_keeps_literals() {
        assert_eq!(
            remove_distinct("SELECT DISTINCT a, count(distinct b) FROM t WHERE c = 'distinct'"),
            "SELECT  a, count( b) FROM t WHERE c = 'distinct'"
        );
        assert_eq!(
            remove_distinct("select distinct_col from t"),
            "select distinct_col from t"
        );
    }
}
