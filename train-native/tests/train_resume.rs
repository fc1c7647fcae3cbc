//! End-to-end `sqlora train` on a tiny random llama (SmolLM2's tokenizer, real
//! Spider data): a run killed after a checkpoint and resumed ends with the
//! same adapter, bit for bit, as an uninterrupted run.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use candle_core::{DType, Device, Tensor};
use common::shared;

/// An HF model directory: tiny llama config, random safetensors, SmolLM2's tokenizer.
fn tiny_model_dir(root: &Path) -> PathBuf {
    let dir = root.join("tiny-llama");
    std::fs::create_dir_all(&dir).unwrap();
    let (vocab, h, inter, layers) = (49152usize, 16usize, 32usize, 2usize);
    let config = serde_json::json!({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
        "vocab_size": vocab, "hidden_size": h, "intermediate_size": inter, "num_hidden_layers": layers,
        "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 8, "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0, "max_position_embeddings": 512, "tie_word_embeddings": true,
        "bos_token_id": 1, "eos_token_id": 2
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let dev = Device::Cpu;
    let mut t: HashMap<String, Tensor> = HashMap::new();
    // Deterministic "random" weights (a fixed hash of the index), so both runs share them anyway.
    let mut k = 0u64;
    let mut rand = |shape: (usize, usize), scale: f32| {
        let v: Vec<f32> = (0..shape.0 * shape.1)
            .map(|_| {
                k = k.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((k >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 2.0 * scale
            })
            .collect();
        Tensor::from_vec(v, shape, &dev).unwrap()
    };
    t.insert("model.embed_tokens.weight".into(), rand((vocab, h), 1.0));
    t.insert("model.norm.weight".into(), Tensor::ones(h, DType::F32, &dev).unwrap());
    for i in 0..layers {
        let p = format!("model.layers.{i}");
        for (name, shape) in [
            ("self_attn.q_proj", (16, h)),
            ("self_attn.k_proj", (8, h)),
            ("self_attn.v_proj", (8, h)),
            ("self_attn.o_proj", (h, 16)),
            ("mlp.gate_proj", (inter, h)),
            ("mlp.up_proj", (inter, h)),
            ("mlp.down_proj", (h, inter)),
        ] {
            t.insert(format!("{p}.{name}.weight"), rand(shape, 0.3));
        }
        t.insert(
            format!("{p}.input_layernorm.weight"),
            Tensor::ones(h, DType::F32, &dev).unwrap(),
        );
        t.insert(
            format!("{p}.post_attention_layernorm.weight"),
            Tensor::ones(h, DType::F32, &dev).unwrap(),
        );
    }
    candle_core::safetensors::save(&t, dir.join("model.safetensors")).unwrap();
    let tok = shared().join("peer/out/smollm2-tokenizer");
    for f in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(tok.join(f), dir.join(f)).unwrap();
    }
    dir
}

fn train_cmd(model: &Path, out: &Path) -> Command {
    let spider = shared().join("data/spider");
    let mut c = Command::new(env!("CARGO_BIN_EXE_sqlora"));
    c.arg("train").env("RAYON_NUM_THREADS", "1");
    for s in [
        format!("base={}", model.display()),
        "quantization=none".into(),
        format!("train_data={}", spider.join("train_spider.jsonl").display()),
        format!("eval_data={}", spider.join("dev.json").display()),
        format!("tables={}", spider.join("tables.json").display()),
        format!("output_dir={}", out.display()),
        "limit_train=24".into(),
        "limit_eval=6".into(),
        "max_length=128".into(),
        "schema_budget=64".into(),
        "batch_size=2".into(),
        "grad_accum=2".into(),
        "max_steps=6".into(),
        "save_steps=2".into(),
        "eval_steps=3".into(),
        "logging_steps=1".into(),
        "lora_r=4".into(),
        "lora_alpha=8".into(),
        "learning_rate=1e-2".into(),
        "seed=7".into(),
    ] {
        c.arg("--set").arg(s);
    }
    c
}

#[test]
fn killed_and_resumed_run_ends_bit_identical() {
    let root = std::env::temp_dir().join(format!("sqlora-train-resume-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let model = tiny_model_dir(&root);

    // Uninterrupted reference run, with JSON logs.
    let a = root.join("a");
    let o = train_cmd(&model, &a).arg("--json").output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8(o.stdout).unwrap();
    let lines: Vec<serde_json::Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.last().unwrap()["summary"]["steps"], 6);
    assert!(lines.iter().any(|l| l["step"] == 0 && l["eval_loss"].is_number()));
    assert!(a.join("loss_curve.svg").is_file() && a.join("sqlora_prompt.json").is_file());

    // Same run, slowed down, killed (SIGKILL) once step 2's checkpoint exists.
    let b = root.join("b");
    let mut child = train_cmd(&model, &b)
        .arg("--quiet")
        .env("SQLORA_TRAIN_STEP_DELAY_MS", "700")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while !b.join("checkpoint-000002").is_dir() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "run b ended before its first checkpoint"
        );
        assert!(t0.elapsed() < Duration::from_secs(300), "no checkpoint after 300 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        !b.join("adapter_model.safetensors").exists(),
        "run b finished before the kill: the test proves nothing"
    );
    assert!(!b.join("checkpoint-000006").exists());

    let o = train_cmd(&model, &b).arg("--resume").arg("--quiet").output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let want = std::fs::read(a.join("adapter_model.safetensors")).unwrap();
    let got = std::fs::read(b.join("adapter_model.safetensors")).unwrap();
    assert!(want == got, "resumed adapter differs from the uninterrupted one");
    // The resumed run's metrics continue the killed run's without duplicates.
    let steps = |d: &Path| -> Vec<u64> {
        std::fs::read_to_string(d.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["step"]
                    .as_u64()
                    .unwrap()
            })
            .collect()
    };
    assert_eq!(steps(&a), steps(&b));
    // Only the newest keep_checkpoints (3) remain.
    let ckpts = std::fs::read_dir(&b)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("checkpoint-")
        })
        .count();
    assert_eq!(ckpts, 3);
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn print_config_and_bad_keys() {
    let o = Command::new(env!("CARGO_BIN_EXE_sqlora"))
        .args(["train", "--print-config", "--set", "lora_r=8"])
        .output()
        .unwrap();
    assert!(o.status.success());
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(
        text.contains("lora_r = 8") && text.contains("learning_rate = 0.0002"),
        "{text}"
    );
    let o = Command::new(env!("CARGO_BIN_EXE_sqlora"))
        .args(["train", "--print-config", "--set", "lora_rank=8"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("lora_rank"));
}
