//! Dropout whose mask is a pure function of (seed, element index): a SplitMix64
//! hash per element, the same bits on the CPU and in the CUDA kernel
//! (`src/kernels/sqlora.cu`). Nothing is drawn on the host and no mask is
//! stored: the backward pass recomputes the mask from the seed (dropout is its
//! own adjoint: `∂x = mask ⊙ g · scale`).

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, DType, Layout, Shape, Tensor};

/// Mask bits of element `i` under `seed`.
pub fn mask_bits(seed: u64, i: u64) -> u32 {
    let mut z = seed.wrapping_add((i + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 32) as u32
}

/// Element `i` is kept iff `mask_bits(seed, i) >= threshold`.
#[derive(Debug, Clone, Copy)]
struct Dropout {
    seed: u64,
    threshold: u32,
    /// 1 / (1 - p), as torch scales kept values.
    scale: f32,
}

impl Dropout {
    fn apply<T: Copy>(&self, x: &[T], to: impl Fn(T) -> f32, from: impl Fn(f32) -> T) -> Vec<T> {
        x.iter()
            .enumerate()
            .map(|(i, &v)| {
                let keep = mask_bits(self.seed, i as u64) >= self.threshold;
                from(if keep { to(v) * self.scale } else { 0.0 })
            })
            .collect()
    }
}

impl CustomOp1 for Dropout {
    fn name(&self) -> &'static str {
        "sqlora-dropout"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (a, b) = l
            .contiguous_offsets()
            .ok_or_else(|| candle_core::Error::Msg("dropout: input is not contiguous".into()))?;
        let out = match s {
            CpuStorage::F32(x) => CpuStorage::F32(self.apply(&x[a..b], |v| v, |v| v)),
            CpuStorage::BF16(x) => CpuStorage::BF16(self.apply(&x[a..b], half::bf16::to_f32, half::bf16::from_f32)),
            CpuStorage::F16(x) => CpuStorage::F16(self.apply(&x[a..b], half::f16::to_f32, half::f16::from_f32)),
            other => candle_core::bail!("dropout: unsupported dtype {:?}", other.dtype()),
        };
        Ok((out, l.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s: &candle_core::CudaStorage,
        l: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        let out = crate::cuda::dropout(s, l, self.seed, self.threshold, self.scale)?;
        Ok((out, l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, _y: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(g.contiguous()?.apply_op1(*self)?))
    }
}

/// `x ⊙ mask / (1 - p)` with each element kept with probability `1 - p`
/// (torch's `nn.Dropout` in training), the mask fixed by `seed`.
pub fn dropout(x: &Tensor, p: f64, seed: u64) -> candle_core::Result<Tensor> {
    if !(0.0..1.0).contains(&p) {
        candle_core::bail!("dropout probability must be in [0, 1), got {p}");
    }
    if !matches!(x.dtype(), DType::F32 | DType::BF16 | DType::F16) {
        candle_core::bail!("dropout: unsupported dtype {:?}", x.dtype());
    }
    let threshold = (p * 4_294_967_296.0).round().min(u32::MAX as f64) as u32;
    x.contiguous()?.apply_op1(Dropout {
        seed,
        threshold,
        scale: (1.0 / (1.0 - p)) as f32,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn keeps_about_one_minus_p_and_scales() {
        let x = Tensor::ones(100_000, DType::F32, &Device::Cpu).unwrap();
        let y = dropout(&x, 0.25, 7).unwrap().to_vec1::<f32>().unwrap();
        let kept = y.iter().filter(|&&v| v != 0.0).count() as f64 / y.len() as f64;
        assert!((kept - 0.75).abs() < 0.01, "kept {kept}");
        assert!(y.iter().all(|&v| v == 0.0 || (v - 4.0 / 3.0).abs() < 1e-6));
        let again = dropout(&x, 0.25, 7).unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(y, again, "same seed, same mask");
        assert_ne!(y, dropout(&x, 0.25, 8).unwrap().to_vec1::<f32>().unwrap());
    }

    #[test]
    fn backward_uses_the_forward_mask() {
        let x = Var::from_tensor(&Tensor::arange(1f32, 65.0, &Device::Cpu).unwrap()).unwrap();
        let y = dropout(x.as_tensor(), 0.5, 3).unwrap();
        let g = y.sum_all().unwrap().backward().unwrap();
        let gx = g.get(x.as_tensor()).unwrap().to_vec1::<f32>().unwrap();
        let yv = y.to_vec1::<f32>().unwrap();
        for (gi, yi) in gx.iter().zip(&yv) {
            assert_eq!(*gi == 0.0, *yi == 0.0);
            assert!(*gi == 0.0 || *gi == 2.0);
        }
        let bf = dropout(&x.as_tensor().to_dtype(DType::BF16).unwrap(), 0.5, 3).unwrap();
        let bf = bf.to_dtype(DType::F32).unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(
            bf.iter().map(|v| *v == 0.0).collect::<Vec<_>>(),
            yv.iter().map(|v| *v == 0.0).collect::<Vec<_>>(),
            "the mask does not depend on the dtype"
        );
    }
}
