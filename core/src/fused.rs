//! RMSNorm, rotary embedding and softmax for the training graph, and the
//! mechanism behind them and behind gradient checkpointing: a value computed
//! by a kernel that has no backward (candle's fused `rms_norm`, `rope`,
//! `softmax_last_dim`, on the CPU and on CUDA alike) gets one attached.
//!
//! [`attach`] turns `y = f(x)`, computed without a graph, into a tensor whose
//! backward is a closed-form Jacobian-vector product of our own. The graph then
//! keeps only `x` and `y` per op, where candle's composed forms (`rms_norm_slow`,
//! `rope_slow`, `softmax`) keep five or six full-size intermediates.
//! Backward passes compute in f32 whatever the compute dtype, as transformers'
//! bf16 models do in their norms and softmax.

use candle_core::backend::{BackendDevice, BackendStorage};
use candle_core::{CpuStorage, CustomOp2, DType, Layout, Shape, Tensor, D};

/// The backward of `y = f(x)`: `∂x` from `x`, `y` and the incoming gradient `g`.
pub trait Backward: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    fn bwd(&self, x: &Tensor, y: &Tensor, g: &Tensor) -> candle_core::Result<Tensor>;
}

/// Forward: a copy of the precomputed `y`; backward: `B::bwd` for `x`.
struct Attach<B>(B);

/// A contiguous copy of the storage viewed through `l` (the op's output).
fn copy_out<S>(s: &S, l: &Layout) -> candle_core::Result<(S, Shape)>
where
    S: BackendStorage,
    S::Device: BackendDevice<Storage = S>,
{
    // Safety: copy_strided_src writes every element of the fresh buffer.
    let mut out = unsafe { s.device().alloc_uninit(l.shape(), s.dtype())? };
    s.copy_strided_src(&mut out, 0, l)?;
    Ok((out, l.shape().clone()))
}

impl<B: Backward> CustomOp2 for Attach<B> {
    fn name(&self) -> &'static str {
        self.0.name()
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        y: &CpuStorage,
        yl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        copy_out(y, yl)
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        _: &candle_core::CudaStorage,
        _: &Layout,
        y: &candle_core::CudaStorage,
        yl: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        copy_out(y, yl)
    }

    fn bwd(
        &self,
        x: &Tensor,
        _: &Tensor,
        y: &Tensor,
        g: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        Ok((Some(self.0.bwd(x, y, g)?), None))
    }
}

/// `y` (computed from `x` without a graph) as a function of `x` whose
/// gradient is `b.bwd`. Costs one copy of `y`.
pub fn attach<B: Backward>(x: &Tensor, y: &Tensor, b: B) -> candle_core::Result<Tensor> {
    x.apply_op2(&y.detach(), Attach(b))
}

fn f32(t: &Tensor) -> candle_core::Result<Tensor> {
    t.to_dtype(DType::F32)
}

/// With r = (mean(x²) + eps)^-½ and u = g·w: ∂x = r·u − x·r³·mean(x·u).
struct RmsNormBwd {
    weight: Tensor,
    eps: f32,
}

impl Backward for RmsNormBwd {
    fn name(&self) -> &'static str {
        "sqlora-rms-norm"
    }
    fn bwd(&self, x: &Tensor, _y: &Tensor, g: &Tensor) -> candle_core::Result<Tensor> {
        let (x, g) = (f32(x)?, f32(g)?);
        let u = g.broadcast_mul(&f32(&self.weight)?)?;
        let r = (x.sqr()?.mean_keepdim(D::Minus1)? + self.eps as f64)?.sqrt()?.recip()?;
        let dot = (&x * &u)?.mean_keepdim(D::Minus1)?;
        let r3 = (&r * &r)?.mul(&r)?;
        (u.broadcast_mul(&r)? - x.broadcast_mul(&(dot * r3)?)?)?.to_dtype(self.weight.dtype())
    }
}

/// Rotate-half RoPE's transpose is the same rotation by −θ.
struct RopeBwd {
    cos: Tensor,
    sin: Tensor,
}

impl Backward for RopeBwd {
    fn name(&self) -> &'static str {
        "sqlora-rope"
    }
    fn bwd(&self, _x: &Tensor, _y: &Tensor, g: &Tensor) -> candle_core::Result<Tensor> {
        candle_nn::rotary_emb::rope(&g.contiguous()?, &self.cos, &self.sin.neg()?)
    }
}

/// Softmax over the last dimension: ∂x = y·(g − Σ g·y).
struct SoftmaxBwd;

impl Backward for SoftmaxBwd {
    fn name(&self) -> &'static str {
        "sqlora-softmax"
    }
    fn bwd(&self, x: &Tensor, y: &Tensor, g: &Tensor) -> candle_core::Result<Tensor> {
        let (y, g) = (f32(y)?, f32(g)?);
        let dot = (&g * &y)?.sum_keepdim(D::Minus1)?;
        (y * g.broadcast_sub(&dot)?)?.to_dtype(x.dtype())
    }
}

/// RMSNorm over the last dimension, differentiable in `x` (the weight is frozen).
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f32) -> candle_core::Result<Tensor> {
    let y = candle_nn::ops::rms_norm(&x.detach().contiguous()?, weight, eps)?;
    attach(
        x,
        &y,
        RmsNormBwd {
            weight: weight.detach(),
            eps,
        },
    )
}

/// Rotate-half RoPE of `x` `[b, h, t, d]` with `cos`/`sin` `[t, d/2]`, differentiable in `x`.
pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> candle_core::Result<Tensor> {
    let (cos, sin) = (cos.contiguous()?.detach(), sin.contiguous()?.detach());
    let y = candle_nn::rotary_emb::rope(&x.detach().contiguous()?, &cos, &sin)?;
    attach(x, &y, RopeBwd { cos, sin })
}

/// Softmax over the last dimension, differentiable.
pub fn softmax_last_dim(x: &Tensor) -> candle_core::Result<Tensor> {
    let y = candle_nn::ops::softmax_last_dim(&x.detach().contiguous()?)?;
    attach(x, &y, SoftmaxBwd)
}
