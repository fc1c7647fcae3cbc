//! Trainable LoRA adapters on the target projections, through core's
//! [`sqlora_core::adapter`]: fresh adapters (peft's init, seeded dropout) by
//! [`attach_trainable`], the peft files by [`Adapter::save`] (atomic).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use candle_core::{DType, Device};
use sqlora_core::adapter::{attach_trainable, peft_name, Adapter, AdapterConfig};
use sqlora_core::lora::LoraConfig;
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
    pub fn lora_config(&self) -> LoraConfig {
        LoraConfig {
            r: self.r,
            alpha: self.alpha,
            dropout: self.dropout,
            target_modules: self.targets.clone(),
            use_rslora: false,
        }
    }
}

/// Attach fresh adapters (A kaiming-uniform from `seed` and the module name,
/// B zero, dropout seeded from `seed`) and return their variables, A then B
/// per module in the model's linear order, named as in peft.
pub fn attach(model: &mut Model, spec: &LoraSpec, seed: u64) -> Result<Vec<Param>> {
    let device = model.device().clone();
    attach_trainable(model.linears_mut(), &spec.lora_config(), seed, &device)?;
    let mut params = Vec::new();
    for (name, linear) in model.linears() {
        let Some(layer) = linear.lora() else { continue };
        let (a, b) = layer
            .vars()
            .with_context(|| format!("{name}: the attached adapter is not trainable"))?;
        params.push(Param {
            name: peft_name(&name, 'A'),
            var: a,
        });
        params.push(Param {
            name: peft_name(&name, 'B'),
            var: b,
        });
    }
    Ok(params)
}

/// The module a peft tensor name belongs to, and which matrix.
fn module_of(param: &str) -> Option<(&str, char)> {
    let rest = param.strip_prefix("base_model.model.")?;
    if let Some(m) = rest.strip_suffix(".lora_A.weight") {
        Some((m, 'A'))
    } else {
        rest.strip_suffix(".lora_B.weight").map(|m| (m, 'B'))
    }
}

/// The trained parameters as a core [`Adapter`] (f32, on the CPU).
pub fn adapter(params: &[Param], spec: &LoraSpec, base_name: &str) -> Result<Adapter> {
    let mut halves: BTreeMap<String, (Option<_>, Option<_>)> = BTreeMap::new();
    for p in params {
        let (module, which) = module_of(&p.name).with_context(|| format!("`{}` is not a peft LoRA name", p.name))?;
        let t = p
            .var
            .as_tensor()
            .detach()
            .to_device(&Device::Cpu)?
            .to_dtype(DType::F32)?;
        let slot = halves.entry(module.to_string()).or_default();
        if which == 'A' {
            slot.0 = Some(t);
        } else {
            slot.1 = Some(t);
        }
    }
    let weights = halves
        .into_iter()
        .map(|(m, (a, b))| match (a, b) {
            (Some(a), Some(b)) => Ok((m, (a, b))),
            _ => anyhow::bail!("{m}: A or B missing among the trained parameters"),
        })
        .collect::<Result<_>>()?;
    Ok(Adapter {
        config: AdapterConfig::from_lora(&spec.lora_config(), base_name),
        weights,
    })
}

/// Write the adapter in peft's format into `dir` (created if needed, each file atomically).
pub fn save_peft(dir: &Path, params: &[Param], spec: &LoraSpec, base_name: &str) -> Result<()> {
    adapter(params, spec, base_name)?
        .save(dir)
        .with_context(|| format!("{}: cannot write the adapter", dir.display()))
}
