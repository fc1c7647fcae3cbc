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
    /// Constrained decoding's cost per token beside the decode step's, on
    /// Spider dev questions (greedy, the eval's prompts).
    Constrain(ConstrainArgs),
}

#[derive(clap::Args)]
struct ConstrainArgs {
    /// GGUF file, HF directory or hub id (default: the cached SmolLM2-135M-Instruct Q4_1).
    #[arg(long)]
    base: Option<String>,
    /// LoRA adapter to apply.
    #[arg(long)]
    adapter: Option<std::path::PathBuf>,
    /// Run the base dequantized to f32.
    #[arg(long)]
    dequantize: bool,
    /// Spider dev.json and tables.json.
    #[arg(long)]
    data: std::path::PathBuf,
    #[arg(long)]
    tables: std::path::PathBuf,
    /// Questions (the first N of --data).
    #[arg(long, default_value_t = 20)]
    limit: usize,
    #[arg(long, default_value_t = 128)]
    max_new_tokens: usize,
}

#[derive(clap::Args)]
struct TrainArgs {
    /// Base model: GGUF file, HF directory or hub id (default: the cached SmolLM2-135M-Instruct Q4_1).
    #[arg(long)]
    base: Option<String>,
    /// `cpu` or `cuda:N`.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Compute dtype: auto (bf16 on CUDA, f32 on the CPU), f32, bf16, f16.
    #[arg(long, default_value = "auto")]
    dtype: String,
    /// Recompute layers in the backward pass (less memory, more compute).
    #[arg(long)]
    gradient_checkpointing: bool,
    /// Threads for candle's CPU kernels (sets RAYON_NUM_THREADS).
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Frozen base: nf4, gguf or none (see `sqlora train`).
    #[arg(long, default_value = "nf4")]
    quantization: String,
    /// Keep the dequantized base (the `dense_base_cache` training option).
    #[arg(long)]
    dense_base_cache: bool,
    /// `random`: the Python peer's workload (seeded random ids, every next token
    /// a label, no padding); `spider`: real Spider batches (loss on the SQL answer only).
    #[arg(long, default_value = "random")]
    data: String,
    #[arg(long, default_value_t = 4)]
    batch: usize,
    /// Micro-batches per optimizer step.
    #[arg(long, default_value_t = 1)]
    grad_accum: usize,
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
    /// After the timed steps, time one micro-batch's forward, backward and
    /// optimizer step apart (queued vs. finished: a host-bound phase finishes
    /// when it is queued), and the largest projection's NF4 dequantization
    /// and matmul alone. Printed to stderr.
    #[arg(long)]
    profile: bool,
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
    /// Timed runs (after one warm-up); at least 1.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..))]
    runs: u64,
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
        What::Constrain(a) => constrain(a),
    }
}

/// Times the model's forward and the constraint's work (picking the best
/// allowed token and taking it) separately, step by step.
fn constrain(a: ConstrainArgs) -> anyhow::Result<()> {
    use sqlora_core::generate::GenerationConfig;
    use sqlora_core::pipeline::Text2Sql;
    use sqlora_core::schema::SpiderTables;

    let base = crate::fetch::base_or_default(a.base.as_deref())?;
    let format = crate::train::inference_format(a.dequantize, false);
    let mut t2s = Text2Sql::load(&base, format, &Device::Cpu).with_context(|| format!("loading {base}"))?;
    if let Some(dir) = &a.adapter {
        t2s.apply_adapter(dir)?;
    }
    let tables = SpiderTables::from_file(&a.tables)?;
    let dev: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(&a.data).with_context(|| format!("reading {}", a.data.display()))?)
            .with_context(|| format!("{}: not a JSON list of examples", a.data.display()))?;
    let cfg = GenerationConfig::default();
    let t = Instant::now();
    let stops = t2s.tokenizer.stop_ids();
    let (mut forward_s, mut constrain_s, mut tokens, mut first_refused) = (0.0, 0.0, 0usize, 0usize);
    let mut vocab_s = None;
    for ex in dev.iter().take(a.limit) {
        let (Some(db), Some(q)) = (ex["db_id"].as_str(), ex["question"].as_str()) else {
            anyhow::bail!("{}: an example without db_id or question", a.data.display());
        };
        let schema = tables.schema(db)?;
        let prompt = t2s.prompt(schema, q, &[])?;
        let c = t2s.constraint(schema, &prompt, &cfg)?.expect("constrain is on");
        vocab_s.get_or_insert_with(|| t.elapsed().as_secs_f64());
        let mut state = c.start();
        let ids = t2s.tokenizer.encode_prompt(&prompt)?;
        let mut cache = t2s.model.new_cache();
        let mut x = Tensor::new(ids.as_slice(), &Device::Cpu)?.unsqueeze(0)?;
        for _ in 0..a.max_new_tokens {
            let t = Instant::now();
            let logits: Vec<f32> = t2s
                .model
                .forward_last(&x, cache.len(), Some(&mut cache))?
                .squeeze(0)?
                .to_dtype(candle_core::DType::F32)?
                .to_vec1()?;
            forward_s += t.elapsed().as_secs_f64();
            let t = Instant::now();
            let argmax = (0..logits.len()).max_by(|i, j| logits[*i].total_cmp(&logits[*j]));
            let next = c.best_allowed(&state, &logits, 1).first().copied();
            if let Some(id) = next.filter(|id| !stops.contains(id)) {
                c.advance(&mut state, id);
            }
            constrain_s += t.elapsed().as_secs_f64();
            tokens += 1;
            first_refused += (argmax.map(|i| i as u32) != next) as usize;
            match next {
                Some(id) if !stops.contains(&id) && !state.ended => {
                    x = Tensor::new(&[id], &Device::Cpu)?.unsqueeze(0)?;
                }
                _ => break,
            }
        }
    }
    println!(
        "{}",
        serde_json::json!({
            "model": base, "dequantized": a.dequantize, "questions": a.limit.min(dev.len()),
            "tokens": tokens, "first_choice_refused": first_refused,
            "vocab_table_s": vocab_s,
            "forward_ms_per_token": 1e3 * forward_s / tokens.max(1) as f64,
            "constraint_ms_per_token": 1e3 * constrain_s / tokens.max(1) as f64,
            "constraint_share_of_decode": constrain_s / forward_s.max(1e-9),
        })
    );
    Ok(())
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

/// Where a micro-batch's time goes (see `--profile`); stderr.
fn profile(t: &mut crate::train::trainer::Trainer, ids: &[usize], dtype: candle_core::DType) -> anyhow::Result<()> {
    use crate::train::batch::{collate, Encoded};
    use crate::train::trainer::{at_labels, label_loss};
    use sqlora_core::linear::BaseWeight;
    let device = t.model.device().clone();
    let sync = || device.synchronize();
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
    let exs: Vec<&Encoded> = ids.iter().map(|&i| &t.train[i]).collect();
    let batch = collate(&exs, t.pad_id, &device)?;
    sync()?;
    let t0 = Instant::now();
    let hidden = t.model.forward_hidden(&batch.ids, 0, None)?;
    let loss = label_loss(&t.head.forward(&at_labels(&hidden, &batch)?)?, &batch)?;
    let (fq, _) = (t0.elapsed(), sync()?);
    let fd = t0.elapsed();
    let t1 = Instant::now();
    let grads = loss.backward()?;
    let (bq, _) = (t1.elapsed(), sync()?);
    let bd = t1.elapsed();
    let gs: Vec<Tensor> = t
        .opt
        .params()
        .iter()
        .map(|p| {
            grads
                .get(p.var.as_tensor())
                .cloned()
                .unwrap_or_else(|| p.var.as_tensor().zeros_like().unwrap())
        })
        .collect();
    let t2 = Instant::now();
    t.opt.step(&gs, 1e-6, 1.0)?;
    let (oq, _) = (t2.elapsed(), sync()?);
    let od = t2.elapsed();
    eprintln!(
        "profile      forward {:.1} ms (queued {:.1}), backward {:.1} ms (queued {:.1}), optimizer {:.1} ms (queued {:.1}); {} tokens",
        ms(fd), ms(fq), ms(bd), ms(bq), ms(od), ms(oq), batch.tokens
    );
    // The largest projection alone: dequantize, and the product with this batch's rows.
    let Some(big) = t
        .model
        .linears()
        .map(|(_, l)| l.clone())
        .max_by_key(|l| l.shape().0 * l.shape().1)
    else {
        return Ok(());
    };
    let (out, inn) = big.shape();
    let n = batch.tokens;
    let reps = 20;
    if let BaseWeight::Nf4(q) = big.base() {
        q.dequantize(dtype)?;
        sync()?;
        let t3 = Instant::now();
        for _ in 0..reps {
            q.dequantize(dtype)?;
        }
        sync()?;
        let s = t3.elapsed().as_secs_f64() / reps as f64;
        let bytes = (out * inn) as f64 * (0.5 + dtype.size_in_bytes() as f64);
        eprintln!(
            "profile      NF4 dequantize [{out}, {inn}] -> {dtype:?}: {:.3} ms, {:.0} GB/s",
            s * 1e3,
            bytes / s / 1e9
        );
    }
    let w = big.dequantize(&device)?.to_dtype(dtype)?;
    let x = Tensor::randn(0f32, 1.0, (n, inn), &device)?.to_dtype(dtype)?;
    x.matmul(&w.t()?)?;
    sync()?;
    let t4 = Instant::now();
    for _ in 0..reps {
        x.matmul(&w.t()?)?;
    }
    sync()?;
    let s = t4.elapsed().as_secs_f64() / reps as f64;
    eprintln!(
        "profile      matmul [{n}, {inn}] x [{inn}, {out}] {dtype:?}: {:.3} ms, {:.0} TFLOP/s",
        s * 1e3,
        2.0 * (n * inn * out) as f64 / s / 1e12
    );
    Ok(())
}

/// Training throughput as the peer measures it: warm-up steps, then timed
/// optimizer steps (forward, backward, clipping, AdamW) queued back to back
/// and waited for once at the end; tokens are real (non-pad) tokens, so the
/// random workload counts batch × seq_len per micro-batch. Peak device memory
/// is the CUDA pool's high-water mark over the timed steps (torch's
/// `max_memory_allocated`).
fn train(a: TrainArgs) -> anyhow::Result<()> {
    use crate::train::{self as tr, batch::Encoded, config::TrainConfig, trainer::LogMode, trainer::Pending};
    use rand::{Rng, SeedableRng};

    std::env::set_var("RAYON_NUM_THREADS", a.threads.to_string());
    let base = crate::fetch::base_or_default(a.base.as_deref())?;
    let steps = a.steps + a.warmup;
    let sets: Vec<String> = vec![
        format!("base={base}"),
        format!("device={}", a.device),
        format!("dtype={}", a.dtype),
        format!("gradient_checkpointing={}", a.gradient_checkpointing),
        format!("quantization={}", a.quantization),
        format!("dense_base_cache={}", a.dense_base_cache),
        format!("batch_size={}", a.batch),
        format!("grad_accum={}", a.grad_accum),
        format!("max_length={}", a.seq_len),
        // Half of each sequence for the schema, the rest for question and answer.
        format!("schema_budget={}", a.seq_len / 2),
        format!("lora_r={}", a.lora_r),
        format!("lora_alpha={}", 2 * a.lora_r),
        format!("max_steps={steps}"),
        format!("limit_train={}", a.batch * a.grad_accum * steps),
        "limit_eval=1".into(),
        "output_dir=runs/bench-train".into(),
    ];
    let cfg = TrainConfig::resolve(None, &sets)?;
    let t0 = Instant::now();
    let tr::Prepared {
        model,
        tokenizer: tok,
        template,
        base_name,
        params,
    } = tr::prepare(&cfg)?;
    let device = model.device().clone();
    let dtype = model.dtype();
    let load_s = t0.elapsed().as_secs_f64();
    let n = a.batch * a.grad_accum * steps;
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
            let settings = tr::prompt_settings(&cfg)?;
            tr::load_and_encode(&cfg, &tok, &template, &settings, &|_| {})?.0
        }
        other => anyhow::bail!("--data `{other}`: expected random or spider"),
    };
    let spec = tr::lora_spec(&cfg);
    let mut trainer = tr::build_trainer(&cfg, model, params, data, vec![], &tok, spec, base_name, LogMode::Quiet)?;
    let order = tr::batch::epoch_order(
        &trainer.train.iter().map(Encoded::len).collect::<Vec<_>>(),
        a.batch,
        cfg.seed,
        0,
        a.data == "spider",
    );
    let groups: Vec<&[Vec<usize>]> = order.chunks(a.grad_accum).take(steps).collect();
    trainer.set_train(true);
    let mut pending = Pending::default();
    for (step, group) in groups.iter().take(a.warmup).enumerate() {
        pending.push(&trainer.step(step as u64, group, cfg.learning_rate)?)?;
    }
    pending.read(a.warmup as u64)?;
    tr::reset_peak_device_memory(&device)?;
    // Tells an outside sampler (scripts/gpu-bench.sh: GPU utilization) that the timed steps start.
    if let Some(p) = std::env::var_os("SQLORA_TIMED_MARK") {
        sqlora_atomic::write(std::path::Path::new(&p), b"")?;
    }
    let (mut tokens, t) = (0usize, Instant::now());
    for (step, group) in groups.iter().enumerate().skip(a.warmup) {
        let out = trainer.step(step as u64, group, cfg.learning_rate)?;
        tokens += out.tokens;
        pending.push(&out)?;
    }
    let last = pending.read(steps as u64)?;
    let secs = t.elapsed().as_secs_f64();
    let peak_device = tr::peak_device_memory(&device)?;
    if a.profile {
        profile(&mut trainer, &groups[0][0], dtype)?;
    }
    let tps = tokens as f64 / secs.max(1e-9);
    let rss = peak_rss_kb();
    let mean_loss = last.as_ref().map(|r| r.loss_sum / r.micro_batches.max(1) as f64);
    if a.json {
        println!(
            "{}",
            serde_json::json!({"model": base, "device": a.device, "dtype": format!("{dtype:?}").to_lowercase(),
                "gradient_checkpointing": a.gradient_checkpointing, "threads": a.threads,
                "quantization": a.quantization, "dense_base_cache": a.dense_base_cache, "data": a.data,
                "batch": a.batch, "grad_accum": a.grad_accum, "seq_len": a.seq_len, "lora_r": a.lora_r,
                "timed_steps": a.steps, "tokens": tokens, "seconds": secs, "tokens_per_s": tps,
                "mean_loss": mean_loss, "load_s": load_s, "peak_rss_kb": rss,
                "peak_device_bytes": peak_device,
                "peak_device_gib": peak_device.map(|b| b as f64 / (1u64 << 30) as f64)})
        );
    } else {
        println!("model        {base}");
        println!(
            "setup        {} base{}, {} data, batch {} x {} x accum {}, r {}, {} {dtype:?}{}, threads {}",
            a.quantization,
            if a.dense_base_cache { " (dense cache)" } else { "" },
            a.data,
            a.batch,
            a.seq_len,
            a.grad_accum,
            a.lora_r,
            a.device,
            if a.gradient_checkpointing {
                ", checkpointing"
            } else {
                ""
            },
            a.threads
        );
        println!("load         {load_s:.2} s");
        println!(
            "train        {tps:.1} tok/s ({tokens} tokens in {secs:.2} s, {} timed steps)",
            a.steps
        );
        if let Some(l) = mean_loss {
            println!("loss         {l:.4} (mean over the timed steps)");
        }
        match rss {
            Some(kb) => println!("peak RSS     {:.0} MB", kb as f64 / 1024.0),
            None => println!("peak RSS     unavailable (no /proc/self/status)"),
        }
        if let Some(b) = peak_device {
            println!("peak device  {:.2} GiB", b as f64 / (1u64 << 30) as f64);
        }
    }
    Ok(())
}
