//! Temporary storage of an untrusted query is bounded: sorts and DISTINCT
//! stay in memory under SQLite's heap limit instead of filling temp files.
//!
//! SQLite's heap limit is process-wide, so this test has a binary of its own.

mod common;

use std::time::{Duration, Instant};

use sqlora_eval::exec::{ByteLimits, ExecError, ExecLimits, Sandbox};

#[test]
fn temp_storage_is_bounded_by_the_heap_limit() {
    let db = common::spider().join("database/concert_singer/concert_singer.sqlite");
    let limits = ExecLimits {
        timeout: Duration::from_secs(20),
        max_rows: 1000,
    };
    let bytes = ByteLimits {
        max_heap_bytes: 16 << 20,
        ..ByteLimits::default()
    };
    let sandbox = Sandbox::open_with(&db, limits, bytes).unwrap();
    // 60,000 distinct 1 KB values: 60 MB of temporary b-tree.
    let q = "SELECT count(*) FROM (SELECT DISTINCT printf('%.*c', 1000, 'x') || x FROM \
             (WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 60000) SELECT x FROM c))";
    let t = Instant::now();
    let res = sandbox.query(q);
    assert!(matches!(res, Err(ExecError::TooBig(_))), "{res:?}");
    assert!(t.elapsed() < Duration::from_secs(5), "took {:?}", t.elapsed());
    // The same query over fewer rows fits and runs.
    let small = q.replace("LIMIT 60000", "LIMIT 1000");
    assert_eq!(
        sandbox.query(&small).unwrap(),
        vec![vec![sqlora_eval::exec::Cell::Int(1000)]]
    );
}
