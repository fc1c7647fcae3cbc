//! Paths shared by the core integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

/// `../shared` beside the repository, or `$SQLORA_SHARED`.
pub fn shared() -> PathBuf {
    std::env::var_os("SQLORA_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared"))
}

/// The default base GGUF, located as the CLI does; a missing one fails the
/// test with the command that fetches it.
pub fn smollm2_gguf() -> PathBuf {
    sqlora_core::default_model::existing().unwrap_or_else(|e| panic!("{e}"))
}

pub fn reference_json(rel: &str) -> serde_json::Value {
    let p = shared().join(rel);
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).unwrap()
}

/// ‖a − b‖₂ / ‖b‖₂
pub fn rel_l2(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let num: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
    let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (num / den).sqrt()
}

/// A 2-layer Mistral-shaped decoder with seeded random weights: NF4 (or dense
/// f32) projections, LoRA r 8 (dropout `dropout`) on all seven, B random so
/// every adapter matrix gets a gradient. Built on the CPU, then moved to
/// `device` as training would load it; compute dtype `dtype`.
pub fn tiny_qlora_model(
    device: &candle_core::Device,
    dtype: candle_core::DType,
    nf4: bool,
    dropout: f64,
) -> sqlora_core::model::Model {
    use candle_core::{DType, Device, Tensor, Var};
    use sqlora_core::config::ModelConfig;
    use sqlora_core::linear::Linear;
    use sqlora_core::lora::LoraConfig;
    use sqlora_core::model::{Embedding, LayerWeights, Model, ModelWeights};
    use sqlora_core::nf4::Nf4Tensor;
    let cfg = ModelConfig {
        architecture: "mistral".into(),
        vocab_size: 96,
        hidden_size: 64,
        intermediate_size: 128,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        head_dim: 16,
        rope_theta: 10000.0,
        rms_norm_eps: 1e-5,
        sliding_window: Some(6),
        max_position_embeddings: 64,
        tie_word_embeddings: false,
        bos_token_id: Some(1),
        eos_token_id: Some(2),
    };
    let mut seed = 1u64;
    let mut rand = |shape: (usize, usize), scale: f32| {
        seed += 1;
        let mut s = seed;
        let v: Vec<f32> = (0..shape.0 * shape.1)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
            })
            .collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    };
    let layers = (0..cfg.num_hidden_layers)
        .map(|_| LayerWeights {
            input_layernorm: (rand((1, 64), 0.2).reshape(64).unwrap() + 1.0)
                .unwrap()
                .to_device(device)
                .unwrap(),
            post_attention_layernorm: (rand((1, 64), 0.2).reshape(64).unwrap() + 1.0)
                .unwrap()
                .to_device(device)
                .unwrap(),
            linears: cfg.linear_shapes().map(|(_, [o, i])| {
                let w = rand((o, i), 0.3);
                if nf4 {
                    Linear::nf4(Nf4Tensor::quantize(&w).unwrap().to_device(device).unwrap())
                } else {
                    Linear::dense(w.to_device(device).unwrap(), None)
                }
            }),
        })
        .collect();
    let w = ModelWeights {
        embed_tokens: Embedding::Dense(rand((96, 64), 1.0).to_device(device).unwrap()),
        layers,
        norm: Tensor::ones(64, DType::F32, device).unwrap(),
        lm_head: Some(Linear::dense(rand((96, 64), 0.3).to_device(device).unwrap(), None)),
    };
    let mut model = Model::new(cfg, w, device).unwrap();
    model.set_dtype(dtype).unwrap();
    let lora = LoraConfig {
        r: 8,
        alpha: 16.0,
        dropout,
        ..Default::default()
    };
    sqlora_core::adapter::attach_trainable(model.linears_mut(), &lora, 5, device).unwrap();
    for (_, l) in model.linears_mut() {
        l.set_train(true);
        let b = l.lora().unwrap().b.clone();
        let (o, r) = b.dims2().unwrap();
        Var::from_tensor(&b)
            .unwrap()
            .set(&rand((o, r), 0.2).to_device(device).unwrap())
            .unwrap();
    }
    model
}

/// `Σ p·logits` for fixed random `p` over fixed ids, and the gradient of every
/// LoRA matrix (model order, A then B), checkpointed layers' included; f64 on the host.
pub fn loss_and_lora_grads(model: &sqlora_core::model::Model) -> (f64, Vec<Vec<f64>>) {
    let (loss, grads, _) = loss_grads_recomputed(model);
    (loss, grads)
}

/// [`loss_and_lora_grads`] and how many gradients came from recomputed layers.
pub fn loss_grads_recomputed(model: &sqlora_core::model::Model) -> (f64, Vec<Vec<f64>>, usize) {
    use candle_core::{DType, Tensor};
    let device = model.device();
    let ids: Vec<u32> = (0..2 * 12).map(|i| (i * 37 + 5) % 96).collect();
    let ids = Tensor::from_vec(ids, (2, 12), device).unwrap();
    let logits = model.forward(&ids, 0, None).unwrap();
    let n = logits.elem_count();
    let p: Vec<f32> = (0..n).map(|i| (((i * 7919) % 201) as f32 - 100.0) / 100.0).collect();
    let p = Tensor::from_vec(p, logits.shape(), device).unwrap();
    let loss = (logits * p).unwrap().sum_all().unwrap();
    let mut grads = loss.backward().unwrap();
    let recomputed = model.take_checkpoint_grads();
    let n_recomputed = recomputed.len();
    for (t, g) in recomputed {
        let sum = match grads.remove(&t) {
            Some(a) => (a + g).unwrap(),
            None => g,
        };
        grads.insert(&t, sum);
    }
    let flat = |t: &Tensor| -> Vec<f64> {
        t.to_dtype(DType::F64)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    };
    let mut out = vec![];
    for (name, l) in model.linears() {
        let lora = l.lora().unwrap();
        for m in [&lora.a, &lora.b] {
            let g = grads.get(m).unwrap_or_else(|| panic!("{name}: no LoRA gradient"));
            out.push(flat(g));
        }
    }
    (flat(&loss)[0], out, n_recomputed)
}

/// max |a − b| over max |b|, across all gradient tensors.
pub fn grad_rel_diff(a: &[Vec<f64>], b: &[Vec<f64>]) -> f64 {
    let scale = b.iter().flatten().fold(0f64, |m, v| m.max(v.abs()));
    let diff = a
        .iter()
        .flatten()
        .zip(b.iter().flatten())
        .fold(0f64, |m, (x, y)| m.max((x - y).abs()));
    diff / scale
}
