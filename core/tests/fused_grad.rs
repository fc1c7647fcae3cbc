//! The fused training ops (RMSNorm, RoPE, softmax) against candle's composed
//! forms: the same values forward and the same gradients backward (f32, the
//! CPU training dtype; tolerance 1e-5 of the largest entry).
//! The composed forms' gradients come from candle's own autograd, so the two
//! are independent derivations.

use candle_core::{DType, Device, Tensor, Var, D};
use sqlora_core::fused;

fn pseudo(shape: &[usize], seed: u64) -> Tensor {
    let n: usize = shape.iter().product();
    let mut s = seed;
    let v: Vec<f32> = (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        })
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

/// Value and ∂/∂x of `Σ p·f(x)` for a fixed random `p`.
fn value_and_grad(x: &Tensor, f: impl Fn(&Tensor) -> Tensor) -> (Vec<f64>, Vec<f64>) {
    let var = Var::from_tensor(x).unwrap();
    let y = f(var.as_tensor());
    let p = pseudo(y.dims(), 99);
    let loss = (&y * &p).unwrap().sum_all().unwrap();
    let grads = loss.backward().unwrap();
    let g = grads.get(var.as_tensor()).expect("gradient reaches x");
    let flat = |t: &Tensor| {
        t.flatten_all()
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap()
            .to_vec1::<f64>()
            .unwrap()
    };
    (flat(&y), flat(g))
}

fn assert_close(what: &str, a: &[f64], b: &[f64], tol: f64) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    let scale = b.iter().fold(0f64, |m, v| m.max(v.abs()));
    assert!(scale > 0.0, "{what}: all zero");
    let worst = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f64, f64::max);
    assert!(
        worst <= tol * scale,
        "{what}: max difference {worst:e} (scale {scale:e})"
    );
}

fn check(what: &str, x: &Tensor, fused: impl Fn(&Tensor) -> Tensor, composed: impl Fn(&Tensor) -> Tensor) {
    let (yf, gf) = value_and_grad(x, fused);
    let (yc, gc) = value_and_grad(x, composed);
    assert_close(&format!("{what} forward"), &yf, &yc, 1e-5);
    assert_close(&format!("{what} gradient"), &gf, &gc, 1e-5);
}

#[test]
fn rms_norm_matches_the_composed_form() {
    let x = pseudo(&[2, 5, 64], 1);
    let w = (pseudo(&[64], 2) + 1.5).unwrap();
    check(
        "rms_norm",
        &x,
        |x| fused::rms_norm(x, &w, 1e-5).unwrap(),
        |x| candle_nn::ops::rms_norm_slow(x, &w, 1e-5).unwrap(),
    );
}

/// cos/sin tables `[7, 8]` (7 positions, head_dim 16).
fn rotary_tables() -> (Tensor, Tensor) {
    (pseudo(&[7, 8], 4).cos().unwrap(), pseudo(&[7, 8], 5).sin().unwrap())
}

#[test]
fn rope_matches_the_composed_form() {
    let x = pseudo(&[2, 3, 7, 16], 3);
    let (cos, sin) = rotary_tables();
    check(
        "rope",
        &x,
        |x| fused::rope(x, &cos, &sin).unwrap(),
        |x| candle_nn::rotary_emb::rope_slow(x, &cos, &sin).unwrap(),
    );
}

#[test]
fn softmax_matches_the_composed_form_with_a_causal_mask() {
    let scores = (pseudo(&[2, 3, 6, 6], 6) * 4.0).unwrap();
    let mask: Vec<f32> = (0..36)
        .map(|k| if k % 6 <= k / 6 { 0.0 } else { f32::NEG_INFINITY })
        .collect();
    let mask = Tensor::from_vec(mask, (6, 6), &Device::Cpu).unwrap();
    check(
        "softmax",
        &scores,
        |x| fused::softmax_last_dim(&x.broadcast_add(&mask).unwrap()).unwrap(),
        |x| candle_nn::ops::softmax(&x.broadcast_add(&mask).unwrap(), D::Minus1).unwrap(),
    );
}

#[test]
fn non_contiguous_inputs_are_handled() {
    // Attention hands RoPE a transposed view.
    let x = pseudo(&[2, 7, 3, 16], 7);
    let (cos, sin) = rotary_tables();
    check(
        "rope on a transpose",
        &x,
        |x| fused::rope(&x.transpose(1, 2).unwrap(), &cos, &sin).unwrap(),
        |x| candle_nn::rotary_emb::rope_slow(&x.transpose(1, 2).unwrap(), &cos, &sin).unwrap(),
    );
}
