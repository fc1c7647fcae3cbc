//! Hub ids (`mistralai/Mistral-7B-Instruct-v0.2`) through hf-hub, where a network exists.

use std::path::PathBuf;

use crate::{Error, Result};

/// Download (or find in hf-hub's cache) everything an HF checkpoint needs; returns its directory.
pub fn download(id: &str) -> Result<PathBuf> {
    let hub_err = |what: &str, e: &dyn std::fmt::Display| {
        Error::Hub(format!(
            "cannot fetch `{id}` ({what}: {e}). Without network access, download the model elsewhere and pass its directory or a .gguf file instead"
        ))
    };
    let api = hf_hub::api::sync::ApiBuilder::from_env()
        .with_progress(true)
        .build()
        .map_err(|e| hub_err("hub client", &e))?;
    let repo = api.model(id.to_string());
    let config = repo.get("config.json").map_err(|e| hub_err("config.json", &e))?;
    let dir = config
        .parent()
        .map(PathBuf::from)
        .ok_or_else(|| Error::Hub(format!("`{id}`: odd cache path")))?;
    match repo.get("model.safetensors.index.json") {
        Ok(index) => {
            let text = std::fs::read_to_string(&index).map_err(|source| Error::Io {
                path: index.clone(),
                source,
            })?;
            let v: serde_json::Value = serde_json::from_str(&text).map_err(|source| Error::Json {
                path: index.clone(),
                source,
            })?;
            let mut files: Vec<String> = v["weight_map"]
                .as_object()
                .map(|m| m.values().filter_map(|f| f.as_str().map(str::to_string)).collect())
                .unwrap_or_default();
            files.sort();
            files.dedup();
            for f in files {
                repo.get(&f).map_err(|e| hub_err(&f, &e))?;
            }
        }
        Err(_) => {
            repo.get("model.safetensors")
                .map_err(|e| hub_err("model.safetensors", &e))?;
        }
    }
    for f in ["tokenizer.json", "tokenizer_config.json"] {
        repo.get(f).map_err(|e| hub_err(f, &e))?;
    }
    Ok(dir)
}
