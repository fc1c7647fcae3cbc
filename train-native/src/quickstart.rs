//! `sqlora quickstart` (in progress).

#[derive(clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`sqlora quickstart` is not implemented yet")
}
