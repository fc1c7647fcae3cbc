//! `sqlora train`: fine-tune a QLoRA adapter on Spider / WikiSQL.
//!
//! The pieces, in the order a run uses them: [`config`] (TOML + `--set`),
//! [`data`] (dataset files → examples), [`batch`] (padded, length-grouped
//! batches), [`schedule`] and [`optim`] (cosine warm-up, AdamW), [`checkpoint`]
//! (atomic, resumable), [`metrics`] (metrics.jsonl, loss curve).

pub mod batch;
pub mod config;
pub mod data;
pub mod optim;
pub mod schedule;

#[derive(clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`sqlora train` is not implemented yet")
}
