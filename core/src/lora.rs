//! LoRA adapters as peft defines them: `result = base(x) + B(A(dropout(x))) · scaling`.
//!
//! A `[r, in]` starts kaiming-uniform (a = √5, i.e. U(±1/√in)), B `[out, r]` at
//! zero, so a fresh adapter leaves the model unchanged. Dropout applies to the
//! adapter's input only, in training, with masks reproducible from a seed.

use std::sync::atomic::{AtomicU64, Ordering};

use candle_core::{DType, Device, Tensor, Var};
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The seven projections of a Mistral/Llama block, as peft names their modules.
pub const ALL_LINEAR: [&str; 7] = [
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
];

/// Hyper-parameters of an adapter (the subset of peft's `LoraConfig` that matters here).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraConfig {
    pub r: usize,
    pub alpha: f64,
    /// Dropout probability on the adapter input (training only).
    pub dropout: f64,
    /// Module names (`q_proj`, …, or full names) or the single entry `all-linear`.
    pub target_modules: Vec<String>,
    /// Scale by alpha/√r instead of alpha/r.
    pub use_rslora: bool,
}

impl Default for LoraConfig {
    /// The project's training defaults: r 64, alpha 128, dropout 0.05, all seven projections.
    fn default() -> Self {
        LoraConfig {
            r: 64,
            alpha: 128.0,
            dropout: 0.05,
            target_modules: ALL_LINEAR.iter().map(|s| s.to_string()).collect(),
            use_rslora: false,
        }
    }
}

impl LoraConfig {
    pub fn scaling(&self) -> f64 {
        if self.use_rslora {
            self.alpha / (self.r as f64).sqrt()
        } else {
            self.alpha / self.r as f64
        }
    }

    pub fn validate(&self) -> Result<()> {
        if self.r == 0 {
            return Err(Error::msg("LoRA rank r must be at least 1"));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(Error::msg(format!(
                "LoRA dropout must be in [0, 1), got {}",
                self.dropout
            )));
        }
        if self.target_modules.is_empty() {
            return Err(Error::msg("LoRA target_modules is empty"));
        }
        for t in &self.target_modules {
            let known = t == "all-linear" || ALL_LINEAR.iter().any(|m| t == m || t.ends_with(&format!(".{m}")));
            if !known {
                return Err(Error::msg(format!(
                    "LoRA target module `{t}` is not a linear projection (expected one of {}, or all-linear)",
                    ALL_LINEAR.join(", ")
                )));
            }
        }
        Ok(())
    }

    /// Does the module with HF name `name` (`model.layers.3.mlp.up_proj`) get an adapter?
    /// peft's rule for a list: the name equals a target or ends with `.target`.
    pub fn targets(&self, name: &str) -> bool {
        self.target_modules.iter().any(|t| {
            if t == "all-linear" {
                ALL_LINEAR.iter().any(|m| name.ends_with(&format!(".{m}")))
            } else {
                name == t || name.ends_with(&format!(".{t}"))
            }
        })
    }
}

/// Adapter-input dropout with a reproducible mask stream: mask k of a layer is
/// drawn from `mix(mix(seed, salt), k)`, so a trainer that restores `seed` and
/// the call count ([`LoraDropout::set_seed`]) gets the same masks after a resume.
#[derive(Debug)]
pub struct LoraDropout {
    p: f64,
    seed: u64,
    salt: u64,
    calls: AtomicU64,
}

impl Clone for LoraDropout {
    fn clone(&self) -> Self {
        LoraDropout {
            p: self.p,
            seed: self.seed,
            salt: self.salt,
            calls: AtomicU64::new(self.calls()),
        }
    }
}

impl LoraDropout {
    /// `None` when `p` is 0. `name` salts the stream so layers draw different masks.
    pub fn new(p: f64, seed: u64, name: &str) -> Option<Self> {
        (p > 0.0).then(|| LoraDropout {
            p,
            seed,
            salt: name_salt(name),
            calls: AtomicU64::new(0),
        })
    }

    pub fn p(&self) -> f64 {
        self.p
    }

    /// Restart the mask stream at (`seed`, `calls`).
    pub fn set_seed(&mut self, seed: u64, calls: u64) {
        self.seed = seed;
        self.calls = AtomicU64::new(calls);
    }

    /// Masks drawn so far.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// `x ⊙ mask / (1 - p)` with a fresh mask (torch's nn.Dropout), drawn on
    /// the device `x` lives on ([`crate::dropout`]).
    pub fn apply(&self, x: &Tensor) -> Result<Tensor> {
        let k = self.calls.fetch_add(1, Ordering::Relaxed);
        Ok(crate::dropout::dropout(x, self.p, mix(mix(self.seed, self.salt), k))?)
    }
}

/// SplitMix64 finalizer over a combination of two words: independent seeds
/// from structured inputs.
pub fn mix(a: u64, b: u64) -> u64 {
    let mut z = a ^ b
        .wrapping_add(0x9e37_79b9_7f4a_7c15)
        .wrapping_add(a << 6)
        .wrapping_add(a >> 2);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A stable 64-bit hash of a module name (FNV-1a), to salt per-layer seeds.
pub fn name_salt(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

/// `B(A(x)) · scaling` beside a frozen base (dropout, when training, is applied
/// to `x` by the owning [`crate::linear::Linear`]).
///
/// A `[r, in]` and B `[out, r]` are f32. For training they are candle variables
/// (`Var::as_tensor().clone()`, or [`LoraLayer::init`]): gradients flow into them
/// and `Var::from_tensor(&layer.a)` gives back the same variable. Loaded for
/// inference they are plain tensors and add nothing to the autograd graph.
#[derive(Clone, Debug)]
pub struct LoraLayer {
    pub a: Tensor,
    pub b: Tensor,
    pub scaling: f64,
}

impl LoraLayer {
    /// A fresh trainable adapter for a `[out, in]` projection named `name`:
    /// A ~ U(±1/√in) (peft's kaiming_uniform, a = √5) from `mix(seed, name)`, B = 0.
    pub fn init(
        name: &str,
        out_features: usize,
        in_features: usize,
        cfg: &LoraConfig,
        seed: u64,
        device: &Device,
    ) -> Result<Self> {
        cfg.validate()?;
        let mut rng = rand::rngs::StdRng::seed_from_u64(mix(seed, name_salt(name)));
        // kaiming_uniform_(a=√5): gain √(2/(1+5)), bound = gain·√(3/fan_in) = 1/√fan_in.
        let bound = 1.0 / (in_features as f64).sqrt();
        let a: Vec<f32> = (0..cfg.r * in_features)
            .map(|_| rng.random_range(-bound..bound) as f32)
            .collect();
        let a = Var::from_vec(a, (cfg.r, in_features), device)?;
        let b = Var::zeros((out_features, cfg.r), DType::F32, device)?;
        Ok(LoraLayer {
            a: a.as_tensor().clone(),
            b: b.as_tensor().clone(),
            scaling: cfg.scaling(),
        })
    }

    /// From existing weights A `[r, in]` and B `[out, r]` (kept as f32, frozen).
    pub fn new(a: Tensor, b: Tensor, scaling: f64) -> Result<Self> {
        let (r, _) = a.dims2()?;
        let (_, rb) = b.dims2()?;
        if r != rb {
            return Err(Error::msg(format!("LoRA A has rank {r} but B has rank {rb}")));
        }
        Ok(LoraLayer {
            a: a.to_dtype(DType::F32)?,
            b: b.to_dtype(DType::F32)?,
            scaling,
        })
    }

    /// The same weights as trainable variables (a copy unless they already are).
    pub fn into_trainable(self) -> Result<Self> {
        let a = Var::from_tensor(&self.a)?;
        let b = Var::from_tensor(&self.b)?;
        Ok(LoraLayer {
            a: a.as_tensor().clone(),
            b: b.as_tensor().clone(),
            scaling: self.scaling,
        })
    }

    /// The variables behind A and B (`None` for a frozen adapter).
    pub fn vars(&self) -> Option<(Var, Var)> {
        (self.a.is_variable() && self.b.is_variable())
            .then(|| Ok::<_, Error>((Var::from_tensor(&self.a)?, Var::from_tensor(&self.b)?)))
            .transpose()
            .ok()
            .flatten()
    }

    pub fn rank(&self) -> usize {
        self.a.dims()[0]
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let a = self.a.to_dtype(x.dtype())?;
        let b = self.b.to_dtype(x.dtype())?;
        // Rows as one matrix: one product each way, where a broadcast batched
        // product would cost a product per batch row and a reduction for A's
        // and B's gradients.
        let mut dims = x.dims().to_vec();
        let inn = *dims.last().ok_or_else(|| Error::msg("LoRA input has no dimensions"))?;
        let x2 = x.reshape(((), inn))?;
        // Scaling the r-wide intermediate, not the output, saves an output-sized tensor.
        let h = (x2.matmul(&a.t()?)? * self.scaling)?;
        let y = h.matmul(&b.t()?)?;
        *dims.last_mut().expect("non-empty") = b.dim(0)?;
        Ok(y.reshape(dims)?)
    }

    /// `scaling · B·A` `[out, in]` in f32: what merging adds to the base weight.
    pub fn delta_weight(&self) -> Result<Tensor> {
        let (a, b) = (
            self.a.detach().to_dtype(DType::F32)?,
            self.b.detach().to_dtype(DType::F32)?,
        );
        Ok((b.matmul(&a)? * self.scaling)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_follow_peft_suffix_rule() {
        let c = LoraConfig {
            target_modules: vec!["q_proj".into(), "v_proj".into()],
            ..Default::default()
        };
        assert!(c.targets("model.layers.0.self_attn.q_proj"));
        assert!(!c.targets("model.layers.0.self_attn.k_proj"));
        let all = LoraConfig {
            target_modules: vec!["all-linear".into()],
            ..Default::default()
        };
        assert!(all.targets("model.layers.7.mlp.down_proj"));
        assert!(!all.targets("lm_head"));
        let bad = LoraConfig {
            target_modules: vec!["embed_tokens".into()],
            ..Default::default()
        };
        assert!(bad.validate().unwrap_err().to_string().contains("embed_tokens"));
    }

    #[test]
    fn init_bounds_scaling_and_zero_b() {
        let cfg = LoraConfig {
            r: 4,
            alpha: 16.0,
            use_rslora: false,
            ..Default::default()
        };
        let l = LoraLayer::init("model.layers.0.self_attn.q_proj", 8, 100, &cfg, 7, &Device::Cpu).unwrap();
        assert_eq!(l.scaling, 4.0);
        assert!(l.vars().is_some(), "a fresh adapter is trainable");
        let a = l.a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(a.iter().all(|v| v.abs() <= 0.1) && a.iter().any(|v| v.abs() > 0.05));
        assert!(l
            .b
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .all(|&v| v == 0.0));
        let same = LoraLayer::init("model.layers.0.self_attn.q_proj", 8, 100, &cfg, 7, &Device::Cpu).unwrap();
        assert_eq!(a, same.a.flatten_all().unwrap().to_vec1::<f32>().unwrap());
        let rs = LoraConfig {
            use_rslora: true,
            ..cfg
        };
        assert_eq!(rs.scaling(), 8.0);
    }

    #[test]
    fn dropout_masks_are_reproducible() {
        let x = Tensor::ones((4, 16), DType::F32, &Device::Cpu).unwrap();
        let mut d = LoraDropout::new(0.5, 1, "m.q_proj").unwrap();
        let m1 = d.apply(&x).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let m2 = d.apply(&x).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_ne!(m1, m2, "successive masks differ");
        assert!(m1.iter().all(|&v| v == 0.0 || v == 2.0) && m1.contains(&0.0) && m1.contains(&2.0));
        d.set_seed(1, 1);
        assert_eq!(
            d.apply(&x).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            m2
        );
        assert!(LoraDropout::new(0.0, 1, "x").is_none());
    }
}
