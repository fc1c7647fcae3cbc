//! `sqlora generate` end to end on the default base model.

mod common;

use common::{default_base as sqlora_base, sqlora};

#[test]
fn default_base_answers_concert_singer_with_a_select() {
    common::assert_concert_singer_select(None);
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
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no such file"), "{err}");
    // One line by default; the chain with -v.
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.starts_with("error: ") && err.contains("/no/such/model.gguf"),
        "{err}"
    );
    let out = sqlora(&[
        "generate",
        "-v",
        "--base",
        "/no/such/model.gguf",
        "--schema",
        s,
        "--question",
        "q",
    ]);
    let verbose = String::from_utf8_lossy(&out.stderr);
    assert!(
        verbose.contains("Caused by") || verbose.lines().count() > 1,
        "{verbose}"
    );
    // A schema that does not parse names the file.
    let bad = dir.join("bad.sql");
    std::fs::write(&bad, "CREATE TABLE (").unwrap();
    let out = sqlora(&["generate", "--schema", bad.to_str().unwrap(), "--question", "q"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("bad.sql"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}
