//! Resumable checkpoints: `output_dir/checkpoint-NNNNNN/` holding the LoRA
//! parameters and AdamW moments (`trainer_state.safetensors`), where the loop
//! stands (`trainer_state.json`) and a peft adapter for convenience.
//!
//! A checkpoint is built in a hidden temporary directory of its own (named
//! by process and counter, see `sqlora_atomic::TempDir`), synced, then
//! renamed into place: a kill at any moment leaves either no checkpoint or a
//! complete one, never a torn one, and the next save removes what a killed
//! run left.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::lora_setup::{save_peft, LoraSpec};
use super::optim::AdamW;

/// Where the loop stands after an optimizer step; together with the seed it
/// determines everything that follows (data order is a function of seed+epoch).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LoopState {
    /// Optimizer steps done.
    pub step: u64,
    pub epoch: u64,
    /// Next accumulation group (optimizer step) within the epoch.
    pub group: usize,
    /// Real tokens trained on so far.
    pub tokens: u64,
    /// Loss accumulated since the last log line (sum, micro-batches).
    pub log_loss_sum: f64,
    pub log_loss_n: u64,
}

const PREFIX: &str = "checkpoint-";

pub fn dir_for(output_dir: &Path, step: u64) -> PathBuf {
    output_dir.join(format!("{PREFIX}{step:06}"))
}

/// Write a checkpoint atomically and keep only the newest `keep`.
pub fn save(
    output_dir: &Path,
    state: &LoopState,
    opt: &AdamW,
    spec: &LoraSpec,
    base: &str,
    keep: usize,
) -> Result<PathBuf> {
    let final_dir = dir_for(output_dir, state.step);
    // Torn temporaries of killed runs (any step) go; a live writer's stay.
    sqlora_atomic::clean_stale_matching(output_dir, |name| name.starts_with(PREFIX));
    let tmp = sqlora_atomic::TempDir::create(&final_dir)?;
    let mut tensors: HashMap<String, Tensor> = opt.state_tensors();
    for p in opt.params() {
        tensors.insert(format!("param.{}", p.name), p.var.as_tensor().clone());
    }
    let tensors: HashMap<String, Tensor> = tensors
        .into_iter()
        .map(|(k, t)| Ok((k, t.to_device(&Device::Cpu)?)))
        .collect::<Result<_>>()?;
    candle_core::safetensors::save(&tensors, tmp.path().join("trainer_state.safetensors"))?;
    std::fs::write(
        tmp.path().join("trainer_state.json"),
        serde_json::to_string_pretty(state)?,
    )?;
    save_peft(tmp.path(), opt.params(), spec, base)?;
    // Synced, then renamed over any older copy of this step.
    tmp.commit()?;
    prune(output_dir, keep)?;
    Ok(final_dir)
}

/// Complete checkpoints, oldest first.
pub fn list(output_dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut out = vec![];
    let Ok(rd) = std::fs::read_dir(output_dir) else {
        return Ok(out);
    };
    for e in rd {
        let path = e?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if let Some(step) = name.strip_prefix(PREFIX).and_then(|s| s.parse::<u64>().ok()) {
            if path.join("trainer_state.json").is_file() {
                out.push((step, path));
            }
        }
    }
    out.sort();
    Ok(out)
}

fn prune(output_dir: &Path, keep: usize) -> Result<()> {
    let all = list(output_dir)?;
    for (_, path) in all.iter().take(all.len().saturating_sub(keep.max(1))) {
        std::fs::remove_dir_all(path).with_context(|| format!("{}: cannot remove", path.display()))?;
    }
    Ok(())
}

/// Restore parameters and optimizer moments from `dir`; returns the loop state.
pub fn load(dir: &Path, opt: &mut AdamW) -> Result<LoopState> {
    let json = dir.join("trainer_state.json");
    let state: LoopState = serde_json::from_str(
        &std::fs::read_to_string(&json).with_context(|| format!("{}: cannot read", json.display()))?,
    )
    .with_context(|| format!("{}: malformed", json.display()))?;
    let st = dir.join("trainer_state.safetensors");
    let device = opt
        .params()
        .first()
        .map(|p| p.var.device().clone())
        .unwrap_or(Device::Cpu);
    let tensors =
        candle_core::safetensors::load(&st, &device).with_context(|| format!("{}: cannot read", st.display()))?;
    for p in opt.params() {
        let key = format!("param.{}", p.name);
        let Some(t) = tensors.get(&key) else {
            bail!(
                "{}: lacks `{key}` (was it written with other LoRA settings?)",
                st.display()
            );
        };
        if t.dims() != p.var.dims() {
            bail!(
                "{}: `{key}` has shape {:?}, the model wants {:?}",
                st.display(),
                t.dims(),
                p.var.dims()
            );
        }
        p.var.set(t)?;
    }
    opt.load_state(&tensors, state.step)
        .with_context(|| st.display().to_string())?;
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::optim::{AdamWConfig, Param};
    use candle_core::Var;

    /// A rank-1 adapter on one `[1, 2]` module: A `[1, 2]` = `vals`, B `[1, 1]`.
    fn opt(vals: &[f32]) -> AdamW {
        let a = Param {
            name: "base_model.model.x.lora_A.weight".into(),
            var: Var::from_tensor(&Tensor::new(vals, &Device::Cpu).unwrap().reshape((1, 2)).unwrap()).unwrap(),
        };
        let b = Param {
            name: "base_model.model.x.lora_B.weight".into(),
            var: Var::new(&[[0.5f32]], &Device::Cpu).unwrap(),
        };
        AdamW::new(
            vec![a, b],
            AdamWConfig {
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                weight_decay: 0.0,
            },
        )
        .unwrap()
    }

    fn grads(x: f32, y: f32) -> [Tensor; 2] {
        [
            Tensor::new(&[[x, y]], &Device::Cpu).unwrap(),
            Tensor::new(&[[x * y]], &Device::Cpu).unwrap(),
        ]
    }

    #[test]
    fn save_load_prune_and_ignore_torn_dirs() {
        let dir = std::env::temp_dir().join(format!("sqlora-ckpt-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let spec = LoraSpec {
            r: 1,
            alpha: 2.0,
            dropout: 0.0,
            targets: vec!["q_proj".into()],
        };
        let mut a = opt(&[1.0, 2.0]);
        for step in 1..=4u64 {
            a.step(&grads(0.5, -0.25), 0.1, 1.0).unwrap();
            let st = LoopState {
                step,
                epoch: 0,
                group: step as usize,
                tokens: 10 * step,
                log_loss_sum: 1.5,
                log_loss_n: 1,
            };
            save(&dir, &st, &a, &spec, "base", 2).unwrap();
        }
        // A torn temporary directory (killed writer) is never taken for a checkpoint.
        std::fs::create_dir_all(dir.join(".tmp-checkpoint-000009-1")).unwrap();
        std::fs::create_dir_all(dir.join("checkpoint-000010")).unwrap();
        let steps: Vec<u64> = list(&dir).unwrap().iter().map(|(s, _)| *s).collect();
        assert_eq!(steps, vec![3, 4]);
        let mut b = opt(&[0.0, 0.0]);
        let st = load(&dir_for(&dir, 4), &mut b).unwrap();
        assert_eq!((st.step, st.tokens), (4, 40));
        assert_eq!(
            b.params()[0].var.as_tensor().to_vec2::<f32>().unwrap(),
            a.params()[0].var.as_tensor().to_vec2::<f32>().unwrap()
        );
        a.step(&grads(0.1, 0.3), 0.1, 1.0).unwrap();
        b.step(&grads(0.1, 0.3), 0.1, 1.0).unwrap();
        assert_eq!(
            b.params()[0].var.as_tensor().to_vec2::<f32>().unwrap(),
            a.params()[0].var.as_tensor().to_vec2::<f32>().unwrap()
        );
        assert!(dir_for(&dir, 4).join("adapter_model.safetensors").is_file());

        // The next save removes torn temporaries whose writer is gone (a pid
        // above Linux's pid_max), old-style and new-style, and keeps one whose
        // writer lives (pid 1).
        let dead_old = dir.join(".tmp-checkpoint-000007-4206649");
        let dead_new = dir.join(".checkpoint-000008.4206649.0-1f.tmp");
        for d in [&dead_old, &dead_new] {
            std::fs::create_dir_all(d).unwrap();
            std::fs::write(d.join("trainer_state.json"), "{").unwrap();
        }
        let st = LoopState {
            step: 5,
            ..Default::default()
        };
        save(&dir, &st, &a, &spec, "base", 2).unwrap();
        assert!(!dead_old.exists() && !dead_new.exists());
        if std::path::Path::new("/proc/1").exists() {
            assert!(dir.join(".tmp-checkpoint-000009-1").exists());
        }
        let hidden: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('.'))
            .collect();
        assert_eq!(hidden, [".tmp-checkpoint-000009-1"]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
