//! Parity with the official Spider evaluators on their example predictions.

mod common;

use sqlora_eval::{evaluate, read_gold_file, read_pred_file, EvalOptions, Evaluator};

/// Figures printed by the official evaluators (three decimals).
fn parse_official_row(text: &str, label: &str) -> Vec<f64> {
    let line = text
        .lines()
        .find(|l| l.starts_with(label))
        .expect("row present in official output");
    line[label.len()..]
        .split_whitespace()
        .map(|v| v.parse().expect("number"))
        .collect()
}

#[test]
fn example_predictions_match_official_exact_and_execution() {
    let spider = common::spider();
    let ex = spider.join("eval_example");
    let gold = read_gold_file(&ex.join("gold_example.txt")).unwrap();
    let preds = read_pred_file(&ex.join("pred_example.txt"), gold.len()).unwrap();
    let mut evaluator = Evaluator::new(
        &spider.join("tables.json"),
        &spider.join("database"),
        EvalOptions::default(),
    )
    .unwrap();
    let (report, results) = evaluate(&mut evaluator, &gold, &preds, true).unwrap();
    println!("{}", report.table());

    let official_match = std::fs::read_to_string(ex.join("official_match_current.txt")).unwrap();
    let official_exec = std::fs::read_to_string(ex.join("official_testsuite_all.txt")).unwrap();
    let counts = parse_official_row(&official_match, "count");
    let exact = parse_official_row(&official_match, "exact match");
    let execution = parse_official_row(&official_exec, "execution");
    assert_eq!(counts, [250.0, 440.0, 174.0, 170.0, 1034.0]);
    assert_eq!(exact, [0.852, 0.720, 0.718, 0.388, 0.697]);
    assert_eq!(execution, [0.432, 0.516, 0.540, 0.312, 0.466]);

    // Per-example exact-match failures must be exactly the ones listed.
    let official_misses: Vec<(&str, &str)> = official_match.lines().filter_map(|l| l.split_once(" pred: ")).collect();
    let ours: Vec<(&str, &str)> = results
        .iter()
        .filter(|r| !r.exact_match)
        .map(|r| (r.hardness.map(|h| h.as_str()).unwrap_or("?"), r.prediction.as_str()))
        .collect();
    assert_eq!(ours.len(), official_misses.len(), "number of exact-match failures");
    for (i, (a, b)) in ours.iter().zip(&official_misses).enumerate() {
        assert_eq!(a, b, "failure #{i} differs");
    }

    for (i, level) in sqlora_eval::report::LEVELS.iter().enumerate() {
        assert_eq!(report.counts.get(level) as f64, counts[i], "count {level}");
        assert_eq!(
            format!("{:.3}", report.exact_match.get(level)),
            format!("{:.3}", exact[i]),
            "exact {level}"
        );
        assert_eq!(
            format!("{:.3}", report.execution.get(level)),
            format!("{:.3}", execution[i]),
            "exec {level}"
        );
    }
    assert_eq!(report.timeouts, 0);
    assert_eq!(report.gold_errors, 0);
}
