//! AdamW over the LoRA parameters, with decoupled weight decay exactly as
//! `torch.optim.AdamW` applies it, f32 moments (master weights stay f32 whatever
//! the compute dtype), global-norm gradient clipping, and a state that can be
//! saved and restored bit for bit (resume).

use std::collections::HashMap;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Tensor, Var};

#[derive(Debug, Clone, Copy)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

/// One trainable tensor, by the name it has in the adapter file.
pub struct Param {
    pub name: String,
    pub var: Var,
}

pub struct AdamW {
    params: Vec<Param>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    /// Updates done so far (torch's `state["step"]`).
    step: u64,
    cfg: AdamWConfig,
}

impl AdamW {
    pub fn new(params: Vec<Param>, cfg: AdamWConfig) -> Result<Self> {
        let zeros = |p: &Param| p.var.as_tensor().zeros_like();
        let m = params.iter().map(zeros).collect::<candle_core::Result<Vec<_>>>()?;
        let v = params.iter().map(zeros).collect::<candle_core::Result<Vec<_>>>()?;
        Ok(AdamW {
            params,
            m,
            v,
            step: 0,
            cfg,
        })
    }

    pub fn params(&self) -> &[Param] {
        &self.params
    }

    pub fn steps_done(&self) -> u64 {
        self.step
    }

    /// One update with the given gradients (same order as `params`, already
    /// accumulated, averaged and clipped).
    pub fn step(&mut self, grads: &[Tensor], lr: f64) -> Result<()> {
        if grads.len() != self.params.len() {
            bail!("AdamW: {} gradients for {} parameters", grads.len(), self.params.len());
        }
        self.step += 1;
        let AdamWConfig {
            beta1,
            beta2,
            eps,
            weight_decay,
        } = self.cfg;
        let bc1 = 1.0 - beta1.powi(self.step as i32);
        let bc2_sqrt = (1.0 - beta2.powi(self.step as i32)).sqrt();
        for (i, p) in self.params.iter().enumerate() {
            let g = grads[i].to_dtype(DType::F32)?;
            let m = ((&self.m[i] * beta1)? + (&g * (1.0 - beta1))?)?;
            let v = ((&self.v[i] * beta2)? + (g.sqr()? * (1.0 - beta2))?)?;
            // Decoupled decay first, as torch does: p ← p·(1 − lr·wd).
            let w = (p.var.as_tensor() * (1.0 - lr * weight_decay))?;
            let denom = ((v.sqrt()? / bc2_sqrt)? + eps)?;
            let w = (w - ((&m / denom)? * (lr / bc1))?)?;
            p.var.set(&w)?;
            self.m[i] = m;
            self.v[i] = v;
        }
        Ok(())
    }

    /// Moments by parameter name (`m.<name>`, `v.<name>`), for checkpoints.
    pub fn state_tensors(&self) -> HashMap<String, Tensor> {
        let mut out = HashMap::new();
        for (i, p) in self.params.iter().enumerate() {
            out.insert(format!("m.{}", p.name), self.m[i].clone());
            out.insert(format!("v.{}", p.name), self.v[i].clone());
        }
        out
    }

    /// Restore moments and step count written by [`Self::state_tensors`].
    pub fn load_state(&mut self, tensors: &HashMap<String, Tensor>, step: u64) -> Result<()> {
        for (i, p) in self.params.iter().enumerate() {
            for (kind, slot) in [("m", &mut self.m[i]), ("v", &mut self.v[i])] {
                let key = format!("{kind}.{}", p.name);
                let t = tensors
                    .get(&key)
                    .with_context(|| format!("optimizer state lacks `{key}`"))?;
                if t.dims() != slot.dims() {
                    bail!(
                        "optimizer state `{key}` has shape {:?}, expected {:?}",
                        t.dims(),
                        slot.dims()
                    );
                }
                *slot = t.to_device(slot.device())?.to_dtype(DType::F32)?;
            }
        }
        self.step = step;
        Ok(())
    }
}

/// Global L2 norm of all gradients (f64 accumulation).
pub fn global_norm(grads: &[Tensor]) -> Result<f64> {
    let mut sum = 0.0f64;
    for g in grads {
        sum += g.to_dtype(DType::F32)?.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
    }
    Ok(sum.sqrt())
}

/// Scale gradients so their global norm is at most `max_norm` (torch's
/// `clip_grad_norm_`: coefficient `max_norm / (norm + 1e-6)`, only when < 1).
/// Returns the norm before clipping.
pub fn clip_grad_norm(grads: &mut [Tensor], max_norm: f64) -> Result<f64> {
    let norm = global_norm(grads)?;
    if max_norm > 0.0 {
        let coef = max_norm / (norm + 1e-6);
        if coef < 1.0 {
            for g in grads.iter_mut() {
                *g = (&*g * coef)?;
            }
        }
    }
    Ok(norm)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn param(vals: &[f32]) -> Param {
        Param {
            name: "p".into(),
            var: Var::new(vals, &Device::Cpu).unwrap(),
        }
    }

    fn values(p: &Param) -> Vec<f32> {
        p.var.as_tensor().to_vec1::<f32>().unwrap()
    }

    #[test]
    fn adamw_matches_torch_two_steps() {
        // torch: p=[1,-2,3]; AdamW(lr=0.1, wd=0.01); grads g1=[.5,-1,2], g2=[.1,.2,-.3]
        // after step 1: [0.899, -1.898, 2.897]; after step 2: [0.7959, -1.8719, 2.8828] (rounded)
        let cfg = AdamWConfig {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        };
        let mut opt = AdamW::new(vec![param(&[1.0, -2.0, 3.0])], cfg).unwrap();
        let g1 = Tensor::new(&[0.5f32, -1.0, 2.0], &Device::Cpu).unwrap();
        opt.step(&[g1], 0.1).unwrap();
        let p1 = values(&opt.params()[0]);
        // Step 1 of Adam moves each weight by exactly lr·sign(g) (after decay).
        for (got, want) in p1.iter().zip([0.999 - 0.1, -1.998 + 0.1, 2.997 - 0.1]) {
            assert!((got - want).abs() < 1e-5, "{got} vs {want}");
        }
        let g2 = Tensor::new(&[0.1f32, 0.2, -0.3], &Device::Cpu).unwrap();
        opt.step(std::slice::from_ref(&g2), 0.1).unwrap();
        // Hand-computed reference for step 2.
        let (b1, b2) = (0.9f64, 0.999f64);
        let g1 = [0.5f64, -1.0, 2.0];
        let g2 = [0.1f64, 0.2, -0.3];
        for i in 0..3 {
            let m = b1 * (1.0 - b1) * g1[i] + (1.0 - b1) * g2[i];
            let v = b2 * (1.0 - b2) * g1[i] * g1[i] + (1.0 - b2) * g2[i] * g2[i];
            let want =
                p1[i] as f64 * (1.0 - 0.1 * 0.01) - 0.1 / (1.0 - b1 * b1) * m / ((v / (1.0 - b2 * b2)).sqrt() + 1e-8);
            let got = values(&opt.params()[0])[i] as f64;
            assert!((got - want).abs() < 1e-5, "elem {i}: {got} vs {want}");
        }
        assert_eq!(opt.steps_done(), 2);
    }

    #[test]
    fn state_round_trip_continues_identically() {
        let cfg = AdamWConfig {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.1,
        };
        let g = |x: f32| Tensor::new(&[x, -x, 2.0 * x], &Device::Cpu).unwrap();
        let mut a = AdamW::new(vec![param(&[1.0, 2.0, 3.0])], cfg).unwrap();
        a.step(&[g(0.3)], 0.01).unwrap();
        let mut b = AdamW::new(vec![param(&values(&a.params()[0]))], cfg).unwrap();
        b.load_state(&a.state_tensors(), a.steps_done()).unwrap();
        a.step(&[g(-0.7)], 0.01).unwrap();
        b.step(&[g(-0.7)], 0.01).unwrap();
        assert_eq!(values(&a.params()[0]), values(&b.params()[0]));
        assert!(b.load_state(&HashMap::new(), 1).is_err());
    }

    #[test]
    fn clipping_scales_to_max_norm() {
        let mut gs = vec![Tensor::new(&[3.0f32, 4.0], &Device::Cpu).unwrap()];
        let n = clip_grad_norm(&mut gs, 1.0).unwrap();
        assert!((n - 5.0).abs() < 1e-9);
        assert!((global_norm(&gs).unwrap() - 1.0).abs() < 1e-5);
        let mut small = vec![Tensor::new(&[0.3f32, 0.4], &Device::Cpu).unwrap()];
        clip_grad_norm(&mut small, 1.0).unwrap();
        assert_eq!(small[0].to_vec1::<f32>().unwrap(), vec![0.3, 0.4]);
    }
}
