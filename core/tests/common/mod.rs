//! Paths shared by the core integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

/// `../shared` beside the repository, or `$SQLORA_SHARED`.
pub fn shared() -> PathBuf {
    std::env::var_os("SQLORA_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared"))
}

/// The default base GGUF: `$SQLORA_MODEL`, else the CLI's cache (fetched by `sqlora fetch-model`).
pub fn smollm2_gguf() -> PathBuf {
    if let Some(p) = std::env::var_os("SQLORA_MODEL") {
        return PathBuf::from(p);
    }
    let cache = std::env::var_os("SQLORA_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/sqlora"));
    let p = cache.join("SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        p.is_file(),
        "{} is missing: run `cargo run -p sqlora -- fetch-model` first",
        p.display()
    );
    p
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
