//! QLoRA on SmolLM2-135M against Python peft/bitsandbytes
//! (`shared/peer/qlora_step.py`, `adapter_ref.py`): the peer's adapter loads and
//! gives its logits; one forward/backward gives its loss and gradient norms over
//! the f32 base and over the NF4 double-quantized base; merging is exact.

mod common;

use candle_core::{DType, Device, IndexOp, Tensor};
use common::{reference_json, rel_l2, shared, smollm2_gguf};
use sqlora_core::adapter::{self, Adapter};
use sqlora_core::linear::BaseWeight;
use sqlora_core::model::Model;
use sqlora_core::weights::{BaseFormat, GgufFile};

fn f32_model() -> Model {
    let f = GgufFile::open(&smollm2_gguf()).unwrap();
    f.checkpoint(BaseFormat::F32, &Device::Cpu)
        .unwrap()
        .into_model(&Device::Cpu)
        .unwrap()
        .0
}

fn example_dir() -> std::path::PathBuf {
    shared().join("peer/out/adapter_example")
}

fn ids(v: &serde_json::Value) -> Vec<i64> {
    v.as_array().unwrap().iter().map(|x| x.as_i64().unwrap()).collect()
}

fn floats(v: &serde_json::Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

#[test]
fn peer_adapter_gives_peft_logits() {
    let reference = reference_json("peer/out/adapter_example_reference.json");
    let mut model = f32_model();
    let adapter = adapter::load_into(&mut model, &example_dir()).unwrap();
    assert_eq!(adapter.weights.len(), 210);
    assert_eq!(adapter.scaling(), 2.0);
    let prompt: Vec<u32> = ids(&reference["prompt_ids"]).iter().map(|&i| i as u32).collect();
    let x = Tensor::new(prompt.as_slice(), &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let logits = model
        .forward_last(&x, 0, None)
        .unwrap()
        .i(0)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let r = &reference["logits_last_position"];
    let top5: Vec<usize> = ids(&r["top5_ids"]).iter().map(|&i| i as usize).collect();
    let mut got: Vec<f32> = logits[..8].to_vec();
    got.extend(top5.iter().map(|&i| logits[i]));
    let mut want = floats(&r["first8"]);
    want.extend(floats(&r["top5_values"]));
    let err = rel_l2(&got, &want);
    assert!(err < 1e-3, "relative error {err:e}: {got:?} vs {want:?}");
    let argmax = logits
        .iter()
        .enumerate()
        .fold(0, |m, (i, v)| if *v > logits[m] { i } else { m });
    assert_eq!(argmax as i64, r["argmax"].as_i64().unwrap());
}

#[test]
fn merged_model_equals_base_plus_adapter() {
    let mut model = f32_model();
    adapter::load_into(&mut model, &example_dir()).unwrap();
    let x = Tensor::new(
        &[[1u32, 9690, 198, 23428, 985, 12905, 25, 18451, 24078, 2]],
        &Device::Cpu,
    )
    .unwrap();
    let with_adapter = model
        .forward(&x, 0, None)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let mut merged = model.clone();
    assert_eq!(adapter::merge(merged.linears_mut(), &Device::Cpu).unwrap(), 210);
    assert!(merged
        .linears()
        .all(|(_, l)| l.lora().is_none() && matches!(l.base(), BaseWeight::Dense(_))));
    let got = merged
        .forward(&x, 0, None)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let err = rel_l2(&got, &with_adapter);
    assert!(err < 1e-4, "merged vs base+adapter: relative error {err:e}");
    // …and the adapter changes the output, so the comparison means something.
    let base = f32_model()
        .forward(&x, 0, None)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert!(rel_l2(&base, &with_adapter) > 1e-3);
}

/// HF causal-LM loss: logits[:, :-1] against labels[:, 1:], mean over labels ≠ -100.
fn causal_lm_loss(logits: &Tensor, labels: &[Vec<i64>]) -> Tensor {
    let (b, t, v) = logits.dims3().unwrap();
    let (mut rows, mut targets) = (Vec::new(), Vec::new());
    for (i, seq) in labels.iter().enumerate() {
        for p in 0..t - 1 {
            if seq[p + 1] != -100 {
                rows.push((i * t + p) as u32);
                targets.push(seq[p + 1] as u32);
            }
        }
    }
    let n = rows.len();
    let flat = logits.reshape((b * t, v)).unwrap();
    let picked = flat
        .index_select(&Tensor::new(rows.as_slice(), &Device::Cpu).unwrap(), 0)
        .unwrap();
    let logp = candle_nn::ops::log_softmax(&picked, 1).unwrap();
    let tgt = Tensor::new(targets.as_slice(), &Device::Cpu)
        .unwrap()
        .unsqueeze(1)
        .unwrap();
    (logp.gather(&tgt, 1).unwrap().sum_all().unwrap() * (-1.0 / n as f64)).unwrap()
}

fn norm(t: &Tensor) -> f64 {
    t.to_dtype(DType::F64)
        .unwrap()
        .sqr()
        .unwrap()
        .sum_all()
        .unwrap()
        .sqrt()
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
}

/// One forward/backward with the peer's adapter made trainable; compares the loss
/// (1e-4 relative) and layer-0 q_proj lora_A/lora_B gradient norms (1e-3 relative).
fn peft_step(reference_file: &str, nf4: bool) {
    let reference = reference_json(reference_file);
    let mut model = f32_model();
    if nf4 {
        for (_, l) in model.linears_mut() {
            l.to_nf4(&Device::Cpu).unwrap();
        }
        // bitsandbytes' quant state of layer 0 q_proj, recorded by the peer.
        let q = model.linears().next().unwrap().1.base().clone();
        let BaseWeight::Nf4(q) = q else { panic!("not NF4") };
        let st = &reference["nf4_layer0_q_proj"];
        let packed_sum: u64 = q.packed().iter().map(|&b| b as u64).sum();
        assert_eq!(
            packed_sum,
            st["packed_sum"].as_u64().unwrap(),
            "packed bytes of layer 0 q_proj"
        );
        assert_eq!(q.absmax_q().len(), 5184);
        assert_eq!(q.absmax2().len(), 21);
        assert_eq!(q.offset(), st["quant_state"]["nested_offset"].as_f64().unwrap() as f32);
    }
    adapter::load_into(&mut model, &example_dir()).unwrap();
    for (_, l) in model.linears_mut() {
        let trainable = l.lora().unwrap().clone().into_trainable().unwrap();
        l.set_lora(Some(trainable));
        l.set_train(true);
    }
    let batch = &reference["batch"];
    let input: Vec<Vec<u32>> = batch["input_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| ids(s).iter().map(|&i| i as u32).collect())
        .collect();
    let labels: Vec<Vec<i64>> = batch["labels"].as_array().unwrap().iter().map(ids).collect();
    let x = Tensor::new(input, &Device::Cpu).unwrap();
    let logits = model.forward(&x, 0, None).unwrap();
    let loss = causal_lm_loss(&logits, &labels);
    let got = loss.to_scalar::<f32>().unwrap() as f64;
    let want = reference["loss"].as_f64().unwrap();
    eprintln!("{reference_file}: loss {got} (peft {want})");
    assert!(((got - want) / want).abs() < 1e-4, "loss {got} vs peft {want}");

    let grads = loss.backward().unwrap();
    let (_, q) = model.linears().next().unwrap();
    let lora = q.lora().unwrap();
    let gn = &reference["grad_norms"];
    for (which, t) in [("A", &lora.a), ("B", &lora.b)] {
        let key = format!("base_model.model.model.layers.0.self_attn.q_proj.lora_{which}.default.weight");
        let want = gn[&key]["grad_norm"].as_f64().unwrap();
        let got = norm(grads.get(t).unwrap_or_else(|| panic!("no gradient for lora_{which}")));
        eprintln!("layer 0 q_proj lora_{which} grad norm {got} (peft {want})");
        assert!(
            ((got - want) / want).abs() < 1e-3,
            "layer 0 q_proj lora_{which} grad norm {got} vs peft {want}"
        );
    }
}

#[test]
fn peft_step_over_f32_base() {
    peft_step("peer/out/qlora_step_reference.json", false);
}

#[test]
fn peft_step_over_nf4_base() {
    peft_step("peer/out/qlora_step_nf4.json", true);
}

#[test]
fn saved_adapter_has_peft_names_shapes_and_config() {
    let peer = Adapter::load(&example_dir(), &Device::Cpu).unwrap();
    let dir = std::env::temp_dir().join(format!("sqlora-adapter-test-{}", std::process::id()));
    peer.save(&dir).unwrap();
    // Names and shapes as peft wrote them (adapter_example_tensors.json).
    let want = reference_json("peer/out/adapter_example_tensors.json");
    let st = candle_core::safetensors::load(dir.join("adapter_model.safetensors"), &Device::Cpu).unwrap();
    assert_eq!(st.len(), want.as_object().unwrap().len());
    for (name, spec) in want.as_object().unwrap() {
        let t = st.get(name).unwrap_or_else(|| panic!("{name} missing"));
        assert_eq!(
            t.dims(),
            ids(&spec[1]).iter().map(|&d| d as usize).collect::<Vec<_>>().as_slice(),
            "{name}"
        );
        assert_eq!(t.dtype(), DType::F32);
    }
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("adapter_config.json")).unwrap()).unwrap();
    for key in [
        "peft_type",
        "r",
        "lora_alpha",
        "lora_dropout",
        "target_modules",
        "base_model_name_or_path",
        "bias",
        "task_type",
        "use_rslora",
        "fan_in_fan_out",
        "inference_mode",
    ] {
        assert!(cfg.get(key).is_some(), "adapter_config.json lacks {key}");
    }
    assert_eq!(cfg["peft_type"], "LORA");
    assert_eq!(cfg["bias"], "none");
    assert_eq!(cfg["task_type"], "CAUSAL_LM");
    let again = Adapter::load(&dir, &Device::Cpu).unwrap();
    assert_eq!(again.config, peer.config);
    for (k, (a, b)) in &peer.weights {
        let (a2, b2) = &again.weights[k];
        assert_eq!(
            a.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            a2.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
        assert_eq!(
            b.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            b2.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
    }
    // A fresh adapter from a LoRA config writes peft's fields too.
    let fresh =
        sqlora_core::adapter::AdapterConfig::from_lora(&Default::default(), "HuggingFaceTB/SmolLM2-135M-Instruct");
    let v = serde_json::to_value(&fresh).unwrap();
    assert_eq!(v["r"], 64);
    assert_eq!(v["lora_alpha"], 128.0);
    assert_eq!(v["target_modules"].as_array().unwrap().len(), 7);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_adapter_files_get_clear_errors() {
    let peer = Adapter::load(&example_dir(), &Device::Cpu).unwrap();
    let dir = std::env::temp_dir().join(format!("sqlora-adapter-bad-{}", std::process::id()));
    peer.save(&dir).unwrap();
    std::fs::write(dir.join("adapter_config.json"), "{\"peft_type\": \"LORA\", ").unwrap();
    let e = Adapter::load(&dir, &Device::Cpu).unwrap_err().to_string();
    assert!(e.contains("adapter_config.json") && e.contains("malformed JSON"), "{e}");

    // Drop one B matrix.
    let mut one_short = peer.clone();
    let (a, _) = one_short.weights["model.layers.3.mlp.up_proj"].clone();
    one_short.weights.remove("model.layers.3.mlp.up_proj");
    let mut bytes_map = std::collections::HashMap::new();
    for (k, (a, b)) in &one_short.weights {
        bytes_map.insert(sqlora_core::adapter::peft_name(k, 'A'), a.clone());
        bytes_map.insert(sqlora_core::adapter::peft_name(k, 'B'), b.clone());
    }
    bytes_map.insert(sqlora_core::adapter::peft_name("model.layers.3.mlp.up_proj", 'A'), a);
    candle_core::safetensors::save(&bytes_map, dir.join("adapter_model.safetensors")).unwrap();
    let cfg = peer.config_json().unwrap();
    let st = std::fs::read(dir.join("adapter_model.safetensors")).unwrap();
    let e = Adapter::from_bytes(&cfg, &st, &dir, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("model.layers.3.mlp.up_proj.lora_B") && e.contains("adapter_model.safetensors"),
        "{e}"
    );

    // An adapter for another model: shapes do not fit.
    let mut wrong = peer.clone();
    let (a, b) = wrong.weights["model.layers.0.self_attn.q_proj"].clone();
    wrong.weights.insert(
        "model.layers.0.self_attn.q_proj".into(),
        (a.narrow(1, 0, 64).unwrap(), b),
    );
    let mut model = f32_model();
    let e = wrong.apply(model.linears_mut()).unwrap_err().to_string();
    assert!(e.contains("q_proj.lora_A") && e.contains("shape"), "{e}");

    // A diverged adapter: one NaN in one B matrix is refused at load.
    let mut diverged = peer.clone();
    let (a, b) = diverged.weights["model.layers.5.mlp.down_proj"].clone();
    let mut bv = b.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    bv[7] = f32::NAN;
    let b = Tensor::from_vec(bv, b.dims(), &Device::Cpu).unwrap();
    diverged.weights.insert("model.layers.5.mlp.down_proj".into(), (a, b));
    diverged.save(&dir).unwrap();
    let e = Adapter::load(&dir, &Device::Cpu).unwrap_err().to_string();
    assert!(
        e.contains("down_proj.lora_B") && e.contains("non-finite") && e.contains("adapter_model.safetensors"),
        "{e}"
    );

    // A module the model lacks (layer 30 of a 30-layer model) is refused where it is applied.
    let mut extra = peer.clone();
    let ab = extra.weights["model.layers.0.self_attn.q_proj"].clone();
    extra.weights.insert("model.layers.30.self_attn.q_proj".into(), ab);
    let mut model = f32_model();
    let e = extra.apply(model.linears_mut()).unwrap_err().to_string();
    assert!(
        e.contains("model.layers.30.self_attn.q_proj") && e.contains("does not have"),
        "{e}"
    );

    // A config naming a target that is no linear projection is refused at load.
    let mut cfg: serde_json::Value = serde_json::from_str(&peer.config_json().unwrap()).unwrap();
    cfg["target_modules"] = serde_json::json!(["q_proj", "embed_tokens"]);
    let st = peer.weights_bytes().unwrap();
    let e = Adapter::from_bytes(&cfg.to_string(), &st, &dir, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(e.contains("adapter_config.json") && e.contains("embed_tokens"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}
