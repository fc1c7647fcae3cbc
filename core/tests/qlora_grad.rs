//! Gradients through a LoRA layer over frozen NF4 / GGUF-quantized / dense bases:
//! autograd against central finite differences.
//!
//! The loss is `½‖y‖²` with `y = x·deq(W)ᵀ + s·(x·Aᵀ)·Bᵀ`, computed in f64
//! (A and B are f32 master weights, cast up in the forward). The loss is
//! quadratic in each of A, B and x, so central differences are exact up to
//! rounding: the tolerance is 1e-6 relative to the largest gradient entry.

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor, Var};
use sqlora_core::linear::Linear;
use sqlora_core::lora::{LoraConfig, LoraLayer};
use sqlora_core::nf4::Nf4Tensor;

const OUT: usize = 12;
const IN: usize = 128;
const R: usize = 4;

fn pseudo(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 33) as f32 / (1u64 << 31) as f32 - 0.5) * 2.0 * scale
        })
        .collect()
}

fn weight() -> Tensor {
    Tensor::from_vec(pseudo(OUT * IN, 1, 1.0), (OUT, IN), &Device::Cpu).unwrap()
}

fn lora(a: &[f32], b: &[f32]) -> LoraLayer {
    let a = Tensor::from_slice(a, (R, IN), &Device::Cpu).unwrap();
    let b = Tensor::from_slice(b, (OUT, R), &Device::Cpu).unwrap();
    LoraLayer::new(a, b, 2.0).unwrap().into_trainable().unwrap()
}

fn loss_of(linear: &Linear, x: &Tensor) -> Tensor {
    let y = linear.forward(x).unwrap();
    (y.sqr().unwrap().sum_all().unwrap() * 0.5).unwrap()
}

fn scalar(t: &Tensor) -> f64 {
    t.to_scalar::<f64>().unwrap()
}

fn vec_of(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap()
}

fn assert_close(what: &str, autograd: &[f64], fd: &[(usize, f64)]) {
    let scale = autograd.iter().fold(0f64, |m, v| m.max(v.abs()));
    assert!(scale > 0.0, "{what}: zero gradient");
    for &(i, g) in fd {
        let err = (autograd[i] - g).abs() / scale;
        assert!(
            err < 1e-6,
            "{what}[{i}]: autograd {} vs finite difference {g} (rel {err:e})",
            autograd[i]
        );
    }
}

#[test]
fn lora_over_nf4_base_matches_finite_differences() {
    let base = Nf4Tensor::quantize(&weight()).unwrap();
    let a = pseudo(R * IN, 2, 0.1);
    let b = pseudo(OUT * R, 3, 0.1);
    let x0 = pseudo(2 * 3 * IN, 4, 1.0).iter().map(|&v| v as f64).collect::<Vec<_>>();
    let make = |a: &[f32], b: &[f32]| {
        let mut l = Linear::nf4(base.clone());
        l.set_lora(Some(lora(a, b)));
        l
    };

    let x = Var::from_vec(x0.clone(), (2, 3, IN), &Device::Cpu).unwrap();
    let linear = make(&a, &b);
    let loss = loss_of(&linear, x.as_tensor());
    let grads = loss.backward().unwrap();
    let l = linear.lora().unwrap();
    let ga = vec_of(grads.get(&l.a).expect("no gradient for A"));
    let gb = vec_of(grads.get(&l.b).expect("no gradient for B"));
    let gx = vec_of(grads.get(x.as_tensor()).expect("no gradient for x"));

    let x_t = |x: &[f64]| Tensor::from_slice(x, (2, 3, IN), &Device::Cpu).unwrap();
    let eps = 1e-3f32;
    // A and B: perturb the f32 values; the real step is what f32 could represent.
    let fd_param = |which: char, i: usize| {
        let (mut ap, mut am, mut bp, mut bm) = (a.clone(), a.clone(), b.clone(), b.clone());
        let (p, m, orig) = match which {
            'a' => (&mut ap[i], &mut am[i], a[i]),
            _ => (&mut bp[i], &mut bm[i], b[i]),
        };
        *p = orig + eps;
        *m = orig - eps;
        let h = *p as f64 - *m as f64;
        let lp = scalar(&loss_of(&make(&ap, &bp), &x_t(&x0)));
        let lm = scalar(&loss_of(&make(&am, &bm), &x_t(&x0)));
        (lp - lm) / h
    };
    let idx_a = [0, 5, 130, 257, R * IN - 1];
    let idx_b = [0, 7, 20, OUT * R - 1];
    assert_close(
        "dL/dA",
        &ga,
        &idx_a.iter().map(|&i| (i, fd_param('a', i))).collect::<Vec<_>>(),
    );
    assert_close(
        "dL/dB",
        &gb,
        &idx_b.iter().map(|&i| (i, fd_param('b', i))).collect::<Vec<_>>(),
    );

    let fd_x = |i: usize| {
        let h = 1e-4;
        let (mut p, mut m) = (x0.clone(), x0.clone());
        p[i] += h;
        m[i] -= h;
        (scalar(&loss_of(&linear, &x_t(&p))) - scalar(&loss_of(&linear, &x_t(&m)))) / (2.0 * h)
    };
    let idx_x = [0, 1, 200, 511, 2 * 3 * IN - 1];
    assert_close("dL/dx", &gx, &idx_x.iter().map(|&i| (i, fd_x(i))).collect::<Vec<_>>());
}

/// The base gradient is `g · deq(W)` whatever form W is held in, and W gets none.
#[test]
fn every_base_form_passes_the_input_gradient() {
    let w = weight();
    let q8 = QTensor::quantize(&w, GgmlDType::Q8_0).unwrap();
    let nf4 = Nf4Tensor::quantize(&w).unwrap();
    let x0 = Tensor::from_vec(pseudo(5 * IN, 9, 1.0), (5, IN), &Device::Cpu).unwrap();
    for linear in [
        Linear::dense(w.clone(), None),
        Linear::quantized(q8).unwrap(),
        Linear::nf4(nf4),
    ] {
        let deq = linear.dequantize(&Device::Cpu).unwrap();
        let x = Var::from_tensor(&x0).unwrap();
        let y = linear.forward(x.as_tensor()).unwrap();
        let want_y = x0.matmul(&deq.t().unwrap()).unwrap();
        let dy = (y.clone() - &want_y)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(dy < 1e-4, "forward differs from x·deq(W)ᵀ by {dy}");
        let grads = y.sum_all().unwrap().backward().unwrap();
        let gx = grads
            .get(x.as_tensor())
            .expect("input gradient missing (QMatMul would drop it)");
        let want = Tensor::ones((5, OUT), DType::F32, &Device::Cpu)
            .unwrap()
            .matmul(&deq)
            .unwrap();
        let d = (gx - want)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(d < 1e-4, "input gradient differs from g·deq(W) by {d}");
        if let sqlora_core::linear::BaseWeight::Dense(w) = linear.base() {
            assert!(grads.get(w).is_none(), "the frozen weight got a gradient");
        }
    }
}

/// A LoRA layer sees gradients through a GGUF-quantized base in the layer after it.
#[test]
fn lora_upstream_of_a_quantized_layer_gets_gradients() {
    let cfg = LoraConfig {
        r: 2,
        alpha: 4.0,
        dropout: 0.0,
        ..Default::default()
    };
    let w1 = weight();
    let w2 = Tensor::from_vec(pseudo(OUT * OUT, 5, 1.0), (OUT, OUT), &Device::Cpu).unwrap();
    let mut first = Linear::nf4(Nf4Tensor::quantize(&w1).unwrap());
    let mut l = LoraLayer::init("model.layers.0.self_attn.q_proj", OUT, IN, &cfg, 3, &Device::Cpu).unwrap();
    // A non-zero B, still a variable, so A's gradient is non-zero.
    l.b = Tensor::ones((OUT, 2), DType::F32, &Device::Cpu).unwrap();
    let l = l.into_trainable().unwrap();
    first.set_lora(Some(l));
    let second =
        Linear::quantized(QTensor::quantize(&w2.pad_with_zeros(1, 0, 32 - OUT).unwrap(), GgmlDType::Q8_0).unwrap())
            .unwrap();
    let x = Tensor::from_vec(pseudo(3 * IN, 6, 1.0), (3, IN), &Device::Cpu).unwrap();
    let h = first.forward(&x).unwrap().pad_with_zeros(1, 0, 32 - OUT).unwrap();
    let loss = second.forward(&h).unwrap().sqr().unwrap().sum_all().unwrap();
    let grads = loss.backward().unwrap();
    let ga = grads
        .get(&first.lora().unwrap().a)
        .expect("LoRA A got no gradient through the quantized layer");
    let norm = ga.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
    assert!(norm > 0.0);
}
