//! HF model directories: `config.json`, `model.safetensors` or shards with
//! `model.safetensors.index.json`, `tokenizer.json`, `tokenizer_config.json`.

use std::collections::HashMap;
#[cfg(not(target_arch = "wasm32"))]
use std::path::Path;
use std::path::PathBuf;

use candle_core::safetensors::Load;
use candle_core::{DType, Device, Tensor};
use safetensors::SafeTensors;

use super::{BaseFormat, Bytes, Checkpoint};
use crate::config::ModelConfig;
use crate::linear::Linear;
use crate::model::{Embedding, LayerWeights, ModelWeights};
use crate::tokenizer::Tokenizer;
use crate::{Error, Result};

/// One safetensors file: its bytes and the name used in messages.
struct Shard {
    origin: PathBuf,
    bytes: Bytes,
}

pub struct HfCheckpoint {
    config: ModelConfig,
    config_origin: PathBuf,
    shards: Vec<Shard>,
    /// tensor name → shard index
    index: HashMap<String, usize>,
    tokenizer_json: Option<Vec<u8>>,
    tokenizer_config: Option<Vec<u8>>,
    name: String,
}

#[cfg(not(target_arch = "wasm32"))]
fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

impl HfCheckpoint {
    #[cfg(not(target_arch = "wasm32"))]
    pub fn open(dir: &Path) -> Result<Self> {
        let config_path = dir.join("config.json");
        let config_text =
            String::from_utf8(read(&config_path)?).map_err(|_| Error::file(&config_path, "not UTF-8 text"))?;
        let index_path = dir.join("model.safetensors.index.json");
        let files: Vec<PathBuf> = if index_path.is_file() {
            #[derive(serde::Deserialize)]
            struct Index {
                weight_map: HashMap<String, String>,
            }
            let idx: Index = serde_json::from_slice(&read(&index_path)?).map_err(|source| Error::Json {
                path: index_path.clone(),
                source,
            })?;
            let mut names: Vec<String> = idx.weight_map.into_values().collect();
            names.sort();
            names.dedup();
            names.into_iter().map(|n| dir.join(n)).collect()
        } else {
            vec![dir.join("model.safetensors")]
        };
        let mut shards = Vec::new();
        for f in files {
            if !f.is_file() {
                return Err(Error::file(&f, "missing safetensors file"));
            }
            shards.push(Shard {
                bytes: Bytes::map(&f)?,
                origin: f,
            });
        }
        let opt = |n: &str| {
            let p = dir.join(n);
            if p.is_file() {
                read(&p).map(Some)
            } else {
                Ok(None)
            }
        };
        Self::new(
            &config_text,
            config_path,
            shards.into_iter().map(|s| (s.origin, s.bytes)).collect(),
            opt("tokenizer.json")?,
            opt("tokenizer_config.json")?,
            dir.display().to_string(),
        )
    }

    /// From in-memory parts (wasm, tests). `shards` are `(name, bytes)`.
    pub fn new(
        config_json: &str,
        config_origin: PathBuf,
        shards: Vec<(PathBuf, Bytes)>,
        tokenizer_json: Option<Vec<u8>>,
        tokenizer_config: Option<Vec<u8>>,
        name: String,
    ) -> Result<Self> {
        let config = ModelConfig::from_hf_json(config_json, &config_origin.display().to_string())?;
        let mut index = HashMap::new();
        let mut out = Vec::new();
        for (i, (origin, bytes)) in shards.into_iter().enumerate() {
            let st = SafeTensors::deserialize(&bytes)
                .map_err(|e| Error::file(&origin, format!("not a readable safetensors file: {e}")))?;
            for n in st.names() {
                index.insert(n.to_string(), i);
            }
            out.push(Shard { origin, bytes });
        }
        Ok(HfCheckpoint {
            config,
            config_origin,
            shards: out,
            index,
            tokenizer_json,
            tokenizer_config,
            name,
        })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// A tensor by HF name, shape-checked, in its stored dtype.
    pub fn tensor(&self, name: &str, expected: &[usize], device: &Device) -> Result<Tensor> {
        let &i = self.index.get(name).ok_or_else(|| Error::MissingTensor {
            path: self
                .shards
                .first()
                .map_or(self.config_origin.clone(), |s| s.origin.clone()),
            name: name.to_string(),
        })?;
        let shard = &self.shards[i];
        let st = SafeTensors::deserialize(&shard.bytes)
            .map_err(|e| Error::file(&shard.origin, format!("not a readable safetensors file: {e}")))?;
        let view = st
            .tensor(name)
            .map_err(|e| Error::file(&shard.origin, format!("tensor `{name}`: {e}")))?;
        if view.shape() != expected {
            return Err(Error::ShapeMismatch {
                path: shard.origin.clone(),
                name: name.to_string(),
                expected: expected.to_vec(),
                found: view.shape().to_vec(),
            });
        }
        view.load(device)
            .map_err(|e| Error::file(&shard.origin, format!("tensor `{name}`: {e}")))
    }

    pub fn weights(&self, format: BaseFormat, device: &Device) -> Result<ModelWeights> {
        let cfg = &self.config;
        let h = cfg.hidden_size;
        let f32 = |t: Tensor| -> Result<Tensor> { Ok(t.to_dtype(DType::F32)?) };
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let p = format!("model.layers.{i}");
            let mut linears = Vec::with_capacity(7);
            // NF4 is quantized on the CPU: read the dense weight there, send only the codes.
            let read_on = if format == BaseFormat::Nf4 {
                &Device::Cpu
            } else {
                device
            };
            for (name, shape) in cfg.linear_shapes() {
                let w = self.tensor(&format!("{p}.{name}.weight"), &shape, read_on)?;
                linears.push(super::dense_linear(w, format, device)?);
            }
            layers.push(LayerWeights {
                input_layernorm: f32(self.tensor(&format!("{p}.input_layernorm.weight"), &[h], device)?)?,
                post_attention_layernorm: f32(self.tensor(
                    &format!("{p}.post_attention_layernorm.weight"),
                    &[h],
                    device,
                )?)?,
                linears: linears.try_into().map_err(|_| Error::msg("seven linears per layer"))?,
            });
        }
        let dense = |t: Tensor| -> Result<Tensor> {
            Ok(if format == BaseFormat::AsStored {
                t
            } else {
                t.to_dtype(DType::F32)?
            })
        };
        let embed = dense(self.tensor("model.embed_tokens.weight", &[cfg.vocab_size, h], device)?)?;
        let lm_head = if cfg.tie_word_embeddings {
            None
        } else {
            Some(Linear::dense(
                dense(self.tensor("lm_head.weight", &[cfg.vocab_size, h], device)?)?,
                None,
            ))
        };
        Ok(ModelWeights {
            embed_tokens: Embedding::Dense(embed),
            layers,
            norm: f32(self.tensor("model.norm.weight", &[h], device)?)?,
            lm_head,
        })
    }

    pub fn chat_template(&self) -> Option<String> {
        let cfg: serde_json::Value = serde_json::from_slice(self.tokenizer_config.as_deref()?).ok()?;
        cfg.get("chat_template")?.as_str().map(str::to_string)
    }

    pub fn tokenizer(&self) -> Result<Tokenizer> {
        let json = self
            .tokenizer_json
            .as_deref()
            .ok_or_else(|| Error::file(&self.name, "no tokenizer.json in the model directory"))?;
        Tokenizer::from_json_bytes(json, self.tokenizer_config.as_deref())
    }

    pub fn checkpoint(&self, format: BaseFormat, device: &Device) -> Result<Checkpoint> {
        Ok(Checkpoint {
            config: self.config.clone(),
            weights: self.weights(format, device)?,
            tokenizer: self.tokenizer()?,
            chat_template: self.chat_template(),
            name: self.name.clone(),
            prompt_settings: None,
        })
    }
}
