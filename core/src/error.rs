//! The one error type of the core crate. Every variant that concerns a file
//! names it, so a user knows what to fix.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {msg}")]
    File { path: PathBuf, msg: String },

    #[error("{path}: I/O error: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{path}: malformed JSON: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },

    #[error("missing tensor `{name}` in {path}")]
    MissingTensor { path: PathBuf, name: String },

    #[error("tensor `{name}` in {path} has shape {found:?}, expected {expected:?}")]
    ShapeMismatch {
        path: PathBuf,
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },

    #[error("unsupported model architecture `{0}` (supported: llama, mistral)")]
    UnknownArchitecture(String),

    #[error("tokenizer: {0}")]
    Tokenizer(String),

    #[error("chat template: {0}")]
    Template(String),

    #[error("schema: {0}")]
    Schema(String),

    #[error("SQL: {0}")]
    Sql(String),

    #[error("hub: {0}")]
    Hub(String),

    #[error("{0}")]
    Msg(String),

    /// Writing a file (under a temporary name, renamed into place) failed.
    #[error(transparent)]
    Write(#[from] sqlora_atomic::Error),

    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn file(path: impl Into<PathBuf>, msg: impl std::fmt::Display) -> Self {
        Error::File {
            path: path.into(),
            msg: msg.to_string(),
        }
    }
    pub fn msg(msg: impl std::fmt::Display) -> Self {
        Error::Msg(msg.to_string())
    }
}
