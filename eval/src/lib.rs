//! sqlora-eval: Spider-style scoring of text-to-SQL predictions.
//!
//! - [`parse`] / [`tokenize`]: the official Spider SQL → component parser.
//! - [`exact`]: exact-set-match, [`hardness`]: easy/medium/hard/extra.
//! - [`exec`]: sandboxed, time-bounded execution on SQLite and the test-suite
//!   evaluator's result comparison.
//! - [`report`]: per-example records and the aggregate report.

pub mod error;
pub mod exact;
pub mod exec;
pub mod hardness;
pub mod parse;
pub mod report;
pub mod schema;
pub mod spider;
pub mod tokenize;
pub mod wikisql;

pub use error::{Error, Result};
pub use hardness::Hardness;
pub use report::{ByLevel, Report};
pub use spider::{
    read_gold_file, read_pred_file, read_spider_json, EvalOptions, Evaluator, ExampleResult, GoldExample,
};

/// Score `predictions` (same order as `gold`) and aggregate.
pub fn evaluate(
    evaluator: &mut Evaluator,
    gold: &[GoldExample],
    predictions: &[String],
    executed: bool,
) -> Result<(Report, Vec<ExampleResult>)> {
    let results = gold
        .iter()
        .zip(predictions)
        .enumerate()
        .map(|(i, (g, p))| evaluator.score(i, g, p))
        .collect::<Result<Vec<_>>>()?;
    Ok((Report::from_results(&results, executed), results))
}
