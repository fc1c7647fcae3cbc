//! Prompts longer than the model's context fail before any forward pass, with
//! the token count and the limit; generation stops at the context's end.

mod common;

use candle_core::{DType, Device};
use common::{smollm2_gguf, tiny_qlora_model};
use sqlora_core::generate::{generate, generate_batch, GenerationConfig};
use sqlora_core::pipeline::Text2Sql;
use sqlora_core::weights::BaseFormat;

#[test]
fn too_long_prompts_are_refused_and_answers_end_at_the_context() {
    // The tiny model takes 64 positions; SmolLM2's tokenizer decodes its ids (< 96).
    let tok = Text2Sql::load(
        &smollm2_gguf().display().to_string(),
        BaseFormat::AsStored,
        &Device::Cpu,
    )
    .unwrap()
    .tokenizer;
    let model = tiny_qlora_model(&Device::Cpu, DType::F32, true, 0.0);
    assert_eq!(model.context_len(), 64);
    let cfg = GenerationConfig {
        max_new_tokens: 20,
        stop_ids: vec![],
        ..Default::default()
    };
    let long: Vec<u32> = (0..64).map(|i| 3 + i % 90).collect();
    let e = generate(&model, &tok, &long, &cfg, None, &mut |_| true)
        .unwrap_err()
        .to_string();
    assert!(e.contains("64 tokens") && e.contains("at most 64"), "{e}");
    let e = generate_batch(&model, &tok, &[long[..10].to_vec(), long.clone()], &cfg, &[])
        .unwrap_err()
        .to_string();
    assert!(e.contains("64 tokens"), "{e}");
    // 60 prompt tokens leave 4 positions: at most 4 new tokens, not 20, and no error.
    let g = generate(&model, &tok, &long[..60], &cfg, None, &mut |_| true).unwrap();
    assert!(g.ids.len() <= 4, "{} tokens generated", g.ids.len());
    let b = generate_batch(&model, &tok, &[long[..60].to_vec(), long[..30].to_vec()], &cfg, &[]).unwrap();
    assert!(b.iter().all(|g| g.ids.len() <= 4));
}
