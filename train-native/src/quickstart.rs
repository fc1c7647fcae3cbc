//! `sqlora quickstart`: the whole job on the embedded defaults, one stage after another:
//! fetch the base model → fine-tune a QLoRA adapter on Spider → evaluate base and
//! adapter on a dev subset → export the merged q8_0 GGUF for the demo → serve the demo.
//!
//! Each stage runs this same binary's own subcommand, so any stage can be re-run alone
//! with the command it prints, and `--skip`/`--only` choose stages.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
pub enum Stage {
    Fetch,
    Train,
    Eval,
    Export,
    Serve,
}

#[derive(clap::Args)]
pub struct Args {
    /// Spider folder (train_spider.jsonl, dev.json, tables.json, database/).
    /// Default: $SQLORA_DATA, else ../shared/data/spider.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Base model (default: SmolLM2-135M-Instruct Q4_1, fetched on first use).
    #[arg(long)]
    pub base: Option<String>,
    /// Training configuration.
    #[arg(long, default_value = "configs/quickstart.toml")]
    pub config: PathBuf,
    /// Extra `--set key=value` for training (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
    /// `cpu` or `cuda:0` (needs the `cuda` feature).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Where runs go.
    #[arg(long, default_value = "runs/quickstart")]
    pub out: PathBuf,
    /// Dev examples to evaluate (the first N of dev.json).
    #[arg(long, default_value_t = 50)]
    pub eval_limit: usize,
    /// The exported model the demo loads.
    #[arg(long, default_value = "web-demo/models/sqlora.gguf")]
    pub export_to: PathBuf,
    /// Skip these stages.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub skip: Vec<Stage>,
    /// Run only these stages.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub only: Vec<Stage>,
    /// Port for `trunk serve`.
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
}

impl Args {
    fn runs(&self, s: Stage) -> bool {
        (self.only.is_empty() || self.only.contains(&s)) && !self.skip.contains(&s)
    }
}

fn data_dir(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    let dir = given
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os("SQLORA_DATA").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("../shared/data/spider"));
    if !dir.join("dev.json").is_file() || !dir.join("tables.json").is_file() {
        bail!(
            "{}: not a Spider folder (no dev.json / tables.json); pass --data-dir",
            dir.display()
        );
    }
    Ok(dir)
}

/// Run this binary with `args`, echoing the command so a stage can be re-run alone.
fn sqlora(args: &[String]) -> anyhow::Result<()> {
    let exe = std::env::current_exe()?;
    eprintln!("\n$ sqlora {}", args.join(" "));
    let status = Command::new(exe).args(args).status()?;
    if !status.success() {
        bail!("`sqlora {}` failed ({status})", args.join(" "));
    }
    Ok(())
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let base = if a.runs(Stage::Fetch) || a.base.is_none() {
        crate::fetch::base_or_default(a.base.as_deref())?
    } else {
        a.base.clone().unwrap_or_default()
    };
    eprintln!("base model: {base}");
    let adapter = a.out.join("adapter");
    let needs_data = [Stage::Train, Stage::Eval].iter().any(|&st| a.runs(st));
    let data = if needs_data {
        Some(data_dir(a.data_dir.as_deref())?)
    } else {
        None
    };

    if a.runs(Stage::Train) {
        let d = data.as_ref().context("data")?;
        let mut args = vec![
            "train".into(),
            "--config".into(),
            s(&a.config),
            "--device".into(),
            a.device.clone(),
            "--set".into(),
            format!("base={base:?}"),
            "--set".into(),
            format!("train_data=[{:?}]", s(&d.join("train_spider.jsonl"))),
            "--set".into(),
            format!("eval_data={:?}", s(&d.join("dev.json"))),
            "--set".into(),
            format!("tables={:?}", s(&d.join("tables.json"))),
            "--set".into(),
            format!("output_dir={:?}", s(&adapter)),
        ];
        for kv in &a.sets {
            args.push("--set".into());
            args.push(kv.clone());
        }
        sqlora(&args)?;
    }

    if a.runs(Stage::Eval) {
        let d = data.as_ref().context("data")?;
        // --dequantize: the base's own values in f32, much faster on CPU than LoRA over
        // Q4_1 blocks (candle's Q4_1 kernel is scalar); base and adapter run alike.
        let common = |model: &[&str], tag: &str| -> Vec<String> {
            let mut v: Vec<String> = vec![
                "eval".into(),
                "--dequantize".into(),
                "--device".into(),
                a.device.clone(),
            ];
            v.extend(model.iter().map(|x| x.to_string()));
            v.extend([
                "--data".into(),
                s(&d.join("dev.json")),
                "--tables".into(),
                s(&d.join("tables.json")),
                "--db-dir".into(),
                s(&d.join("database")),
                "--limit".into(),
                a.eval_limit.to_string(),
                "--out".into(),
                s(&a.out.join(format!("eval-{tag}.json"))),
                "--per-example".into(),
                s(&a.out.join(format!("eval-{tag}.jsonl"))),
            ]);
            v
        };
        std::fs::create_dir_all(&a.out)?;
        sqlora(&common(&["--base", &base], "base"))?;
        sqlora(&common(&["--base", &base, "--adapter", &s(&adapter)], "adapter"))?;
        print_comparison(&a.out)?;
    }

    if a.runs(Stage::Export) {
        if let Some(dir) = a.export_to.parent() {
            std::fs::create_dir_all(dir)?;
        }
        sqlora(&[
            "export".into(),
            "--base".into(),
            base.clone(),
            "--adapter".into(),
            s(&adapter),
            "--quant".into(),
            "q8_0".into(),
            "--out".into(),
            s(&a.export_to),
            "--force".into(),
        ])?;
    }

    if a.runs(Stage::Serve) {
        serve(a.port)?;
    }
    Ok(())
}

/// Zero-shot base beside the fine-tuned adapter, from the two eval reports.
fn print_comparison(out: &Path) -> anyhow::Result<()> {
    let read = |tag: &str| -> anyhow::Result<serde_json::Value> {
        let p = out.join(format!("eval-{tag}.json"));
        let text = std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
        Ok(serde_json::from_str(&text)?)
    };
    let (b, t) = (read("base")?, read("adapter")?);
    let n = b["counts"]["all"].as_u64().unwrap_or(0);
    println!("\nSpider dev, first {n} examples        zero-shot base   fine-tuned adapter");
    for (label, key) in [
        ("exact match", "exact_match"),
        ("valid SQL", "valid_sql"),
        ("execution accuracy", "execution"),
    ] {
        let f = |v: &serde_json::Value| v[key]["all"].as_f64().unwrap_or(f64::NAN);
        println!("{label:<36} {:>10.3} {:>20.3}", f(&b), f(&t));
    }
    // An empty gold result is matched by any empty prediction, often by luck.
    let f = |v: &serde_json::Value| v["execution_gold_nonempty"].as_f64().unwrap_or(f64::NAN);
    let nonempty = b["gold_nonempty"].as_u64().unwrap_or(0);
    let label = format!("execution, {nonempty} non-empty golds");
    println!("{label:<36} {:>10.3} {:>20.3}", f(&b), f(&t));
    Ok(())
}

/// Build the demo with trunk and serve it on 127.0.0.1 (installs the pinned tools if missing).
fn serve(port: u16) -> anyhow::Result<()> {
    if Command::new("trunk").arg("--version").output().is_err() {
        eprintln!("trunk is missing: running scripts/install-tools.sh");
        let ok = Command::new("bash").arg("scripts/install-tools.sh").status()?.success();
        if !ok {
            bail!("scripts/install-tools.sh failed");
        }
    }
    // Build first, so that the URL is printed only once there is something to serve.
    let built = Command::new("trunk")
        .args(["build", "--offline", "--release"])
        .status()
        .context("running trunk build")?;
    if !built.success() {
        bail!("trunk build failed ({built})");
    }
    eprintln!("\nserving at http://127.0.0.1:{port}/ (Ctrl+C stops)");
    let status = Command::new("trunk")
        .args([
            "serve",
            "--offline",
            "--release",
            "--address",
            "127.0.0.1",
            "--port",
            &port.to_string(),
        ])
        .status()
        .context("running trunk serve")?;
    if !status.success() {
        bail!("trunk serve failed ({status})");
    }
    Ok(())
}
