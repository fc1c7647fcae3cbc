//! Untrusted SQL is stopped: slow queries time out, writes are denied, and
//! the database file is byte-for-byte unchanged.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use sqlora_eval::exec::{ExecError, ExecLimits, Sandbox};
use sqlora_eval::spider::ExecStatus;
use sqlora_eval::{evaluate, EvalOptions, Evaluator, GoldExample};

fn sha256(path: &Path) -> Vec<u8> {
    Sha256::digest(std::fs::read(path).unwrap()).to_vec()
}

/// A private copy of concert_singer in `<tmp>/database/concert_singer/`.
fn temp_db(tag: &str) -> (PathBuf, PathBuf) {
    let root = std::env::temp_dir().join(format!("sqlora-eval-{tag}-{}", std::process::id()));
    let dir = root.join("database/concert_singer");
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("concert_singer.sqlite");
    std::fs::copy(
        common::spider().join("database/concert_singer/concert_singer.sqlite"),
        &db,
    )
    .unwrap();
    (root, db)
}

const SLOW: [&str; 2] = [
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c",
    "SELECT count(*) FROM singer a, singer b, singer c, singer d, singer e, singer f, singer g, singer h, singer i, singer j",
];

const WRITES: [&str; 9] = [
    "DELETE FROM singer",
    "DROP TABLE singer",
    "UPDATE singer SET name = 'x'",
    "INSERT INTO singer (singer_id) VALUES (999)",
    "CREATE TABLE evil (x)",
    "ATTACH DATABASE 'evil.sqlite' AS evil",
    "PRAGMA writable_schema = 1",
    "SELECT 1; DROP TABLE singer",
    "VACUUM INTO 'copy.sqlite'",
];

#[test]
fn slow_queries_and_writes_are_stopped_and_file_unchanged() {
    let (root, db) = temp_db("sandbox");
    let before = sha256(&db);
    let sandbox = Sandbox::open(
        &db,
        ExecLimits {
            timeout: Duration::from_millis(300),
            max_rows: 1000,
        },
    )
    .unwrap();

    for q in SLOW {
        let t = Instant::now();
        assert_eq!(sandbox.query(q), Err(ExecError::Timeout), "{q}");
        assert!(t.elapsed() < Duration::from_secs(3), "{q} took {:?}", t.elapsed());
    }
    for q in WRITES {
        let res = sandbox.query(q);
        assert!(matches!(res, Err(ExecError::Denied(_))), "{q} was not denied: {res:?}");
        assert!(sandbox.check(q).is_err(), "{q} passed the validity check");
    }
    // Too many rows is refused too; ordinary reads still work afterwards.
    let many = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 5000) SELECT x FROM c";
    assert_eq!(sandbox.query(many), Err(ExecError::TooManyRows));
    assert_eq!(sandbox.query("SELECT count(*) FROM singer").unwrap().len(), 1);
    drop(sandbox);

    assert_eq!(sha256(&db), before, "database file changed");
    assert!(!root.join("copy.sqlite").exists() && !Path::new("copy.sqlite").exists());
    std::fs::remove_dir_all(root).unwrap();
}

#[test]
fn evaluator_reports_timeouts_and_denials_as_wrong() {
    let (root, db) = temp_db("evaluator");
    let before = sha256(&db);
    let options = EvalOptions {
        limits: ExecLimits {
            timeout: Duration::from_millis(300),
            ..Default::default()
        },
        ..Default::default()
    };
    let mut evaluator = Evaluator::new(&common::spider().join("tables.json"), &root.join("database"), options).unwrap();
    let gold_sql = "SELECT count(*) FROM singer";
    let preds: Vec<String> = SLOW
        .iter()
        .chain(WRITES.iter())
        .map(|s| s.to_string())
        .chain([gold_sql.to_string()])
        .collect();
    let gold = vec![
        GoldExample {
            sql: gold_sql.into(),
            db_id: "concert_singer".into(),
            question: None
        };
        preds.len()
    ];
    let (report, results) = evaluate(&mut evaluator, &gold, &preds, true).unwrap();
    assert_eq!(report.timeouts, SLOW.len());
    for r in &results[..results.len() - 1] {
        assert!(!r.exec_match, "{} counted as correct", r.prediction);
        assert!(matches!(r.exec_status, ExecStatus::Failed(_)));
    }
    let last = results.last().unwrap();
    assert!(last.exec_match && last.exact_match && last.valid_sql && last.schema_valid);
    drop(evaluator);
    assert_eq!(sha256(&db), before, "database file changed");
    std::fs::remove_dir_all(root).unwrap();
}
