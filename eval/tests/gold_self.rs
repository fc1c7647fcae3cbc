//! Gold scored against itself must be perfect on Spider dev.

mod common;

use sqlora_eval::{evaluate, read_gold_file, read_spider_json, EvalOptions, Evaluator};

#[test]
fn dev_gold_against_itself_scores_one() {
    let spider = common::spider();
    let gold = read_gold_file(&spider.join("dev_gold.sql")).unwrap();
    assert_eq!(gold.len(), 1034);
    let preds: Vec<String> = gold.iter().map(|g| g.sql.clone()).collect();
    let mut evaluator = Evaluator::new(
        &spider.join("tables.json"),
        &spider.join("database"),
        EvalOptions::default(),
    )
    .unwrap();
    let (report, results) = evaluate(&mut evaluator, &gold, &preds, true).unwrap();
    println!("{}", report.table());
    let misses: Vec<_> = results
        .iter()
        .filter(|r| !r.exact_match || !r.exec_match)
        .map(|r| (r.index, &r.gold))
        .collect();
    assert!(misses.is_empty(), "not self-consistent: {misses:?}");
    assert_eq!(report.exact_match.all, 1.0);
    assert_eq!(report.execution.all, 1.0);
    assert_eq!(report.valid_sql.all, 1.0);
    assert_eq!(report.counts.all, 1034);
    assert_eq!(report.parse_failures, 0);
    assert_eq!(report.execution_gold_nonempty, 1.0);
    let empty_golds = results.iter().filter(|r| r.gold_rows == Some(0)).count();
    assert!(empty_golds > 0, "dev has golds with empty results");
    assert_eq!(report.gold_nonempty + empty_golds, 1034);

    // A prediction that returns nothing matches an empty gold (the official metric) but
    // never counts where the gold result is not empty.
    let nothing: Vec<String> = gold
        .iter()
        .map(|g| format!("SELECT * FROM ({}) WHERE 0", g.sql.trim_end_matches(';')))
        .collect();
    let (report, _) = evaluate(&mut evaluator, &gold, &nothing, true).unwrap();
    let expected = empty_golds as f64 / 1034.0;
    assert!(
        (report.execution.all - expected).abs() < 1e-9,
        "{} vs {expected}",
        report.execution.all
    );
    assert_eq!(report.execution_gold_nonempty, 0.0);
}

#[test]
fn dev_json_and_gold_file_agree() {
    let spider = common::spider();
    let from_json = read_spider_json(&spider.join("dev.json")).unwrap();
    let from_sql = read_gold_file(&spider.join("dev_gold.sql")).unwrap();
    assert_eq!(from_json.len(), from_sql.len());
    for (a, b) in from_json.iter().zip(&from_sql) {
        assert_eq!(a.db_id, b.db_id);
        assert!(a.question.as_deref().is_some_and(|q| !q.is_empty()));
    }
}
