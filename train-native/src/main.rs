//! `sqlora`: fine-tune, evaluate, export and run text-to-SQL models.
//! Each subcommand lives in its own module with an `Args` struct and a `run`.

use clap::{Parser, Subcommand};

mod alloc;
mod bench;
mod eval;
mod export;
mod fetch;
mod generate;
mod quickstart;
mod train;

#[derive(Parser)]
#[command(
    name = "sqlora",
    version,
    about = "Text-to-SQL with 4-bit QLoRA: train, evaluate, export, generate"
)]
struct Cli {
    /// On failure print the whole error chain, one cause a line (and a
    /// backtrace where RUST_BACKTRACE=1), instead of one line.
    #[arg(short, long, global = true)]
    verbose: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Download the default base model (SmolLM2-135M-Instruct GGUF) into the cache.
    FetchModel(fetch::Args),
    /// Generate SQL for a question against a schema.
    Generate(generate::Args),
    /// Fine-tune a QLoRA adapter on Spider / WikiSQL.
    Train(train::Args),
    /// Score predictions (exact match, valid SQL, execution accuracy).
    Eval(eval::Args),
    /// Merge an adapter, re-quantize, write one GGUF file.
    Export(export::Args),
    /// Measure decode / prompt / training speed.
    Bench(bench::Args),
    /// The whole job: fetch, fine-tune, evaluate, export, serve the demo.
    Quickstart(quickstart::Args),
}

fn main() -> std::process::ExitCode {
    alloc::keep_freed_memory();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::FetchModel(a) => fetch::run(a),
        Command::Generate(a) => generate::run(a),
        Command::Train(a) => train::run(a),
        Command::Eval(a) => eval::run(a),
        Command::Export(a) => export::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Quickstart(a) => quickstart::run(a),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One line by default: what failed, then why (`error: FILE: what is wrong`).
            if cli.verbose {
                eprintln!("error: {e:?}");
            } else {
                eprintln!("error: {e:#}");
            }
            std::process::ExitCode::FAILURE
        }
    }
}
