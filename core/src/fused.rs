//! RMSNorm, rotary embedding and softmax for the training graph: candle's
//! fused kernels forward, with backward passes of their own.
//!
//! candle's fused `rms_norm`, `rope` and `softmax_last_dim` have no backward,
//! and their composed forms (`rms_norm_slow`, `rope_slow`, `softmax`) keep five
//! or six full-size intermediates per call alive in the autograd graph; for
//! a 30-layer model that is most of the training memory and much of its time.
//! Here each op keeps only its input and output. The backward passes are the
//! closed-form Jacobian-vector products, written with (untracked) tensor ops.
//!
//! CPU f32 only: elsewhere the composed forms are used.

use candle_core::{CpuStorage, CustomOp1, DType, Device, Layout, Shape, Storage, Tensor, D};

/// Runs `f` on the storage as a CPU tensor and returns its output's storage.
/// One copy in and one out: small beside the intermediates it saves.
fn via_tensor(
    s: &CpuStorage,
    l: &Layout,
    f: impl Fn(&Tensor) -> candle_core::Result<Tensor>,
) -> candle_core::Result<(CpuStorage, Shape)> {
    let (start, end) = l
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg("fused op: input is not contiguous".into()))?;
    // `applies` admits f32 only.
    let x = Tensor::from_slice(&s.as_slice::<f32>()?[start..end], l.shape(), &Device::Cpu)?;
    let y = f(&x)?.contiguous()?;
    let (storage, layout) = y.storage_and_layout();
    let Storage::Cpu(out) = &*storage else {
        candle_core::bail!("fused op: output left the CPU")
    };
    if layout.start_offset() != 0 {
        // Fresh kernel outputs start at 0; anything else would be a view.
        candle_core::bail!("fused op: unexpected output layout");
    }
    Ok((out.clone(), layout.shape().clone()))
}

/// `x / rms(x) · w` over the last dimension.
struct RmsNorm {
    weight: Tensor,
    eps: f32,
}

impl CustomOp1 for RmsNorm {
    fn name(&self) -> &'static str {
        "sqlora-rms-norm"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        via_tensor(s, l, |x| candle_nn::ops::rms_norm(x, &self.weight, self.eps))
    }

    /// With r = (mean(x²) + eps)^-½ and u = g·w: ∂x = r·u − x·r³·mean(x·u).
    fn bwd(&self, x: &Tensor, _y: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let u = g.broadcast_mul(&self.weight.to_dtype(g.dtype())?)?;
        let r = (x.sqr()?.mean_keepdim(D::Minus1)? + self.eps as f64)?.sqrt()?.recip()?;
        let dot = (x * &u)?.mean_keepdim(D::Minus1)?;
        let r3 = (&r * &r)?.mul(&r)?;
        Ok(Some((u.broadcast_mul(&r)? - x.broadcast_mul(&(dot * r3)?)?)?))
    }
}

/// Rotate-half RoPE on `[b, h, t, d]`; its transpose is the same rotation by −θ.
struct Rope {
    cos: Tensor,
    sin: Tensor,
}

impl CustomOp1 for Rope {
    fn name(&self) -> &'static str {
        "sqlora-rope"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        via_tensor(s, l, |x| candle_nn::rotary_emb::rope(x, &self.cos, &self.sin))
    }

    fn bwd(&self, _x: &Tensor, _y: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let neg_sin = self.sin.neg()?;
        Ok(Some(candle_nn::rotary_emb::rope(
            &g.contiguous()?,
            &self.cos,
            &neg_sin,
        )?))
    }
}

/// Softmax over the last dimension; ∂x = y·(g − Σ g·y).
struct Softmax;

impl CustomOp1 for Softmax {
    fn name(&self) -> &'static str {
        "sqlora-softmax"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        via_tensor(s, l, candle_nn::ops::softmax_last_dim)
    }

    fn bwd(&self, _x: &Tensor, y: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let dot = (g * y)?.sum_keepdim(D::Minus1)?;
        Ok(Some((y * g.broadcast_sub(&dot)?)?))
    }
}

/// Do the fused training ops apply to this tensor? CPU f32, the CPU training
/// dtype (candle's fused RMSNorm has no f64 kernel).
fn applies(x: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == DType::F32
}

/// RMSNorm over the last dimension, differentiable in `x` (the weight is frozen).
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f32) -> candle_core::Result<Tensor> {
    if !applies(x) {
        return candle_nn::ops::rms_norm_slow(x, weight, eps);
    }
    x.contiguous()?.apply_op1(RmsNorm {
        weight: weight.detach(),
        eps,
    })
}

/// Rotate-half RoPE of `x` `[b, h, t, d]` with `cos`/`sin` `[t, d/2]`, differentiable in `x`.
pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> candle_core::Result<Tensor> {
    if !applies(x) {
        return candle_nn::rotary_emb::rope_slow(x, cos, sin);
    }
    x.contiguous()?.apply_op1(Rope {
        cos: cos.contiguous()?.detach(),
        sin: sin.contiguous()?.detach(),
    })
}

/// Softmax over the last dimension, differentiable.
pub fn softmax_last_dim(x: &Tensor) -> candle_core::Result<Tensor> {
    if !applies(x) {
        return candle_nn::ops::softmax(x, D::Minus1);
    }
    x.contiguous()?.apply_op1(Softmax)
}
