//! `sqlora eval`: score text-to-SQL predictions the way Spider's official
//! evaluators do (exact-set-match by hardness, execution accuracy in a
//! sandbox, valid SQL), or generate them first from a model.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use sqlora_eval::exec::ExecLimits;
use sqlora_eval::report::write_jsonl;
use sqlora_eval::{read_gold_file, read_pred_file, read_spider_json, EvalOptions, Evaluator, GoldExample, Report};

#[derive(clap::Args)]
pub struct Args {
    /// Predictions to score: one query per line, in gold order (official format).
    #[arg(long)]
    pred: Option<PathBuf>,
    /// Gold queries, `SQL<TAB>db_id` per line (e.g. Spider's dev_gold.sql).
    #[arg(long)]
    gold: Option<PathBuf>,
    /// Spider-style examples (dev.json): gold queries and questions.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Spider tables.json (foreign keys, declared columns).
    #[arg(long, required_unless_present = "wikisql")]
    tables: Option<PathBuf>,
    /// Directory with `<db_id>/<db_id>.sqlite`.
    #[arg(long, required_unless_present = "wikisql")]
    db_dir: Option<PathBuf>,
    /// Score WikiSQL instead: examples with inline headers (`dev_text.jsonl`).
    /// No table rows exist here, so this is logical-form exact match.
    #[arg(long, conflicts_with_all = ["gold", "data", "tables", "db_dir"])]
    wikisql: Option<PathBuf>,
    /// Write the aggregate report (JSON) here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Write one JSON record per example here.
    #[arg(long)]
    per_example: Option<PathBuf>,
    /// Per-query time limit in milliseconds (a timeout counts as wrong).
    #[arg(long, default_value_t = 5000)]
    timeout_ms: u64,
    /// Largest result a query may return, in rows.
    #[arg(long, default_value_t = 100_000)]
    max_rows: usize,
    /// Keep DISTINCT when executing (the test-suite evaluator drops it by default).
    #[arg(long)]
    keep_distinct: bool,
    /// Exact match only: do not run any query.
    #[arg(long)]
    no_exec: bool,
    /// Score only the first N examples.
    #[arg(long)]
    limit: Option<usize>,
    /// Generate predictions with this base model (GGUF / safetensors directory).
    #[arg(long)]
    base: Option<PathBuf>,
    /// LoRA adapter to apply to --base.
    #[arg(long, requires = "base")]
    adapter: Option<PathBuf>,
    /// Run a quantized --base dequantized to f32 (with --adapter: the unmerged reference
    /// that exports are compared against; faster than LoRA over Q4_1 blocks on CPU).
    #[arg(long, requires = "base")]
    dequantize: bool,
    /// Hold the --base's projections as NF4 (double quantization), the form a
    /// QLoRA adapter was trained over; dequantized per call on the device.
    #[arg(long, requires = "base", conflicts_with = "dequantize")]
    nf4: bool,
    /// Where generation runs: `cpu` or `cuda:N` (needs the `cuda` feature).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Questions generated together as one batch (greedy, left-padded; on a GPU
    /// 32 or more keep it busy). Over dense or dequantized bases the answers equal
    /// one-at-a-time decoding; candle's CPU GGUF kernels can differ slightly by batch size.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    batch: u64,
    /// Longest generated query, in tokens.
    #[arg(long, default_value_t = 128)]
    max_new_tokens: usize,
    /// Where to write generated predictions (official format).
    #[arg(long, requires = "base")]
    pred_out: Option<PathBuf>,
    /// Let the model write any text, not only a query over the question's schema.
    #[arg(long, requires = "base")]
    no_constrain: bool,
}

pub fn run(args: Args) -> Result<()> {
    if let Some(path) = &args.wikisql {
        return run_wikisql(&args, path);
    }
    let (Some(tables), Some(db_dir)) = (&args.tables, &args.db_dir) else {
        bail!("--tables and --db-dir are required for Spider scoring");
    };
    let mut gold = load_gold(&args)?;
    let mut predictions = match (&args.pred, &args.base) {
        (Some(path), None) => read_preds(path, gold.len(), args.limit)?,
        (None, Some(base)) => {
            gold.truncate(args.limit.unwrap_or(usize::MAX));
            if gold.iter().any(|g| g.question.is_none()) {
                bail!("generating needs the questions: give --data dev.json");
            }
            generate(&args, base, tables, &gold)?
        }
        (Some(_), Some(_)) => {
            bail!("give either --pred (score a file) or --base (generate), not both")
        }
        (None, None) => bail!("nothing to score: give --pred FILE, or --base MODEL to generate"),
    };
    if let Some(n) = args.limit {
        gold.truncate(n);
        predictions.truncate(n);
    }

    let options = EvalOptions {
        limits: ExecLimits {
            timeout: Duration::from_millis(args.timeout_ms),
            max_rows: args.max_rows,
        },
        keep_distinct: args.keep_distinct,
        execute: !args.no_exec,
    };
    let mut evaluator = Evaluator::new(tables, db_dir, options)?;
    let bar = progress(gold.len() as u64, "scoring");
    let mut results = Vec::with_capacity(gold.len());
    for (i, (g, p)) in gold.iter().zip(&predictions).enumerate() {
        results.push(
            evaluator
                .score(i, g, p)
                .with_context(|| format!("example {i} (db {})", g.db_id))?,
        );
        bar.inc(1);
    }
    bar.finish_and_clear();

    let report = Report::from_results(&results, options.execute);
    print!("{}", report.table());
    if let Some(path) = &args.out {
        report.write_json(path)?;
        eprintln!("report: {}", path.display());
    }
    if let Some(path) = &args.per_example {
        write_jsonl(path, &results)?;
        eprintln!("per-example records: {}", path.display());
    }
    Ok(())
}

/// WikiSQL: logical-form exact match of a predictions file.
fn run_wikisql(args: &Args, path: &std::path::Path) -> Result<()> {
    use sqlora_eval::wikisql;
    let mut examples = wikisql::read_examples(path)?;
    let Some(pred_path) = &args.pred else {
        bail!("WikiSQL scoring needs --pred (generation with --base is not yet available)");
    };
    let mut preds = read_preds(pred_path, examples.len(), args.limit)?;
    if let Some(n) = args.limit {
        examples.truncate(n);
        preds.truncate(n);
    }
    let (report, results) = wikisql::evaluate(&examples, &preds);
    println!("WikiSQL, {} examples: {}", report.count, report.evaluation);
    println!(
        "logical-form accuracy {:.3}   parsed {:.3}   valid SQL {:.3}",
        report.logical_form_accuracy, report.parsed, report.valid_sql
    );
    if let Some(out) = &args.out {
        let text = serde_json::to_string_pretty(&report)?;
        std::fs::write(out, text + "\n").with_context(|| format!("writing {}", out.display()))?;
    }
    if let Some(out) = &args.per_example {
        write_jsonl(out, &results)?;
    }
    Ok(())
}

/// Predictions for all `total` examples, or (with --limit) for the first N.
fn read_preds(path: &std::path::Path, total: usize, limit: Option<usize>) -> Result<Vec<String>> {
    match (read_pred_file(path, total), limit) {
        (Ok(p), _) => Ok(p),
        (Err(_), Some(n)) if n < total => Ok(read_pred_file(path, n)?),
        (Err(e), _) => Err(e.into()),
    }
}

/// Gold from `--gold` (official format) and/or `--data` (questions).
fn load_gold(args: &Args) -> Result<Vec<GoldExample>> {
    let from_data = args.data.as_deref().map(read_spider_json).transpose()?;
    match (args.gold.as_deref(), from_data) {
        (Some(path), data) => {
            let mut gold = read_gold_file(path)?;
            if let Some(data) = data {
                if data.len() != gold.len() {
                    bail!("--data has {} examples but --gold has {}", data.len(), gold.len());
                }
                for (g, d) in gold.iter_mut().zip(data) {
                    g.question = d.question;
                }
            }
            Ok(gold)
        }
        (None, Some(data)) => Ok(data),
        (None, None) => bail!("give --gold gold.sql or --data dev.json"),
    }
}

fn progress(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} {per_sec} ({eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    bar
}

/// Generate one query per example with the same prompt as training (greedy),
/// one line each, as the official predictions format wants.
fn generate(
    args: &Args,
    base: &std::path::Path,
    tables: &std::path::Path,
    gold: &[GoldExample],
) -> Result<Vec<String>> {
    use sqlora_core::generate::GenerationConfig;
    use sqlora_core::pipeline::Text2Sql;
    use sqlora_core::schema::SpiderTables;

    let spec = base.display().to_string();
    let format = crate::train::inference_format(args.dequantize, args.nf4);
    let mut t2s = Text2Sql::load(&spec, format, &crate::train::parse_device(&args.device)?)
        .with_context(|| format!("loading {spec}"))?;
    if let Some(dir) = &args.adapter {
        t2s.apply_adapter(dir)
            .with_context(|| format!("applying adapter {}", dir.display()))?;
    }
    let schemas = SpiderTables::from_file(tables)?;
    // extract_sql keeps the first statement only, so generation can stop at its end.
    let cfg = GenerationConfig {
        max_new_tokens: args.max_new_tokens,
        stop_strings: vec![";".into(), "\n\n".into()],
        constrain: !args.no_constrain,
        ..Default::default()
    };
    let bar = progress(gold.len() as u64, "generating");
    let mut preds = Vec::with_capacity(gold.len());
    for chunk in gold.chunks(args.batch as usize) {
        let items = chunk
            .iter()
            .map(|g| Ok((schemas.schema(&g.db_id)?, g.question.as_deref().unwrap_or_default())))
            .collect::<Result<Vec<_>>>()?;
        let answers = t2s.sql_for_batch(&items, &cfg).with_context(|| {
            let questions: Vec<_> = chunk.iter().map(|g| &g.question).collect();
            format!("generating for {questions:?}")
        })?;
        for answer in answers {
            // One line per prediction; an empty answer must still hold its line.
            let line = answer.sql.split_whitespace().collect::<Vec<_>>().join(" ");
            preds.push(if line.is_empty() { "NO SQL".to_string() } else { line });
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    if let Some(path) = &args.pred_out {
        std::fs::write(path, preds.join("\n") + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(preds)
}
