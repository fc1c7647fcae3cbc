//! The training graph's device-generic pieces on the CPU: gradient
//! checkpointing gives the gradients of the plain graph, and bf16 compute (the
//! CUDA default) tracks f32 within bf16's precision. `tests/cuda.rs` repeats
//! these on a GPU.

mod common;

use candle_core::{DType, Device};
use common::{grad_rel_diff, loss_and_lora_grads, loss_grads_recomputed, tiny_qlora_model};

#[test]
fn checkpointing_reproduces_the_plain_gradients() {
    let plain = tiny_qlora_model(&Device::Cpu, DType::F32, true, 0.1);
    let (loss, grads) = loss_and_lora_grads(&plain);
    let mut ck = tiny_qlora_model(&Device::Cpu, DType::F32, true, 0.1);
    ck.set_gradient_checkpointing(true);
    let (loss_ck, grads_ck, recomputed) = loss_grads_recomputed(&ck);
    assert_eq!(grads.len(), 2 * 7 * 2);
    assert_eq!(
        recomputed,
        grads.len(),
        "every adapter gradient comes from a recomputed layer"
    );
    // Same dropout masks, same arithmetic: equal up to summation order.
    assert!(
        (loss - loss_ck).abs() <= 1e-6 * loss.abs().max(1.0),
        "{loss} vs {loss_ck}"
    );
    let d = grad_rel_diff(&grads_ck, &grads);
    assert!(d < 1e-5, "checkpointed gradients differ by {d:e} (relative)");
    // A different dropout stream would change them: the check can fail.
    let other = tiny_qlora_model(&Device::Cpu, DType::F32, true, 0.3);
    assert!(grad_rel_diff(&loss_and_lora_grads(&other).1, &grads) > 1e-3);
}

#[test]
fn bf16_compute_tracks_f32() {
    let (loss32, g32) = loss_and_lora_grads(&tiny_qlora_model(&Device::Cpu, DType::F32, true, 0.0));
    let m16 = tiny_qlora_model(&Device::Cpu, DType::BF16, true, 0.0);
    assert_eq!(m16.dtype(), DType::BF16);
    let (loss16, g16) = loss_and_lora_grads(&m16);
    // bf16 keeps 8 bits of mantissa; through 2 layers the error stays at a few percent.
    assert!(
        (loss16 - loss32).abs() <= 0.05 * loss32.abs().max(1.0),
        "{loss16} vs {loss32}"
    );
    let d = grad_rel_diff(&g16, &g32);
    assert!(d < 0.05, "bf16 gradients differ from f32 by {d:e} (relative)");
}
