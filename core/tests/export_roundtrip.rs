//! Export: base + adapter in memory against the merged, re-quantized GGUF.

mod common;

use std::io::Cursor;

use candle_core::{DType, Device, IndexOp, Tensor};
use common::{rel_l2, shared};
use sqlora_core::export::{export_gguf, parse_quant, ExportOptions};
use sqlora_core::lora::LoraLayer;
use sqlora_core::model::Model;
use sqlora_core::weights::{BaseFormat, Bytes, GgufFile, HfCheckpoint};

/// Tiny Mistral with a random LoRA on every projection (B non-zero, so the merge matters).
fn tiny_with_adapter() -> Model {
    let dev = Device::Cpu;
    let ck = HfCheckpoint::open(&shared().join("peer/out/tiny-mistral")).unwrap();
    let mut model = Model::new(ck.config().clone(), ck.weights(BaseFormat::F32, &dev).unwrap(), &dev).unwrap();
    for (i, (_, lin)) in model.linears_mut().enumerate() {
        let (out, inp) = lin.shape();
        // Deterministic pseudo-random values: candle's CPU randn cannot be seeded.
        let a = wave(4, inp, i as f32, &dev).affine(0.1, 0.0).unwrap();
        let b = wave(out, 4, 7.0 + i as f32, &dev).affine(0.05, 0.0).unwrap();
        lin.set_lora(Some(LoraLayer::new(a, b, 2.0).unwrap()));
    }
    model
}

fn wave(rows: usize, cols: usize, phase: f32, dev: &Device) -> Tensor {
    let v: Vec<f32> = (0..rows * cols)
        .map(|k| ((k as f32 * 0.7548777 + phase) * 12.9898).sin())
        .collect();
    Tensor::from_vec(v, (rows, cols), dev).unwrap()
}

fn export(model: &Model, quant: &str) -> Model {
    let opts = ExportOptions {
        quant: parse_quant(quant).unwrap(),
        fallback: parse_quant("q8_0").unwrap(),
        embed_quant: parse_quant(quant).unwrap(),
    };
    let mut buf = Cursor::new(Vec::new());
    let report = export_gguf(model, &Default::default(), &[], &opts, &mut buf, &mut |_, _| {}).unwrap();
    assert_eq!(
        report.tensors.len(),
        2 + 3 * 9 + 1,
        "embedding, 9 per layer, final norm, untied head"
    );
    let file = GgufFile::from_bytes(Bytes::from(buf.into_inner()), "export.gguf").unwrap();
    let mut cfg = file.config().unwrap();
    // GGUF stores eps as f32.
    assert!((cfg.rms_norm_eps - model.config().rms_norm_eps).abs() < 1e-9);
    cfg.rms_norm_eps = model.config().rms_norm_eps;
    // llama.cpp files Mistral under the `llama` architecture.
    assert_eq!(cfg.architecture, "llama");
    cfg.architecture = model.config().architecture.clone();
    assert_eq!(&cfg, model.config(), "metadata round trip");
    Model::new(
        cfg.clone(),
        file.weights(&cfg, BaseFormat::AsStored, &Device::Cpu).unwrap(),
        &Device::Cpu,
    )
    .unwrap()
}

fn ids() -> Tensor {
    let r = candle_core::safetensors::load(
        shared().join("peer/out/tiny-mistral/reference_logits.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    r["input_ids"].to_dtype(DType::U32).unwrap()
}

fn logits(m: &Model, ids: &Tensor) -> Vec<f32> {
    m.forward(ids, 0, None)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

fn greedy(m: &Model, prompt: &[u32], n: usize) -> Vec<u32> {
    let mut seq = prompt.to_vec();
    for _ in 0..n {
        let x = Tensor::new(seq.as_slice(), &Device::Cpu).unwrap().unsqueeze(0).unwrap();
        let l = m.forward_last(&x, 0, None).unwrap();
        seq.push(l.i(0).unwrap().argmax(0).unwrap().to_scalar().unwrap());
    }
    seq
}

#[test]
fn merged_f16_export_matches_base_plus_adapter() {
    let model = tiny_with_adapter();
    let ids = ids();
    let want = logits(&model, &ids);
    let merged = export(&model, "f16");
    let err = rel_l2(&logits(&merged, &ids), &want);
    assert!(err < 1e-3, "f16 export: relative L2 {err:e}");
    // And the adapter matters: without it the logits are far off.
    let mut base = model.clone();
    for (_, l) in base.linears_mut() {
        l.set_lora(None);
    }
    assert!(rel_l2(&logits(&base, &ids), &want) > 1e-2);
}

#[test]
fn q8_0_export_keeps_greedy_tokens() {
    // Teacher-forced along the unmerged model's greedy path: every position whose
    // top-2 logit margin is clear (> 2% of the logit spread) must pick the same
    // token; near-ties may flip under 8-bit rounding (NOTES.md).
    let model = tiny_with_adapter();
    let prompt: Vec<u32> = ids().i(0).unwrap().to_vec1::<u32>().unwrap()[..12].to_vec();
    let merged = export(&model, "q8_0");
    let path = greedy(&model, &prompt, 12);
    let x = Tensor::new(path.as_slice(), &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let want: Vec<Vec<f32>> = model.forward(&x, 0, None).unwrap().i(0).unwrap().to_vec2().unwrap();
    let got: Vec<Vec<f32>> = merged.forward(&x, 0, None).unwrap().i(0).unwrap().to_vec2().unwrap();
    let argmax = |v: &[f32]| v.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0;
    let (mut clear, mut agree) = (0, 0);
    for (w, g) in want.iter().zip(&got).skip(prompt.len() - 1) {
        let mut sorted = w.clone();
        sorted.sort_by(|a, b| b.total_cmp(a));
        let spread = sorted[0] - sorted[sorted.len() - 1];
        let same = argmax(w) == argmax(g);
        agree += usize::from(same);
        if sorted[0] - sorted[1] > 0.02 * spread {
            clear += 1;
            assert!(same, "a clear greedy choice changed after q8_0 export");
        }
    }
    let steps = want.len() - (prompt.len() - 1);
    assert!(
        clear >= steps / 2,
        "too few clear positions ({clear}/{steps}) for the check to mean much"
    );
    assert!(agree * 10 >= steps * 9, "only {agree}/{steps} greedy choices agree");
}
