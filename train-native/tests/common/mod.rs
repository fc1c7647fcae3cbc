//! Helpers shared by the `sqlora` binary's end-to-end tests.
#![allow(dead_code)] // each test file uses its own subset

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `../shared` (data, peer references), or $SQLORA_SHARED.
pub fn shared() -> PathBuf {
    std::env::var_os("SQLORA_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared"))
}

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The default base model, located as the binary does; a missing one fails
/// the test with the command that fetches it.
pub fn default_base() -> PathBuf {
    sqlora_core::default_model::existing().unwrap_or_else(|e| panic!("{e}"))
}

/// Run the binary under test; its stderr is echoed (shown when a test fails).
pub fn sqlora(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_sqlora"))
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    eprintln!("$ sqlora {}\n{}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    out
}

/// Its stdout, after asserting that it succeeded.
pub fn stdout_ok(out: &Output) -> String {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `sqlora generate` for concert_singer's "How many singers do we have?"
/// (on `base`, or the default base), asserting one SELECT statement that parses.
pub fn assert_concert_singer_select(base: Option<&str>) -> String {
    let tables = shared().join("data/spider/tables.json");
    let mut args = vec![
        "generate",
        "--tables",
        tables.to_str().unwrap(),
        "--db-id",
        "concert_singer",
        "--question",
        "How many singers do we have?",
        "--max-new-tokens",
        "48",
    ];
    if let Some(b) = base {
        args.extend(["--base", b]);
    }
    let sql = stdout_ok(&sqlora(&args));
    let statements = sqlora_core::sqlcheck::parse(sql.trim()).unwrap_or_else(|e| panic!("{sql:?} does not parse: {e}"));
    assert_eq!(statements.len(), 1, "{sql:?}");
    assert!(sql.trim_start().to_uppercase().starts_with("SELECT"), "{sql:?}");
    sql
}
