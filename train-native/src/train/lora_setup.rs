//! Attaching trainable LoRA parameters to the model's target projections, and
//! the peft-format adapter files (`adapter_config.json`,
//! `adapter_model.safetensors` with peft's tensor names).
//!
//! Until core's `adapter.rs` lands, the peft writer/reader lives here; it uses
//! only core's `Linear::set_lora` and the public `LoraLayer` fields.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor, Var};
use rand::{Rng, SeedableRng};
use sqlora_core::lora::LoraLayer;
use sqlora_core::model::Model;

use super::optim::Param;

#[derive(Debug, Clone)]
pub struct LoraSpec {
    pub r: usize,
    pub alpha: f64,
    pub dropout: f64,
    pub targets: Vec<String>,
}

impl LoraSpec {
    fn scaling(&self) -> f64 {
        self.alpha / self.r as f64
    }
    fn is_target(&self, hf_name: &str) -> bool {
        let leaf = hf_name.rsplit('.').next().unwrap_or(hf_name);
        self.targets.iter().any(|t| t == "all-linear" || t == leaf)
    }
}

/// peft's name for a LoRA matrix of linear `hf_name` (`model.layers.0.self_attn.q_proj`).
pub fn peft_name(hf_name: &str, which: char) -> String {
    format!("base_model.model.{hf_name}.lora_{which}.weight")
}

/// Fresh adapters as peft initialises them: A kaiming-uniform (a = √5, i.e.
/// U(±1/√in)), B zeros, drawn from `seed` in the model's linear order.
/// Returns the trainable parameters (A then B per target), named as in peft.
pub fn attach(model: &mut Model, spec: &LoraSpec, seed: u64) -> Result<Vec<Param>> {
    let device = model.device().clone();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut params = Vec::new();
    for (name, linear) in model.linears_mut() {
        if !spec.is_target(&name) {
            continue;
        }
        let (out, inp) = linear.shape();
        let bound = 1.0 / (inp as f64).sqrt();
        let a: Vec<f32> = (0..spec.r * inp)
            .map(|_| rng.random_range(-bound..bound) as f32)
            .collect();
        let a = Var::from_tensor(&Tensor::from_vec(a, (spec.r, inp), &device)?)?;
        let b = Var::zeros((out, spec.r), DType::F32, &device)?;
        linear.set_lora(Some(LoraLayer {
            a: a.as_tensor().clone(),
            b: b.as_tensor().clone(),
            scaling: spec.scaling(),
        }));
        params.push(Param {
            name: peft_name(&name, 'A'),
            var: a,
        });
        params.push(Param {
            name: peft_name(&name, 'B'),
            var: b,
        });
    }
    if params.is_empty() {
        bail!("no linear layer matches target_modules {:?}", spec.targets);
    }
    Ok(params)
}

/// Write the adapter in peft's format into `dir` (created if needed).
pub fn save_peft(dir: &Path, params: &[Param], spec: &LoraSpec, base_name: &str) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create", dir.display()))?;
    let tensors: HashMap<String, Tensor> = params
        .iter()
        .map(|p| {
            Ok((
                p.name.clone(),
                p.var.as_tensor().to_device(&Device::Cpu)?.to_dtype(DType::F32)?,
            ))
        })
        .collect::<Result<_>>()?;
    let path = dir.join("adapter_model.safetensors");
    candle_core::safetensors::save(&tensors, &path).with_context(|| format!("{}: cannot write", path.display()))?;
    let mut targets = spec.targets.clone();
    targets.sort();
    let config = serde_json::json!({
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_name,
        "r": spec.r,
        "lora_alpha": spec.alpha,
        "lora_dropout": spec.dropout,
        "target_modules": targets,
        "bias": "none",
        "fan_in_fan_out": false,
        "inference_mode": true,
        "init_lora_weights": true,
        "use_rslora": false,
        "use_dora": false,
        "modules_to_save": null,
        "layers_to_transform": null,
        "layers_pattern": null,
        "rank_pattern": {},
        "alpha_pattern": {},
        "revision": null
    });
    let path = dir.join("adapter_config.json");
    std::fs::write(&path, serde_json::to_string_pretty(&config)?)
        .with_context(|| format!("{}: cannot write", path.display()))?;
    Ok(())
}

/// Load a peft adapter directory onto the model's linears (inference).
#[cfg_attr(not(test), allow(dead_code))]
pub fn load_peft(model: &mut Model, dir: &Path) -> Result<usize> {
    let cfg_path = dir.join("adapter_config.json");
    let cfg: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&cfg_path).with_context(|| format!("{}: cannot read", cfg_path.display()))?,
    )
    .with_context(|| format!("{}: malformed JSON", cfg_path.display()))?;
    let r = cfg["r"]
        .as_f64()
        .with_context(|| format!("{}: no `r`", cfg_path.display()))?;
    let alpha = cfg["lora_alpha"]
        .as_f64()
        .with_context(|| format!("{}: no `lora_alpha`", cfg_path.display()))?;
    let path = dir.join("adapter_model.safetensors");
    let device = model.device().clone();
    let tensors =
        candle_core::safetensors::load(&path, &device).with_context(|| format!("{}: cannot read", path.display()))?;
    let mut n = 0;
    for (name, linear) in model.linears_mut() {
        let (Some(a), Some(b)) = (tensors.get(&peft_name(&name, 'A')), tensors.get(&peft_name(&name, 'B'))) else {
            continue;
        };
        linear.set_lora(Some(LoraLayer {
            a: a.clone(),
            b: b.clone(),
            scaling: alpha / r,
        }));
        n += 1;
    }
    if n == 0 {
        bail!("{}: no tensor matches this model's layers", path.display());
    }
    Ok(n)
}
