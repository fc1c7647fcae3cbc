//! Batched greedy decoding (left-padded prompts sharing one cache) equals
//! decoding each prompt alone: at the model level on a sliding-window Mistral
//! (logits of every step), and end to end on SmolLM2 (the SQL answers).
//!
//! SmolLM2 runs dequantized (f32): candle's CPU Q4_1 matmul does not give a
//! row the same result in batches of different sizes (measured: logits move by
//! up to 0.6 once a batch holds ~40 or more rows), so over GGUF blocks a
//! batched answer can differ from the one-at-a-time answer.

mod common;

use candle_core::{DType, Device, IndexOp, Tensor};
use common::{smollm2_gguf, tiny_qlora_model};
use sqlora_core::generate::GenerationConfig;
use sqlora_core::model::{Cache, Model};
use sqlora_core::pipeline::Text2Sql;
use sqlora_core::schema::Schema;
use sqlora_core::weights::BaseFormat;

/// Logits of the prompt's last position, then of `steps` fed tokens, for one row alone.
fn alone(model: &Model, prompt: &[u32], fed: &[u32]) -> Vec<Vec<f32>> {
    let dev = model.device();
    let mut cache = model.new_cache();
    let mut out = vec![];
    let x = Tensor::new(prompt, dev).unwrap().unsqueeze(0).unwrap();
    out.push(
        model
            .forward_last(&x, 0, Some(&mut cache))
            .unwrap()
            .squeeze(0)
            .unwrap()
            .to_vec1()
            .unwrap(),
    );
    for &id in fed {
        let x = Tensor::new(&[id], dev).unwrap().unsqueeze(0).unwrap();
        let l = model.forward_last(&x, cache.len(), Some(&mut cache)).unwrap();
        out.push(l.squeeze(0).unwrap().to_vec1().unwrap());
    }
    out
}

#[test]
fn padded_batch_logits_equal_each_row_alone() {
    // Sliding window 6, prompts of 3, 9 and 12 tokens: pads, windows and both at once.
    let model = tiny_qlora_model(&Device::Cpu, DType::F32, true, 0.0);
    let prompts: Vec<Vec<u32>> = vec![vec![5, 17, 33], vec![9, 8, 7, 6, 5, 4, 3, 2, 40], (10..22).collect()];
    let fed = [[11u32, 12, 13], [50, 51, 52], [70, 71, 72]];
    let longest = 12;
    let pads: Vec<usize> = prompts.iter().map(|p| longest - p.len()).collect();
    let ids: Vec<u32> = prompts
        .iter()
        .flat_map(|p| std::iter::repeat_n(0u32, longest - p.len()).chain(p.iter().copied()))
        .collect();
    let mut cache = Cache::left_padded(2, pads);
    let x = Tensor::from_vec(ids, (3, longest), &Device::Cpu).unwrap();
    let mut batched = vec![model.forward_last(&x, 0, Some(&mut cache)).unwrap()];
    for step in 0..3 {
        let next: Vec<u32> = fed.iter().map(|f| f[step]).collect();
        let x = Tensor::from_vec(next, (3, 1), &Device::Cpu).unwrap();
        batched.push(model.forward_last(&x, cache.len(), Some(&mut cache)).unwrap());
    }
    for (r, p) in prompts.iter().enumerate() {
        let want = alone(&model, p, &fed[r]);
        for (step, w) in want.iter().enumerate() {
            let got: Vec<f32> = batched[step].i(r).unwrap().to_vec1().unwrap();
            let worst = got.iter().zip(w).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(worst < 1e-4, "row {r} step {step}: max |Δlogit| = {worst}");
        }
    }
    // Without the padding rules the short row would differ: the test can fail.
    let mut plain = model.new_cache();
    let x = Tensor::from_vec(
        std::iter::repeat_n(0u32, 9)
            .chain(prompts[0].iter().copied())
            .collect::<Vec<_>>(),
        (1, 12),
        &Device::Cpu,
    )
    .unwrap();
    let unmasked: Vec<f32> = model
        .forward_last(&x, 0, Some(&mut plain))
        .unwrap()
        .squeeze(0)
        .unwrap()
        .to_vec1()
        .unwrap();
    let want = &alone(&model, &prompts[0], &[])[0];
    assert!(unmasked.iter().zip(want).any(|(a, b)| (a - b).abs() > 1e-3));
}

#[test]
fn batched_sql_equals_one_at_a_time() {
    let t2s = Text2Sql::load(&smollm2_gguf().display().to_string(), BaseFormat::F32, &Device::Cpu).unwrap();
    let schema = Schema::parse(
        "CREATE TABLE singer (singer_id INT PRIMARY KEY, name TEXT, country TEXT, age INT);\n\
         CREATE TABLE concert (concert_id INT PRIMARY KEY, concert_name TEXT, year INT, singer_id INT);",
    )
    .unwrap();
    let questions = [
        "How many singers are there?",
        "What are the names of singers from France, ordered by age?",
        "List each concert name with its year.",
    ];
    let items: Vec<(&Schema, &str)> = questions.iter().map(|q| (&schema, *q)).collect();
    for constrain in [true, false] {
        let cfg = GenerationConfig {
            max_new_tokens: 24,
            stop_strings: vec![";".into()],
            constrain,
            ..Default::default()
        };
        let batched = t2s.sql_for_batch(&items, &cfg).unwrap();
        assert_eq!(batched.len(), 3);
        for (q, b) in questions.iter().zip(&batched) {
            let one = t2s.sql_for(&schema, q, &cfg).unwrap();
            assert_eq!(b.generation.ids, one.generation.ids, "{q} (constrained: {constrain})");
            assert_eq!(b.sql, one.sql, "{q}");
            assert_eq!(b.generation.stop, one.generation.stop, "{q}");
        }
    }
    let cfg = GenerationConfig {
        max_new_tokens: 24,
        ..Default::default()
    };
    let sampled = GenerationConfig {
        temperature: 0.7,
        ..cfg
    };
    assert!(t2s.sql_for_batch(&items, &sampled).is_err(), "sampling is not batched");
}
