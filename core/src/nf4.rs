//! NF4 4-bit weights with double quantization, bit-exact with bitsandbytes 0.50
//! (`quantize_4bit(.., blocksize=64, compress_statistics=True, quant_type="nf4")`).
//!
//! Layout (see `shared/peer/out/nf4_notes.md`):
//! - the weight is flattened row-major and cut into blocks of 64; each block
//!   keeps its absmax and one 4-bit code per value (index into [`NF4_CODE`]);
//!   two codes per byte, the first element in the high nibble;
//! - double quantization: the absmax values minus their mean are quantized
//!   blockwise (256) to 8 bits with bitsandbytes' signed dynamic map; the mean
//!   is kept as an f32 offset, and each 256-block keeps its own f32 absmax.
//!
//! Memory: 0.5 byte per parameter + 1 byte per 64 + 4 bytes per 64·256
//! parameters ≈ 4.127 bits per parameter.

use std::sync::OnceLock;

use candle_core::{DType, Device, Tensor};

use crate::config::ModelConfig;
use crate::{Error, Result};

/// Values per NF4 block.
pub const BLOCK: usize = 64;
/// Absmax values per double-quantization block.
pub const BLOCK2: usize = 256;

/// bitsandbytes' NF4 code table (index → value).
pub const NF4_CODE: [f32; 16] = [
    -1.0,
    -0.696_192_8,
    -0.525_073_05,
    -0.394_917_5,
    -0.284_441_38,
    -0.184_773_43,
    -0.091_050_036,
    0.0,
    0.079_580_3,
    0.160_930_2,
    0.246_112_3,
    0.337_915_24,
    0.440_709_83,
    0.562_617,
    0.722_956_84,
    1.0,
];

/// bitsandbytes' `create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8)`,
/// sorted ascending, computed in f32 the way torch does it.
pub fn dynamic_map() -> &'static [f32; 256] {
    static MAP: OnceLock<[f32; 256]> = OnceLock::new();
    MAP.get_or_init(|| {
        let mut data: Vec<f32> = Vec::with_capacity(256);
        for i in 0..7usize {
            let n = (1usize << i) + 1;
            let b = linspace_f32(0.1, 1.0, n);
            // Python float scale times an f32 tensor: torch casts the scale to f32.
            let scale = [1e-6f32, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0][i];
            let means: Vec<f32> = b.windows(2).map(|w| (w[0] + w[1]) / 2.0).collect();
            data.extend(means.iter().map(|m| scale * m));
            data.extend(means.iter().map(|m| -scale * m));
        }
        data.push(0.0);
        data.push(1.0);
        data.resize(256, 0.0);
        data.sort_by(|a, b| a.partial_cmp(b).expect("finite"));
        data.try_into().expect("256 entries")
    })
}

/// torch.linspace in f32 as its CPU kernel computes it: `step = (end - start) / (n - 1)`,
/// the first half counting up from `start` and the second half down from `end`,
/// each value one fused multiply-add (the compiler contracts `start + step * i`
/// in torch's build; plain mul-then-add differs in 42 of the 256 map entries).
fn linspace_f32(start: f32, end: f32, n: usize) -> Vec<f32> {
    if n == 1 {
        return vec![start];
    }
    let step = (end - start) / (n - 1) as f32;
    let half = n / 2;
    (0..n)
        .map(|i| {
            if i < half {
                step.mul_add(i as f32, start)
            } else {
                (-step).mul_add((n - i - 1) as f32, end)
            }
        })
        .collect()
}

/// Midpoints of the NF4 table: the code of a value is the number of midpoints
/// strictly below it (torch.bucketize, right=False: ties go to the lower code).
fn nf4_midpoints() -> [f32; 15] {
    std::array::from_fn(|k| (NF4_CODE[k] + NF4_CODE[k + 1]) / 2.0)
}

/// bitsandbytes' CPU 8-bit blockwise rounding: a 65536-entry look-up table over
/// [-1, 1] whose entry i counts the dynamic-map midpoints below `-1 + 2i/65535`.
/// Not plain nearest-code rounding (that differs near midpoints).
fn dq_lut() -> &'static [u8] {
    static LUT: OnceLock<Vec<u8>> = OnceLock::new();
    LUT.get_or_init(|| {
        let code = dynamic_map();
        let mids: Vec<f32> = code.windows(2).map(|w| 0.5 * (w[0] + w[1])).collect();
        (0..65536u32)
            .map(|i| {
                let v = -1.0f32 + (2.0f32 * i as f32) / 65535.0f32;
                mids.partition_point(|&m| m < v) as u8
            })
            .collect()
    })
}

/// An NF4 double-quantized weight `[out, in]`, as bitsandbytes stores it.
///
/// The parts are tensors on the device the weight lives on (uploaded once,
/// [`Self::to_device`]): the GPU holds 4.127 bits per parameter too, and
/// dequantizes there ([`Self::dequantize`]: a host loop on the CPU, one CUDA
/// kernel launch on a GPU, both computing the same f32 values).
#[derive(Debug, Clone)]
pub struct Nf4Tensor {
    shape: [usize; 2],
    /// u8, two codes per byte, element 2j in the high nibble.
    packed: Tensor,
    /// u8, 8-bit dynamic-map code of `absmax - offset`, one per 64-block.
    absmax_q: Tensor,
    /// f32 absmax of `absmax - offset` per 256-block of absmax values.
    absmax2: Tensor,
    /// Mean of the f32 absmax values.
    offset: f32,
    /// f32 [`dynamic_map`] on the same device, for the kernel's look-ups.
    code2: Tensor,
}

impl Nf4Tensor {
    /// Quantize a 2-D tensor (any float dtype, any device) as bitsandbytes does;
    /// the result lives on the CPU (see [`Self::to_device`]). f32, bf16 and f16
    /// values are read where they are, without an f32 copy of the whole weight.
    pub fn quantize(w: &Tensor) -> Result<Self> {
        use candle_core::{CpuStorage, Storage};
        let (rows, cols) = w.dims2()?;
        let w = w.to_device(&Device::Cpu)?.contiguous()?;
        let (storage, layout) = w.storage_and_layout();
        let (Storage::Cpu(cpu), Some((a, b))) = (&*storage, layout.contiguous_offsets()) else {
            return Err(Error::msg("NF4: weight is not a contiguous CPU tensor"));
        };
        match cpu {
            CpuStorage::F32(v) => quantize_values(&v[a..b], |x| x, [rows, cols]),
            CpuStorage::BF16(v) => quantize_values(&v[a..b], half::bf16::to_f32, [rows, cols]),
            CpuStorage::F16(v) => quantize_values(&v[a..b], half::f16::to_f32, [rows, cols]),
            _ => {
                let data = w.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
                Self::quantize_slice(&data, [rows, cols])
            }
        }
    }

    /// Quantize row-major f32 values of shape `shape`.
    pub fn quantize_slice(data: &[f32], shape: [usize; 2]) -> Result<Self> {
        quantize_values(data, |x| x, shape)
    }

    /// Rebuild from bitsandbytes' serialized parts (checkpoint `weight`,
    /// `weight.absmax`, `weight.nested_absmax`, `nested_offset`), on the CPU.
    pub fn from_parts(
        shape: [usize; 2],
        packed: Vec<u8>,
        absmax_q: Vec<u8>,
        absmax2: Vec<f32>,
        offset: f32,
    ) -> Result<Self> {
        let n = shape[0] * shape[1];
        let nblocks = n.div_ceil(BLOCK);
        if packed.len() != n.div_ceil(2) || absmax_q.len() != nblocks || absmax2.len() != nblocks.div_ceil(BLOCK2) {
            return Err(Error::msg(format!(
                "NF4 parts do not fit shape {shape:?}: packed {}, absmax {}, nested_absmax {}",
                packed.len(),
                absmax_q.len(),
                absmax2.len()
            )));
        }
        let cpu = Device::Cpu;
        Ok(Nf4Tensor {
            shape,
            packed: Tensor::from_vec(packed, n.div_ceil(2), &cpu)?,
            absmax_q: Tensor::from_vec(absmax_q, nblocks, &cpu)?,
            absmax2: Tensor::from_vec(absmax2, nblocks.div_ceil(BLOCK2), &cpu)?,
            offset,
            code2: Tensor::from_slice(dynamic_map().as_slice(), 256, &cpu)?,
        })
    }

    /// The same weight with its parts on `device` (a copy of 4.127 bits per
    /// parameter; nothing is dequantized).
    pub fn to_device(&self, device: &Device) -> Result<Self> {
        Ok(Nf4Tensor {
            shape: self.shape,
            packed: self.packed.to_device(device)?,
            absmax_q: self.absmax_q.to_device(device)?,
            absmax2: self.absmax2.to_device(device)?,
            offset: self.offset,
            code2: self.code2.to_device(device)?,
        })
    }

    pub fn device(&self) -> &Device {
        self.packed.device()
    }
    pub fn shape(&self) -> &[usize; 2] {
        &self.shape
    }
    /// The packed codes (copied to the host).
    pub fn packed(&self) -> Vec<u8> {
        self.packed.to_vec1().unwrap_or_default()
    }
    /// The 8-bit absmax codes (copied to the host).
    pub fn absmax_q(&self) -> Vec<u8> {
        self.absmax_q.to_vec1().unwrap_or_default()
    }
    /// The nested f32 absmax values (copied to the host).
    pub fn absmax2(&self) -> Vec<f32> {
        self.absmax2.to_vec1().unwrap_or_default()
    }
    pub fn offset(&self) -> f32 {
        self.offset
    }

    /// Bytes held: packed codes, 8-bit absmax, f32 nested absmax, f32 offset.
    pub fn bytes(&self) -> usize {
        nf4_bytes(self.shape)
    }

    /// The per-64-block scales after double dequantization:
    /// `code2[absmax_q] * absmax2[block / 256] + offset` (f32 mul, then f32 add).
    pub fn absmax(&self) -> Vec<f32> {
        let code2 = dynamic_map();
        let absmax2 = self.absmax2();
        self.absmax_q()
            .iter()
            .enumerate()
            .map(|(i, &q)| code2[q as usize] * absmax2[i / BLOCK2] + self.offset)
            .collect()
    }

    /// Row-major f32 values, `NF4[code] * absmax[block]`.
    pub fn dequantize_vec(&self) -> Vec<f32> {
        let n = self.shape[0] * self.shape[1];
        let absmax = self.absmax();
        let mut out = Vec::with_capacity(n);
        for (b, bytes) in self.packed().chunks(BLOCK / 2).enumerate() {
            let s = absmax[b];
            for &byte in bytes {
                out.push(NF4_CODE[(byte >> 4) as usize] * s);
                out.push(NF4_CODE[(byte & 15) as usize] * s);
            }
        }
        out.truncate(n);
        out
    }

    /// The dense weight `[out, in]` in `dtype`, on the device the parts live
    /// on: on the CPU the loop of [`Self::dequantize_vec`], on a GPU one kernel
    /// launch that writes `dtype` directly (the same f32 values, then rounded).
    pub fn dequantize(&self, dtype: DType) -> Result<Tensor> {
        let shape = (self.shape[0], self.shape[1]);
        match self.device() {
            Device::Cpu => Ok(Tensor::from_vec(self.dequantize_vec(), shape, &Device::Cpu)?.to_dtype(dtype)?),
            #[cfg(feature = "cuda")]
            Device::Cuda(dev) => {
                use candle_core::{op::BackpropOp, Storage};
                let (p, pl) = self.packed.storage_and_layout();
                let (q, ql) = self.absmax_q.storage_and_layout();
                let (a2, a2l) = self.absmax2.storage_and_layout();
                let (c2, c2l) = self.code2.storage_and_layout();
                let (Storage::Cuda(p), Storage::Cuda(q), Storage::Cuda(a2), Storage::Cuda(c2)) = (&*p, &*q, &*a2, &*c2)
                else {
                    return Err(Error::msg("NF4: parts are not all on the CUDA device"));
                };
                let parts = crate::cuda::Nf4Parts {
                    packed: (p, pl),
                    absmax_q: (q, ql),
                    absmax2: (a2, a2l),
                    code2: (c2, c2l),
                    offset: self.offset,
                    n: self.shape[0] * self.shape[1],
                };
                let out = crate::cuda::nf4_dequantize(dev, &parts, dtype)?;
                Ok(Tensor::from_storage(
                    Storage::Cuda(out),
                    shape,
                    BackpropOp::none(),
                    false,
                ))
            }
            other => Err(Error::msg(format!(
                "NF4: no dequantization kernel for device {:?} (CPU and CUDA have one)",
                other.location()
            ))),
        }
    }

    /// `x · deq(W)ᵀ` for `x` `[.., in]` (no gradient; see [`crate::linear`] for
    /// the trainable form).
    pub fn matmul_t(&self, x: &Tensor) -> Result<Tensor> {
        let w = self.dequantize(x.dtype())?.to_device(x.device())?;
        Ok(x.broadcast_matmul(&w.t()?)?)
    }
}

/// Quantize row-major values of shape `shape`, each read through `to_f32`.
fn quantize_values<T: Copy + Sync>(data: &[T], to_f32: fn(T) -> f32, shape: [usize; 2]) -> Result<Nf4Tensor> {
    let n = shape[0] * shape[1];
    if data.len() != n || n == 0 || !n.is_multiple_of(2) {
        return Err(Error::msg(format!(
            "NF4: cannot quantize {} values as shape {shape:?} (need a non-empty, even-sized matrix)",
            data.len()
        )));
    }
    let nblocks = n.div_ceil(BLOCK);
    let mut absmax = vec![0f32; nblocks];
    let mut packed = vec![0u8; n / 2];
    // Blocks are independent: quantize them in parallel chunks (a 7B model's
    // 7 billion values take seconds, not minutes).
    const CHUNK: usize = 1024;
    let work = |(c, (amax, out)): (usize, (&mut [f32], &mut [u8]))| -> std::result::Result<(), f32> {
        let first = c * CHUNK * BLOCK;
        quantize_blocks(&data[first..(first + CHUNK * BLOCK).min(n)], to_f32, amax, out)
    };
    let chunks = absmax
        .chunks_mut(CHUNK)
        .zip(packed.chunks_mut(CHUNK * BLOCK / 2))
        .enumerate();
    #[cfg(not(target_arch = "wasm32"))]
    let done: std::result::Result<(), f32> = {
        use rayon::prelude::*;
        chunks.collect::<Vec<_>>().into_par_iter().try_for_each(work)
    };
    #[cfg(target_arch = "wasm32")]
    let done: std::result::Result<(), f32> = chunks.map(work).collect();
    if let Err(bad) = done {
        return Err(Error::msg(format!("NF4: weight contains a non-finite value ({bad})")));
    }
    let (absmax_q, absmax2, offset) = double_quantize(&absmax);
    Nf4Tensor::from_parts(shape, packed, absmax_q, absmax2, offset)
}

/// NF4 codes and absmax of whole 64-blocks of `values` (the last may be
/// short); a non-finite value is returned as the error.
fn quantize_blocks<T: Copy>(
    values: &[T],
    to_f32: fn(T) -> f32,
    absmax: &mut [f32],
    packed: &mut [u8],
) -> std::result::Result<(), f32> {
    let mids = nf4_midpoints();
    let mut codes = [0u8; BLOCK];
    let mut block = [0f32; BLOCK];
    for (b, raw) in values.chunks(BLOCK).enumerate() {
        let block = &mut block[..raw.len()];
        for (x, &r) in block.iter_mut().zip(raw) {
            *x = to_f32(r);
        }
        if let Some(&bad) = block.iter().find(|v| !v.is_finite()) {
            return Err(bad);
        }
        let amax = block.iter().fold(0f32, |m, v| m.max(v.abs()));
        absmax[b] = amax;
        // bnb multiplies by the f32 reciprocal rather than dividing.
        let inv = 1.0f32 / amax;
        for (c, &x) in codes.iter_mut().zip(block.iter()) {
            *c = if amax == 0.0 {
                7 // an all-zero block: code of 0.0 (bnb would produce NaN here)
            } else {
                let s = (x * inv).clamp(-1.0, 1.0);
                mids.iter().filter(|&&m| m < s).count() as u8
            };
        }
        let base = b * BLOCK / 2;
        for (j, pair) in codes[..raw.len()].chunks(2).enumerate() {
            packed[base + j] = (pair[0] << 4) | pair.get(1).copied().unwrap_or(0);
        }
    }
    Ok(())
}

/// Double quantization of the f32 absmax values: `(codes, absmax2, offset)`.
fn double_quantize(absmax: &[f32]) -> (Vec<u8>, Vec<f32>, f32) {
    let offset = torch_mean(absmax);
    let lut = dq_lut();
    let mut codes = Vec::with_capacity(absmax.len());
    let mut absmax2 = Vec::with_capacity(absmax.len().div_ceil(BLOCK2));
    for block in absmax.chunks(BLOCK2) {
        let amax2 = block.iter().fold(0f32, |m, a| m.max((a - offset).abs()));
        absmax2.push(amax2);
        let inv = 1.0f32 / amax2;
        for &a in block {
            let y = a - offset;
            codes.push(if amax2 == 0.0 {
                lut[32768] // all equal: the code of 0
            } else {
                let v = (y * inv).clamp(-1.0, 1.0);
                let i = ((v + 1.0) * 0.5 * 65535.0 + 0.5) as usize; // trunc, as bnb's C does
                lut[i.min(65535)]
            });
        }
    }
    (codes, absmax2, offset)
}

/// The f32 mean as torch's CPU kernel computes it (`sum / n`), so the offset is
/// bit-exact with bitsandbytes. Exact for up to 32768 values (one thread; torch
/// splits longer reductions by thread count); beyond that within an ulp or so.
fn torch_mean(v: &[f32]) -> f32 {
    torch_sum(v) / v.len() as f32
}

/// torch's vectorized cascade sum of a contiguous f32 row (`SumKernel.cpp`):
/// vectors of [`TORCH_LANES`] floats, interleaved over 4 accumulators, each
/// a 4-level cascade that folds every 16 steps; then the scalar tail, then
/// the lanes in order.
fn torch_sum(v: &[f32]) -> f32 {
    const L: usize = TORCH_LANES;
    type V = [f32; L];
    let add = |a: &mut V, b: &V| a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
    let load = |i: usize| -> V { std::array::from_fn(|l| v[i * L + l]) };
    let n_vec = v.len() / L;
    let size = n_vec / 4; // rows of 4 vectors
    const LEVELS: usize = 4;
    const POWER: usize = 4; // max(4, ceil_log2(size) / 4) for every size below 2^20
    let step = 1usize << POWER;
    let mut acc = [[[0f32; L]; 4]; LEVELS];
    // One row: vector 4i + k goes to accumulator k.
    let add_row = |accs: &mut [V; 4], i: usize| {
        for (k, a) in accs.iter_mut().enumerate() {
            add(a, &load(i * 4 + k));
        }
    };
    // Fold level `j - 1` into level `j` (upward) or level `j` into level 0.
    let fold = |acc: &mut [[V; 4]; LEVELS], from: usize, to: usize, clear: bool| {
        let src = acc[from];
        for (dst, s) in acc[to].iter_mut().zip(&src) {
            add(dst, s);
        }
        if clear {
            acc[from] = [[0.0; L]; 4];
        }
    };
    let mut i = 0;
    while i + step <= size {
        for _ in 0..step {
            add_row(&mut acc[0], i);
            i += 1;
        }
        for j in 1..LEVELS {
            fold(&mut acc, j - 1, j, true);
            if i & ((step - 1) << (j * POWER)) != 0 {
                break;
            }
        }
    }
    while i < size {
        add_row(&mut acc[0], i);
        i += 1;
    }
    for j in 1..LEVELS {
        fold(&mut acc, j, 0, false);
    }
    let mut partial = acc[0];
    for r in size * 4..n_vec {
        add(&mut partial[0], &load(r));
    }
    let [mut total_vec, p1, p2, p3] = partial;
    for p in [p1, p2, p3] {
        add(&mut total_vec, &p);
    }
    let mut total = 0f32;
    for &x in &v[n_vec * L..] {
        total += x;
    }
    for lane in total_vec {
        total += lane;
    }
    total
}

/// Float lanes of torch's CPU vector kernels as used for the references (AVX2:
/// 8; 16 and 4 both miss bitsandbytes' offset of SmolLM2's layer-0 q_proj).
const TORCH_LANES: usize = 8;

/// Memory of a model's linear projections as NF4 with double quantization.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Nf4Memory {
    /// Parameters in the quantized projections (7 per layer; embeddings, norms and
    /// LM head are not quantized, as with bitsandbytes through transformers).
    pub params: usize,
    pub packed_bytes: usize,
    /// 8-bit absmax, f32 nested absmax and offset.
    pub stats_bytes: usize,
}

impl Nf4Memory {
    pub fn total_bytes(&self) -> usize {
        self.packed_bytes + self.stats_bytes
    }
    pub fn bits_per_param(&self) -> f64 {
        8.0 * self.total_bytes() as f64 / self.params as f64
    }
    /// The same parameters as dense f32 / bf16, for comparison.
    pub fn f32_bytes(&self) -> usize {
        4 * self.params
    }
    pub fn bf16_bytes(&self) -> usize {
        2 * self.params
    }
}

/// NF4+DQ bytes of one `[out, in]` matrix, exactly what [`Nf4Tensor::bytes`] gives.
pub fn nf4_bytes(shape: [usize; 2]) -> usize {
    let n = shape[0] * shape[1];
    let nblocks = n.div_ceil(BLOCK);
    n.div_ceil(2) + nblocks + 4 * nblocks.div_ceil(BLOCK2) + 4
}

/// Computed (not loaded) NF4+DQ memory of every linear projection of `cfg`.
pub fn nf4_model_memory(cfg: &ModelConfig) -> Nf4Memory {
    let mut m = Nf4Memory {
        params: 0,
        packed_bytes: 0,
        stats_bytes: 0,
    };
    for (_, shape) in cfg.linear_shapes() {
        let n = shape[0] * shape[1];
        let packed = n.div_ceil(2);
        m.params += n * cfg.num_hidden_layers;
        m.packed_bytes += packed * cfg.num_hidden_layers;
        m.stats_bytes += (nf4_bytes(shape) - packed) * cfg.num_hidden_layers;
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dynamic_map_is_sorted_with_zero_at_127() {
        let m = dynamic_map();
        assert_eq!(m[127], 0.0);
        assert_eq!(m[255], 1.0);
        assert!(m.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn quantize_roundtrip_is_close_and_bytes_add_up() {
        let data: Vec<f32> = (0..64 * 9 * 3).map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0).collect();
        let q = Nf4Tensor::quantize_slice(&data, [3, 576]).unwrap();
        let d = q.dequantize_vec();
        let max_err = data.iter().zip(&d).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(max_err < 0.3, "{max_err}");
        assert_eq!(q.bytes(), nf4_bytes([3, 576]));
        let t = q
            .dequantize(DType::F32)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(t, d);
    }

    #[test]
    fn rejects_odd_and_non_finite_input() {
        assert!(Nf4Tensor::quantize_slice(&[1.0, 2.0, 3.0], [1, 3]).is_err());
        assert!(Nf4Tensor::quantize_slice(&[1.0, f32::NAN], [1, 2]).is_err());
    }
}
