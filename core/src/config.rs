//! Model hyper-parameters, read from HF `config.json` or GGUF metadata.
//!
//! One struct serves Mistral and Llama-family models: Llama is Mistral without a
//! sliding window, and SmolLM2 additionally ties its LM head to the embedding.

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// `mistral` or `llama`: both load through the same decoder.
    pub architecture: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub rope_theta: f64,
    pub rms_norm_eps: f64,
    /// Attention sees the current token and the `w - 1` before it (transformers' rule).
    pub sliding_window: Option<usize>,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<u32>,
}

/// The subset of HF `config.json` we read; transformers 4.x puts `rope_theta`
/// at the top level, 5.x under `rope_parameters`.
#[derive(Deserialize)]
struct HfConfig {
    #[serde(default)]
    model_type: Option<String>,
    #[serde(default)]
    architectures: Vec<String>,
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    #[serde(default)]
    num_key_value_heads: Option<usize>,
    #[serde(default)]
    head_dim: Option<usize>,
    #[serde(default)]
    rope_theta: Option<f64>,
    #[serde(default)]
    rope_parameters: Option<RopeParameters>,
    #[serde(default)]
    rope_scaling: Option<serde_json::Value>,
    rms_norm_eps: f64,
    #[serde(default)]
    sliding_window: Option<usize>,
    #[serde(default)]
    max_position_embeddings: Option<usize>,
    #[serde(default)]
    tie_word_embeddings: Option<bool>,
    #[serde(default)]
    bos_token_id: Option<serde_json::Value>,
    #[serde(default)]
    eos_token_id: Option<serde_json::Value>,
    #[serde(default)]
    hidden_act: Option<String>,
}

#[derive(Deserialize)]
struct RopeParameters {
    #[serde(default)]
    rope_theta: Option<f64>,
    #[serde(default)]
    rope_type: Option<String>,
}

/// `bos_token_id` may be a number or a list of numbers (the first is used).
fn first_id(v: &Option<serde_json::Value>) -> Option<u32> {
    match v.as_ref()? {
        serde_json::Value::Number(n) => n.as_u64().map(|x| x as u32),
        serde_json::Value::Array(a) => a.first()?.as_u64().map(|x| x as u32),
        _ => None,
    }
}

impl ModelConfig {
    /// Parse HF `config.json` text. `origin` names the file in errors.
    pub fn from_hf_json(text: &str, origin: &str) -> Result<Self> {
        let c: HfConfig = serde_json::from_str(text).map_err(|e| Error::Json {
            path: origin.into(),
            source: e,
        })?;
        let arch = c
            .model_type
            .clone()
            .or_else(|| c.architectures.first().map(|a| a.to_lowercase()))
            .unwrap_or_default();
        let arch = match arch.as_str() {
            "mistral" | "mistralformcausallm" | "mistralforcausallm" => "mistral",
            "llama" | "llamaforcausallm" => "llama",
            other => return Err(Error::UnknownArchitecture(format!("{other} (in {origin})"))),
        };
        if let Some(act) = &c.hidden_act {
            if act != "silu" {
                return Err(Error::file(
                    origin,
                    format!("hidden_act `{act}` is not supported (only silu)"),
                ));
            }
        }
        let rope_type = c.rope_parameters.as_ref().and_then(|r| r.rope_type.clone());
        if rope_type.as_deref().is_some_and(|t| t != "default") || c.rope_scaling.as_ref().is_some_and(|v| !v.is_null())
        {
            return Err(Error::file(
                origin,
                "rope scaling is not supported (only the default rotary embedding)",
            ));
        }
        let rope_theta = c
            .rope_parameters
            .as_ref()
            .and_then(|r| r.rope_theta)
            .or(c.rope_theta)
            .unwrap_or(10_000.0);
        let cfg = ModelConfig {
            architecture: arch.to_string(),
            vocab_size: c.vocab_size,
            hidden_size: c.hidden_size,
            intermediate_size: c.intermediate_size,
            num_hidden_layers: c.num_hidden_layers,
            num_attention_heads: c.num_attention_heads,
            num_key_value_heads: c.num_key_value_heads.unwrap_or(c.num_attention_heads),
            head_dim: c.head_dim.unwrap_or(c.hidden_size / c.num_attention_heads.max(1)),
            rope_theta,
            rms_norm_eps: c.rms_norm_eps,
            sliding_window: c.sliding_window,
            max_position_embeddings: c.max_position_embeddings.unwrap_or(4096),
            tie_word_embeddings: c.tie_word_embeddings.unwrap_or(false),
            bos_token_id: first_id(&c.bos_token_id),
            eos_token_id: first_id(&c.eos_token_id),
        };
        cfg.validate(origin)?;
        Ok(cfg)
    }

    /// Reject shapes the decoder cannot run, before any tensor is read.
    pub fn validate(&self, origin: &str) -> Result<()> {
        let bad = |m: &str| Err(Error::file(origin, m));
        if self.num_attention_heads == 0 || self.num_key_value_heads == 0 || self.head_dim == 0 {
            return bad("head counts and head_dim must be positive");
        }
        if !self.num_attention_heads.is_multiple_of(self.num_key_value_heads) {
            return bad("num_attention_heads must be a multiple of num_key_value_heads");
        }
        if !self.head_dim.is_multiple_of(2) {
            return bad("head_dim must be even for rotary embeddings");
        }
        if self.vocab_size == 0 || self.hidden_size == 0 || self.num_hidden_layers == 0 {
            return bad("vocab_size, hidden_size and num_hidden_layers must be positive");
        }
        Ok(())
    }

    /// Parameter count of the decoder (embedding counted once when tied).
    pub fn num_parameters(&self) -> usize {
        let (h, i, hd) = (self.hidden_size, self.intermediate_size, self.head_dim);
        let q = self.num_attention_heads * hd;
        let kv = self.num_key_value_heads * hd;
        let per_layer = h * q + 2 * h * kv + q * h + 3 * h * i + 2 * h;
        let head = if self.tie_word_embeddings {
            0
        } else {
            self.vocab_size * h
        };
        self.vocab_size * h + self.num_hidden_layers * per_layer + h + head
    }

    /// The shapes `[out, in]` of the seven linear projections of one layer, by HF name.
    pub fn linear_shapes(&self) -> [(&'static str, [usize; 2]); 7] {
        let (h, i, hd) = (self.hidden_size, self.intermediate_size, self.head_dim);
        let q = self.num_attention_heads * hd;
        let kv = self.num_key_value_heads * hd;
        [
            ("self_attn.q_proj", [q, h]),
            ("self_attn.k_proj", [kv, h]),
            ("self_attn.v_proj", [kv, h]),
            ("self_attn.o_proj", [h, q]),
            ("mlp.gate_proj", [i, h]),
            ("mlp.up_proj", [i, h]),
            ("mlp.down_proj", [h, i]),
        ]
    }

    /// Mistral-7B-v0.1/Instruct-v0.2 shapes, for memory arithmetic without the weights.
    pub fn mistral_7b() -> Self {
        ModelConfig {
            architecture: "mistral".into(),
            vocab_size: 32000,
            hidden_size: 4096,
            intermediate_size: 14336,
            num_hidden_layers: 32,
            num_attention_heads: 32,
            num_key_value_heads: 8,
            head_dim: 128,
            rope_theta: 1_000_000.0,
            rms_norm_eps: 1e-5,
            sliding_window: None,
            max_position_embeddings: 32768,
            tie_word_embeddings: false,
            bos_token_id: Some(1),
            eos_token_id: Some(2),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_transformers5_mistral_config() {
        let text = r#"{"architectures":["MistralForCausalLM"],"model_type":"mistral","head_dim":8,
            "hidden_act":"silu","hidden_size":64,"intermediate_size":160,"max_position_embeddings":256,
            "num_attention_heads":8,"num_hidden_layers":3,"num_key_value_heads":2,"rms_norm_eps":1e-05,
            "rope_parameters":{"rope_theta":10000.0,"rope_type":"default"},"sliding_window":8,
            "tie_word_embeddings":false,"vocab_size":512,"bos_token_id":1,"eos_token_id":2}"#;
        let c = ModelConfig::from_hf_json(text, "config.json").unwrap();
        assert_eq!(c.architecture, "mistral");
        assert_eq!(c.sliding_window, Some(8));
        assert_eq!(c.rope_theta, 10000.0);
        assert_eq!(c.num_key_value_heads, 2);
    }

    #[test]
    fn rejects_unknown_architecture_and_bad_json() {
        let e = ModelConfig::from_hf_json(r#"{"model_type":"gpt2","vocab_size":1,"hidden_size":1,"intermediate_size":1,"num_hidden_layers":1,"num_attention_heads":1,"rms_norm_eps":1e-5}"#, "x/config.json").unwrap_err();
        assert!(e.to_string().contains("gpt2"), "{e}");
        let e = ModelConfig::from_hf_json("{", "x/config.json").unwrap_err();
        assert!(e.to_string().contains("x/config.json"), "{e}");
    }

    #[test]
    fn mistral_7b_has_7_2b_parameters() {
        let n = ModelConfig::mistral_7b().num_parameters();
        assert!((7_200_000_000..7_300_000_000).contains(&n), "{n}");
    }
}
