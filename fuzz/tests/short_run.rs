//! A short fuzz run of every target on each test run: the seeds themselves,
//! then mutations of them ($SQLORA_FUZZ_RUNS per target, default 20,000: a few seconds).
//! A panic fails the test and leaves the input in a file named in the message.

use std::panic::{catch_unwind, AssertUnwindSafe};

use sqlora_fuzz::mutate::{mutate, Rng};
use sqlora_fuzz::Target;

fn runs() -> usize {
    std::env::var("SQLORA_FUZZ_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000)
}

fn fuzz(target: Target) {
    let seeds = target.seeds();
    assert!(!seeds.is_empty());
    let mut rng = Rng::new(0x5EED ^ target as u64);
    let inputs = seeds.clone().into_iter().chain((0..runs()).map(|_| {
        let a = &seeds[rng.below(seeds.len())];
        let b = &seeds[rng.below(seeds.len())];
        mutate(a, b, &mut rng)
    }));
    for (i, input) in inputs.enumerate() {
        if catch_unwind(AssertUnwindSafe(|| target.run(&input))).is_err() {
            let p = std::env::temp_dir().join(format!("sqlora-fuzz-{}-{i}", target.name()));
            std::fs::write(&p, &input).unwrap();
            panic!(
                "target `{}` panicked on input {i}, saved to {} (replay: cargo fuzz run --fuzz-dir fuzz/libfuzzer -s none {} {})",
                target.name(),
                p.display(),
                target.name(),
                p.display()
            );
        }
    }
}

#[test]
fn seeds_are_valid_inputs() {
    // The model seeds load and run; a broken seed would fuzz only the error path.
    let model = sqlora_fuzz::seeds::tiny_model(&sqlora_fuzz::seeds::model_safetensors()).unwrap();
    assert_eq!(model.config().num_hidden_layers, 1);
    let g = sqlora_core::weights::GgufFile::from_bytes(sqlora_fuzz::seeds::gguf().into(), "seed.gguf").unwrap();
    let (m, tok, template) = g
        .checkpoint(sqlora_core::weights::BaseFormat::AsStored, &candle_core::Device::Cpu)
        .unwrap()
        .into_model(&candle_core::Device::Cpu)
        .unwrap();
    assert_eq!((m.config().vocab_size, tok.vocab_size()), (70, 70));
    assert!(template.is_some());
    let input = sqlora_fuzz::seeds::adapter();
    let (config, weights) = sqlora_fuzz::seeds::split_adapter(&input);
    let a = sqlora_core::adapter::Adapter::from_bytes(
        std::str::from_utf8(config).unwrap(),
        weights,
        std::path::Path::new("a"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let mut m = sqlora_fuzz::seeds::tiny_model(&sqlora_fuzz::seeds::model_safetensors()).unwrap();
    assert_eq!(a.apply(m.linears_mut()).unwrap(), 2);
    for s in sqlora_fuzz::seeds::SCHEMAS {
        sqlora_core::schema::Schema::parse(s).unwrap();
    }
    assert_eq!(
        sqlora_core::schema::SpiderTables::parse(sqlora_fuzz::seeds::TABLES_JSON)
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn gguf() {
    fuzz(Target::Gguf);
}

#[test]
fn safetensors() {
    fuzz(Target::Safetensors);
}

#[test]
fn adapter() {
    fuzz(Target::Adapter);
}

#[test]
fn tables_json() {
    fuzz(Target::TablesJson);
}

#[test]
fn schema() {
    fuzz(Target::Schema);
}

#[test]
fn sql() {
    fuzz(Target::Sql);
}
