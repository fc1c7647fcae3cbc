//! Launchers for sqlora's CUDA kernels (`src/kernels/sqlora.cu`, compiled to
//! PTX by build.rs) and the device's memory set-up and accounting.
//!
//! Each launcher takes candle storages and returns a fresh one; the callers
//! ([`crate::nf4`], [`crate::dropout`], the optimizer) are custom ops whose CPU
//! twins compute the same values.

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{result, sys, LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::{CudaDevice, CudaStorage, CudaStorageSlice};
use candle_core::{DType, Device, Layout, Result};
use half::{bf16, f16};

const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/sqlora_kernels.ptx"));

fn launch_cfg(threads: u64) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (threads.div_ceil(256).max(1) as u32, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    }
}

fn contiguous_range(l: &Layout, what: &str) -> Result<(usize, usize)> {
    l.contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg(format!("{what}: input is not contiguous")))
}

fn suffix(dtype: DType) -> Result<&'static str> {
    Ok(match dtype {
        DType::F32 => "f32",
        DType::BF16 => "bf16",
        DType::F16 => "f16",
        other => candle_core::bail!("sqlora kernels: no {other:?} variant (f32, bf16, f16)"),
    })
}

/// The NF4 parts of one weight on the device (see [`crate::nf4::Nf4Tensor`]).
pub struct Nf4Parts<'a> {
    pub packed: (&'a CudaStorage, &'a Layout),
    pub absmax_q: (&'a CudaStorage, &'a Layout),
    pub absmax2: (&'a CudaStorage, &'a Layout),
    pub code2: (&'a CudaStorage, &'a Layout),
    pub offset: f32,
    pub n: usize,
}

/// Dequantize an NF4 weight into `dtype` in one launch (32 values per thread
/// where the size allows, else 8).
pub fn nf4_dequantize(dev: &CudaDevice, p: &Nf4Parts, dtype: DType) -> Result<CudaStorage> {
    let (pa, pb) = contiguous_range(p.packed.1, "nf4 packed")?;
    let (qa, qb) = contiguous_range(p.absmax_q.1, "nf4 absmax")?;
    let (a2a, a2b) = contiguous_range(p.absmax2.1, "nf4 nested absmax")?;
    let (ca, cb) = contiguous_range(p.code2.1, "nf4 code map")?;
    let packed = p.packed.0.as_cuda_slice::<u8>()?.slice(pa..pb);
    let absmax_q = p.absmax_q.0.as_cuda_slice::<u8>()?.slice(qa..qb);
    let absmax2 = p.absmax2.0.as_cuda_slice::<f32>()?.slice(a2a..a2b);
    let code2 = p.code2.0.as_cuda_slice::<f32>()?.slice(ca..cb);
    let n = p.n as u64;
    let f = dev.get_or_load_custom_func(&format!("nf4_dequant_{}", suffix(dtype)?), "sqlora", PTX)?;
    macro_rules! run {
        ($t:ty) => {{
            // Safety: every element is written by the kernel before any read.
            let out = unsafe { dev.alloc::<$t>(p.n) }?;
            let mut b = f.builder();
            b.arg(&packed);
            b.arg(&absmax_q);
            b.arg(&absmax2);
            b.arg(&code2);
            b.arg(&p.offset);
            b.arg(&out);
            b.arg(&n);
            let per_thread = if n % 32 == 0 { 32 } else { 8 };
            unsafe { b.launch(launch_cfg(n.div_ceil(per_thread))) }.map_err(candle_core::Error::wrap)?;
            CudaStorage::wrap_cuda_slice(out, dev.clone())
        }};
    }
    Ok(match dtype {
        DType::F32 => run!(f32),
        DType::BF16 => run!(bf16),
        _ => run!(f16),
    })
}

/// `y = keep ? x·scale : 0` with the counter-based mask of [`crate::dropout`].
pub fn dropout(s: &CudaStorage, l: &Layout, seed: u64, threshold: u32, scale: f32) -> Result<CudaStorage> {
    let dev = s.device().clone();
    let (a, b) = contiguous_range(l, "dropout")?;
    let n = (b - a) as u64;
    let f = dev.get_or_load_custom_func(&format!("dropout_{}", suffix(s.dtype())?), "sqlora", PTX)?;
    macro_rules! run {
        ($t:ty) => {{
            let x = s.as_cuda_slice::<$t>()?.slice(a..b);
            let out = unsafe { dev.alloc::<$t>(b - a) }?;
            let mut bld = f.builder();
            bld.arg(&x);
            bld.arg(&out);
            bld.arg(&n);
            bld.arg(&seed);
            bld.arg(&threshold);
            bld.arg(&scale);
            unsafe { bld.launch(launch_cfg(n)) }.map_err(candle_core::Error::wrap)?;
            CudaStorage::wrap_cuda_slice(out, dev.clone())
        }};
    }
    Ok(match s.dtype() {
        DType::F32 => run!(f32),
        DType::BF16 => run!(bf16),
        _ => run!(f16),
    })
}

fn f32_slice_mut<'a>(
    s: &'a mut CudaStorage,
    what: &str,
) -> Result<&'a mut candle_core::cuda_backend::cudarc::driver::CudaSlice<f32>> {
    match &mut s.slice {
        CudaStorageSlice::F32(x) => Ok(x),
        _ => candle_core::bail!("{what}: expected f32"),
    }
}

/// Blocks per gradient in [`sumsq_into`]: each writes one partial sum.
pub const SUMSQ_PARTS: usize = 64;

/// `acc[slot·SUMSQ_PARTS + k]` = block k's part of `Σ g²` (fixed grid and
/// reduction order, so a norm is reproducible).
pub fn sumsq_into(acc: &mut CudaStorage, slot: usize, g: &CudaStorage, gl: &Layout) -> Result<()> {
    let dev = g.device().clone();
    let (a, b) = contiguous_range(gl, "grad norm")?;
    let gv = g.as_cuda_slice::<f32>()?.slice(a..b);
    let n = (b - a) as u64;
    let slot = slot as u32;
    let acc = f32_slice_mut(acc, "grad norm accumulator")?;
    let f = dev.get_or_load_custom_func("sumsq_f32", "sqlora", PTX)?;
    let mut bld = f.builder();
    bld.arg(&gv);
    bld.arg(&n);
    bld.arg(acc);
    bld.arg(&slot);
    let cfg = LaunchConfig {
        grid_dim: (SUMSQ_PARTS as u32, 1, 1),
        block_dim: (1024, 1, 1),
        shared_mem_bytes: 0,
    };
    unsafe { bld.launch(cfg) }.map_err(candle_core::Error::wrap)?;
    Ok(())
}

/// AdamW's constants for one step, as f32 (the kernels' arithmetic).
#[derive(Debug, Clone, Copy)]
pub struct AdamWStep {
    pub b1: f32,
    pub one_minus_b1: f32,
    pub b2: f32,
    pub one_minus_b2: f32,
    pub decay: f32,
    pub step: f32,
    pub bc2_sqrt: f32,
    pub eps: f32,
}

/// Moments update of `mv` (`[2, n]`: m then v) with gradient `g·coef[0]`.
pub fn adamw_moments(
    mv: &mut CudaStorage,
    g: (&CudaStorage, &Layout),
    coef: (&CudaStorage, &Layout),
    c: &AdamWStep,
) -> Result<()> {
    let dev = g.0.device().clone();
    let (ga, gb) = contiguous_range(g.1, "adamw grad")?;
    let (ca, cb) = contiguous_range(coef.1, "adamw coef")?;
    let gv = g.0.as_cuda_slice::<f32>()?.slice(ga..gb);
    let cv = coef.0.as_cuda_slice::<f32>()?.slice(ca..cb);
    let n = (gb - ga) as u64;
    let mv = f32_slice_mut(mv, "adamw moments")?;
    let f = dev.get_or_load_custom_func("adamw_moments_f32", "sqlora", PTX)?;
    let mut bld = f.builder();
    bld.arg(mv);
    bld.arg(&gv);
    bld.arg(&cv);
    bld.arg(&n);
    bld.arg(&c.b1);
    bld.arg(&c.one_minus_b1);
    bld.arg(&c.b2);
    bld.arg(&c.one_minus_b2);
    unsafe { bld.launch(launch_cfg(n)) }.map_err(candle_core::Error::wrap)?;
    Ok(())
}

/// Parameter update `p = p·decay − step·m / (√v / bc2_sqrt + eps)`.
pub fn adamw_apply(p: &mut CudaStorage, mv: (&CudaStorage, &Layout), c: &AdamWStep) -> Result<()> {
    let dev = mv.0.device().clone();
    let (a, b) = contiguous_range(mv.1, "adamw moments")?;
    let mvv = mv.0.as_cuda_slice::<f32>()?.slice(a..b);
    let n = ((b - a) / 2) as u64;
    let p = f32_slice_mut(p, "adamw parameter")?;
    let f = dev.get_or_load_custom_func("adamw_apply_f32", "sqlora", PTX)?;
    let mut bld = f.builder();
    bld.arg(p);
    bld.arg(&mvv);
    bld.arg(&n);
    bld.arg(&c.decay);
    bld.arg(&c.step);
    bld.arg(&c.bc2_sqrt);
    bld.arg(&c.eps);
    unsafe { bld.launch(launch_cfg(n)) }.map_err(candle_core::Error::wrap)?;
    Ok(())
}

fn default_pool(dev: &CudaDevice) -> Result<sys::CUmemoryPool> {
    let stream = dev.cuda_stream();
    let ctx = stream.context();
    ctx.bind_to_thread().map_err(candle_core::Error::wrap)?;
    unsafe { result::device::get_default_mem_pool(ctx.cu_device()) }.map_err(candle_core::Error::wrap)
}

/// Set a CUDA device up for training and generation: one stream, so no
/// per-buffer event tracking (it costs host time on every op), and a memory
/// pool that keeps freed memory for reuse instead of returning it at each sync.
pub fn configure(device: &Device) -> Result<()> {
    let Device::Cuda(dev) = device else { return Ok(()) };
    // Safety: candle runs all work of a device on its one stream.
    unsafe { dev.disable_event_tracking() };
    let pool = default_pool(dev)?;
    let mut keep = u64::MAX;
    unsafe {
        result::mem_pool::set_attribute(
            pool,
            sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
            &mut keep as *mut u64 as *mut std::ffi::c_void,
        )
    }
    .map_err(candle_core::Error::wrap)
}

/// Peak bytes allocated on the device's memory pool since the last
/// [`reset_peak_memory`] (torch's `max_memory_allocated`), after a sync.
pub fn peak_memory(device: &Device) -> Result<Option<u64>> {
    let Device::Cuda(dev) = device else { return Ok(None) };
    device.synchronize()?;
    let pool = default_pool(dev)?;
    let mut v = 0u64;
    unsafe {
        result::mem_pool::get_attribute(
            pool,
            sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_HIGH,
            &mut v as *mut u64 as *mut std::ffi::c_void,
        )
    }
    .map_err(candle_core::Error::wrap)?;
    Ok(Some(v))
}

/// Start a new peak-memory window.
pub fn reset_peak_memory(device: &Device) -> Result<()> {
    let Device::Cuda(dev) = device else { return Ok(()) };
    device.synchronize()?;
    let pool = default_pool(dev)?;
    let mut zero = 0u64;
    unsafe {
        result::mem_pool::set_attribute(
            pool,
            sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_HIGH,
            &mut zero as *mut u64 as *mut std::ffi::c_void,
        )
    }
    .map_err(candle_core::Error::wrap)
}
