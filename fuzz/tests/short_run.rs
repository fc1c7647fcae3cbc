//! A short fuzz run of every target on each test run: the seeds themselves,
//! then mutations of them ($SQLORA_FUZZ_RUNS per target, default 20,000: a few seconds).
//! A panic fails the test and leaves the input in a file named in the message.

use std::panic::{catch_unwind, AssertUnwindSafe};

use candle_core::Device;
use sqlora_core::adapter::Adapter;
use sqlora_core::schema::{Schema, SpiderTables};
use sqlora_core::weights::{BaseFormat, GgufFile};
use sqlora_fuzz::mutate::{mutate, Rng};
use sqlora_fuzz::seeds;
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
    let model = seeds::tiny_model(&seeds::model_safetensors()).unwrap();
    assert_eq!(model.config().num_hidden_layers, 1);
    let g = GgufFile::from_bytes(seeds::gguf().into(), "seed.gguf").unwrap();
    let (m, tok, template) = g
        .checkpoint(BaseFormat::AsStored, &Device::Cpu)
        .unwrap()
        .into_model(&Device::Cpu)
        .unwrap();
    assert_eq!((m.config().vocab_size, tok.vocab_size()), (70, 70));
    assert!(template.is_some());
    let input = seeds::adapter();
    let (config, weights) = seeds::split_adapter(&input);
    let a = Adapter::from_bytes(
        std::str::from_utf8(config).unwrap(),
        weights,
        std::path::Path::new("a"),
        &Device::Cpu,
    )
    .unwrap();
    let mut m = seeds::tiny_model(&seeds::model_safetensors()).unwrap();
    assert_eq!(a.apply(m.linears_mut()).unwrap(), 2);
    for s in seeds::SCHEMAS {
        Schema::parse(s).unwrap();
    }
    assert_eq!(SpiderTables::parse(seeds::TABLES_JSON).unwrap().len(), 1);
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
