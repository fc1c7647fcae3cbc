//! The training configuration: a TOML file whose defaults are the seeds' settings
//! (QLoRA r=64, alpha=128, dropout 0.05, 7 targets, lr 2e-4, batch 4 × accumulation 2,
//! one epoch, max length 256, cosine with warm-up), overridable key by key with
//! `--set key=value`. Unknown keys are errors, so a typo never silently trains
//! with a default.

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Deserializer, Serialize};

/// Every key a script may rely on. Field names are the TOML keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// Base model: a `.gguf` file, an HF directory, a hub id, or `default`
    /// (SmolLM2-135M-Instruct Q4_1 from `$SQLORA_MODEL` / the sqlora cache).
    pub base: String,
    /// How the frozen base is held: `nf4` (QLoRA, double quantization), `gguf`
    /// (QLoRA directly on the GGUF blocks as stored), `none` (dense f32).
    pub quantization: String,
    /// Dequantize the frozen base once into f32 and keep it (4 bytes per weight:
    /// ~540 MB for SmolLM2-135M) instead of dequantizing every projection on
    /// every forward and backward. Same numbers, faster; no effect when `none`.
    pub dense_base_cache: bool,
    /// How schemas are written into prompts: `compact` or `create_table` (core's formats).
    pub schema_format: String,
    /// Training files (Spider `.jsonl`/`.json`, WikiSQL `.jsonl`); one path or a list.
    #[serde(deserialize_with = "one_or_many")]
    pub train_data: Vec<String>,
    /// Validation file for the eval loss; empty = hold out `eval_fraction` of the training set.
    pub eval_data: String,
    /// Schemas: Spider `tables.json` or WikiSQL `*.tables_headers.jsonl` (empty when inline).
    pub tables: String,
    /// Share of the training set held out for eval when `eval_data` is empty.
    pub eval_fraction: f64,
    pub output_dir: String,
    pub lora_r: usize,
    pub lora_alpha: f64,
    pub lora_dropout: f64,
    #[serde(deserialize_with = "one_or_many")]
    pub target_modules: Vec<String>,
    pub learning_rate: f64,
    pub batch_size: usize,
    pub eval_batch_size: usize,
    pub grad_accum: usize,
    pub epochs: usize,
    /// Optimizer steps to run; 0 = `epochs` over the data.
    pub max_steps: usize,
    /// Longest training sequence in tokens; longer examples are dropped.
    pub max_length: usize,
    /// Most tokens of schema in a prompt (cut by what the question names,
    /// identically at inference: it is saved with the adapter); 0 = whole.
    pub schema_budget: usize,
    /// Warm-up as a share of all optimizer steps (rounded up, as transformers does)...
    pub warmup_ratio: f64,
    /// ...or as a count, which wins when > 0.
    pub warmup_steps: usize,
    /// `cosine`, `linear` or `constant` (all after warm-up).
    pub lr_scheduler: String,
    pub weight_decay: f64,
    pub adam_beta1: f64,
    pub adam_beta2: f64,
    pub adam_epsilon: f64,
    /// Clip the global gradient norm to this; 0 = no clipping.
    pub max_grad_norm: f64,
    pub seed: u64,
    /// Evaluate / checkpoint / log every this many optimizer steps (0 = never; eval
    /// and save also happen at the end).
    pub eval_steps: usize,
    pub save_steps: usize,
    pub logging_steps: usize,
    /// Use only the first N examples (0 = all).
    pub limit_train: usize,
    pub limit_eval: usize,
    /// Add k training examples most similar to the question to each prompt.
    pub few_shot: usize,
    /// Batches of similar lengths (less padding); order still fixed by the seed.
    pub group_by_length: bool,
    /// Skip malformed records (counted) instead of stopping at the first one.
    pub skip_malformed: bool,
    /// `cpu` or `cuda:N` (needs the `cuda` feature).
    pub device: String,
    /// Compute dtype of activations and dequantized weights: `auto` (bf16 on
    /// CUDA, f32 on the CPU), `f32`, `bf16` or `f16`. LoRA weights and AdamW
    /// state are f32 whatever this says.
    pub dtype: String,
    /// Recompute each layer in the backward pass instead of keeping its
    /// activations (transformers' option of the same name): far less memory
    /// for long sequences and big batches, about a third more compute.
    pub gradient_checkpointing: bool,
    /// Checkpoints kept on disk (the oldest go first).
    pub keep_checkpoints: usize,
    /// System line of the chat prompt (empty = the model template's default).
    pub system_prompt: String,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            base: "default".into(),
            quantization: "nf4".into(),
            dense_base_cache: false,
            schema_format: "compact".into(),
            train_data: vec!["../shared/data/spider/train_spider.jsonl".into()],
            eval_data: "../shared/data/spider/dev.json".into(),
            tables: "../shared/data/spider/tables.json".into(),
            eval_fraction: 0.05,
            output_dir: "runs/sqlora-spider".into(),
            lora_r: 64,
            lora_alpha: 128.0,
            lora_dropout: 0.05,
            target_modules: [
                "q_proj",
                "k_proj",
                "v_proj",
                "o_proj",
                "gate_proj",
                "up_proj",
                "down_proj",
            ]
            .map(String::from)
            .to_vec(),
            learning_rate: 2e-4,
            batch_size: 4,
            eval_batch_size: 4,
            grad_accum: 2,
            epochs: 1,
            max_steps: 0,
            max_length: 512,
            schema_budget: sqlora_core::prompt::DEFAULT_SCHEMA_BUDGET,
            warmup_ratio: 0.1,
            warmup_steps: 0,
            lr_scheduler: "cosine".into(),
            weight_decay: 0.01,
            adam_beta1: 0.9,
            adam_beta2: 0.999,
            adam_epsilon: 1e-8,
            max_grad_norm: 1.0,
            seed: 42,
            eval_steps: 50,
            save_steps: 50,
            logging_steps: 10,
            limit_train: 0,
            limit_eval: 0,
            few_shot: 0,
            group_by_length: true,
            skip_malformed: false,
            device: "cpu".into(),
            dtype: "auto".into(),
            gradient_checkpointing: false,
            keep_checkpoints: 3,
            system_prompt: String::new(),
        }
    }
}

/// `key = "a"` and `key = ["a", "b"]` both mean a list.
fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) if s.is_empty() => vec![],
        OneOrMany::One(s) => s.split(',').map(|p| p.trim().to_string()).collect(),
        OneOrMany::Many(v) => v,
    })
}

impl TrainConfig {
    /// Defaults, then the file (if any), then each `key=value` in order.
    pub fn resolve(file: Option<&Path>, sets: &[String]) -> Result<Self> {
        let mut table = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).with_context(|| format!("{}: cannot read", path.display()))?;
                toml::from_str::<toml::Table>(&text).with_context(|| format!("{}: malformed TOML", path.display()))?
            }
            None => toml::Table::new(),
        };
        let mut from_set = std::collections::HashSet::new();
        for set in sets {
            let (key, value) = parse_set(set)?;
            from_set.insert(key.clone());
            table.insert(key, value);
        }
        // Blame a bad key on where it came from: `--set` wins over the file.
        let origin_of = |key: &str| match file {
            Some(p) if !from_set.contains(key) => p.display().to_string(),
            _ => "--set".to_string(),
        };
        let cfg: TrainConfig = match toml::Value::Table(table.clone()).try_into() {
            Ok(c) => c,
            Err(e) => {
                let e: toml::de::Error = e;
                // Name the offending key: serde's message alone ("expected usize") does not.
                let culprit = table.iter().find(|(k, v)| {
                    let one: toml::Table = [((*k).clone(), (*v).clone())].into_iter().collect();
                    toml::Value::Table(one).try_into::<TrainConfig>().is_err()
                });
                match culprit {
                    Some((k, v)) => bail!("{}: key `{k}` = {v}: {}", origin_of(k), e.message()),
                    None => bail!("{}: {}", origin_of(""), e.message()),
                }
            }
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// The resolved configuration as TOML (`--print-config`, and saved with each run).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("the config is plain data")
    }

    /// `schema_format` as core's type.
    pub fn schema_format(&self) -> Result<sqlora_core::schema::SchemaFormat> {
        use sqlora_core::schema::SchemaFormat;
        match self.schema_format.as_str() {
            "compact" => Ok(SchemaFormat::Compact),
            "create_table" => Ok(SchemaFormat::CreateTable),
            other => bail!("config: `schema_format` must be compact or create_table, got `{other}`"),
        }
    }

    /// The compute dtype on `device`: `auto` is bf16 on CUDA and f32 on the CPU.
    pub fn compute_dtype(&self, device: &candle_core::Device) -> candle_core::DType {
        use candle_core::DType;
        match self.dtype.as_str() {
            "bf16" => DType::BF16,
            "f16" => DType::F16,
            "f32" => DType::F32,
            _ if device.is_cuda() => DType::BF16,
            _ => DType::F32,
        }
    }

    fn validate(&self) -> Result<()> {
        let positive = [
            ("lora_r", self.lora_r),
            ("batch_size", self.batch_size),
            ("eval_batch_size", self.eval_batch_size),
            ("grad_accum", self.grad_accum),
            ("max_length", self.max_length),
        ];
        for (k, v) in positive {
            if v == 0 {
                bail!("config: `{k}` must be at least 1");
            }
        }
        // The schema is only part of a prompt: a budget that fills max_length
        // leaves nothing for the question and answer, and drops every example.
        if self.schema_budget >= self.max_length {
            bail!(
                "config: `schema_budget` ({}) must be less than `max_length` ({}): the sequence also holds the question and the answer; raise max_length or lower schema_budget (0 = whole schema)",
                self.schema_budget,
                self.max_length
            );
        }
        if self.epochs == 0 && self.max_steps == 0 {
            bail!("config: set `epochs` or `max_steps` to at least 1");
        }
        if !(0.0..1.0).contains(&self.lora_dropout) {
            bail!("config: `lora_dropout` must be in [0, 1), got {}", self.lora_dropout);
        }
        if !(0.0..=1.0).contains(&self.warmup_ratio) {
            bail!("config: `warmup_ratio` must be in [0, 1], got {}", self.warmup_ratio);
        }
        if !(0.0..1.0).contains(&self.eval_fraction) {
            bail!("config: `eval_fraction` must be in [0, 1), got {}", self.eval_fraction);
        }
        // Comparisons with NaN are false, so a NaN fails each check (a NaN
        // learning rate used to train an all-NaN adapter).
        let check = |key: &str, v: f64, ok: bool, want: &str| -> Result<()> {
            if !ok {
                bail!("config: `{key}` must be {want}, got {v}");
            }
            Ok(())
        };
        let positive = |v: f64| v.is_finite() && v > 0.0;
        let at_least_0 = |v: f64| v.is_finite() && v >= 0.0;
        let beta = |v: f64| (0.0..1.0).contains(&v);
        check(
            "learning_rate",
            self.learning_rate,
            positive(self.learning_rate),
            "finite and positive",
        )?;
        check(
            "lora_alpha",
            self.lora_alpha,
            positive(self.lora_alpha),
            "finite and positive",
        )?;
        check(
            "adam_epsilon",
            self.adam_epsilon,
            positive(self.adam_epsilon),
            "finite and positive",
        )?;
        check(
            "weight_decay",
            self.weight_decay,
            at_least_0(self.weight_decay),
            "finite and at least 0",
        )?;
        check(
            "max_grad_norm",
            self.max_grad_norm,
            at_least_0(self.max_grad_norm),
            "finite and at least 0",
        )?;
        check("adam_beta1", self.adam_beta1, beta(self.adam_beta1), "in [0, 1)")?;
        check("adam_beta2", self.adam_beta2, beta(self.adam_beta2), "in [0, 1)")?;
        if self.train_data.is_empty() {
            bail!("config: `train_data` names no file");
        }
        crate::train::schedule::SchedulerKind::parse(&self.lr_scheduler)?;
        if !["nf4", "gguf", "none"].contains(&self.quantization.as_str()) {
            bail!(
                "config: `quantization` must be nf4, gguf or none, got `{}`",
                self.quantization
            );
        }
        self.schema_format()?;
        if !["auto", "f32", "bf16", "f16"].contains(&self.dtype.as_str()) {
            bail!("config: `dtype` must be auto, f32, bf16 or f16, got `{}`", self.dtype);
        }
        Ok(())
    }
}

/// `key=value`, where the value is read as TOML (`2e-4`, `true`, `["q_proj"]`)
/// and, failing that, as a bare string (`output_dir=runs/x`).
fn parse_set(set: &str) -> Result<(String, toml::Value)> {
    let Some((key, raw)) = set.split_once('=') else {
        bail!("--set `{set}`: expected key=value");
    };
    let key = key.trim().to_string();
    let raw = raw.trim();
    let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()));
    Ok((key, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_seeds_settings() {
        let c = TrainConfig::resolve(None, &[]).unwrap();
        assert_eq!((c.lora_r, c.lora_alpha, c.lora_dropout), (64, 128.0, 0.05));
        assert_eq!(c.target_modules.len(), 7);
        assert_eq!((c.learning_rate, c.batch_size, c.grad_accum, c.epochs), (2e-4, 4, 2, 1));
        // The seeds' 256 tokens would cut schemas by the gold SQL; we train on
        // the schema inference shows (up to 384 tokens), so sequences are longer.
        assert_eq!((c.max_length, c.schema_budget), (512, 384));
        assert_eq!(c.lr_scheduler, "cosine");
        assert_eq!(c.quantization, "nf4");
        assert!(!c.gradient_checkpointing);
    }

    #[test]
    fn non_finite_and_out_of_range_numbers_are_refused() {
        for bad in [
            "learning_rate=nan",
            "learning_rate=inf",
            "learning_rate=0",
            "lora_alpha=-1",
            "weight_decay=nan",
            "max_length=384",
            "adam_beta1=1",
            "adam_beta2=-0.1",
            "adam_epsilon=0",
            "max_grad_norm=inf",
            "lora_dropout=nan",
            "warmup_ratio=nan",
        ] {
            let e = TrainConfig::resolve(None, &[bad.into()]).expect_err(bad);
            let key = bad.split('=').next().unwrap();
            assert!(e.to_string().contains(key), "{bad}: {e}");
        }
        assert!(TrainConfig::resolve(None, &["max_grad_norm=0".into(), "weight_decay=0".into()]).is_ok());
    }

    #[test]
    fn dtype_auto_is_f32_on_the_cpu_and_names_win() {
        use candle_core::{DType, Device};
        let c = TrainConfig::resolve(None, &[]).unwrap();
        assert_eq!(c.compute_dtype(&Device::Cpu), DType::F32);
        let c = TrainConfig::resolve(None, &["dtype=bf16".into()]).unwrap();
        assert_eq!(c.compute_dtype(&Device::Cpu), DType::BF16);
        assert!(TrainConfig::resolve(None, &["dtype=fp8".into()]).is_err());
    }

    #[test]
    fn set_overrides_with_typed_values() {
        let sets = [
            "learning_rate=1e-4",
            "max_steps=7",
            "output_dir=runs/x y",
            "target_modules=[\"q_proj\",\"v_proj\"]",
            "train_data=a.jsonl,b.jsonl",
            "group_by_length=false",
        ]
        .map(String::from);
        let c = TrainConfig::resolve(None, &sets).unwrap();
        assert_eq!(c.learning_rate, 1e-4);
        assert_eq!(c.max_steps, 7);
        assert_eq!(c.output_dir, "runs/x y");
        assert_eq!(c.target_modules, vec!["q_proj", "v_proj"]);
        assert_eq!(c.train_data, vec!["a.jsonl", "b.jsonl"]);
        assert!(!c.group_by_length);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors() {
        let e = TrainConfig::resolve(None, &["lora_rank=8".into()]).unwrap_err();
        assert!(e.to_string().contains("lora_rank"), "{e}");
        let e = TrainConfig::resolve(None, &["batch_size=four".into()]).unwrap_err();
        assert!(
            e.to_string().contains("batch_size") || e.to_string().contains("integer"),
            "{e}"
        );
        let e = TrainConfig::resolve(None, &["lr_scheduler=exp".into()]).unwrap_err();
        assert!(e.to_string().contains("exp"), "{e}");
        assert!(TrainConfig::resolve(None, &["noequals".into()]).is_err());
    }

    #[test]
    fn a_bad_value_is_blamed_on_where_it_came_from() {
        let dir = std::env::temp_dir().join(format!("sqlora-cfg-blame-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.toml");
        std::fs::write(&path, "lora_r = 8\nbatch_size = \"four\"\n").unwrap();
        let e = TrainConfig::resolve(Some(&path), &["batch_size=2".into(), "lora_r=-1".into()]).unwrap_err();
        assert!(e.to_string().starts_with("--set: key `lora_r`"), "{e}");
        let e = TrainConfig::resolve(Some(&path), &["seed=1".into()]).unwrap_err();
        assert!(
            e.to_string()
                .starts_with(&format!("{}: key `batch_size`", path.display())),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn printed_config_reads_back_identically() {
        let c = TrainConfig::resolve(None, &["seed=7".into(), "few_shot=3".into()]).unwrap();
        let dir = std::env::temp_dir().join(format!("sqlora-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.toml");
        std::fs::write(&path, c.to_toml()).unwrap();
        assert_eq!(TrainConfig::resolve(Some(&path), &[]).unwrap(), c);
        let _ = std::fs::remove_dir_all(dir);
    }
}

#[cfg(test)]
mod shipped_configs {
    use super::*;

    #[test]
    fn documented_default_config_equals_the_defaults() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let c = TrainConfig::resolve(Some(&root.join("configs/spider-smollm2.toml")), &[]).unwrap();
        assert_eq!(c, TrainConfig::default());
        let w = TrainConfig::resolve(Some(&root.join("configs/wikisql-smollm2.toml")), &[]).unwrap();
        assert_eq!(w.lora_r, 64);
        assert!(w.train_data[0].ends_with("train_subset1000_text.jsonl"));
        let q = TrainConfig::resolve(Some(&root.join("configs/quickstart.toml")), &[]).unwrap();
        assert_eq!(q.output_dir, "runs/quickstart/adapter");
        // The quickstart's time is bounded by a fixed step budget, not by the data size.
        assert!(q.limit_train > 0 && (1..=100).contains(&q.max_steps), "{q:?}");
        let r = TrainConfig::resolve(Some(&root.join("docs/runs/spider-smollm2-500/config.toml")), &[]).unwrap();
        assert_eq!((r.limit_train, r.limit_eval), (500, 100));
    }
}
