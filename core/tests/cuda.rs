//! The CUDA path against the CPU path: sqlora's kernels (NF4 dequantization,
//! dropout) bit for bit, and a QLoRA forward and backward within stated
//! tolerances (f32: 1e-4 relative; bf16: 5e-2, bf16's precision through two
//! layers, as on the CPU in `training_graph.rs`). Built only with the `cuda`
//! feature; each test says so and passes where no GPU is present. Run with
//! `--test-threads=1` (one CUDA context set up per test).
#![cfg(feature = "cuda")]

mod common;

use candle_core::{DType, Device, Tensor};
use common::{grad_rel_diff, loss_and_lora_grads, loss_grads_recomputed, tiny_qlora_model};
use sqlora_core::nf4::Nf4Tensor;

fn gpu() -> Option<Device> {
    match Device::new_cuda(0) {
        Ok(d) => {
            sqlora_core::cuda::configure(&d).expect("configure the CUDA device");
            Some(d)
        }
        Err(e) => {
            eprintln!("no CUDA device ({e}): skipped");
            None
        }
    }
}

fn pseudo(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        })
        .collect()
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .map(|v| v.to_bits())
        .collect()
}

#[test]
fn nf4_kernel_equals_the_cpu_loop() {
    let Some(gpu) = gpu() else { return };
    // 300×200: the vectorized path; 3×70: a partial block and the scalar tail.
    for (rows, cols, seed) in [(300, 200, 1), (3, 70, 2), (1024, 576, 3)] {
        let w = Tensor::from_vec(pseudo(rows * cols, seed), (rows, cols), &Device::Cpu).unwrap();
        let q = Nf4Tensor::quantize(&w).unwrap();
        let on_gpu = q.to_device(&gpu).unwrap();
        for dtype in [DType::F32, DType::BF16, DType::F16] {
            let cpu = q.dequantize(dtype).unwrap();
            let cuda = on_gpu.dequantize(dtype).unwrap();
            assert_eq!(cuda.dtype(), dtype);
            assert!(cuda.device().is_cuda());
            assert_eq!(bits(&cuda), bits(&cpu), "{rows}x{cols} {dtype:?}");
        }
    }
}

#[test]
fn dropout_masks_equal_the_cpu_masks() {
    let Some(gpu) = gpu() else { return };
    let x = Tensor::from_vec(pseudo(10_007, 4), 10_007, &Device::Cpu).unwrap();
    for dtype in [DType::F32, DType::BF16] {
        let x = x.to_dtype(dtype).unwrap();
        let cpu = sqlora_core::dropout::dropout(&x, 0.1, 77).unwrap();
        let cuda = sqlora_core::dropout::dropout(&x.to_device(&gpu).unwrap(), 0.1, 77).unwrap();
        assert_eq!(bits(&cuda), bits(&cpu), "{dtype:?}");
    }
}

#[test]
fn qlora_forward_and_backward_match_the_cpu() {
    let Some(gpu) = gpu() else { return };
    let (loss, grads) = loss_and_lora_grads(&tiny_qlora_model(&Device::Cpu, DType::F32, true, 0.1));
    let (loss32, g32) = loss_and_lora_grads(&tiny_qlora_model(&gpu, DType::F32, true, 0.1));
    let d32 = grad_rel_diff(&g32, &grads);
    eprintln!("f32: loss {loss32} vs {loss}, gradients {d32:e}");
    assert!(
        (loss32 - loss).abs() <= 1e-4 * loss.abs().max(1.0),
        "f32 loss {loss32} vs {loss}"
    );
    assert!(d32 < 1e-4, "f32 gradients differ by {d32:e}");
    let (loss16, g16) = loss_and_lora_grads(&tiny_qlora_model(&gpu, DType::BF16, true, 0.1));
    let d16 = grad_rel_diff(&g16, &grads);
    eprintln!("bf16: loss {loss16} vs {loss}, gradients {d16:e}");
    assert!(
        (loss16 - loss).abs() <= 0.05 * loss.abs().max(1.0),
        "bf16 loss {loss16} vs {loss}"
    );
    assert!(d16 < 0.05, "bf16 gradients differ by {d16:e}");
}

#[test]
fn checkpointing_on_the_gpu_reproduces_the_plain_gradients() {
    let Some(gpu) = gpu() else { return };
    let (_, plain) = loss_and_lora_grads(&tiny_qlora_model(&gpu, DType::BF16, true, 0.1));
    let mut ck = tiny_qlora_model(&gpu, DType::BF16, true, 0.1);
    ck.set_gradient_checkpointing(true);
    let (_, grads, recomputed) = loss_grads_recomputed(&ck);
    assert_eq!(recomputed, grads.len());
    let d = grad_rel_diff(&grads, &plain);
    eprintln!("checkpointed vs plain (bf16): {d:e}");
    assert!(d < 1e-2, "checkpointed gradients differ by {d:e}");
}
