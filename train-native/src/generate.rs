//! `sqlora generate`: SQL for one question, or a raw continuation for parity checks.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context};
use candle_core::Tensor;
use sqlora_core::generate::{generate, GenerationConfig};
use sqlora_core::pipeline::Text2Sql;
use sqlora_core::schema::{Schema, SpiderTables};

#[derive(clap::Args)]
pub struct Args {
    /// GGUF file, HF model directory or hub id (default: the cached SmolLM2-135M-Instruct).
    #[arg(long)]
    pub base: Option<String>,
    /// peft adapter directory (adapter_config.json + adapter_model.safetensors).
    #[arg(long)]
    pub adapter: Option<PathBuf>,
    /// Schema file: CREATE TABLE statements or `table: col, col` lines.
    #[arg(long, conflicts_with_all = ["tables", "prompt_file"])]
    pub schema: Option<PathBuf>,
    /// Spider tables.json (with --db-id).
    #[arg(long, requires = "db_id")]
    pub tables: Option<PathBuf>,
    #[arg(long)]
    pub db_id: Option<String>,
    #[arg(long)]
    pub question: Option<String>,
    /// Feed this file's text as the prompt (with --raw: verbatim, no template).
    #[arg(long)]
    pub prompt_file: Option<PathBuf>,
    /// Print the continuation exactly as decoded, without SQL extraction.
    #[arg(long)]
    pub raw: bool,
    /// Print the exact prompt before generating.
    #[arg(long)]
    pub show_prompt: bool,
    /// Run a quantized base dequantized to f32.
    #[arg(long)]
    pub dequantize: bool,
    /// Hold the base's projections as NF4 (the form a QLoRA adapter was trained over).
    #[arg(long, conflicts_with = "dequantize")]
    pub nf4: bool,
    /// Where generation runs: `cpu` or `cuda:N` (needs the `cuda` feature).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Write the last prompt position's logits as {"logits": [...]}.
    #[arg(long)]
    pub dump_logits: Option<PathBuf>,
    #[arg(long, default_value_t = 128)]
    pub max_new_tokens: usize,
    /// Sampling temperature (0 = greedy).
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f64,
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f64,
    #[arg(long, default_value_t = 299792458)]
    pub seed: u64,
    /// Beam search with this many beams (1 = off).
    #[arg(long, default_value_t = 1)]
    pub num_beams: usize,
    /// Stop before this string (repeatable).
    #[arg(long)]
    pub stop: Vec<String>,
    /// Stream tokens to stderr while generating.
    #[arg(long)]
    pub stream: bool,
    /// Let the model write any text, not only a query over the schema.
    #[arg(long)]
    pub no_constrain: bool,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    // Everything that can be checked is checked before the model loads.
    let cfg = GenerationConfig {
        max_new_tokens: a.max_new_tokens,
        temperature: a.temperature,
        top_p: a.top_p,
        seed: a.seed,
        num_beams: a.num_beams,
        stop_strings: a.stop.clone(),
        stop_ids: vec![],
        constrain: !a.no_constrain,
    };
    cfg.validate()?;
    if let Some(path) = &a.dump_logits {
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
        if dir.is_some_and(|d| !d.is_dir()) {
            anyhow::bail!("--dump-logits {}: its folder does not exist", path.display());
        }
    }
    let base = crate::fetch::base_or_default(a.base.as_deref())?;
    let format = crate::train::inference_format(a.dequantize, a.nf4);
    let device = crate::train::parse_device(&a.device)?;
    let mut t2s = Text2Sql::load(&base, format, &device).with_context(|| format!("loading {base}"))?;
    if let Some(dir) = &a.adapter {
        t2s.apply_adapter(dir)
            .with_context(|| format!("applying adapter {}", dir.display()))?;
    }
    let (prompt, schema) = build_prompt(&a, &t2s)?;
    if a.show_prompt {
        eprintln!("----- prompt -----\n{prompt}\n------------------");
    }
    let ids = if a.raw {
        t2s.tokenizer.encode(&prompt, false)?
    } else {
        t2s.tokenizer.encode_prompt(&prompt)?
    };
    if let Some(path) = &a.dump_logits {
        let x = Tensor::new(ids.as_slice(), &device)?.unsqueeze(0)?;
        let logits: Vec<f32> = t2s.model.forward_last(&x, 0, None)?.squeeze(0)?.to_vec1()?;
        std::fs::write(path, serde_json::json!({ "logits": logits }).to_string())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let mut on_token = |piece: &str| {
        if a.stream {
            eprint!("{piece}");
            std::io::stderr().flush().ok();
        }
        true
    };
    if a.raw {
        let g = generate(&t2s.model, &t2s.tokenizer, &ids, &cfg, None, &mut on_token)?;
        if a.stream {
            eprintln!();
        }
        print!("{}", g.text);
        std::io::stdout().flush()?;
    } else {
        let answer = t2s.generate(&prompt, schema.as_ref(), &cfg, &mut on_token)?;
        if a.stream {
            eprintln!();
        }
        println!("{}", answer.sql);
    }
    Ok(())
}

/// The prompt, and the schema it shows (the constraint's), if one was given.
fn build_prompt(a: &Args, t2s: &Text2Sql) -> anyhow::Result<(String, Option<Schema>)> {
    let schema = match (&a.schema, &a.tables, &a.db_id) {
        (Some(path), _, _) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            Some(Schema::parse(&text).with_context(|| format!("{}: schema does not parse", path.display()))?)
        }
        (None, Some(tables), Some(db)) => Some(SpiderTables::from_file(tables)?.schema(db)?.clone()),
        _ => None,
    };
    if let Some(p) = &a.prompt_file {
        let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
        return Ok((text, schema));
    }
    let Some(question) = &a.question else {
        bail!("give --question (or --prompt-file)")
    };
    let Some(schema) = schema else {
        bail!("give a schema: --schema FILE, or --tables tables.json --db-id ID")
    };
    Ok((t2s.prompt(&schema, question, &[])?, Some(schema)))
}
