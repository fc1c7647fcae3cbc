//! One GGUF file from a model (merged adapter included), for llama.cpp and the browser.
//!
//! Each linear is dequantized, merged with its LoRA (`W + scaling·B·A`) and
//! re-quantized one at a time, so peak memory is one f32 matrix. Q/K rows go
//! back to llama.cpp's rotary order (the inverse of the loader's un-permutation).

use std::collections::HashMap;
use std::io::{Seek, Write};

use candle_core::quantized::gguf_file::Value;
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};

use crate::model::Model;
use crate::{Error, Result};

/// Metadata key under which the prompt settings travel with the model.
pub const PROMPT_SETTINGS_KEY: &str = "sqlora.prompt_settings";

#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// Type of the seven projections.
    pub quant: GgmlDType,
    /// Used where `quant` cannot hold a shape (K-quants need 256-divisible rows).
    pub fallback: GgmlDType,
    /// Token embedding (and an untied LM head).
    pub embed_quant: GgmlDType,
}

#[derive(Debug, Clone)]
pub struct ExportedTensor {
    pub name: String,
    pub dtype: GgmlDType,
    /// GGUF order: `[rows, cols]` as candle reports it.
    pub shape: Vec<usize>,
    /// Set when `quant` could not hold the shape.
    pub fell_back: bool,
}

#[derive(Debug, Clone, Default)]
pub struct ExportReport {
    pub tensors: Vec<ExportedTensor>,
}

impl ExportReport {
    /// `(type name, count)`, sorted by name.
    pub fn type_counts(&self) -> Vec<(String, usize)> {
        let mut m: HashMap<String, usize> = HashMap::new();
        for t in &self.tensors {
            *m.entry(format!("{:?}", t.dtype)).or_default() += 1;
        }
        let mut v: Vec<_> = m.into_iter().collect();
        v.sort();
        v
    }
    pub fn fallbacks(&self) -> impl Iterator<Item = &ExportedTensor> {
        self.tensors.iter().filter(|t| t.fell_back)
    }
}

/// Parse a quant name as the CLI spells it.
pub fn parse_quant(name: &str) -> Result<GgmlDType> {
    Ok(match name.to_ascii_lowercase().as_str() {
        "f32" => GgmlDType::F32,
        "f16" => GgmlDType::F16,
        "q8_0" => GgmlDType::Q8_0,
        "q4_0" => GgmlDType::Q4_0,
        "q4_1" => GgmlDType::Q4_1,
        "q5_0" => GgmlDType::Q5_0,
        "q5_1" => GgmlDType::Q5_1,
        "q4k" | "q4_k" => GgmlDType::Q4K,
        "q5k" | "q5_k" => GgmlDType::Q5K,
        "q6k" | "q6_k" => GgmlDType::Q6K,
        other => {
            return Err(Error::msg(format!(
                "unknown quantization `{other}` (f32, f16, q8_0, q4_0, q4_1, q5_0, q5_1, q4k, q5k, q6k)"
            )))
        }
    })
}

/// llama.cpp `general.file_type` for the dominant tensor type.
fn file_type(q: GgmlDType) -> u32 {
    match q {
        GgmlDType::F32 => 0,
        GgmlDType::F16 => 1,
        GgmlDType::Q4_0 => 2,
        GgmlDType::Q4_1 => 3,
        GgmlDType::Q8_0 => 7,
        GgmlDType::Q5_0 => 8,
        GgmlDType::Q5_1 => 9,
        GgmlDType::Q4K => 15,
        GgmlDType::Q5K => 17,
        GgmlDType::Q6K => 18,
        _ => 0,
    }
}

fn quantize(w: &Tensor, want: GgmlDType, fallback: GgmlDType) -> Result<(QTensor, bool)> {
    let cols = w.dim(1)?;
    if cols % want.block_size() == 0 {
        Ok((QTensor::quantize(w, want)?, false))
    } else if cols % fallback.block_size() == 0 {
        Ok((QTensor::quantize(w, fallback)?, true))
    } else {
        Ok((QTensor::quantize(w, GgmlDType::F16)?, true))
    }
}

/// HF rows → llama.cpp rotary rows (`[heads, 2, hd/2, in]` → `[heads, hd/2, 2, in]`).
fn permute_for_gguf(w: &Tensor, heads: usize) -> Result<Tensor> {
    let (rows, cols) = w.dims2()?;
    let hd = rows / heads;
    Ok(w.reshape((heads, 2, hd / 2, cols))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((rows, cols))?)
}

/// llama-architecture metadata for `model`, with `tokenizer.*` and other keys
/// taken from `source_metadata` (the base GGUF's), and `extra` added last.
fn metadata(
    model: &Model,
    source: &HashMap<String, Value>,
    quant: GgmlDType,
    extra: &[(String, Value)],
) -> Vec<(String, Value)> {
    let c = model.config();
    let mut md: Vec<(String, Value)> = source
        .iter()
        .filter(|(k, _)| {
            k.starts_with("tokenizer.")
                || k.starts_with("general.")
                    && k.as_str() != "general.file_type"
                    && k.as_str() != "general.architecture"
                    && k.as_str() != "general.alignment"
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let u = |x: usize| Value::U32(x as u32);
    md.push(("general.architecture".into(), Value::String("llama".into())));
    md.push(("general.file_type".into(), Value::U32(file_type(quant))));
    md.push(("llama.context_length".into(), u(c.max_position_embeddings)));
    md.push(("llama.embedding_length".into(), u(c.hidden_size)));
    md.push(("llama.block_count".into(), u(c.num_hidden_layers)));
    md.push(("llama.feed_forward_length".into(), u(c.intermediate_size)));
    md.push(("llama.attention.head_count".into(), u(c.num_attention_heads)));
    md.push(("llama.attention.head_count_kv".into(), u(c.num_key_value_heads)));
    md.push(("llama.rope.dimension_count".into(), u(c.head_dim)));
    md.push(("llama.rope.freq_base".into(), Value::F32(c.rope_theta as f32)));
    md.push((
        "llama.attention.layer_norm_rms_epsilon".into(),
        Value::F32(c.rms_norm_eps as f32),
    ));
    md.push(("llama.vocab_size".into(), u(c.vocab_size)));
    // Token ids a GGUF reader needs even when the source had no tokenizer metadata.
    for (key, id) in [
        ("tokenizer.ggml.bos_token_id", c.bos_token_id),
        ("tokenizer.ggml.eos_token_id", c.eos_token_id),
    ] {
        if let (Some(id), false) = (id, md.iter().any(|(k, _)| k == key)) {
            md.push((key.into(), Value::U32(id)));
        }
    }
    if let Some(w) = c.sliding_window {
        md.push(("llama.attention.sliding_window".into(), u(w)));
    }
    for (k, v) in extra {
        md.retain(|(key, _)| key != k);
        md.push((k.clone(), v.clone()));
    }
    md.sort_by(|a, b| a.0.cmp(&b.0));
    md
}

/// Write `model` (LoRA merged where attached) as one GGUF. `progress(done, total)`
/// is called after each tensor.
pub fn export_gguf<W: Write + Seek>(
    model: &Model,
    source_metadata: &HashMap<String, Value>,
    extra_metadata: &[(String, Value)],
    opts: &ExportOptions,
    out: &mut W,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<ExportReport> {
    let cfg = model.config();
    let dev = Device::Cpu;
    let total = 2 + model.layers().len() * 9 + usize::from(!cfg.tie_word_embeddings);
    let mut tensors: Vec<(String, QTensor)> = Vec::with_capacity(total);
    let mut report = ExportReport::default();
    let mut push = |name: String, q: QTensor, fell_back: bool, tensors: &mut Vec<(String, QTensor)>| {
        report.tensors.push(ExportedTensor {
            name: name.clone(),
            dtype: q.dtype(),
            shape: q.shape().dims().to_vec(),
            fell_back,
        });
        tensors.push((name, q));
        progress(tensors.len(), total);
    };
    let norm = |t: &Tensor| -> Result<QTensor> {
        Ok(QTensor::quantize(
            &t.to_dtype(DType::F32)?.to_device(&dev)?,
            GgmlDType::F32,
        )?)
    };

    let embed = model.embed_tokens().dequantize(&dev)?;
    let (q, fb) = quantize(&embed, opts.embed_quant, opts.fallback)?;
    push("token_embd.weight".into(), q, fb, &mut tensors);
    drop(embed);
    const NAMES: [&str; 7] = [
        "attn_q",
        "attn_k",
        "attn_v",
        "attn_output",
        "ffn_gate",
        "ffn_up",
        "ffn_down",
    ];
    for (i, layer) in model.layers().iter().enumerate() {
        push(
            format!("blk.{i}.attn_norm.weight"),
            norm(&layer.input_layernorm.weight)?,
            false,
            &mut tensors,
        );
        push(
            format!("blk.{i}.ffn_norm.weight"),
            norm(&layer.post_attention_layernorm.weight)?,
            false,
            &mut tensors,
        );
        let a = &layer.self_attn;
        let linears = [
            &a.q_proj,
            &a.k_proj,
            &a.v_proj,
            &a.o_proj,
            &layer.mlp.gate_proj,
            &layer.mlp.up_proj,
            &layer.mlp.down_proj,
        ];
        for (j, lin) in linears.into_iter().enumerate() {
            let mut w = lin.dequantize(&dev)?;
            if let Some(l) = lin.lora() {
                w = (w + l.delta_weight()?.to_device(&dev)?.to_dtype(DType::F32)?)?;
            }
            let w = match j {
                0 => permute_for_gguf(&w, cfg.num_attention_heads)?,
                1 => permute_for_gguf(&w, cfg.num_key_value_heads)?,
                _ => w,
            };
            let (q, fb) = quantize(&w, opts.quant, opts.fallback)?;
            push(format!("blk.{i}.{}.weight", NAMES[j]), q, fb, &mut tensors);
        }
    }
    push(
        "output_norm.weight".into(),
        norm(&model.final_norm().weight)?,
        false,
        &mut tensors,
    );
    if !cfg.tie_word_embeddings {
        let (q, fb) = quantize(&model.lm_head().dequantize(&dev)?, opts.embed_quant, opts.fallback)?;
        push("output.weight".into(), q, fb, &mut tensors);
    }
    let md = metadata(model, source_metadata, opts.quant, extra_metadata);
    let md_refs: Vec<(&str, &Value)> = md.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let t_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    candle_core::quantized::gguf_file::write(out, &md_refs, &t_refs)?;
    Ok(report)
}
