//! GGUF (llama.cpp layout, architecture `llama`, which Mistral GGUFs use too).
//!
//! llama.cpp stores the rows of `attn_q`/`attn_k` permuted for its adjacent-pair
//! rotary form. We un-permute them on load (row chunks are independent blocks, so
//! this is exact even for quantized data) and keep one HF layout and one RoPE.

use std::collections::HashMap;
use std::io::Cursor;
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{Content, TensorInfo, Value};
use candle_core::quantized::{GgmlDType, QStorage, QTensor};
use candle_core::{DType, Device, Tensor};

use super::{BaseFormat, Bytes, Checkpoint};
use crate::config::ModelConfig;
use crate::linear::Linear;
use crate::model::{Embedding, LayerWeights, ModelWeights};
use crate::tokenizer::Tokenizer;
use crate::{Error, Result};

/// The GGUF names of one layer's seven projections, in [`ModelConfig::linear_shapes`] order.
const LINEARS: [&str; 7] = [
    "attn_q",
    "attn_k",
    "attn_v",
    "attn_output",
    "ffn_gate",
    "ffn_up",
    "ffn_down",
];

pub struct GgufFile {
    origin: PathBuf,
    bytes: Bytes,
    content: Content,
}

impl GgufFile {
    #[cfg(not(target_arch = "wasm32"))]
    pub fn open(path: &Path) -> Result<Self> {
        Self::from_bytes(Bytes::map(path)?, path)
    }

    /// `origin` names the file in error messages (a URL in the browser).
    pub fn from_bytes(bytes: Bytes, origin: impl Into<PathBuf>) -> Result<Self> {
        let origin = origin.into();
        let content = Content::read(&mut Cursor::new(&bytes[..]))
            .map_err(|e| Error::file(&origin, format!("not a readable GGUF file: {e}")))?;
        let file = GgufFile { origin, bytes, content };
        file.check_sizes()?;
        Ok(file)
    }

    pub fn metadata(&self) -> &HashMap<String, Value> {
        &self.content.metadata
    }

    pub fn tensor_infos(&self) -> &HashMap<String, TensorInfo> {
        &self.content.tensor_infos
    }

    pub fn origin(&self) -> &Path {
        &self.origin
    }

    /// Every tensor must lie inside the file: a truncated download fails here,
    /// naming the first tensor that is cut, instead of deep inside a matmul.
    /// It must also start on the 8-byte boundary GGUF's alignment implies
    /// (candle reads the data in place and asserts its alignment).
    fn check_sizes(&self) -> Result<()> {
        let len = self.bytes.len() as u64;
        for (name, info) in &self.content.tensor_infos {
            let size = byte_len(info).map_err(|e| Error::file(&self.origin, format!("tensor `{name}`: {e}")))?;
            let start = self.content.tensor_data_offset.checked_add(info.offset);
            if let Some(start) = start.filter(|s| s % 8 != 0) {
                return Err(Error::file(
                    &self.origin,
                    format!("tensor `{name}` starts at byte {start}, not on a multiple of 8 as GGUF requires"),
                ));
            }
            let end = start.and_then(|s| s.checked_add(size as u64)).unwrap_or(u64::MAX);
            if end > len {
                return Err(Error::file(
                    &self.origin,
                    format!("truncated: tensor `{name}` ends at byte {end}, the file has {len} bytes"),
                ));
            }
        }
        Ok(())
    }

    fn meta(&self, key: &str) -> Option<&Value> {
        self.content.metadata.get(key)
    }

    fn meta_usize(&self, key: &str) -> Result<usize> {
        let v = self
            .meta(key)
            .ok_or_else(|| Error::file(&self.origin, format!("missing metadata `{key}`")))?;
        let n = v
            .to_u64()
            .or_else(|_| v.to_u32().map(u64::from))
            .or_else(|_| v.to_i32().map(|x| x as u64));
        n.map(|n| n as usize)
            .map_err(|e| Error::file(&self.origin, format!("metadata `{key}`: {e}")))
    }

    fn meta_f64(&self, key: &str) -> Option<f64> {
        let v = self.meta(key)?;
        v.to_f32().map(f64::from).or_else(|_| v.to_f64()).ok()
    }

    pub fn architecture(&self) -> Result<String> {
        match self.meta("general.architecture").map(|v| v.to_string()) {
            Some(Ok(a)) => Ok(a.clone()),
            _ => Err(Error::file(&self.origin, "missing metadata `general.architecture`")),
        }
    }

    pub fn config(&self) -> Result<ModelConfig> {
        let arch = self.architecture()?;
        if arch != "llama" && arch != "mistral" {
            return Err(Error::UnknownArchitecture(format!(
                "{arch} (in {})",
                self.origin.display()
            )));
        }
        let k = |s: &str| format!("{arch}.{s}");
        let hidden = self.meta_usize(&k("embedding_length"))?;
        let heads = self.meta_usize(&k("attention.head_count"))?;
        let head_dim = self
            .meta_usize(&k("rope.dimension_count"))
            .unwrap_or(hidden / heads.max(1));
        let embd = self.info("token_embd.weight")?;
        let vocab = embd.shape.dims()[0];
        let id = |key: &str| self.meta(key).and_then(|v| v.to_u32().ok());
        let cfg = ModelConfig {
            architecture: arch.clone(),
            vocab_size: vocab,
            hidden_size: hidden,
            intermediate_size: self.meta_usize(&k("feed_forward_length"))?,
            num_hidden_layers: self.meta_usize(&k("block_count"))?,
            num_attention_heads: heads,
            num_key_value_heads: self.meta_usize(&k("attention.head_count_kv")).unwrap_or(heads),
            head_dim,
            rope_theta: self.meta_f64(&k("rope.freq_base")).unwrap_or(10_000.0),
            rms_norm_eps: self.meta_f64(&k("attention.layer_norm_rms_epsilon")).unwrap_or(1e-5),
            sliding_window: self.meta_usize(&k("attention.sliding_window")).ok(),
            max_position_embeddings: self.meta_usize(&k("context_length")).unwrap_or(4096),
            tie_word_embeddings: !self.content.tensor_infos.contains_key("output.weight"),
            bos_token_id: id("tokenizer.ggml.bos_token_id"),
            eos_token_id: id("tokenizer.ggml.eos_token_id"),
        };
        cfg.validate(&self.origin.display().to_string())?;
        Ok(cfg)
    }

    fn info(&self, name: &str) -> Result<&TensorInfo> {
        self.content.tensor_infos.get(name).ok_or_else(|| Error::MissingTensor {
            path: self.origin.clone(),
            name: name.to_string(),
        })
    }

    /// Raw bytes of a tensor, as stored.
    fn raw(&self, name: &str) -> Result<(&TensorInfo, &[u8])> {
        let info = self.info(name)?;
        let start = (self.content.tensor_data_offset + info.offset) as usize;
        Ok((info, &self.bytes[start..start + byte_len(info)?]))
    }

    /// A tensor as a `QTensor` with shape `[rows, cols]` checked against `expected`.
    pub fn qtensor(&self, name: &str, expected: &[usize], device: &Device) -> Result<QTensor> {
        let (info, data) = self.raw(name)?;
        self.check_shape(name, info, expected)?;
        let storage = QStorage::from_data(std::borrow::Cow::Borrowed(data), device, info.ggml_dtype)?;
        Ok(QTensor::new(storage, info.shape.clone())?)
    }

    /// Like [`Self::qtensor`], with rows un-permuted from llama.cpp's rotary layout.
    fn qtensor_unpermuted(&self, name: &str, expected: &[usize], heads: usize, device: &Device) -> Result<QTensor> {
        let (info, data) = self.raw(name)?;
        self.check_shape(name, info, expected)?;
        let rows = info.shape.dims()[0];
        let data = unpermute_rows(data, rows, rows / heads);
        let storage = QStorage::from_data(std::borrow::Cow::Owned(data), device, info.ggml_dtype)?;
        Ok(QTensor::new(storage, info.shape.clone())?)
    }

    fn check_shape(&self, name: &str, info: &TensorInfo, expected: &[usize]) -> Result<()> {
        if info.shape.dims() != expected {
            return Err(Error::ShapeMismatch {
                path: self.origin.clone(),
                name: name.to_string(),
                expected: expected.to_vec(),
                found: info.shape.dims().to_vec(),
            });
        }
        Ok(())
    }

    fn dense(&self, name: &str, expected: &[usize], device: &Device) -> Result<Tensor> {
        Ok(self
            .qtensor(name, expected, device)?
            .dequantize(device)?
            .to_dtype(DType::F32)?)
    }

    fn linear(&self, q: QTensor, format: BaseFormat, device: &Device) -> Result<Linear> {
        match format {
            BaseFormat::AsStored if !matches!(q.dtype(), GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16) => {
                Linear::quantized(q)
            }
            _ => super::dense_linear(q.dequantize(device)?, format, device),
        }
    }

    /// The decoder's weights, in the requested base format.
    pub fn weights(&self, cfg: &ModelConfig, format: BaseFormat, device: &Device) -> Result<ModelWeights> {
        let h = cfg.hidden_size;
        let shapes = cfg.linear_shapes();
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let mut linears = Vec::with_capacity(7);
            for (j, gguf_name) in LINEARS.iter().enumerate() {
                let name = format!("blk.{i}.{gguf_name}.weight");
                let shape = shapes[j].1;
                let q = match j {
                    0 => self.qtensor_unpermuted(&name, &shape, cfg.num_attention_heads, device)?,
                    1 => self.qtensor_unpermuted(&name, &shape, cfg.num_key_value_heads, device)?,
                    _ => self.qtensor(&name, &shape, device)?,
                };
                linears.push(self.linear(q, format, device)?);
            }
            layers.push(LayerWeights {
                input_layernorm: self.dense(&format!("blk.{i}.attn_norm.weight"), &[h], device)?,
                post_attention_layernorm: self.dense(&format!("blk.{i}.ffn_norm.weight"), &[h], device)?,
                linears: linears.try_into().map_err(|_| Error::msg("seven linears per layer"))?,
            });
        }
        let embd = self.qtensor("token_embd.weight", &[cfg.vocab_size, h], device)?;
        // The embedding stays quantized unless a dense model was asked for: the
        // lookup dequantizes only the rows it needs.
        let embed_tokens = match format {
            BaseFormat::AsStored if embd.dtype().block_size() > 1 && h.is_multiple_of(embd.dtype().block_size()) => {
                Embedding::Quantized(std::sync::Arc::new(embd))
            }
            _ => Embedding::Dense(embd.dequantize(device)?),
        };
        let lm_head = if cfg.tie_word_embeddings {
            None
        } else {
            let q = self.qtensor("output.weight", &[cfg.vocab_size, h], device)?;
            // The head is never an adapter target: keep it quantized for speed
            // unless a dense model was asked for.
            Some(match format {
                BaseFormat::F32 => Linear::dense(q.dequantize(device)?, None),
                _ => self.linear(q, BaseFormat::AsStored, device)?,
            })
        };
        Ok(ModelWeights {
            embed_tokens,
            layers,
            norm: self.dense("output_norm.weight", &[h], device)?,
            lm_head,
        })
    }

    pub fn chat_template(&self) -> Option<String> {
        self.meta("tokenizer.chat_template")
            .and_then(|v| v.to_string().ok())
            .cloned()
    }

    pub fn tokenizer(&self) -> Result<Tokenizer> {
        Tokenizer::from_gguf_metadata(&self.content.metadata)
            .map_err(|e| Error::file(&self.origin, format!("tokenizer metadata: {e}")))
    }

    pub fn checkpoint(&self, format: BaseFormat, device: &Device) -> Result<Checkpoint> {
        let config = self.config()?;
        let weights = self.weights(&config, format, device)?;
        let name = self
            .meta("general.name")
            .and_then(|v| v.to_string().ok().cloned())
            .unwrap_or_else(|| self.origin.display().to_string());
        let prompt_settings = self
            .meta(crate::export::PROMPT_SETTINGS_KEY)
            .and_then(|v| v.to_string().ok())
            .cloned();
        Ok(Checkpoint {
            config,
            weights,
            tokenizer: self.tokenizer()?,
            chat_template: self.chat_template(),
            name,
            prompt_settings,
        })
    }
}

/// Bytes a tensor occupies in the file. The dimensions come from the file:
/// their product may overflow, which must be an error, not a wrapped size.
fn byte_len(info: &TensorInfo) -> Result<usize> {
    let dims = info.shape.dims();
    let too_big = || Error::msg(format!("tensor of shape {dims:?} is larger than any file"));
    let n = dims
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or_else(too_big)?;
    let bs = info.ggml_dtype.block_size();
    if !n.is_multiple_of(bs) {
        return Err(Error::msg(format!(
            "tensor of {n} elements is not a whole number of {bs}-blocks"
        )));
    }
    (n / bs).checked_mul(info.ggml_dtype.type_size()).ok_or_else(too_big)
}

/// llama.cpp row `h*hd + 2d + a` holds HF row `h*hd + a*hd/2 + d`; move whole rows back.
fn unpermute_rows(data: &[u8], rows: usize, head_dim: usize) -> Vec<u8> {
    let row_bytes = data.len() / rows;
    let half = head_dim / 2;
    let mut out = vec![0u8; data.len()];
    for r in 0..rows {
        let (h, rem) = (r / head_dim, r % head_dim);
        let (a, d) = (rem / half, rem % half);
        let src = h * head_dim + 2 * d + a;
        out[r * row_bytes..(r + 1) * row_bytes].copy_from_slice(&data[src * row_bytes..(src + 1) * row_bytes]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpermute_moves_rows_as_llama_cpp_defines() {
        // head_dim 4: GGUF rows [0,1,2,3] hold HF rows [0,2,1,3].
        let data: Vec<u8> = vec![10, 11, 12, 13];
        assert_eq!(unpermute_rows(&data, 4, 4), vec![10, 12, 11, 13]);
    }
}
