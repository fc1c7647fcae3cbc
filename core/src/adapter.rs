//! LoRA adapters in peft's file format, so they move freely between this
//! project and Python (`PeftModel.from_pretrained` / `save_pretrained`):
//!
//! - `adapter_config.json`: `peft_type` "LORA", `r`, `lora_alpha`,
//!   `lora_dropout`, `target_modules`, `base_model_name_or_path`, `bias` "none",
//!   `task_type` "CAUSAL_LM", `use_rslora`, …; unknown keys are kept as read;
//! - `adapter_model.safetensors`: `base_model.model.<module>.lora_A.weight`
//!   `[r, in]` and `…lora_B.weight` `[out, r]` per adapted module, where
//!   `<module>` is the HF name (`model.layers.0.self_attn.q_proj`).
//!
//! Applying an adapter attaches a [`LoraLayer`] to each named [`Linear`];
//! merging folds `scaling · B·A` into a dense base (export).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::linear::Linear;
use crate::lora::{LoraConfig, LoraDropout, LoraLayer};
use crate::{Error, Result};

pub const CONFIG_FILE: &str = "adapter_config.json";
pub const WEIGHTS_FILE: &str = "adapter_model.safetensors";

/// `adapter_config.json`. Fields peft requires are typed; everything else is
/// carried through untouched so a round trip does not lose peft's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdapterConfig {
    pub peft_type: String,
    pub r: usize,
    pub lora_alpha: f64,
    #[serde(default)]
    pub lora_dropout: f64,
    pub target_modules: TargetModules,
    #[serde(default)]
    pub base_model_name_or_path: Option<String>,
    #[serde(default = "bias_none")]
    pub bias: String,
    #[serde(default)]
    pub task_type: Option<String>,
    #[serde(default)]
    pub use_rslora: bool,
    #[serde(default)]
    pub use_dora: bool,
    #[serde(default)]
    pub fan_in_fan_out: bool,
    #[serde(default)]
    pub rank_pattern: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    pub alpha_pattern: serde_json::Map<String, serde_json::Value>,
    #[serde(flatten)]
    pub other: serde_json::Map<String, serde_json::Value>,
}

fn bias_none() -> String {
    "none".into()
}

/// peft accepts a list of module names or one string (`all-linear`, or a regex).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TargetModules {
    List(Vec<String>),
    One(String),
}

impl TargetModules {
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            TargetModules::List(v) => v.clone(),
            TargetModules::One(s) => vec![s.clone()],
        }
    }
}

impl AdapterConfig {
    /// A config for adapters trained here, with peft's defaults for the rest.
    pub fn from_lora(cfg: &LoraConfig, base_model: &str) -> Self {
        let mut targets = cfg.target_modules.clone();
        targets.sort();
        let target_modules = if targets == ["all-linear"] {
            TargetModules::One("all-linear".into())
        } else {
            TargetModules::List(targets)
        };
        let other = serde_json::json!({
            "inference_mode": true,
            "init_lora_weights": true,
            "layers_pattern": null,
            "layers_to_transform": null,
            "modules_to_save": null,
            "revision": null,
            "lora_bias": false,
            "exclude_modules": null,
            "auto_mapping": null,
            "peft_version": "0.21.2",
        });
        AdapterConfig {
            peft_type: "LORA".into(),
            r: cfg.r,
            lora_alpha: cfg.alpha,
            lora_dropout: cfg.dropout,
            target_modules,
            base_model_name_or_path: Some(base_model.to_string()),
            bias: "none".into(),
            task_type: Some("CAUSAL_LM".into()),
            use_rslora: cfg.use_rslora,
            use_dora: false,
            fan_in_fan_out: false,
            rank_pattern: Default::default(),
            alpha_pattern: Default::default(),
            other: other.as_object().cloned().unwrap_or_default(),
        }
    }

    pub fn lora_config(&self) -> LoraConfig {
        LoraConfig {
            r: self.r,
            alpha: self.lora_alpha,
            dropout: self.lora_dropout,
            target_modules: self.target_modules.to_vec(),
            use_rslora: self.use_rslora,
        }
    }

    /// What this project can run: plain LoRA on linear projections.
    fn check_supported(&self, origin: &Path) -> Result<()> {
        let bad = |m: String| Err(Error::file(origin, m));
        if self.peft_type != "LORA" {
            return bad(format!("peft_type `{}` is not supported (only LORA)", self.peft_type));
        }
        if self.r == 0 {
            return bad("r must be at least 1".into());
        }
        if self.bias != "none" {
            return bad(format!("bias `{}` is not supported (only \"none\")", self.bias));
        }
        if self.use_dora {
            return bad("DoRA adapters (use_dora) are not supported".into());
        }
        if self.fan_in_fan_out {
            return bad("fan_in_fan_out adapters (GPT-2 style Conv1D) are not supported".into());
        }
        if !self.rank_pattern.is_empty() || !self.alpha_pattern.is_empty() {
            return bad("per-module rank_pattern/alpha_pattern is not supported".into());
        }
        // A list names modules; one string may be peft's regex, which the
        // tensors' names then settle.
        if let TargetModules::List(_) = &self.target_modules {
            self.lora_config().validate().or_else(|e| bad(e.to_string()))?;
        }
        Ok(())
    }
}

/// peft's tensor name for LoRA matrix `which` ('A' or 'B') of module `hf_name`.
pub fn peft_name(hf_name: &str, which: char) -> String {
    format!("base_model.model.{hf_name}.lora_{which}.weight")
}

/// The module and matrix a peft tensor name refers to.
fn parse_peft_name(name: &str) -> Option<(&str, char)> {
    let rest = name.strip_prefix("base_model.model.")?;
    let rest = rest.strip_suffix(".weight")?;
    // peft writes no adapter name on save; accept `.default` from other writers.
    let rest = rest.strip_suffix(".default").unwrap_or(rest);
    if let Some(m) = rest.strip_suffix(".lora_A") {
        Some((m, 'A'))
    } else {
        rest.strip_suffix(".lora_B").map(|m| (m, 'B'))
    }
}

/// A LoRA adapter: its config and, per HF module name, A `[r, in]` and B `[out, r]` (f32).
#[derive(Debug, Clone)]
pub struct Adapter {
    pub config: AdapterConfig,
    pub weights: BTreeMap<String, (Tensor, Tensor)>,
}

impl Adapter {
    pub fn scaling(&self) -> f64 {
        self.config.lora_config().scaling()
    }

    /// Parse the two files' contents; `dir` names them in errors.
    pub fn from_bytes(config_json: &str, safetensors: &[u8], dir: &Path, device: &Device) -> Result<Self> {
        let cfg_path = dir.join(CONFIG_FILE);
        let config: AdapterConfig = serde_json::from_str(config_json).map_err(|e| Error::Json {
            path: cfg_path.clone(),
            source: e,
        })?;
        config.check_supported(&cfg_path)?;

        let st_path = dir.join(WEIGHTS_FILE);
        let tensors = candle_core::safetensors::load_buffer(safetensors, device)
            .map_err(|e| Error::file(&st_path, format!("not a readable safetensors file: {e}")))?;
        let mut halves: BTreeMap<String, (Option<Tensor>, Option<Tensor>)> = BTreeMap::new();
        for (name, t) in tensors {
            let Some((module, which)) = parse_peft_name(&name) else {
                return Err(Error::file(
                    &st_path,
                    format!("tensor `{name}` is not a LoRA A/B weight in peft's naming"),
                ));
            };
            let t = t.to_dtype(DType::F32)?;
            // A diverged run's NaNs would merge into every weight they touch.
            let values = t.flatten_all()?.to_vec1::<f32>()?;
            if let Some(bad) = values.iter().find(|v| !v.is_finite()) {
                return Err(Error::file(
                    &st_path,
                    format!("tensor `{name}` holds a non-finite value ({bad}): the training that wrote it diverged"),
                ));
            }
            let slot = halves.entry(module.to_string()).or_default();
            if which == 'A' {
                slot.0 = Some(t);
            } else {
                slot.1 = Some(t);
            }
        }
        let mut weights = BTreeMap::new();
        for (module, (a, b)) in halves {
            let missing = |w| Error::MissingTensor {
                path: st_path.clone(),
                name: peft_name(&module, w),
            };
            let a = a.ok_or_else(|| missing('A'))?;
            let b = b.ok_or_else(|| missing('B'))?;
            let (r, _) = a.dims2()?;
            if r != config.r {
                return Err(Error::ShapeMismatch {
                    path: st_path.clone(),
                    name: peft_name(&module, 'A'),
                    expected: vec![config.r, a.dim(1)?],
                    found: a.dims().to_vec(),
                });
            }
            if b.rank() != 2 || b.dim(1)? != r {
                return Err(Error::ShapeMismatch {
                    path: st_path.clone(),
                    name: peft_name(&module, 'B'),
                    expected: vec![b.dim(0).unwrap_or(0), r],
                    found: b.dims().to_vec(),
                });
            }
            weights.insert(module, (a, b));
        }
        if weights.is_empty() {
            return Err(Error::file(&st_path, "holds no LoRA tensors"));
        }
        Ok(Adapter { config, weights })
    }

    /// Read `adapter_config.json` and `adapter_model.safetensors` from `dir`.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let read = |name: &str| {
            let p = dir.join(name);
            std::fs::read(&p).map_err(|e| Error::Io { path: p, source: e })
        };
        let cfg = read(CONFIG_FILE)?;
        let cfg = String::from_utf8(cfg).map_err(|_| Error::file(dir.join(CONFIG_FILE), "is not UTF-8 text"))?;
        let st = read(WEIGHTS_FILE)?;
        Self::from_bytes(&cfg, &st, dir, device)
    }

    /// Collect the adapters attached to `linears` (e.g. `model.linears()`).
    pub fn from_linears<'a>(
        linears: impl IntoIterator<Item = (String, &'a Linear)>,
        config: AdapterConfig,
    ) -> Result<Self> {
        let mut weights = BTreeMap::new();
        for (name, linear) in linears {
            if let Some(l) = linear.lora() {
                if l.rank() != config.r {
                    return Err(Error::msg(format!(
                        "{name}: adapter rank {} differs from the config's r = {}",
                        l.rank(),
                        config.r
                    )));
                }
                let a = l.a.detach().to_device(&Device::Cpu)?.to_dtype(DType::F32)?;
                let b = l.b.detach().to_device(&Device::Cpu)?.to_dtype(DType::F32)?;
                weights.insert(name, (a, b));
            }
        }
        if weights.is_empty() {
            return Err(Error::msg("no linear layer carries an adapter"));
        }
        Ok(Adapter { config, weights })
    }

    /// `adapter_model.safetensors` bytes (with peft's `{"format": "pt"}` metadata).
    pub fn weights_bytes(&self) -> Result<Vec<u8>> {
        let mut named: Vec<(String, Tensor)> = Vec::with_capacity(2 * self.weights.len());
        for (module, (a, b)) in &self.weights {
            named.push((peft_name(module, 'A'), a.contiguous()?));
            named.push((peft_name(module, 'B'), b.contiguous()?));
        }
        let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
        safetensors::serialize(named, Some(meta)).map_err(|e| Error::msg(format!("serializing the adapter: {e}")))
    }

    pub fn config_json(&self) -> Result<String> {
        serde_json::to_string_pretty(&self.config)
            .map_err(|e| Error::msg(format!("serializing adapter_config.json: {e}")))
    }

    /// Write both files into `dir` (created if needed), each atomically: a
    /// temporary file in the same directory, flushed, then renamed over the target.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::Io {
            path: dir.to_path_buf(),
            source: e,
        })?;
        // Each file whole or not at all, even with concurrent writers.
        sqlora_atomic::write(&dir.join(WEIGHTS_FILE), self.weights_bytes()?)?;
        Ok(sqlora_atomic::write(&dir.join(CONFIG_FILE), self.config_json()?)?)
    }

    /// Attach a frozen [`LoraLayer`] to every module the adapter names. Every
    /// name must exist among `linears` with matching shapes. Returns the count.
    pub fn apply<'a>(&self, linears: impl IntoIterator<Item = (String, &'a mut Linear)>) -> Result<usize> {
        let mut used = 0;
        let mut seen = std::collections::BTreeSet::new();
        for (name, linear) in linears {
            let Some((a, b)) = self.weights.get(&name) else {
                continue;
            };
            let (out, inn) = linear.shape();
            let check = |t: &Tensor, which: char, expected: Vec<usize>| {
                if t.dims() != expected.as_slice() {
                    return Err(Error::ShapeMismatch {
                        path: WEIGHTS_FILE.into(),
                        name: peft_name(&name, which),
                        expected,
                        found: t.dims().to_vec(),
                    });
                }
                Ok(())
            };
            check(a, 'A', vec![self.config.r, inn])?;
            check(b, 'B', vec![out, self.config.r])?;
            let device = linear_device(linear);
            let layer = LoraLayer::new(a.to_device(&device)?, b.to_device(&device)?, self.scaling())?;
            linear.set_lora(Some(layer));
            seen.insert(name);
            used += 1;
        }
        if let Some(missing) = self.weights.keys().find(|k| !seen.contains(*k)) {
            return Err(Error::file(
                WEIGHTS_FILE,
                format!("adapter names module `{missing}`, which this model does not have (wrong base model?)"),
            ));
        }
        Ok(used)
    }
}

/// The device a linear's base weight lives on (NF4 is host-side).
fn linear_device(linear: &Linear) -> Device {
    match linear.base() {
        crate::linear::BaseWeight::Dense(w) => w.device().clone(),
        crate::linear::BaseWeight::Quantized(q, _) => q.device(),
        crate::linear::BaseWeight::Nf4(_) => Device::Cpu,
    }
}

/// Attach fresh trainable adapters (see [`LoraLayer::init`]) to every linear
/// `cfg` targets, with adapter-input dropout seeded from `seed`. Returns the
/// adapted module names, in the iteration order of `linears`.
pub fn attach_trainable<'a>(
    linears: impl IntoIterator<Item = (String, &'a mut Linear)>,
    cfg: &LoraConfig,
    seed: u64,
    device: &Device,
) -> Result<Vec<String>> {
    cfg.validate()?;
    let mut names = Vec::new();
    for (name, linear) in linears {
        if !cfg.targets(&name) {
            continue;
        }
        let (out, inn) = linear.shape();
        linear.set_lora(Some(LoraLayer::init(&name, out, inn, cfg, seed, device)?));
        linear.set_lora_dropout(LoraDropout::new(cfg.dropout, seed, &name));
        names.push(name);
    }
    if names.is_empty() {
        return Err(Error::msg(format!(
            "no linear layer matches target_modules {:?}",
            cfg.target_modules
        )));
    }
    Ok(names)
}

/// Fold every attached adapter into its base: `W' = deq(W) + scaling · B·A` in
/// f32 (export). Linears without an adapter keep their base. Returns the count.
pub fn merge<'a>(linears: impl IntoIterator<Item = (String, &'a mut Linear)>, device: &Device) -> Result<usize> {
    let mut n = 0;
    for (_, linear) in linears {
        if linear.lora().is_some() {
            linear.merge_lora(device)?;
            n += 1;
        }
    }
    Ok(n)
}

/// Load the peft adapter in `dir` onto `model` (what `--adapter DIR` does).
#[cfg(not(target_arch = "wasm32"))]
pub fn load_into(model: &mut crate::model::Model, dir: &Path) -> Result<Adapter> {
    let adapter = Adapter::load(dir, model.device())?;
    adapter.apply(model.linears_mut())?;
    Ok(adapter)
}
