//! Errors of the scoring library.

use std::path::PathBuf;

/// Everything that can go wrong while loading inputs or scoring.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: invalid JSON: {source}")]
    Json { path: PathBuf, source: serde_json::Error },
    #[error("{path}: {message}")]
    BadInput { path: PathBuf, message: String },
    #[error("database {path}: {source}")]
    Sqlite { path: PathBuf, source: rusqlite::Error },
    #[error("unknown database `{0}` (not in tables.json or no .sqlite file)")]
    UnknownDb(String),
    /// The official parser could not understand a query (the official scorer
    /// treats such a prediction as an empty query).
    #[error("cannot parse SQL: {0}")]
    Parse(String),
    /// Writing a report (under a temporary name, renamed into place) failed.
    #[error(transparent)]
    Write(#[from] sqlora_atomic::Error),
}

pub type Result<T> = std::result::Result<T, Error>;
