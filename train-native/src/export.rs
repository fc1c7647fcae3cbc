//! `sqlora export`: merge an adapter into its base, re-quantize, write one GGUF
//! that llama.cpp and the browser demo load, with the tokenizer, chat template
//! and the prompt settings the adapter was trained with.

use std::path::PathBuf;

use anyhow::{bail, Context};
use candle_core::quantized::gguf_file::Value;
use candle_core::Device;
use sqlora_core::export::{export_gguf, parse_quant, ExportOptions, PROMPT_SETTINGS_KEY};
use sqlora_core::pipeline::Text2Sql;
use sqlora_core::weights::{BaseFormat, GgufFile, ModelSource};

#[derive(clap::Args)]
pub struct Args {
    /// Base model: a .gguf file (its tokenizer and chat template are carried over).
    #[arg(long)]
    pub base: Option<String>,
    /// peft adapter directory to merge (none: re-quantize the base).
    #[arg(long)]
    pub adapter: Option<PathBuf>,
    /// Type of the seven projections: q8_0, q4_0, q4_1, q5_0, q5_1, q4k, q5k, q6k, f16, f32.
    #[arg(long, default_value = "q8_0")]
    pub quant: String,
    /// Used where --quant cannot hold a matrix (K-quants need rows divisible by 256).
    #[arg(long, default_value = "q8_0")]
    pub fallback: String,
    /// Token embedding (and an untied LM head).
    #[arg(long, default_value = "q8_0")]
    pub embed_quant: String,
    #[arg(long)]
    pub out: PathBuf,
    /// Replace an existing --out file.
    #[arg(long)]
    pub force: bool,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let opts = ExportOptions {
        quant: parse_quant(&a.quant)?,
        fallback: parse_quant(&a.fallback)?,
        embed_quant: parse_quant(&a.embed_quant)?,
    };
    // Before any work: a directory (or `DIR/`) is no file to write.
    sqlora_atomic::check_file_destination(&a.out)?;
    if a.out.exists() && !a.force {
        bail!("{} exists; pass --force to replace it", a.out.display());
    }
    let base = crate::fetch::base_or_default(a.base.as_deref())?;
    let ModelSource::Gguf(base_path) = ModelSource::parse(&base)? else {
        bail!("{base}: export needs a GGUF base (its tokenizer metadata is carried into the output)");
    };
    let source = GgufFile::open(&base_path)?;
    let mut t2s =
        Text2Sql::load(&base, BaseFormat::AsStored, &Device::Cpu).with_context(|| format!("loading {base}"))?;
    let mut extra = vec![(PROMPT_SETTINGS_KEY.to_string(), Value::String(t2s.settings.to_json()))];
    extra.push(("sqlora.base".into(), Value::String(base.clone())));
    if let Some(dir) = &a.adapter {
        let n = t2s
            .apply_adapter(dir)
            .with_context(|| format!("applying adapter {}", dir.display()))?;
        eprintln!("merging {n} LoRA modules from {}", dir.display());
        extra[0].1 = Value::String(t2s.settings.to_json());
        extra.push(("sqlora.adapter".into(), Value::String(dir.display().to_string())));
    }

    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("export [{bar:40}] {pos}/{len} tensors {per_sec} ({eta})")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    // A temporary of its own beside --out, renamed into place: concurrent
    // exports to one path leave one whole file (a shared temporary name
    // interleaved them), and a failed one leaves nothing.
    let mut file = sqlora_atomic::AtomicFile::create(&a.out)?;
    let report = export_gguf(
        &t2s.model,
        source.metadata(),
        &extra,
        &opts,
        &mut file,
        &mut |done, total| {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        },
    )?;
    file.commit()?;
    bar.finish_and_clear();

    let size = std::fs::metadata(&a.out)?.len();
    println!("wrote {} ({:.1} MB)", a.out.display(), size as f64 / 1e6);
    let counts: Vec<String> = report
        .type_counts()
        .into_iter()
        .map(|(t, n)| format!("{n} {t}"))
        .collect();
    println!("tensors: {}", counts.join(", "));
    let fell: Vec<&str> = report.fallbacks().map(|t| t.name.as_str()).collect();
    if !fell.is_empty() {
        println!(
            "{} tensors fell back to {} (row length not a multiple of the {} block): {}",
            fell.len(),
            a.fallback,
            a.quant,
            by_kind(&fell)
        );
    }
    Ok(())
}

/// "attn_q.weight x30, ffn_up.weight x30": tensor names grouped across blocks, so that
/// a fallback that hits every layer reads as one line per kind of matrix.
fn by_kind(names: &[&str]) -> String {
    let mut kinds: Vec<(String, usize)> = Vec::new();
    for name in names {
        let kind = match name.strip_prefix("blk.").and_then(|rest| rest.split_once('.')) {
            Some((_, kind)) => kind,
            None => name,
        };
        match kinds.iter_mut().find(|(k, _)| k == kind) {
            Some((_, n)) => *n += 1,
            None => kinds.push((kind.to_string(), 1)),
        }
    }
    let parts: Vec<String> = kinds.into_iter().map(|(k, n)| format!("{k} x{n}")).collect();
    parts.join(", ")
}
