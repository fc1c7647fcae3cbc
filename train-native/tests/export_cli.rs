//! `sqlora export` end to end: train a (very short) adapter on the default base,
//! merge and re-quantize it into one GGUF, check the file with llama.cpp's own
//! Python reader (`gguf`), and generate from it.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{repo, shared, sqlora, stdout_ok as ok};
use sqlora_core::weights::GgufFile;

/// A one-step adapter on the default base: real training, kept small (r 8, 4 examples).
fn train_adapter(dir: &Path) -> PathBuf {
    let data = shared().join("data/spider");
    let out_dir = dir.join("adapter");
    let sets = [
        format!("train_data=[\"{}\"]", data.join("train_spider.jsonl").display()),
        format!("eval_data=\"{}\"", data.join("dev.json").display()),
        format!("tables=\"{}\"", data.join("tables.json").display()),
        format!("output_dir=\"{}\"", out_dir.display()),
        "limit_train=4".into(),
        "limit_eval=2".into(),
        "batch_size=2".into(),
        "grad_accum=1".into(),
        "max_steps=2".into(),
        "max_length=192".into(),
        "schema_budget=96".into(),
        "lora_r=8".into(),
        "lora_alpha=16".into(),
        "learning_rate=1e-3".into(),
        "eval_steps=0".into(),
        "save_steps=0".into(),
    ];
    let mut args = vec!["train", "--quiet"];
    for s in &sets {
        args.extend(["--set", s.as_str()]);
    }
    ok(&sqlora(&args));
    assert!(out_dir.join("adapter_model.safetensors").exists());
    out_dir
}

/// name -> (type, dims in GGUF order: fastest-varying first), from sqlora's reader.
fn tensors_by_sqlora(path: &Path) -> TensorTable {
    let f = GgufFile::open(path).unwrap();
    f.tensor_infos()
        .iter()
        .map(|(name, info)| {
            let mut dims = info.shape.dims().to_vec();
            dims.reverse();
            (name.clone(), (normalise_type(&format!("{:?}", info.ggml_dtype)), dims))
        })
        .collect()
}

/// "Q4_K" (gguf-py) and "Q4K" (candle) name the same type.
fn normalise_type(t: &str) -> String {
    t.replace('_', "").to_uppercase()
}

/// Tensor name → (type, shape).
type TensorTable = BTreeMap<String, (String, Vec<usize>)>;

/// The same table as seen by `gguf` (llama.cpp's Python package), with the file's
/// metadata, or None with a message when Python or the package is missing.
fn tensors_by_gguf_py(path: &Path) -> Option<(TensorTable, serde_json::Value)> {
    let python = std::env::var("SQLORA_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = repo().join("tests/gguf/read_gguf.py");
    let out = match Command::new(&python).arg(&script).arg(path).output() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("SKIPPED the independent-reader check: cannot run {python}: {e}");
            return None;
        }
    };
    if out.status.code() == Some(3) {
        eprintln!(
            "SKIPPED the independent-reader check: {} (scripts/test-all.sh installs it; or set SQLORA_PYTHON)",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        return None;
    }
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let tensors = v["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let dims = t["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap() as usize);
            (
                t["name"].as_str().unwrap().to_string(),
                (normalise_type(t["type"].as_str().unwrap()), dims.collect()),
            )
        })
        .collect();
    Some((tensors, v["metadata"].clone()))
}

#[test]
fn trained_adapter_exports_to_a_gguf_that_gguf_py_reads_and_generate_uses() {
    let dir = std::env::temp_dir().join(format!("sqlora-export-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let adapter = train_adapter(&dir);
    let a = adapter.to_str().unwrap();

    // q8_0: every projection Q8_0, norms F32, embedding Q8_0 (the default).
    let q8 = dir.join("merged-q8_0.gguf");
    let q8s = q8.to_str().unwrap();
    let stdout = ok(&sqlora(&["export", "--adapter", a, "--quant", "q8_0", "--out", q8s]));
    assert!(
        stdout.contains("wrote") && stdout.contains("211 Q8_0") && stdout.contains("61 F32"),
        "{stdout}"
    );

    // No overwrite without --force; the existing file is untouched.
    let before = std::fs::read(&q8).unwrap();
    let out = sqlora(&["export", "--adapter", a, "--quant", "q4_1", "--out", q8s]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--force"));
    assert_eq!(std::fs::read(&q8).unwrap(), before);

    // q4k: only rows divisible by 256 (ffn_down, 1536 wide) can be Q4_K; the rest fall back, and it says so.
    let q4k = dir.join("merged-q4k.gguf");
    let stdout = ok(&sqlora(&[
        "export",
        "--adapter",
        a,
        "--quant",
        "q4k",
        "--out",
        q4k.to_str().unwrap(),
    ]));
    assert!(stdout.contains("fell back to q8_0"), "{stdout}");
    let ours = tensors_by_sqlora(&q4k);
    assert_eq!(ours["blk.0.ffn_down.weight"], ("Q4K".into(), vec![1536, 576]));
    assert_eq!(ours["blk.0.attn_q.weight"].0, "Q80");
    assert!(!dir
        .read_dir()
        .unwrap()
        .any(|e| e.unwrap().file_name().to_string_lossy().ends_with(".tmp")));

    // The independent reader sees the same tensors, types and shapes, and our metadata.
    for path in [&q8, &q4k] {
        let ours = tensors_by_sqlora(path);
        assert_eq!(ours.len(), 272, "30 layers x 9 + embedding + final norm");
        if let Some((theirs, meta)) = tensors_by_gguf_py(path) {
            assert_eq!(theirs, ours, "{}", path.display());
            assert_eq!(meta["general.architecture"], "llama");
            assert_eq!(meta["llama.block_count"], 30);
            assert_eq!(meta["tokenizer.ggml.tokens.count"], 49152);
            let settings: serde_json::Value =
                serde_json::from_str(meta["sqlora.prompt_settings"].as_str().unwrap()).unwrap();
            assert_eq!(settings["answer_prefix"], "SELECT");
        }
    }

    // The exported file is a base for `generate` as it is.
    common::assert_concert_singer_select(Some(q8s));
    std::fs::remove_dir_all(&dir).ok();
}
