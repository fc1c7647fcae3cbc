// Shared helpers for the integration tests (included with `mod common;`).
#![allow(dead_code)]

use std::path::PathBuf;

/// Shared reference data: env `SQLORA_SHARED`, else `<repo>/../shared`.
pub fn shared() -> PathBuf {
    std::env::var_os("SQLORA_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared"))
}

pub fn spider() -> PathBuf {
    shared().join("data/spider")
}
