//! Every phase of an untrusted query is bounded by time and by bytes:
//! single expensive calls fail fast instead of allocating gigabytes, the
//! collected result has a byte budget, the comparison with the gold result
//! is fast and under the time limit, and input with more than one statement
//! is refused before SQLite sees it.
//!
//! The heap limit is process-wide, so its test lives in `sandbox_heap.rs`.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use sqlora_eval::exec::{result_eq, ByteLimits, Cell, ExecError, ExecLimits, Row, Sandbox};
use sqlora_eval::spider::ExecStatus;
use sqlora_eval::{EvalOptions, Evaluator, GoldExample};

fn db() -> PathBuf {
    common::spider().join("database/concert_singer/concert_singer.sqlite")
}

/// The time limit is generous on purpose: what must stop these queries is
/// the byte limit, long before the clock.
fn sandbox() -> Sandbox {
    let limits = ExecLimits {
        timeout: Duration::from_secs(3),
        max_rows: 10_000,
    };
    let bytes = ByteLimits {
        max_value_bytes: 1 << 20,
        max_result_bytes: 8 << 20,
        ..ByteLimits::default()
    };
    Sandbox::open_with(&db(), limits, bytes).unwrap()
}

/// A short description of an outcome (never the, possibly huge, values).
fn summary(res: &Result<Vec<Row>, ExecError>) -> String {
    match res {
        Ok(rows) => format!("Ok({} rows)", rows.len()),
        Err(e) => format!("Err({e})"),
    }
}

/// SQLite's own allocations since the last call (its global high-water mark).
fn sqlite_highwater_reset() -> i64 {
    unsafe { rusqlite::ffi::sqlite3_memory_highwater(1) }
}

#[test]
fn expensive_single_calls_fail_fast_and_small() {
    let sandbox = sandbox();
    let hostile = [
        "SELECT randomblob(1e9)",
        "SELECT zeroblob(1e9)",
        "SELECT length(zeroblob(1e9) || 'x')",
        "SELECT printf('%.*c', 1000000000, 'x')",
        "SELECT randomblob(1e9) FROM singer",
        "SELECT length(group_concat(printf('%.*c', 1000, 'x'))) FROM \
         (WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 100000) SELECT x FROM c)",
        "WITH RECURSIVE c(x, b) AS (SELECT 1, randomblob(1000) UNION ALL SELECT x + 1, b || b FROM c WHERE x < 40) \
         SELECT length(b) FROM c",
    ];
    for q in hostile {
        sqlite_highwater_reset();
        let t = Instant::now();
        let res = sandbox.query(q);
        let (elapsed, peak) = (t.elapsed(), sqlite_highwater_reset());
        // Over the length limit SQLite fails, or (printf) gives NULL.
        let refused = match &res {
            Err(ExecError::TooBig(_)) => true,
            Ok(rows) => rows.iter().flatten().all(|c| *c == Cell::Null),
            Err(_) => false,
        };
        assert!(refused, "{q}: {}", summary(&res));
        assert!(elapsed < Duration::from_millis(1500), "{q} took {elapsed:?}");
        assert!(peak < 32 << 20, "{q}: SQLite peaked at {peak} bytes");
    }
    // The connection is still usable, and ordinary values are untouched.
    assert_eq!(
        sandbox.query("SELECT length(randomblob(1000))").unwrap(),
        vec![vec![Cell::Int(1000)]]
    );
}

#[test]
fn collected_result_has_a_byte_budget() {
    let sandbox = sandbox();
    // Each value is under the per-value limit; together they are 50 MB.
    let q = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 100) \
             SELECT printf('%.*c', 500000, 'x') FROM c";
    let t = Instant::now();
    let res = sandbox.query(q);
    assert!(matches!(res, Err(ExecError::TooBig(_))), "{}", summary(&res));
    assert!(t.elapsed() < Duration::from_millis(1500), "took {:?}", t.elapsed());
    let small = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 10) \
                 SELECT printf('%.*c', 500000, 'x') FROM c";
    assert_eq!(sandbox.query(small).unwrap().len(), 10);
}

#[test]
fn more_than_one_statement_is_refused_before_prepare() {
    let sandbox = sandbox();
    // 50,000 statements on one line overflowed the stack (rusqlite checks the
    // tail of a prepared statement by preparing it, recursively).
    let many = "SELECT 1; ".repeat(50_000);
    let t = Instant::now();
    for res in [sandbox.query(&many).map(|_| ()), sandbox.check(&many).map(|_| ())] {
        match res {
            Err(ExecError::Denied(m)) => assert!(m.contains("one statement"), "{m}"),
            other => panic!("{other:?}"),
        }
    }
    assert!(t.elapsed() < Duration::from_secs(1), "took {:?}", t.elapsed());
    for q in [
        "SELECT 1; SELECT 2",
        "SELECT 1;/* c */ SELECT 2",
        "SELECT 1 -- c\n; DROP TABLE singer",
    ] {
        assert!(matches!(sandbox.query(q), Err(ExecError::Denied(_))), "{q}");
    }
    // Semicolons inside literals, names and comments, and trailing ones, are fine.
    for q in [
        "SELECT ';'",
        "SELECT 1 AS \"a;b\"",
        "SELECT 1 AS [a;b]",
        "SELECT 1 AS `a;b`",
        "SELECT 'it''s;' -- x; y",
        "SELECT 1 /* ; */",
        "SELECT 1;",
        "SELECT 1 ; ; -- done;\n",
    ] {
        assert_eq!(sandbox.query(q).map(|r| r.len()), Ok(1), "{q}");
    }

    // The evaluator scores it as a failed prediction, no crash.
    let mut evaluator = Evaluator::new(
        &common::spider().join("tables.json"),
        &common::spider().join("database"),
        EvalOptions::default(),
    )
    .unwrap();
    let gold = GoldExample {
        sql: "SELECT count(*) FROM singer".into(),
        db_id: "concert_singer".into(),
        question: None,
    };
    let r = evaluator.score(0, &gold, &many).unwrap();
    assert!(!r.exec_match && !r.valid_sql);
    assert!(matches!(r.exec_status, ExecStatus::Failed(ExecError::Denied(_))));
}

/// 20,000 rows of 8 columns drawn from a small domain, so that every column
/// permutation passes upstream's prefilter.
fn wide_table(n: usize) -> Vec<Row> {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    (0..n)
        .map(|_| {
            (0..8)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    Cell::Int((state % 4) as i64)
                })
                .collect()
        })
        .collect()
}

#[test]
fn comparison_with_gold_is_fast() {
    let gold = wide_table(20_000);
    // Differs by one row, which duplicates another one: the cheap set test passes.
    let mut pred = gold.clone();
    pred[7] = pred[8].clone();
    let t = Instant::now();
    assert!(!result_eq(&gold, &pred, false));
    assert!(!result_eq(&gold, &pred, true));
    // Column-permuted and row-shuffled copies still match.
    let perm = [3, 0, 7, 1, 6, 2, 5, 4];
    let mut shuffled: Vec<Row> = gold
        .iter()
        .map(|r| perm.iter().map(|&i| r[i].clone()).collect())
        .collect();
    assert!(result_eq(&gold, &shuffled, true));
    shuffled.reverse();
    assert!(result_eq(&gold, &shuffled, false));
    assert!(!result_eq(&gold, &shuffled, true));
    // Identical columns: 8! permutations that all give the same table.
    let same: Vec<Row> = (0..20_000).map(|i| vec![Cell::Int(i % 50); 8]).collect();
    let mut other = same.clone();
    other[7] = other[8].clone();
    assert!(!result_eq(&same, &other, false));
    assert!(result_eq(&same, &same, false));
    assert!(t.elapsed() < Duration::from_secs(2), "took {:?}", t.elapsed());
}
