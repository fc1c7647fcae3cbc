//! `sqlora train`: fine-tune a QLoRA adapter on Spider / WikiSQL.
//!
//! The pieces, in the order a run uses them: [`config`] (TOML + `--set`),
//! [`data`] (dataset files → examples), [`encode`] (prompt + answer → ids and
//! loss mask), [`lora_setup`] (adapters on the target projections, peft files),
//! [`batch`] (padded, length-grouped batches), [`schedule`] and [`optim`]
//! (cosine warm-up, AdamW), [`trainer`] (the loop), [`checkpoint`] (atomic,
//! resumable), [`metrics`] (metrics.jsonl, loss curve).

pub mod batch;
pub mod checkpoint;
pub mod config;
pub mod data;
pub mod encode;
pub mod lora_setup;
pub mod metrics;
pub mod optim;
pub mod schedule;
pub mod trainer;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::Device;
use sqlora_core::chat::ChatTemplate;
use sqlora_core::linear::Linear;
use sqlora_core::model::Model;
use sqlora_core::pipeline::PROMPT_SETTINGS_FILE;
use sqlora_core::prompt::PromptSettings;
use sqlora_core::tokenizer::Tokenizer;
use sqlora_core::weights::{self, BaseFormat, ModelSource};

use self::batch::Encoded;
use self::config::TrainConfig;
use self::encode::{EncodeStats, Encoder, ShotIndex};
use self::lora_setup::LoraSpec;
use self::optim::{AdamWConfig, Param};
use self::schedule::{LrSchedule, SchedulerKind};
use self::trainer::{LogMode, Settings, Trainer};

#[derive(clap::Args)]
pub struct Args {
    /// TOML configuration file (see configs/spider-smollm2.toml); defaults are the seeds' settings.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Override one key: `--set learning_rate=1e-4 --set target_modules='["q_proj","v_proj"]'`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
    /// Print the resolved configuration as TOML and exit.
    #[arg(long)]
    pub print_config: bool,
    /// Continue from the latest checkpoint in output_dir.
    #[arg(long)]
    pub resume: bool,
    /// Shortcut for `--set device=...` (`cpu`, `cuda:0`).
    #[arg(long)]
    pub device: Option<String>,
    /// No progress bar or log lines.
    #[arg(long, conflicts_with = "json")]
    pub quiet: bool,
    /// Metrics records as JSON lines on stdout, the summary as a last JSON line.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> Result<()> {
    let mut sets = args.sets.clone();
    if let Some(d) = &args.device {
        sets.push(format!("device={d}"));
    }
    let cfg = TrainConfig::resolve(args.config.as_deref(), &sets)?;
    if args.print_config {
        print!("{}", cfg.to_toml());
        return Ok(());
    }
    let log = if args.json {
        LogMode::Json
    } else if args.quiet {
        LogMode::Quiet
    } else {
        LogMode::Human
    };
    let say = |m: String| {
        if log == LogMode::Human {
            eprintln!("{m}");
        }
    };
    let out = PathBuf::from(&cfg.output_dir);
    let resume_from = if args.resume {
        let saved = out.join("train_config.toml");
        if let Ok(text) = std::fs::read_to_string(&saved) {
            if text != cfg.to_toml() {
                bail!(
                    "{}: the run being resumed used another configuration; resume with the same settings",
                    saved.display()
                );
            }
        }
        let (_, dir) = checkpoint::list(&out)?
            .pop()
            .with_context(|| format!("{}: no checkpoint to resume from", out.display()))?;
        Some(dir)
    } else {
        None
    };

    say(format!("loading {} ({})", cfg.base, cfg.quantization));
    let Prepared {
        model,
        tokenizer: tok,
        template,
        base_name,
        params,
    } = prepare(&cfg)?;
    check_gradient_flow(&model, &params)?;

    let settings = prompt_settings(&cfg)?;
    let (train, eval, stats) = load_and_encode(&cfg, &tok, &template, &settings, &say)?;
    say(format!(
        "train: {} sequences ({} schemas cut to the prompt's schema budget of {} tokens as at inference; {} longer than max_length {}, {} not starting with `{}`: dropped); eval: {} sequences",
        train.len(),
        stats.schema_cut,
        settings.schema_budget.map_or("unlimited".to_string(), |b| b.to_string()),
        stats.dropped,
        cfg.max_length,
        stats.unprefixed,
        settings.answer_prefix,
        eval.len()
    ));
    if train.is_empty() {
        bail!(
            "no training sequence left (all dropped by max_length {}?)",
            cfg.max_length
        );
    }

    std::fs::create_dir_all(&out).with_context(|| format!("{}: cannot create", out.display()))?;
    sqlora_atomic::write(&out.join("train_config.toml"), cfg.to_toml())?;
    // Beside the adapter, so eval/generate/export rebuild the training prompt.
    sqlora_atomic::write(&out.join(PROMPT_SETTINGS_FILE), settings.to_json())?;

    let mut trainer = build_trainer(&cfg, model, params, train, eval, &tok, lora_spec(&cfg), base_name, log)?;
    let resume = match resume_from {
        Some(dir) => {
            say(format!("resuming from {}", dir.display()));
            Some(checkpoint::load(&dir, &mut trainer.opt)?)
        }
        None => None,
    };
    let summary = trainer.run(resume)?;
    match log {
        LogMode::Json => println!("{}", serde_json::to_string(&serde_json::json!({ "summary": summary }))?),
        LogMode::Human => eprintln!(
            "done: {} steps, {} tokens, {:.1} tok/s{}; eval loss {} → {}; adapter in {}",
            summary.steps,
            summary.tokens,
            summary.tokens_per_s,
            summary
                .peak_device_gib
                .map_or_else(String::new, |g| format!(", peak device memory {g:.2} GiB")),
            fmt_loss(summary.first_eval_loss),
            fmt_loss(summary.final_eval_loss),
            out.display()
        ),
        LogMode::Quiet => {}
    }
    Ok(())
}

/// A base ready to train: what [`prepare`] returns.
pub struct Prepared {
    pub model: Model,
    pub tokenizer: Tokenizer,
    pub template: ChatTemplate,
    pub base_name: String,
    pub params: Vec<Param>,
}

/// The one set-up of a training model (train and `bench train`): the base
/// loaded in its configured form on the configured device (NF4 codes uploaded
/// once), the compute dtype, fresh adapters, gradient checkpointing.
pub fn prepare(cfg: &TrainConfig) -> Result<Prepared> {
    let device = parse_device(&cfg.device)?;
    let base = resolve_base(&cfg.base)?;
    let ckpt = weights::load(&ModelSource::parse(&base)?, base_format(&cfg.quantization), &device)?;
    let base_name = ckpt.name.clone();
    let (mut model, tokenizer, template) = ckpt.into_model(&device)?;
    if cfg.dense_base_cache {
        cache_dense_base(&mut model)?;
    }
    model.set_dtype(cfg.compute_dtype(&device))?;
    model.set_gradient_checkpointing(cfg.gradient_checkpointing);
    let template = ChatTemplate::from_source_or_fallback(template.as_deref(), &tokenizer)?;
    let spec = lora_spec(cfg);
    let params = lora_setup::attach(&mut model, &spec, cfg.seed)?;
    Ok(Prepared {
        model,
        tokenizer,
        template,
        base_name,
        params,
    })
}

pub fn lora_spec(cfg: &TrainConfig) -> LoraSpec {
    LoraSpec {
        r: cfg.lora_r,
        alpha: cfg.lora_alpha,
        dropout: cfg.lora_dropout,
        targets: cfg.target_modules.clone(),
    }
}

#[allow(clippy::too_many_arguments)]
pub fn build_trainer(
    cfg: &TrainConfig,
    model: Model,
    params: Vec<Param>,
    train: Vec<Encoded>,
    eval: Vec<Encoded>,
    tok: &Tokenizer,
    spec: LoraSpec,
    base_name: String,
    log: LogMode,
) -> Result<Trainer> {
    let opt = optim::AdamW::new(
        params,
        AdamWConfig {
            beta1: cfg.adam_beta1,
            beta2: cfg.adam_beta2,
            eps: cfg.adam_epsilon,
            weight_decay: cfg.weight_decay,
        },
    )?;
    let s = Settings {
        batch_size: cfg.batch_size,
        eval_batch_size: cfg.eval_batch_size,
        grad_accum: cfg.grad_accum,
        epochs: cfg.epochs,
        max_steps: cfg.max_steps,
        max_grad_norm: cfg.max_grad_norm,
        seed: cfg.seed,
        group_by_length: cfg.group_by_length,
        eval_steps: cfg.eval_steps,
        save_steps: cfg.save_steps,
        logging_steps: cfg.logging_steps,
        keep_checkpoints: cfg.keep_checkpoints,
        output_dir: PathBuf::from(&cfg.output_dir),
        log,
    };
    let head = if cfg.dense_base_cache {
        Linear::dense(model.lm_head().dequantize(model.device())?, None)
    } else {
        model.lm_head().clone()
    };
    let mut t = Trainer {
        head,
        model,
        opt,
        schedule: LrSchedule::new(SchedulerKind::Cosine, cfg.learning_rate, 1, 0.0, 0),
        train,
        eval,
        pad_id: tok
            .pad_id()
            .context("the tokenizer has neither a pad nor an EOS token")?,
        spec,
        base_name,
        s,
    };
    let total = t.total_steps() as usize;
    t.schedule = LrSchedule::new(
        SchedulerKind::parse(&cfg.lr_scheduler)?,
        cfg.learning_rate,
        total,
        cfg.warmup_ratio,
        cfg.warmup_steps,
    );
    Ok(t)
}

/// Load the configured files and encode them; eval is `eval_data`, or a
/// seeded hold-out of the training set when that is empty.
pub fn load_and_encode(
    cfg: &TrainConfig,
    tok: &Tokenizer,
    template: &ChatTemplate,
    settings: &PromptSettings,
    say: &dyn Fn(String),
) -> Result<(Vec<Encoded>, Vec<Encoded>, EncodeStats)> {
    let tables = (!cfg.tables.is_empty()).then(|| Path::new(&cfg.tables));
    let mut train = vec![];
    for f in &cfg.train_data {
        let loaded = data::load(Path::new(f), tables, cfg.skip_malformed)?;
        if loaded.skipped > 0 {
            say(format!("{f}: skipped {} malformed records", loaded.skipped));
        }
        train.extend(loaded.examples);
    }
    let mut eval = if cfg.eval_data.is_empty() {
        let n = (train.len() as f64 * cfg.eval_fraction).round() as usize;
        let mut idx: Vec<usize> = (0..train.len()).collect();
        rand::seq::SliceRandom::shuffle(
            &mut idx[..],
            &mut <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(cfg.seed),
        );
        let held: std::collections::HashSet<usize> = idx[..n].iter().copied().collect();
        let (e, t): (Vec<_>, Vec<_>) = train.into_iter().enumerate().partition(|(i, _)| held.contains(i));
        train = t.into_iter().map(|(_, x)| x).collect();
        e.into_iter().map(|(_, x)| x).collect()
    } else {
        let loaded = data::load(Path::new(&cfg.eval_data), tables, cfg.skip_malformed)?;
        if loaded.skipped > 0 {
            say(format!(
                "{}: skipped {} malformed records",
                cfg.eval_data, loaded.skipped
            ));
        }
        loaded.examples
    };
    if cfg.limit_train > 0 {
        train.truncate(cfg.limit_train);
    }
    if cfg.limit_eval > 0 {
        eval.truncate(cfg.limit_eval);
    }
    let enc = Encoder {
        tok,
        template,
        settings: settings.clone(),
        max_length: cfg.max_length,
    };
    let shots = (cfg.few_shot > 0).then(|| ShotIndex::new(&train));
    let mut stats = EncodeStats::default();
    let encode_all = |exs: &[data::Example], from_pool: bool, stats: &mut EncodeStats| -> Result<Vec<Encoded>> {
        let mut out = vec![];
        for (i, ex) in exs.iter().enumerate() {
            let picked = match &shots {
                Some(fs) => encode::shots(&train, &fs.nearest(&ex.question, cfg.few_shot, from_pool.then_some(i))),
                None => vec![],
            };
            if let Some(e) = enc.encode(ex, &picked, stats)? {
                out.push(e);
            }
        }
        Ok(out)
    };
    let train_enc = encode_all(&train, true, &mut stats)?;
    let mut eval_stats = EncodeStats::default();
    let eval_enc = encode_all(&eval, false, &mut eval_stats)?;
    if eval_stats.dropped + eval_stats.unprefixed > 0 {
        say(format!(
            "eval: {} examples dropped (longer than max_length even with the schema cut), {} not starting with `{}`",
            eval_stats.dropped, eval_stats.unprefixed, settings.answer_prefix
        ));
    }
    Ok((train_enc, eval_enc, stats))
}

/// `default` → the default base model ([`sqlora_core::default_model`]), which must exist.
pub fn resolve_base(spec: &str) -> Result<String> {
    if spec != "default" {
        return Ok(spec.to_string());
    }
    Ok(sqlora_core::default_model::existing()?.display().to_string())
}

/// The prompt settings of a run: core's defaults with the configured system
/// line and schema format. Saved as `sqlora_prompt.json` beside the adapter.
pub fn prompt_settings(cfg: &TrainConfig) -> Result<PromptSettings> {
    Ok(PromptSettings {
        system: (!cfg.system_prompt.is_empty()).then(|| cfg.system_prompt.clone()),
        schema_format: cfg.schema_format()?,
        schema_budget: (cfg.schema_budget > 0).then_some(cfg.schema_budget),
        ..PromptSettings::default()
    })
}

/// `quantization` → how core loads the frozen base.
pub fn base_format(q: &str) -> BaseFormat {
    match q {
        "nf4" => BaseFormat::Nf4,
        "none" => BaseFormat::F32,
        _ => BaseFormat::AsStored,
    }
}

/// The CUDA memory pool's high-water mark in bytes since the last reset
/// (torch's `max_memory_allocated`); `None` on the CPU.
pub fn peak_device_memory(device: &Device) -> Result<Option<u64>> {
    #[cfg(feature = "cuda")]
    return Ok(sqlora_core::cuda::peak_memory(device)?);
    #[cfg(not(feature = "cuda"))]
    {
        let _ = device;
        Ok(None)
    }
}

/// Start a new peak-memory window (a no-op on the CPU).
pub fn reset_peak_device_memory(device: &Device) -> Result<()> {
    #[cfg(feature = "cuda")]
    sqlora_core::cuda::reset_peak_memory(device)?;
    let _ = device;
    Ok(())
}

/// How `eval` and `generate` hold the base: as stored, dequantized to f32
/// (`--dequantize`), or NF4 (`--nf4`).
pub fn inference_format(dequantize: bool, nf4: bool) -> BaseFormat {
    match (dequantize, nf4) {
        (true, _) => BaseFormat::F32,
        (_, true) => BaseFormat::Nf4,
        _ => BaseFormat::AsStored,
    }
}

/// `dense_base_cache`: dequantize every frozen projection once (f32). The
/// values are exactly what per-call dequantization would produce, so the
/// run's numbers do not change, only its speed and memory.
pub fn cache_dense_base(model: &mut Model) -> Result<()> {
    let device = model.device().clone();
    for (_, linear) in model.linears_mut() {
        linear.to_dense(&device)?;
    }
    Ok(())
}

/// `cpu` or `cuda:N`; a CUDA device is set up for sqlora's single-stream use
/// (see `sqlora_core::cuda::configure`).
pub fn parse_device(spec: &str) -> Result<Device> {
    match spec {
        "cpu" => Ok(Device::Cpu),
        s if s.starts_with("cuda") => {
            let n = s.strip_prefix("cuda").and_then(|r| r.strip_prefix(':')).unwrap_or("0");
            let n: usize = n.parse().with_context(|| format!("device `{s}`: expected cuda:N"))?;
            let device = Device::new_cuda(n)
                .with_context(|| format!("device `{s}` (is this build compiled with `--features cuda`?)"))?;
            #[cfg(feature = "cuda")]
            sqlora_core::cuda::configure(&device).with_context(|| format!("setting up device `{s}`"))?;
            Ok(device)
        }
        other => bail!("device `{other}`: expected cpu or cuda:N"),
    }
}

/// A frozen base whose kernels have no backward (candle's QMatMul) silently
/// stops gradients; catch that before hours of training nothing. With B = 0 at
/// init only the B matrices get gradient, and the first layer's B only if the
/// gradient crosses every layer above it and the LM head.
fn check_gradient_flow(model: &Model, params: &[Param]) -> Result<()> {
    let ids = candle_core::Tensor::new(&[[1u32, 2, 3]], model.device())?;
    let logits = model.forward(&ids, 0, None)?;
    let loss = logits.to_dtype(candle_core::DType::F32)?.sqr()?.mean_all()?;
    let grads = loss.backward()?;
    let first_b = params
        .iter()
        .find(|p| p.name.ends_with("lora_B.weight"))
        .context("no LoRA B parameter")?;
    let flows = match grads.get(first_b.var.as_tensor()) {
        Some(g) => {
            g.abs()?
                .sum_all()?
                .to_dtype(candle_core::DType::F32)?
                .to_scalar::<f32>()?
                > 0.0
        }
        None => false,
    };
    if !flows {
        bail!(
            "no gradient reaches `{}`: the base's quantized kernels have no backward. Use quantization = \"nf4\" or \"f32\"",
            first_b.name
        );
    }
    Ok(())
}

fn fmt_loss(loss: Option<f64>) -> String {
    loss.map_or_else(|| "-".to_string(), |l| format!("{l:.4}"))
}
