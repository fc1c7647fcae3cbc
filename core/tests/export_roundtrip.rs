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
        let a = (Tensor::randn(0f32, 1.0, (4, inp), &dev).unwrap() * 0.1).unwrap();
        let b = (Tensor::randn(0f32, 1.0, (out, 4), &dev).unwrap() * (0.05 + 0.001 * i as f64)).unwrap();
        lin.set_lora(Some(LoraLayer::new(a, b, 2.0).unwrap()));
    }
    model
}

fn export(model: &Model, quant: &str) -> Model {
    let opts = ExportOptions { quant: parse_quant(quant).unwrap(), fallback: parse_quant("q8_0").unwrap(), embed_quant: parse_quant(quant).unwrap() };
    let mut buf = Cursor::new(Vec::new());
    let report = export_gguf(model, &Default::default(), &[], &opts, &mut buf, &mut |_, _| {}).unwrap();
    assert_eq!(report.tensors.len(), 2 + 3 * 9 + 1, "embedding, 9 per layer, final norm, untied head");
    let file = GgufFile::from_bytes(Bytes::from(buf.into_inner()), "export.gguf").unwrap();
    let mut cfg = file.config().unwrap();
    // GGUF stores eps as f32.
    assert!((cfg.rms_norm_eps - model.config().rms_norm_eps).abs() < 1e-9);
    cfg.rms_norm_eps = model.config().rms_norm_eps;
    // llama.cpp files Mistral under the `llama` architecture.
    assert_eq!(cfg.architecture, "llama");
    cfg.architecture = model.config().architecture.clone();
    assert_eq!(&cfg, model.config(), "metadata round trip");
    Model::new(cfg.clone(), file.weights(&cfg, BaseFormat::AsStored, &Device::Cpu).unwrap(), &Device::Cpu).unwrap()
}

fn ids() -> Tensor {
    let r = candle_core::safetensors::load(shared().join("peer/out/tiny-mistral/reference_logits.safetensors"), &Device::Cpu).unwrap();
    r["input_ids"].to_dtype(DType::U32).unwrap()
}

fn logits(m: &Model, ids: &Tensor) -> Vec<f32> {
    m.forward(ids, 0, None).unwrap().flatten_all().unwrap().to_vec1().unwrap()
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
    let model = tiny_with_adapter();
    let prompt: Vec<u32> = ids().i(0).unwrap().to_vec1::<u32>().unwrap()[..12].to_vec();
    let merged = export(&model, "q8_0");
    assert_eq!(greedy(&merged, &prompt, 12), greedy(&model, &prompt, 12));
}
