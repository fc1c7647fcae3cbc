//! WikiSQL logical-form scoring on the dev split (headers only, no rows).

mod common;

use sqlora_eval::wikisql::{evaluate, parse_prediction, read_examples};

#[test]
fn readable_gold_and_quoted_sql_score_perfectly_and_mistakes_do_not() {
    let examples = read_examples(&common::shared().join("data/wikisql/dev_text.jsonl")).unwrap();
    let examples = &examples[..2000];
    // The dataset's human-readable SQL reads back to the gold logical form
    // (unquoted names and values are sometimes ambiguous, e.g. a value containing " and ": allow a small miss rate).
    let readable: Vec<String> = examples.iter().map(e_sql_text).collect();
    let (report, _) = evaluate(examples, &readable);
    println!("readable: {report:?}");
    assert!(report.logical_form_accuracy > 0.95, "{report:?}");

    // The quoted form used for training is unambiguous: all must match.
    let quoted: Vec<String> = examples.iter().map(quoted_sql).collect();
    let (report, results) = evaluate(examples, &quoted);
    let misses: Vec<_> = results
        .iter()
        .filter(|r| !r.logical_form_match)
        .map(|r| &r.prediction)
        .take(5)
        .collect();
    assert_eq!(report.logical_form_accuracy, 1.0, "{misses:?}");
    assert_eq!(report.valid_sql, 1.0);
    assert!(report.evaluation.contains("logical-form"));

    // Wrong column, wrong aggregate, wrong value: all rejected.
    let e = &examples[1]; // SELECT COUNT School/Club Team ... WHERE No. = 3
    let gold = quoted_sql(e);
    for wrong in [
        gold.replace("COUNT(", "MAX("),
        gold.replace("'3'", "'4'"),
        gold.replace("COUNT(", "("),
    ] {
        let (r, _) = evaluate(std::slice::from_ref(e), std::slice::from_ref(&wrong));
        assert_eq!(r.logical_form_accuracy, 0.0, "{wrong}");
    }
    assert!(parse_prediction("DROP TABLE x", &e.header).is_none());
}

fn e_sql_text(e: &sqlora_eval::wikisql::WikiExample) -> String {
    // reconstruct the dataset's readable form from the logical form
    let aggs = ["", "MAX", "MIN", "COUNT", "SUM", "AVG"];
    let ops = ["=", ">", "<"];
    let sel = &e.header[e.sql.sel];
    let mut s = if e.sql.agg == 0 {
        format!("SELECT {sel}")
    } else {
        format!("SELECT {} {sel}", aggs[e.sql.agg])
    };
    s += &format!(" FROM {}", e.table_name);
    for (i, (c, o, v)) in e.sql.conds.iter().enumerate() {
        let v = v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string());
        s += &format!(
            "{} {} {} {v}",
            if i == 0 { " WHERE" } else { " AND" },
            e.header[*c],
            ops[*o]
        );
    }
    s
}

fn quoted_sql(e: &sqlora_eval::wikisql::WikiExample) -> String {
    let aggs = ["", "MAX", "MIN", "COUNT", "SUM", "AVG"];
    let ops = ["=", ">", "<"];
    let q = |h: &str| format!("\"{}\"", h.replace('"', "\"\""));
    let sel = q(&e.header[e.sql.sel]);
    let mut s = if e.sql.agg == 0 {
        format!("SELECT {sel}")
    } else {
        format!("SELECT {}({sel})", aggs[e.sql.agg])
    };
    s += &format!(" FROM {}", e.table_name);
    for (i, (c, o, v)) in e.sql.conds.iter().enumerate() {
        let v = match v.as_str() {
            Some(t) => format!("'{}'", t.replace('\'', "''")),
            None => v.to_string(),
        };
        s += &format!(
            "{} {} {} {v}",
            if i == 0 { " WHERE" } else { " AND" },
            q(&e.header[*c]),
            ops[*o]
        );
    }
    s
}
