//! `sqlora bench`: speed figures for BENCHMARKS.md, printed, never asserted.
//!
//! `decode` mirrors llama-bench: prompt processing of a fixed text-to-SQL prompt
//! (one forward over all its tokens) and greedy decoding of `--new-tokens`
//! tokens after it (EOS ignored), median of `--runs` after a warm-up.

use std::time::Instant;

use anyhow::Context;
use candle_core::{Device, Tensor};
use sqlora_core::weights::{self, BaseFormat, ModelSource};

/// The prompt of the wllama/llama.cpp peers' benchmark (202 tokens with SmolLM2's tokenizer).
const BENCH_PROMPT: &str = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nDatabase schema:\nCREATE TABLE stadium (stadium_id INTEGER PRIMARY KEY, location TEXT, name TEXT, capacity INTEGER, average INTEGER);\nCREATE TABLE singer (singer_id INTEGER PRIMARY KEY, name TEXT, country TEXT, song_name TEXT, age INTEGER, is_male BOOLEAN);\nCREATE TABLE concert (concert_id INTEGER PRIMARY KEY, concert_name TEXT, theme TEXT, stadium_id INTEGER, year TEXT);\nCREATE TABLE singer_in_concert (concert_id INTEGER, singer_id INTEGER);\n\nQuestion: What are the names and countries of the singers who performed in a concert in 2014 at a stadium with a capacity above 5000?\nAnswer with a single SQLite query only.<|im_end|>\n<|im_start|>assistant\n";

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    what: What,
}

#[derive(clap::Subcommand)]
enum What {
    /// Prompt processing and greedy decode tokens/s.
    Decode(DecodeArgs),
}

#[derive(clap::Args)]
struct DecodeArgs {
    /// GGUF file, HF directory or hub id (default: the cached SmolLM2-135M-Instruct Q4_1).
    #[arg(long)]
    base: Option<String>,
    /// Threads for candle's CPU kernels (sets RAYON_NUM_THREADS).
    #[arg(long, default_value_t = 2)]
    threads: usize,
    #[arg(long, default_value_t = 128)]
    new_tokens: usize,
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Run the base dequantized to f32.
    #[arg(long)]
    dequantize: bool,
    /// Print one JSON line instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    match args.what {
        What::Decode(a) => decode(a),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn decode(a: DecodeArgs) -> anyhow::Result<()> {
    std::env::set_var("RAYON_NUM_THREADS", a.threads.to_string());
    let base = crate::fetch::base_or_default(a.base.as_deref())?;
    let dev = Device::Cpu;
    let format = if a.dequantize {
        BaseFormat::F32
    } else {
        BaseFormat::AsStored
    };
    let t0 = Instant::now();
    let source = ModelSource::parse(&base)?;
    let (model, tok, _) = weights::load(&source, format, &dev)?.into_model(&dev)?;
    let load_s = t0.elapsed().as_secs_f64();
    let prompt = tok
        .encode(BENCH_PROMPT, false)
        .context("encoding the benchmark prompt")?;
    let (mut pp, mut tg) = (Vec::new(), Vec::new());
    for run in 0..=a.runs {
        let mut cache = model.new_cache();
        let x = Tensor::new(prompt.as_slice(), &dev)?.unsqueeze(0)?;
        let t = Instant::now();
        let logits = model.forward_last(&x, 0, Some(&mut cache))?;
        let mut next = logits.squeeze(0)?.argmax(0)?.to_scalar::<u32>()?;
        let pp_s = t.elapsed().as_secs_f64();
        let t = Instant::now();
        for _ in 0..a.new_tokens {
            let x = Tensor::new(&[next], &dev)?.unsqueeze(0)?;
            let logits = model.forward_last(&x, cache.len(), Some(&mut cache))?;
            next = logits.squeeze(0)?.argmax(0)?.to_scalar::<u32>()?;
        }
        let tg_s = t.elapsed().as_secs_f64();
        if run > 0 {
            // run 0 warms caches and allocators
            pp.push(prompt.len() as f64 / pp_s);
            tg.push(a.new_tokens as f64 / tg_s);
        }
    }
    let (pp, tg) = (median(pp), median(tg));
    if a.json {
        println!(
            "{}",
            serde_json::json!({"model": base, "threads": a.threads, "prompt_tokens": prompt.len(),
                "new_tokens": a.new_tokens, "runs": a.runs, "load_s": load_s,
                "prompt_tok_s": pp, "decode_tok_s": tg, "dequantized": a.dequantize})
        );
    } else {
        println!("model        {base}");
        println!("threads      {}", a.threads);
        println!("load         {load_s:.2} s");
        println!(
            "prompt       {:.1} tok/s ({} tokens, median of {})",
            pp,
            prompt.len(),
            a.runs
        );
        println!(
            "decode       {:.1} tok/s ({} tokens, median of {})",
            tg, a.new_tokens, a.runs
        );
    }
    Ok(())
}
