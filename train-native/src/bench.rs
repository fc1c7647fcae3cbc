//! `sqlora bench`: speed figures for BENCHMARKS.md, printed, never asserted.
//!
//! `decode` mirrors llama-bench: prompt processing of a fixed text-to-SQL prompt
//! (one forward over all its tokens) and greedy decoding of `--new-tokens`
//! tokens after it (EOS ignored), median of `--runs` after a warm-up.

use std::time::Instant;

use anyhow::Context;
use candle_core::{Device, Tensor};
use sqlora_core::weights::{self, BaseFormat, ModelSource};

/// The prompt of the wllama/llama.cpp peers' benchmark (202 tokens with SmolLM2's tokenizer).
const BENCH_PROMPT: &str = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nDatabase schema:\nCREATE TABLE stadium (stadium_id INTEGER PRIMARY KEY, location TEXT, name TEXT, capacity INTEGER, average INTEGER);\nCREATE TABLE singer (singer_id INTEGER PRIMARY KEY, name TEXT, country TEXT, song_name TEXT, age INTEGER, is_male BOOLEAN);\nCREATE TABLE concert (concert_id INTEGER PRIMARY KEY, concert_name TEXT, theme TEXT, stadium_id INTEGER, year TEXT);\nCREATE TABLE singer_in_concert (concert_id INTEGER, singer_id INTEGER);\n\nQuestion: What are the names and countries of the singers who performed in a concert in 2014 at a stadium with a capacity above 5000?\nAnswer with a single SQLite query only.<|im_end|>\n<|im_start|>assistant\n";

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    what: What,
}

#[derive(clap::Subcommand)]
enum What {
    /// Prompt processing and greedy decode tokens/s.
    Decode(DecodeArgs),
    /// LoRA training tokens/s and peak RSS (the trainer's own optimizer step).
    Train(TrainArgs),
}

#[derive(clap::Args)]
struct TrainArgs {
    /// Base model (default: the cached SmolLM2-135M-Instruct Q4_1).
    #[arg(long)]
    base: Option<String>,
    /// Threads for candle's CPU kernels (sets RAYON_NUM_THREADS).
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Frozen base: nf4, gguf or none (see `sqlora train`).
    #[arg(long, default_value = "nf4")]
    quantization: String,
    /// Keep the dequantized f32 base (the `dense_base_cache` training option).
    #[arg(long)]
    dense_base_cache: bool,
    /// `random`: the Python peer's workload (seeded random ids, every next token
    /// a label, no padding); `spider`: real Spider batches (loss on the SQL answer only).
    #[arg(long, default_value = "random")]
    data: String,
    #[arg(long, default_value_t = 4)]
    batch: usize,
    #[arg(long, default_value_t = 256)]
    seq_len: usize,
    #[arg(long, default_value_t = 64)]
    lora_r: usize,
    /// Timed optimizer steps (after `--warmup` untimed ones).
    #[arg(long, default_value_t = 5)]
    steps: usize,
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// Print one JSON line instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct DecodeArgs {
    /// GGUF file, HF directory or hub id (default: the cached SmolLM2-135M-Instruct Q4_1).
    #[arg(long)]
    base: Option<String>,
    /// Threads for candle's CPU kernels (sets RAYON_NUM_THREADS).
    #[arg(long, default_value_t = 2)]
    threads: usize,
    #[arg(long, default_value_t = 128)]
    new_tokens: usize,
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Run the base dequantized to f32.
    #[arg(long)]
    dequantize: bool,
    /// Print one JSON line instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    match args.what {
        What::Decode(a) => decode(a),
        What::Train(a) => train(a),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn decode(a: DecodeArgs) -> anyhow::Result<()> {
    std::env::set_var("RAYON_NUM_THREADS", a.threads.to_string());
    let base = crate::fetch::base_or_default(a.base.as_deref())?;
    let dev = Device::Cpu;
    let format = if a.dequantize {
        BaseFormat::F32
    } else {
        BaseFormat::AsStored
    };
    let t0 = Instant::now();
    let source = ModelSource::parse(&base)?;
    let (model, tok, _) = weights::load(&source, format, &dev)?.into_model(&dev)?;
    let load_s = t0.elapsed().as_secs_f64();
    let prompt = tok
        .encode(BENCH_PROMPT, false)
        .context("encoding the benchmark prompt")?;
    let (mut pp, mut tg) = (Vec::new(), Vec::new());
    for run in 0..=a.runs {
        let mut cache = model.new_cache();
        let x = Tensor::new(prompt.as_slice(), &dev)?.unsqueeze(0)?;
        let t = Instant::now();
        let logits = model.forward_last(&x, 0, Some(&mut cache))?;
        let mut next = logits.squeeze(0)?.argmax(0)?.to_scalar::<u32>()?;
        let pp_s = t.elapsed().as_secs_f64();
        let t = Instant::now();
        for _ in 0..a.new_tokens {
            let x = Tensor::new(&[next], &dev)?.unsqueeze(0)?;
            let logits = model.forward_last(&x, cache.len(), Some(&mut cache))?;
            next = logits.squeeze(0)?.argmax(0)?.to_scalar::<u32>()?;
        }
        let tg_s = t.elapsed().as_secs_f64();
        if run > 0 {
            // run 0 warms caches and allocators
            pp.push(prompt.len() as f64 / pp_s);
            tg.push(a.new_tokens as f64 / tg_s);
        }
    }
    let (pp, tg) = (median(pp), median(tg));
    if a.json {
        println!(
            "{}",
            serde_json::json!({"model": base, "threads": a.threads, "prompt_tokens": prompt.len(),
                "new_tokens": a.new_tokens, "runs": a.runs, "load_s": load_s,
                "prompt_tok_s": pp, "decode_tok_s": tg, "dequantized": a.dequantize})
        );
    } else {
        println!("model        {base}");
        println!("threads      {}", a.threads);
        println!("load         {load_s:.2} s");
        println!(
            "prompt       {:.1} tok/s ({} tokens, median of {})",
            pp,
            prompt.len(),
            a.runs
        );
        println!(
            "decode       {:.1} tok/s ({} tokens, median of {})",
            tg, a.new_tokens, a.runs
        );
    }
    Ok(())
}

/// Peak resident set size of this process in kB (`VmHWM`), where /proc exists.
fn peak_rss_kb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Training throughput as the peer measures it: warm-up steps, then timed
/// optimizer steps (forward, backward, clipping, AdamW); tokens are real
/// (non-pad) tokens, so the random workload counts batch × seq_len per step.
fn train(a: TrainArgs) -> anyhow::Result<()> {
    use crate::train::{self as tr, batch::Encoded, config::TrainConfig, lora_setup::LoraSpec, trainer::LogMode};
    use rand::{Rng, SeedableRng};

    std::env::set_var("RAYON_NUM_THREADS", a.threads.to_string());
    let base = crate::fetch::base_or_default(a.base.as_deref())?;
    let sets: Vec<String> = vec![
        format!("base={base}"),
        format!("quantization={}", a.quantization),
        format!("dense_base_cache={}", a.dense_base_cache),
        format!("batch_size={}", a.batch),
        "grad_accum=1".into(),
        format!("max_length={}", a.seq_len),
        format!("lora_r={}", a.lora_r),
        format!("lora_alpha={}", 2 * a.lora_r),
        format!("max_steps={}", a.steps + a.warmup),
        format!("limit_train={}", a.batch * (a.steps + a.warmup)),
        "limit_eval=1".into(),
        "output_dir=runs/bench-train".into(),
    ];
    let cfg = TrainConfig::resolve(None, &sets)?;
    let dev = Device::Cpu;
    let t0 = Instant::now();
    let ckpt = weights::load(&ModelSource::parse(&base)?, tr::base_format(&cfg.quantization), &dev)?;
    let base_name = ckpt.name.clone();
    let (mut model, tok, template) = ckpt.into_model(&dev)?;
    if cfg.dense_base_cache {
        tr::cache_dense_base(&mut model)?;
    }
    let load_s = t0.elapsed().as_secs_f64();
    let spec = LoraSpec {
        r: cfg.lora_r,
        alpha: cfg.lora_alpha,
        dropout: cfg.lora_dropout,
        targets: cfg.target_modules.clone(),
    };
    let params = tr::lora_setup::attach(&mut model, &spec, cfg.seed)?;
    let n = a.batch * (a.steps + a.warmup);
    let data: Vec<Encoded> = match a.data.as_str() {
        "random" => {
            let mut rng = rand::rngs::StdRng::seed_from_u64(0);
            let vocab = model.config().vocab_size as u32;
            (0..n)
                .map(|_| Encoded {
                    ids: (0..a.seq_len).map(|_| rng.random_range(0..vocab)).collect(),
                    loss_mask: (0..a.seq_len).map(|i| i > 0).collect(),
                })
                .collect()
        }
        "spider" => {
            let template = sqlora_core::chat::ChatTemplate::from_source_or_fallback(template.as_deref(), &tok)?;
            let settings = tr::prompt_settings(&cfg)?;
            tr::load_and_encode(&cfg, &tok, &template, &settings, &|_| {})?.0
        }
        other => anyhow::bail!("--data `{other}`: expected random or spider"),
    };
    let mut trainer = tr::build_trainer(&cfg, model, params, data, vec![], &tok, spec, base_name, LogMode::Quiet)?;
    let order = tr::batch::epoch_order(
        &trainer.train.iter().map(Encoded::len).collect::<Vec<_>>(),
        a.batch,
        cfg.seed,
        0,
        a.data == "spider",
    );
    trainer.set_train(true);
    let (mut tokens, mut secs, mut step_s) = (0usize, 0.0f64, vec![]);
    for (step, batch) in order.iter().take(a.steps + a.warmup).enumerate() {
        let t = Instant::now();
        let (_, _, tok_n, _) = trainer.step(step as u64, std::slice::from_ref(batch), cfg.learning_rate)?;
        let dt = t.elapsed().as_secs_f64();
        step_s.push(dt);
        if step >= a.warmup {
            tokens += tok_n;
            secs += dt;
        }
    }
    let tps = tokens as f64 / secs.max(1e-9);
    let rss = peak_rss_kb();
    if a.json {
        println!(
            "{}",
            serde_json::json!({"model": base, "threads": a.threads, "quantization": a.quantization,
                "dense_base_cache": a.dense_base_cache, "data": a.data, "batch": a.batch, "seq_len": a.seq_len,
                "lora_r": a.lora_r, "timed_steps": a.steps, "tokens": tokens, "seconds": secs,
                "tokens_per_s": tps, "step_seconds": step_s, "load_s": load_s, "peak_rss_kb": rss})
        );
    } else {
        println!("model        {base}");
        println!(
            "setup        {} base{}, {} data, batch {} x {}, r {}, threads {}",
            a.quantization,
            if a.dense_base_cache { " (dense cache)" } else { "" },
            a.data,
            a.batch,
            a.seq_len,
            a.lora_r,
            a.threads
        );
        println!("load         {load_s:.2} s");
        println!(
            "train        {tps:.1} tok/s ({tokens} tokens in {secs:.2} s, {} timed steps)",
            a.steps
        );
        let steps: Vec<String> = step_s.iter().map(|s| format!("{s:.2}")).collect();
        println!("step times   {} s", steps.join(" "));
        match rss {
            Some(kb) => println!("peak RSS     {:.0} MB", kb as f64 / 1024.0),
            None => println!("peak RSS     unavailable (no /proc/self/status)"),
        }
    }
    Ok(())
}
