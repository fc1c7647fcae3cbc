//! Sandboxed execution of untrusted SQL on SQLite, and the test-suite
//! evaluator's denotation comparison.
//!
//! Safety: the database is opened read-only; input holding more than one
//! statement is refused by a lexical scan before SQLite sees it; an
//! authorizer allows only reading (SELECT, column reads, functions,
//! recursive CTEs) and denies writes, schema changes, ATTACH/DETACH, PRAGMA
//! and transactions at prepare time. Every phase is bounded by time and by
//! bytes: a progress handler interrupts a statement past its deadline;
//! SQLite's own length limit makes any string or blob over
//! [`ByteLimits::max_value_bytes`] fail at once (`randomblob(1e9)`,
//! `zeroblob`, `printf('%.*c', …)`, `group_concat`, `||`), which the clock
//! cannot do since a single call never reaches the progress handler; temporary
//! tables and sorts live in memory under SQLite's heap limit instead of
//! in unbounded temp files; the rows collected are capped in number and bytes;
//! and the comparison with the gold result has its own deadline.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
use rusqlite::limits::Limit;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, ErrorCode, OpenFlags};

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

/// Byte budgets of a sandbox (the time and row limits are [`ExecLimits`]).
#[derive(Debug, Clone, Copy)]
pub struct ByteLimits {
    /// Longest string or blob a query may build, anywhere in its evaluation
    /// (SQLite's `SQLITE_LIMIT_LENGTH`, default 1 GB).
    pub max_value_bytes: usize,
    /// Longest SQL text accepted.
    pub max_sql_bytes: usize,
    /// Bytes of the collected result (payload plus per-cell overhead).
    pub max_result_bytes: usize,
    /// SQLite's heap, temporary tables and sorts included. SQLite has one
    /// heap limit per process, so it is shared by every connection: opening a
    /// sandbox raises it to this value, never lowers it (a smaller request must
    /// not break a larger sandbox open in another thread).
    pub max_heap_bytes: usize,
}

impl Default for ByteLimits {
    fn default() -> Self {
        ByteLimits {
            max_value_bytes: 4 << 20,
            max_sql_bytes: 1 << 20,
            max_result_bytes: 64 << 20,
            max_heap_bytes: 512 << 20,
        }
    }
}

/// Raise SQLite's process-wide heap limit to `bytes` (never lower it, see
/// [`ByteLimits::max_heap_bytes`]). The soft limit, at which SQLite starts
/// to give back page cache, sits at half of it.
fn raise_heap_limit(bytes: usize) {
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let want = i64::try_from(bytes).unwrap_or(i64::MAX);
    // SAFETY: plain calls into SQLite's thread-safe memory API; -1 only reads.
    unsafe {
        let current = rusqlite::ffi::sqlite3_hard_heap_limit64(-1);
        if current == 0 || current < want {
            rusqlite::ffi::sqlite3_hard_heap_limit64(want);
            rusqlite::ffi::sqlite3_soft_heap_limit64(want / 2);
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
            // Numbers hash by their value as f64: `Int(a) == Real(b)` compares
            // `a as f64`, so large integers that round to the same double
            // must hash alike too. -0.0 == 0.0.
            Cell::Int(i) => {
                1u8.hash(state);
                ((*i as f64) + 0.0).to_bits().hash(state);
            }
            Cell::Real(r) => {
                1u8.hash(state);
                (r + 0.0).to_bits().hash(state);
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

    /// Memory a collected cell takes, for the result's byte budget.
    fn bytes(&self) -> usize {
        std::mem::size_of::<Cell>()
            + match self {
                Cell::Text(s) => s.len(),
                Cell::Blob(b) => b.len(),
                _ => 0,
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
    /// Over a byte limit: a value, the result, SQLite's heap, or the SQL text.
    TooBig(String),
    /// The comparison with the gold result ran past the time limit.
    CompareTimeout,
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
            ExecError::TooBig(m) => write!(f, "over the byte limit: {m}"),
            ExecError::CompareTimeout => write!(f, "comparison with the gold result timed out"),
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
    bytes: ByteLimits,
    deadline: Arc<Mutex<Option<Instant>>>,
    denied: Arc<Mutex<Vec<String>>>,
    reads: Arc<Mutex<Vec<(String, String)>>>,
}

impl Sandbox {
    /// Open with the default [`ByteLimits`].
    pub fn open(path: &Path, limits: ExecLimits) -> Result<Self> {
        Self::open_with(path, limits, ByteLimits::default())
    }

    pub fn open_with(path: &Path, limits: ExecLimits, bytes: ByteLimits) -> Result<Self> {
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
        let clamp = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
        conn.set_limit(Limit::SQLITE_LIMIT_LENGTH, clamp(bytes.max_value_bytes))
            .map_err(sqlite_err)?;
        conn.set_limit(Limit::SQLITE_LIMIT_SQL_LENGTH, clamp(bytes.max_sql_bytes))
            .map_err(sqlite_err)?;
        // Sorts, DISTINCT and materialised subqueries spill to temp files by
        // default, which no limit bounds; in memory they count against the
        // heap limit. Set before the authorizer, which denies PRAGMA.
        conn.pragma_update(None, "temp_store", "memory").map_err(sqlite_err)?;
        raise_heap_limit(bytes.max_heap_bytes);
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
            bytes,
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
        self.finish(res)
    }

    fn run(&self, sql: &str) -> std::result::Result<Vec<Row>, ExecError> {
        let mut stmt = self.prepare(sql)?;
        let ncols = stmt.column_count();
        let mut rows = stmt.query([]).map_err(exec_error)?;
        let mut out = Vec::new();
        let mut bytes = 0usize;
        while let Some(row) = rows.next().map_err(exec_error)? {
            if out.len() >= self.limits.max_rows {
                return Err(ExecError::TooManyRows);
            }
            let mut cells = Vec::with_capacity(ncols);
            for i in 0..ncols {
                let cell = Cell::from_ref(row.get_ref(i).map_err(exec_error)?);
                bytes += cell.bytes();
                cells.push(cell);
            }
            if bytes > self.bytes.max_result_bytes {
                return Err(ExecError::TooBig(format!(
                    "result over {} bytes after {} rows",
                    self.bytes.max_result_bytes,
                    out.len() + 1
                )));
            }
            out.push(cells);
        }
        Ok(out)
    }

    /// Prepare one statement and insist it is a read-only query: statements
    /// the authorizer never sees (e.g. `VACUUM INTO`) are refused here.
    fn prepare(&self, sql: &str) -> std::result::Result<rusqlite::Statement<'_>, ExecError> {
        if sql.len() > self.bytes.max_sql_bytes {
            return Err(ExecError::TooBig(format!(
                "SQL text of {} bytes, over the limit of {}",
                sql.len(),
                self.bytes.max_sql_bytes
            )));
        }
        // Only the first statement reaches SQLite: rusqlite checks what
        // follows a statement by preparing it, recursively, so 50,000
        // statements overflowed the stack.
        let first = &sql[..single_statement(sql)?];
        let stmt = self.conn.prepare(first).map_err(exec_error)?;
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

/// Classify a SQLite error: interrupted by the progress handler is a
/// timeout, over a length or heap limit is [`ExecError::TooBig`].
fn exec_error(e: rusqlite::Error) -> ExecError {
    match e.sqlite_error_code() {
        Some(ErrorCode::OperationInterrupted) => ExecError::Timeout,
        Some(ErrorCode::TooBig | ErrorCode::OutOfMemory) => ExecError::TooBig(e.to_string()),
        _ => ExecError::Sql(e.to_string()),
    }
}

/// Byte length of the first statement of `sql` (without its `;`), or
/// `Denied` when another statement follows. A lexical scan following
/// SQLite's tokenizer: `;` inside '…' strings, "…", `…` and […] names, and
/// -- and /* */ comments does not end a statement; after the first `;` only
/// whitespace, comments and further `;` may follow.
fn single_statement(sql: &str) -> std::result::Result<usize, ExecError> {
    let b = sql.as_bytes();
    let mut i = 0;
    // Index just past the comment or quoted span starting at `i`, if any.
    let skip = |i: usize| -> Option<usize> {
        let close = |from: usize, q: u8| -> usize {
            let mut j = from;
            while j < b.len() {
                if b[j] == q {
                    // A doubled quote is an escaped one (not inside [..]).
                    if q != b']' && b.get(j + 1) == Some(&q) {
                        j += 2;
                        continue;
                    }
                    return j + 1;
                }
                j += 1;
            }
            b.len()
        };
        match (b[i], b.get(i + 1)) {
            (b'-', Some(b'-')) => Some(b[i..].iter().position(|&c| c == b'\n').map_or(b.len(), |p| i + p + 1)),
            (b'/', Some(b'*')) => Some(
                b[i + 2..]
                    .windows(2)
                    .position(|w| w == b"*/")
                    .map_or(b.len(), |p| i + 2 + p + 2),
            ),
            (q @ (b'\'' | b'"' | b'`'), _) => Some(close(i + 1, q)),
            (b'[', _) => Some(close(i + 1, b']')),
            _ => None,
        }
    };
    while i < b.len() {
        if let Some(next) = skip(i) {
            i = next;
        } else if b[i] == b';' {
            break;
        } else {
            i += 1;
        }
    }
    let end = i;
    while i < b.len() {
        if let Some(next) = skip(i) {
            // A quoted span after the first statement is more SQL.
            if matches!(b[i], b'\'' | b'"' | b'`' | b'[') {
                return Err(more_than_one());
            }
            i = next;
        } else if b[i] == b';' || b[i].is_ascii_whitespace() {
            i += 1;
        } else {
            return Err(more_than_one());
        }
    }
    Ok(end)
}

fn more_than_one() -> ExecError {
    ExecError::Denied("more than one statement (only one statement is allowed)".into())
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
/// Without a time limit; the evaluator uses [`result_eq_within`].
pub fn result_eq(gold: &[Row], pred: &[Row], order_matters: bool) -> bool {
    result_eq_within(gold, pred, order_matters, None).unwrap_or(false)
}

/// [`result_eq`] that gives up with [`ExecError::CompareTimeout`] once
/// `deadline` has passed.
///
/// Upstream tries every column permutation (pruned on 20 sampled rows when
/// there are more than three columns) and rebuilds the whole table for each:
/// 20,000 rows × 8 columns took minutes. Here a permutation is only tried
/// when each gold column and each pair of gold columns holds the same
/// multiset of values (compared by order-independent hash sums, O(rows ×
/// columns²) once) as its image in the prediction: a necessary condition, so
/// the answer is upstream's. Interchangeable (identical) prediction columns
/// are tried in one order only, and each remaining candidate is checked with
/// one hash-map pass that stops at the first unmatched row.
pub fn result_eq_within(
    gold: &[Row],
    pred: &[Row],
    order_matters: bool,
    deadline: Option<Instant>,
) -> std::result::Result<bool, ExecError> {
    let mut clock = Clock::new(deadline);
    clock.check()?;
    if gold.is_empty() && pred.is_empty() {
        return Ok(true);
    }
    if gold.len() != pred.len() {
        return Ok(false);
    }
    let ncols = gold[0].len();
    if pred[0].len() != ncols || gold.iter().chain(pred).any(|r| r.len() != ncols) {
        return Ok(false);
    }
    if !quick_rej(gold, pred, order_matters, &mut clock)? {
        return Ok(false);
    }
    let gprint = Fingerprints::of(gold, &mut clock)?;
    let pprint = Fingerprints::of(pred, &mut clock)?;
    // The nearest earlier prediction column identical to each one:
    // permutations that only swap identical columns give the same table, so
    // identical columns are used in increasing order only.
    let mut same_as = vec![None; ncols];
    for q in 0..ncols {
        for p in (0..q).rev() {
            clock.tick(pred.len())?;
            if pred.iter().all(|r| r[p] == r[q]) {
                same_as[q] = Some(p);
                break;
            }
        }
    }
    let gold_counts: Option<HashMap<Vec<&Cell>, usize>> = (!order_matters).then(|| {
        let mut m = HashMap::new();
        for r in gold {
            *m.entry(r.iter().collect()).or_default() += 1;
        }
        m
    });
    let mut search = PermSearch {
        gold: &gprint,
        pred: &pprint,
        same_as: &same_as,
        perm: Vec::with_capacity(ncols),
        used: vec![false; ncols],
        tried: 0,
    };
    search.run(
        &mut |perm, clock| {
            if order_matters {
                for (g, p) in gold.iter().zip(pred) {
                    clock.tick(1)?;
                    if !perm.iter().enumerate().all(|(gi, &pi)| g[gi] == p[pi]) {
                        return Ok(false);
                    }
                }
                Ok(true)
            } else {
                let mut counts = gold_counts.clone().expect("built when order does not matter");
                for p in pred {
                    clock.tick(1)?;
                    let key: Vec<&Cell> = perm.iter().map(|&i| &p[i]).collect();
                    match counts.get_mut(&key) {
                        Some(c) if *c > 0 => *c -= 1,
                        _ => return Ok(false),
                    }
                }
                Ok(true)
            }
        },
        &mut clock,
    )
}

/// Checks a deadline every few thousand units of work (reading the clock
/// per row would dominate a cheap loop).
struct Clock {
    deadline: Option<Instant>,
    work: usize,
}

impl Clock {
    fn new(deadline: Option<Instant>) -> Self {
        Clock { deadline, work: 0 }
    }

    fn check(&self) -> std::result::Result<(), ExecError> {
        match self.deadline {
            Some(d) if Instant::now() > d => Err(ExecError::CompareTimeout),
            _ => Ok(()),
        }
    }

    fn tick(&mut self, units: usize) -> std::result::Result<(), ExecError> {
        self.work += units;
        if self.work >= 4096 {
            self.work = 0;
            self.check()?;
        }
        Ok(())
    }
}

fn cell_hash(c: &Cell) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    c.hash(&mut h);
    h.finish()
}

/// Spreads a hash before it is summed, so that sums of different multisets
/// rarely collide (a collision only costs a wasted candidate).
fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

/// Order-independent hashes of the multiset of values in each column and in
/// each ordered pair of columns.
struct Fingerprints {
    single: Vec<u64>,
    /// `pair[a * ncols + b]`: the multiset of `(row[a], row[b])`.
    pair: Vec<u64>,
    ncols: usize,
}

impl Fingerprints {
    fn of(rows: &[Row], clock: &mut Clock) -> std::result::Result<Self, ExecError> {
        let ncols = rows.first().map_or(0, Vec::len);
        let mut single = vec![0u64; ncols];
        let mut pair = vec![0u64; ncols * ncols];
        let mut hashes = vec![0u64; ncols];
        for r in rows {
            clock.tick(ncols * ncols)?;
            for (h, c) in hashes.iter_mut().zip(r) {
                *h = cell_hash(c);
            }
            for a in 0..ncols {
                single[a] = single[a].wrapping_add(mix(hashes[a]));
                for b in 0..ncols {
                    if a != b {
                        let v = mix(hashes[a].rotate_left(17) ^ hashes[b].wrapping_mul(0x9e37_79b9_7f4a_7c15));
                        pair[a * ncols + b] = pair[a * ncols + b].wrapping_add(v);
                    }
                }
            }
        }
        Ok(Fingerprints { single, pair, ncols })
    }
}

/// Depth-first search over the column permutations that pass the
/// fingerprints, gold column by gold column.
struct PermSearch<'a> {
    gold: &'a Fingerprints,
    pred: &'a Fingerprints,
    same_as: &'a [Option<usize>],
    perm: Vec<usize>,
    used: Vec<bool>,
    tried: usize,
}

/// Checks one candidate permutation (`perm[gold column] = pred column`).
type Verify<'v> = dyn FnMut(&[usize], &mut Clock) -> std::result::Result<bool, ExecError> + 'v;

/// Candidates past this many are not tried (the answer is then `false`):
/// only highly symmetric tables get here, and the deadline still applies.
const MAX_PERMUTATIONS: usize = 10_000;

impl PermSearch<'_> {
    fn run(&mut self, verify: &mut Verify<'_>, clock: &mut Clock) -> std::result::Result<bool, ExecError> {
        let n = self.gold.ncols;
        let g = self.perm.len();
        if g == n {
            self.tried += 1;
            clock.check()?;
            return verify(&self.perm, clock);
        }
        for p in 0..n {
            if self.tried >= MAX_PERMUTATIONS {
                return Ok(false);
            }
            clock.tick(n)?;
            if self.used[p] || self.gold.single[g] != self.pred.single[p] {
                continue;
            }
            // Identical columns in their own order only.
            if self.same_as[p].is_some_and(|q| !self.used[q]) {
                continue;
            }
            let consistent = self.perm.iter().enumerate().all(|(g0, &p0)| {
                self.gold.pair[g0 * n + g] == self.pred.pair[p0 * n + p]
                    && self.gold.pair[g * n + g0] == self.pred.pair[p * n + p0]
            });
            if !consistent {
                continue;
            }
            self.used[p] = true;
            self.perm.push(p);
            let found = self.run(verify, clock);
            self.perm.pop();
            self.used[p] = false;
            if found? {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

/// Rows with their cells sorted compare equal (as a set, or as a list when
/// order matters): a cheap necessary condition.
fn quick_rej(a: &[Row], b: &[Row], order_matters: bool, clock: &mut Clock) -> std::result::Result<bool, ExecError> {
    fn unorder<'r>(row: &'r Row, clock: &mut Clock) -> std::result::Result<Vec<&'r Cell>, ExecError> {
        clock.tick(row.len())?;
        let mut r: Vec<&Cell> = row.iter().collect();
        r.sort_by_cached_key(|c| c.python_sort_key());
        Ok(r)
    }
    let sa = a
        .iter()
        .map(|r| unorder(r, clock))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let sb = b
        .iter()
        .map(|r| unorder(r, clock))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(if order_matters {
        sa == sb
    } else {
        sa.iter().collect::<HashSet<_>>() == sb.iter().collect::<HashSet<_>>()
    })
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
    fn result_eq_hashes_numbers_like_it_compares_them() {
        // i64::MAX as f64 rounds to 2^63: equal, so they must hash alike.
        let big = [vec![Cell::Int(i64::MAX)], vec![Cell::Int(1)]];
        let real = [vec![Cell::Int(1)], vec![Cell::Real(2f64.powi(63))]];
        assert!(result_eq(&big, &real, false));
        assert!(result_eq(&[vec![Cell::Real(-0.0)]], &[vec![Cell::Int(0)]], false));
    }

    #[test]
    fn comparison_past_its_deadline_gives_up() {
        let g = rows(&[&[1, 2], &[3, 4]]);
        let past = Instant::now() - Duration::from_millis(1);
        assert_eq!(
            result_eq_within(&g, &g, false, Some(past)),
            Err(ExecError::CompareTimeout)
        );
        let later = Instant::now() + Duration::from_secs(60);
        assert_eq!(result_eq_within(&g, &g, false, Some(later)), Ok(true));
    }

    #[test]
    fn single_statement_scan() {
        assert_eq!(single_statement("SELECT 1"), Ok(8));
        assert_eq!(single_statement("SELECT ';' ; -- x\n;"), Ok(11));
        assert_eq!(single_statement("SELECT [a;b] /* ; */"), Ok(20));
        assert!(single_statement("SELECT 1; SELECT 2").is_err());
        assert!(single_statement("SELECT 1; 'x'").is_err());
        assert!(single_statement("SELECT 1; /* open").is_ok());
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
