//! NF4 + double quantization against bitsandbytes' own output
//! (`shared/peer/out/nf4_vectors.safetensors`, made by `peer/nf4_ref.py`).

mod common;

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use common::shared;
use sqlora_core::config::ModelConfig;
use sqlora_core::nf4::{dynamic_map, nf4_model_memory, Nf4Tensor, NF4_CODE};

fn vectors() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(shared().join("peer/out/nf4_vectors.safetensors"), &Device::Cpu).unwrap()
}

fn f32s(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

fn u8s(t: &Tensor) -> Vec<u8> {
    t.flatten_all().unwrap().to_vec1::<u8>().unwrap()
}

#[test]
fn code_tables_equal_bitsandbytes() {
    let v = vectors();
    assert_eq!(f32s(&v["nf4_code"]), NF4_CODE.to_vec());
    let want = f32s(&v["code2_dynamic"]);
    let got = dynamic_map().to_vec();
    let diff: Vec<_> = (0..256)
        .filter(|&i| want[i].to_bits() != got[i].to_bits())
        .map(|i| (i, got[i], want[i]))
        .collect();
    assert!(diff.is_empty(), "dynamic map differs at {diff:?}");
}

#[test]
fn quantize_reproduces_bitsandbytes_bit_for_bit() {
    let v = vectors();
    let q = Nf4Tensor::quantize(&v["input"]).unwrap();
    assert_eq!(q.shape(), &[128, 256]);
    assert_eq!(q.packed(), u8s(&v["packed"]).as_slice(), "packed codes");
    assert_eq!(
        q.offset().to_bits(),
        f32s(&v["absmax_offset"])[0].to_bits(),
        "offset {}",
        q.offset()
    );
    let a2: Vec<u32> = q.absmax2().iter().map(|x| x.to_bits()).collect();
    let a2_want: Vec<u32> = f32s(&v["absmax2"]).iter().map(|x| x.to_bits()).collect();
    assert_eq!(a2, a2_want, "nested absmax");
    let aq_want = u8s(&v["absmax_q"]);
    let bad: Vec<_> = (0..aq_want.len()).filter(|&i| q.absmax_q()[i] != aq_want[i]).collect();
    assert!(bad.is_empty(), "8-bit absmax codes differ at {bad:?}");
    // Serialized form in a bnb checkpoint holds the same bytes.
    assert_eq!(q.absmax_q(), u8s(&v["serialized.absmax"]).as_slice());
    assert_eq!(q.absmax2(), f32s(&v["serialized.nested_absmax"]).as_slice());

    let absmax: Vec<u32> = q.absmax().iter().map(|x| x.to_bits()).collect();
    let absmax_want: Vec<u32> = f32s(&v["absmax_dequant"]).iter().map(|x| x.to_bits()).collect();
    assert_eq!(absmax, absmax_want, "double-dequantized absmax");
}

#[test]
fn dequantize_matches_bitsandbytes() {
    let v = vectors();
    let q = Nf4Tensor::quantize(&v["input"]).unwrap();
    let want = f32s(&v["dequant"]);
    // f32: the exact values; bf16: those values rounded once (relative error ≤ 2⁻⁸).
    for (path, got, rel) in [
        ("f32", q.dequantize(DType::F32).unwrap(), 0.0),
        ("bf16", q.dequantize(DType::BF16).unwrap(), 1.0 / 256.0),
    ] {
        assert_eq!(got.dims(), &[128, 256]);
        assert_eq!(got.dtype(), if rel == 0.0 { DType::F32 } else { DType::BF16 });
        let got = f32s(&got.to_dtype(DType::F32).unwrap());
        let (at, excess) = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs() - (1e-6 + rel * b.abs()))
            .enumerate()
            .fold((0, f32::MIN), |m, (i, d)| if d > m.1 { (i, d) } else { m });
        assert!(
            excess <= 0.0,
            "{path}: |deq - bnb| exceeds its bound by {excess:e} at {at}"
        );
    }
}

#[test]
fn memory_of_smollm2_and_mistral_7b() {
    // SmolLM2-135M: 30 layers of 576/192/1536 projections.
    let smol = ModelConfig { ..smollm2_config() };
    let m = nf4_model_memory(&smol);
    assert_eq!(m.params, 30 * (2 * 576 * 576 + 2 * 576 * 192 + 3 * 576 * 1536));
    let bits = m.bits_per_param();
    assert!((bits - 4.127).abs() < 0.001, "{bits} bits per parameter");
    let m7 = nf4_model_memory(&ModelConfig::mistral_7b());
    assert_eq!(m7.params, 32 * (4096 * 4096 * 2 + 2 * 4096 * 1024 + 3 * 4096 * 14336));
    // ≈ 3.5 GB for 6.98 B projection parameters (vs 14 GB bf16).
    assert!(
        (3.5e9..3.7e9).contains(&(m7.total_bytes() as f64)),
        "{}",
        m7.total_bytes()
    );
    eprintln!(
        "SmolLM2 linears: {} params, NF4+DQ {} bytes ({:.4} bits/param; f32 {}); Mistral-7B linears: {} params, NF4+DQ {} bytes ({:.4} bits/param; bf16 {})",
        m.params, m.total_bytes(), bits, m.f32_bytes(), m7.params, m7.total_bytes(), m7.bits_per_param(), m7.bf16_bytes()
    );
}

fn smollm2_config() -> ModelConfig {
    let text = std::fs::read_to_string(shared().join("peer/out/smollm2-config/config.json")).unwrap();
    ModelConfig::from_hf_json(&text, "smollm2-config/config.json").unwrap()
}

#[test]
fn quantizing_all_smollm2_sized_matrices_is_fast() {
    // 210 matrices of SmolLM2's shapes (106 M values) in well under the budget.
    let cfg = smollm2_config();
    let start = std::time::Instant::now();
    let mut total = 0;
    for (_, [o, i]) in cfg.linear_shapes() {
        let data: Vec<f32> = (0..o * i)
            .map(|k| ((k * 2654435761usize) % 1000) as f32 / 500.0 - 1.0)
            .collect();
        let q = Nf4Tensor::quantize_slice(&data, [o, i]).unwrap();
        total += q.bytes();
    }
    let per_layer = start.elapsed();
    let estimate = per_layer * cfg.num_hidden_layers as u32;
    eprintln!("one layer: {per_layer:?}, 30 layers ≈ {estimate:?}, {total} bytes per layer");
    assert!(estimate.as_secs_f64() < 30.0, "{estimate:?}");
}
