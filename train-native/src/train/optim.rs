//! AdamW over the LoRA parameters, with decoupled weight decay exactly as
//! `torch.optim.AdamW` applies it, f32 moments (master weights stay f32 whatever
//! the compute dtype), global-norm gradient clipping, and a state that can be
//! saved and restored bit for bit (resume).
//!
//! The step runs where the parameters live and never waits for the host: the
//! gradient norm, the clipping coefficient and the update are device tensors
//! and in-place kernels (one sum-of-squares and two update launches per
//! parameter on CUDA; the same arithmetic in loops on the CPU). Nothing is read
//! back: the trainer reads the norm when it logs.

use std::collections::HashMap;

use anyhow::{bail, Context, Result};
use candle_core::{CpuStorage, DType, InplaceOp2, InplaceOp3, Layout, Tensor, Var};

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
    /// Per parameter `[2, numel]` f32: the first moment, then the second.
    mv: Vec<Tensor>,
    /// Partial sums of squares, [`SUMSQ_PARTS`] per parameter (the global norm's parts).
    sumsq: Tensor,
    /// Updates done so far (torch's `state["step"]`).
    step: u64,
    cfg: AdamWConfig,
}

/// The per-step constants of the update, in the f32 the kernels compute in.
#[derive(Debug, Clone, Copy)]
struct StepConsts {
    b1: f32,
    one_minus_b1: f32,
    b2: f32,
    one_minus_b2: f32,
    decay: f32,
    step: f32,
    bc2_sqrt: f32,
    eps: f32,
}

#[cfg(feature = "cuda")]
impl From<StepConsts> for sqlora_core::cuda::AdamWStep {
    fn from(c: StepConsts) -> Self {
        sqlora_core::cuda::AdamWStep {
            b1: c.b1,
            one_minus_b1: c.one_minus_b1,
            b2: c.b2,
            one_minus_b2: c.one_minus_b2,
            decay: c.decay,
            step: c.step,
            bc2_sqrt: c.bc2_sqrt,
            eps: c.eps,
        }
    }
}

fn f32_range<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> candle_core::Result<&'a [f32]> {
    let (a, b) = l
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg(format!("{what}: not contiguous")))?;
    Ok(&s.as_slice::<f32>()?[a..b])
}

fn f32_range_mut<'a>(s: &'a mut CpuStorage, l: &Layout, what: &str) -> candle_core::Result<&'a mut [f32]> {
    let (a, b) = l
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg(format!("{what}: not contiguous")))?;
    match s {
        CpuStorage::F32(v) => Ok(&mut v[a..b]),
        _ => candle_core::bail!("{what}: expected f32"),
    }
}

#[cfg(feature = "cuda")]
fn whole(l: &Layout, len: usize, what: &str) -> candle_core::Result<()> {
    if l.contiguous_offsets() != Some((0, len)) {
        candle_core::bail!("{what}: expected a whole contiguous buffer");
    }
    Ok(())
}

/// `mv ← (b1·m + (1−b1)·g', b2·v + (1−b2)·g'²)` with `g' = g·coef`.
struct Moments(StepConsts);

impl InplaceOp3 for Moments {
    fn name(&self) -> &'static str {
        "sqlora-adamw-moments"
    }

    fn cpu_fwd(
        &self,
        dst: &mut CpuStorage,
        dst_l: &Layout,
        g: &CpuStorage,
        gl: &Layout,
        coef: &CpuStorage,
        cl: &Layout,
    ) -> candle_core::Result<()> {
        let c = self.0;
        let g = f32_range(g, gl, "adamw grad")?;
        let coef = f32_range(coef, cl, "adamw coef")?[0];
        let mv = f32_range_mut(dst, dst_l, "adamw moments")?;
        let (m, v) = mv.split_at_mut(g.len());
        for ((m, v), &g) in m.iter_mut().zip(v.iter_mut()).zip(g) {
            let g = g * coef;
            *m = *m * c.b1 + g * c.one_minus_b1;
            *v = *v * c.b2 + (g * g) * c.one_minus_b2;
        }
        Ok(())
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        dst: &mut candle_core::CudaStorage,
        dst_l: &Layout,
        g: &candle_core::CudaStorage,
        gl: &Layout,
        coef: &candle_core::CudaStorage,
        cl: &Layout,
    ) -> candle_core::Result<()> {
        whole(dst_l, dst_l.shape().elem_count(), "adamw moments")?;
        sqlora_core::cuda::adamw_moments(dst, (g, gl), (coef, cl), &self.0.into())
    }
}

/// `p ← p·(1 − lr·wd) − (lr / bc1) · m / (√v / √bc2 + eps)`.
struct Apply(StepConsts);

impl InplaceOp2 for Apply {
    fn name(&self) -> &'static str {
        "sqlora-adamw-apply"
    }

    fn cpu_fwd(&self, dst: &mut CpuStorage, dst_l: &Layout, mv: &CpuStorage, mvl: &Layout) -> candle_core::Result<()> {
        let c = self.0;
        let p = f32_range_mut(dst, dst_l, "adamw parameter")?;
        let mv = f32_range(mv, mvl, "adamw moments")?;
        let (m, v) = mv.split_at(p.len());
        for ((p, &m), &v) in p.iter_mut().zip(m).zip(v) {
            let denom = v.sqrt() / c.bc2_sqrt + c.eps;
            *p = *p * c.decay - (m / denom) * c.step;
        }
        Ok(())
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        dst: &mut candle_core::CudaStorage,
        dst_l: &Layout,
        mv: &candle_core::CudaStorage,
        mvl: &Layout,
    ) -> candle_core::Result<()> {
        whole(dst_l, dst_l.shape().elem_count(), "adamw parameter")?;
        sqlora_core::cuda::adamw_apply(dst, (mv, mvl), &self.0.into())
    }
}

/// Partial sums of squares per parameter: the CUDA kernel's grid size, so both
/// devices share one accumulator layout (the CPU fills the first of each row).
const SUMSQ_PARTS: usize = 64;

/// `acc[slot, ..] ← parts of Σ g²` (summed with the rest by `sum_all`).
struct SumSq(usize);

impl InplaceOp2 for SumSq {
    fn name(&self) -> &'static str {
        "sqlora-sumsq"
    }

    fn cpu_fwd(&self, dst: &mut CpuStorage, dst_l: &Layout, g: &CpuStorage, gl: &Layout) -> candle_core::Result<()> {
        let g = f32_range(g, gl, "grad norm")?;
        let acc = f32_range_mut(dst, dst_l, "grad norm accumulator")?;
        let row = &mut acc[self.0 * SUMSQ_PARTS..(self.0 + 1) * SUMSQ_PARTS];
        row.fill(0.0);
        row[0] = g.iter().map(|&x| (x as f64) * (x as f64)).sum::<f64>() as f32;
        Ok(())
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        dst: &mut candle_core::CudaStorage,
        dst_l: &Layout,
        g: &candle_core::CudaStorage,
        gl: &Layout,
    ) -> candle_core::Result<()> {
        whole(dst_l, dst_l.shape().elem_count(), "grad norm accumulator")?;
        debug_assert_eq!(SUMSQ_PARTS, sqlora_core::cuda::SUMSQ_PARTS);
        sqlora_core::cuda::sumsq_into(dst, self.0, g, gl)
    }
}

impl AdamW {
    pub fn new(params: Vec<Param>, cfg: AdamWConfig) -> Result<Self> {
        let mv = params
            .iter()
            .map(|p| Tensor::zeros((2, p.var.elem_count()), DType::F32, p.var.device()))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let device = params
            .first()
            .map_or(candle_core::Device::Cpu, |p| p.var.device().clone());
        let sumsq = Tensor::zeros(params.len().max(1) * SUMSQ_PARTS, DType::F32, &device)?;
        Ok(AdamW {
            params,
            mv,
            sumsq,
            step: 0,
            cfg,
        })
    }

    pub fn params(&self) -> &[Param] {
        &self.params
    }

    /// The global L2 norm of `grads` (one per parameter, f32), a device scalar.
    pub fn grad_norm(&self, grads: &[Tensor]) -> Result<Tensor> {
        if grads.len() != self.params.len() {
            bail!("AdamW: {} gradients for {} parameters", grads.len(), self.params.len());
        }
        for (i, g) in grads.iter().enumerate() {
            self.sumsq
                .inplace_op2(&g.to_dtype(DType::F32)?.contiguous()?, &SumSq(i))?;
        }
        Ok(self.sumsq.sum_all()?.sqrt()?)
    }

    /// One update with the accumulated, averaged gradients (same order as
    /// `params`), clipped to a global norm of `max_norm` (torch's
    /// `clip_grad_norm_`: coefficient `max_norm / (norm + 1e-6)` when below 1;
    /// `max_norm` 0 = no clipping). Returns the norm before clipping, on the device.
    pub fn step(&mut self, grads: &[Tensor], lr: f64, max_norm: f64) -> Result<Tensor> {
        let norm = self.grad_norm(grads)?;
        let coef = if max_norm > 0.0 {
            ((norm.affine(1.0, 1e-6)?.recip()? * max_norm)?.minimum(1.0)?).reshape(1)?
        } else {
            Tensor::ones(1, DType::F32, norm.device())?
        };
        self.step += 1;
        let AdamWConfig {
            beta1,
            beta2,
            eps,
            weight_decay,
        } = self.cfg;
        let c = StepConsts {
            b1: beta1 as f32,
            one_minus_b1: (1.0 - beta1) as f32,
            b2: beta2 as f32,
            one_minus_b2: (1.0 - beta2) as f32,
            decay: (1.0 - lr * weight_decay) as f32,
            step: (lr / (1.0 - beta1.powi(self.step as i32))) as f32,
            bc2_sqrt: (1.0 - beta2.powi(self.step as i32)).sqrt() as f32,
            eps: eps as f32,
        };
        for (i, p) in self.params.iter().enumerate() {
            let g = grads[i].to_dtype(DType::F32)?.contiguous()?;
            self.mv[i].inplace_op3(&g, &coef, &Moments(c))?;
            p.var.as_tensor().inplace_op2(&self.mv[i], &Apply(c))?;
        }
        Ok(norm)
    }

    /// Moments by parameter name (`m.<name>`, `v.<name>`), for checkpoints.
    pub fn state_tensors(&self) -> HashMap<String, Tensor> {
        let mut out = HashMap::new();
        for (i, p) in self.params.iter().enumerate() {
            for (k, kind) in ["m", "v"].iter().enumerate() {
                if let Ok(t) = self.mv[i].get(k).and_then(|t| t.reshape(p.var.shape())) {
                    out.insert(format!("{kind}.{}", p.name), t);
                }
            }
        }
        out
    }

    /// Restore moments and step count written by [`Self::state_tensors`].
    pub fn load_state(&mut self, tensors: &HashMap<String, Tensor>, step: u64) -> Result<()> {
        for (i, p) in self.params.iter().enumerate() {
            let mut parts = vec![];
            for kind in ["m", "v"] {
                let key = format!("{kind}.{}", p.name);
                let t = tensors
                    .get(&key)
                    .with_context(|| format!("optimizer state lacks `{key}`"))?;
                if t.dims() != p.var.dims() {
                    bail!(
                        "optimizer state `{key}` has shape {:?}, expected {:?}",
                        t.dims(),
                        p.var.dims()
                    );
                }
                parts.push(t.to_device(p.var.device())?.to_dtype(DType::F32)?.flatten_all()?);
            }
            self.mv[i] = Tensor::stack(&parts, 0)?;
        }
        self.step = step;
        Ok(())
    }
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
        opt.step(&[g1], 0.1, 0.0).unwrap();
        let p1 = values(&opt.params()[0]);
        // Step 1 of Adam moves each weight by exactly lr·sign(g) (after decay).
        for (got, want) in p1.iter().zip([0.999 - 0.1, -1.998 + 0.1, 2.997 - 0.1]) {
            assert!((got - want).abs() < 1e-5, "{got} vs {want}");
        }
        let g2 = Tensor::new(&[0.1f32, 0.2, -0.3], &Device::Cpu).unwrap();
        opt.step(std::slice::from_ref(&g2), 0.1, 0.0).unwrap();
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
        assert_eq!(opt.step, 2);
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
        a.step(&[g(0.3)], 0.01, 1.0).unwrap();
        let mut b = AdamW::new(vec![param(&values(&a.params()[0]))], cfg).unwrap();
        b.load_state(&a.state_tensors(), a.step).unwrap();
        a.step(&[g(-0.7)], 0.01, 1.0).unwrap();
        b.step(&[g(-0.7)], 0.01, 1.0).unwrap();
        assert_eq!(values(&a.params()[0]), values(&b.params()[0]));
        assert!(b.load_state(&HashMap::new(), 1).is_err());
    }

    #[test]
    fn clipping_scales_the_update_to_max_norm() {
        // Adam's first step moves each weight by lr·sign(g'), whatever the scale
        // of g', so clipping shows in the second moment: v = (1 − b2)·g'².
        let cfg = AdamWConfig {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        };
        for (g, max_norm, want_scale) in [([3.0f32, 4.0], 1.0, 1.0 / (5.0 + 1e-6)), ([0.3, 0.4], 1.0, 1.0)] {
            let mut opt = AdamW::new(vec![param(&[0.0, 0.0])], cfg).unwrap();
            let norm = opt
                .step(&[Tensor::new(&g, &Device::Cpu).unwrap()], 0.1, max_norm)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            let want_norm = (g[0] * g[0] + g[1] * g[1]).sqrt();
            assert!((norm - want_norm).abs() < 1e-6, "{norm} vs {want_norm}");
            let v = opt.state_tensors()["v.p"].to_vec1::<f32>().unwrap();
            for (vi, gi) in v.iter().zip(g) {
                let clipped = gi as f64 * want_scale;
                let want = 0.001 * clipped * clipped;
                assert!((*vi as f64 - want).abs() < 1e-9, "{vi} vs {want}");
            }
        }
    }

    #[test]
    fn grad_norm_is_global() {
        let mut opt = AdamW::new(
            vec![param(&[0.0, 0.0]), param(&[0.0])],
            AdamWConfig {
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                weight_decay: 0.0,
            },
        )
        .unwrap();
        opt.params[1].name = "q".into();
        let gs = [
            Tensor::new(&[1.0f32, 2.0], &Device::Cpu).unwrap(),
            Tensor::new(&[2.0f32], &Device::Cpu).unwrap(),
        ];
        assert_eq!(opt.grad_norm(&gs).unwrap().to_scalar::<f32>().unwrap(), 3.0);
    }

    /// The CUDA kernels take the steps the CPU loops take (same f32 arithmetic;
    /// the norm's reduction order differs, so 1e-6 relative). Passes without a GPU.
    #[cfg(feature = "cuda")]
    #[test]
    fn cuda_steps_equal_cpu_steps() {
        let Ok(gpu) = Device::new_cuda(0) else {
            eprintln!("no CUDA device: skipped");
            return;
        };
        let cfg = AdamWConfig {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        };
        let init: Vec<f32> = (0..5000).map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0).collect();
        let grad = |k: usize| -> Vec<f32> {
            (0..5000)
                .map(|i| (((i * 13 + k * 7) % 97) as f32 - 48.0) / 9.0)
                .collect()
        };
        let run = |dev: &Device| -> (Vec<f32>, Vec<f32>) {
            let p = Param {
                name: "p".into(),
                var: Var::from_slice(&init, 5000, dev).unwrap(),
            };
            let mut opt = AdamW::new(vec![p], cfg).unwrap();
            let mut norms = vec![];
            for k in 0..3 {
                let g = Tensor::from_vec(grad(k), 5000, dev).unwrap();
                norms.push(opt.step(&[g], 1e-2, 1.0).unwrap().to_scalar::<f32>().unwrap());
            }
            (opt.params()[0].var.as_tensor().to_vec1::<f32>().unwrap(), norms)
        };
        let (cpu, cpu_norms) = run(&Device::Cpu);
        let (cuda, cuda_norms) = run(&gpu);
        for (a, b) in cuda_norms.iter().zip(&cpu_norms) {
            assert!((a - b).abs() <= 1e-6 * b, "norm {a} vs {b}");
        }
        let worst = cuda.iter().zip(&cpu).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(worst <= 1e-6, "parameters differ by {worst:e}");
        assert_ne!(cpu, init, "the steps moved the parameters");
    }
}
