//! `sqlora generate` end to end on the default base model.

use std::path::PathBuf;
use std::process::Command;

fn shared() -> PathBuf {
    std::env::var_os("SQLORA_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared"))
}

fn sqlora(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_sqlora"))
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap()
}

#[test]
fn default_base_answers_concert_singer_with_a_select() {
    let tables = shared().join("data/spider/tables.json");
    let out = sqlora(&[
        "generate",
        "--tables",
        tables.to_str().unwrap(),
        "--db-id",
        "concert_singer",
        "--question",
        "How many singers do we have?",
        "--max-new-tokens",
        "48",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let sql = String::from_utf8(out.stdout).unwrap();
    let statements = sqlora_core::sqlcheck::parse(sql.trim()).unwrap_or_else(|e| panic!("{sql:?} does not parse: {e}"));
    assert_eq!(statements.len(), 1, "{sql:?}");
    assert!(sql.trim_start().to_uppercase().starts_with("SELECT"), "{sql:?}");
}

#[test]
fn raw_prompt_is_continued_verbatim_and_logits_are_dumped() {
    let dir = std::env::temp_dir().join(format!("sqlora-gen-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let prompt = dir.join("prompt.txt");
    std::fs::write(
        &prompt,
        "<|im_start|>user\nSay hello.<|im_end|>\n<|im_start|>assistant\n",
    )
    .unwrap();
    let logits = dir.join("logits.json");
    let out = sqlora(&[
        "generate",
        "--prompt-file",
        prompt.to_str().unwrap(),
        "--raw",
        "--max-new-tokens",
        "8",
        "--dump-logits",
        logits.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!out.stdout.is_empty());
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&logits).unwrap()).unwrap();
    assert_eq!(v["logits"].as_array().unwrap().len(), 49152);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn bad_inputs_get_clear_errors() {
    let dir = std::env::temp_dir().join(format!("sqlora-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let schema = dir.join("schema.sql");
    std::fs::write(&schema, "CREATE TABLE t (a int);").unwrap();
    let s = schema.to_str().unwrap();
    // A truncated GGUF names the file and the first tensor that is cut.
    let full = std::fs::read(sqlora_base()).unwrap();
    let cut = dir.join("cut.gguf");
    std::fs::write(&cut, &full[..full.len() / 2]).unwrap();
    let out = sqlora(&[
        "generate",
        "--base",
        cut.to_str().unwrap(),
        "--schema",
        s,
        "--question",
        "q",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("cut.gguf") && err.contains("truncated"), "{err}");
    // A missing file.
    let out = sqlora(&[
        "generate",
        "--base",
        "/no/such/model.gguf",
        "--schema",
        s,
        "--question",
        "q",
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such file"));
    // A schema that does not parse names the file.
    let bad = dir.join("bad.sql");
    std::fs::write(&bad, "CREATE TABLE (").unwrap();
    let out = sqlora(&["generate", "--schema", bad.to_str().unwrap(), "--question", "q"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("bad.sql"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

fn sqlora_base() -> PathBuf {
    std::env::var_os("SQLORA_MODEL").map(PathBuf::from).unwrap_or_else(|| {
        let cache = std::env::var_os("SQLORA_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/sqlora"));
        cache.join("SmolLM2-135M-Instruct.Q4_1.gguf")
    })
}
