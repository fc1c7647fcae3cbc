//! The Mistral / Llama-family decoder (transformers' `MistralForCausalLM`).
//!
//! Token embedding → N × (RMSNorm → GQA attention with RoPE and an optional
//! sliding window → residual → RMSNorm → SwiGLU MLP → residual) → RMSNorm → LM head.
//! Every projection is a [`Linear`], so the same code runs dense, GGUF-quantized
//! and NF4 bases, with or without LoRA.
//!
//! candle's fused `rope`, `rms_norm` and `softmax_last_dim` have no backward pass;
//! when an input tracks gradients (LoRA training) [`crate::fused`] gives them one.

use std::sync::Arc;

use candle_core::quantized::QTensor;
use candle_core::{DType, Device, Tensor};

use crate::config::ModelConfig;
use crate::linear::Linear;
use crate::Result;

/// The token embedding: dense, or kept quantized (GGUF `token_embd`, rows
/// dequantized on lookup so the browser never holds the f32 table).
#[derive(Clone)]
pub enum Embedding {
    Dense(Tensor),
    Quantized(Arc<QTensor>),
}

impl Embedding {
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Embedding::Dense(w) => {
                let (b, t) = ids.dims2()?;
                w.index_select(&ids.flatten_all()?, 0)?.reshape((b, t, w.dim(1)?))?
            }
            Embedding::Quantized(q) => q.embedding(ids)?,
        })
    }

    pub fn dequantize(&self, device: &Device) -> Result<Tensor> {
        Ok(match self {
            Embedding::Dense(w) => w.to_dtype(DType::F32)?,
            Embedding::Quantized(q) => q.dequantize(device)?,
        })
    }
}

#[derive(Clone)]
pub struct RmsNorm {
    pub weight: Tensor,
    pub eps: f64,
}

impl RmsNorm {
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if x.track_op() {
            Ok(crate::fused::rms_norm(x, &self.weight, self.eps as f32)?)
        } else {
            Ok(candle_nn::ops::rms_norm(
                &x.contiguous()?,
                &self.weight,
                self.eps as f32,
            )?)
        }
    }
}

/// cos/sin tables for rotate-half RoPE (HF layout of q/k rows).
#[derive(Clone)]
pub struct Rotary {
    cos: Tensor,
    sin: Tensor,
}

impl Rotary {
    pub fn new(cfg: &ModelConfig, max_len: usize, device: &Device) -> Result<Self> {
        let half = cfg.head_dim / 2;
        let inv: Vec<f32> = (0..half)
            .map(|i| 1.0 / cfg.rope_theta.powf(2.0 * i as f64 / cfg.head_dim as f64) as f32)
            .collect();
        let inv = Tensor::from_vec(inv, (1, half), device)?;
        let pos = Tensor::arange(0u32, max_len as u32, device)?
            .to_dtype(DType::F32)?
            .reshape((max_len, 1))?;
        let freqs = pos.broadcast_mul(&inv)?;
        Ok(Rotary {
            cos: freqs.cos()?,
            sin: freqs.sin()?,
        })
    }

    /// `x`: `[b, heads, t, head_dim]` at absolute positions `offset..offset+t`.
    fn apply(&self, x: &Tensor, offset: usize) -> Result<Tensor> {
        let t = x.dim(2)?;
        let cos = self.cos.narrow(0, offset, t)?;
        let sin = self.sin.narrow(0, offset, t)?;
        if x.track_op() {
            Ok(crate::fused::rope(x, &cos, &sin)?)
        } else {
            Ok(candle_nn::rotary_emb::rope(
                &x.contiguous()?,
                &cos.contiguous()?,
                &sin.contiguous()?,
            )?)
        }
    }
}

/// Keys and values seen so far, one entry per layer: `[b, kv_heads, len, head_dim]`.
#[derive(Clone, Default)]
pub struct Cache {
    kv: Vec<Option<(Tensor, Tensor)>>,
}

impl Cache {
    pub fn new(layers: usize) -> Self {
        Cache { kv: vec![None; layers] }
    }
    /// Positions already cached.
    pub fn len(&self) -> usize {
        self.kv
            .first()
            .and_then(|e| e.as_ref())
            .map_or(0, |(k, _)| k.dim(2).unwrap_or(0))
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Keep only the batch rows in `rows` (beam search reorders hypotheses).
    pub fn select_rows(&mut self, rows: &Tensor) -> Result<()> {
        for (k, v) in self.kv.iter_mut().flatten() {
            *k = k.index_select(rows, 0)?;
            *v = v.index_select(rows, 0)?;
        }
        Ok(())
    }
}

#[derive(Clone)]
pub struct Attention {
    pub q_proj: Linear,
    pub k_proj: Linear,
    pub v_proj: Linear,
    pub o_proj: Linear,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
}

impl Attention {
    fn forward(
        &self,
        x: &Tensor,
        rotary: &Rotary,
        mask: Option<&Tensor>,
        offset: usize,
        cache: Option<&mut Option<(Tensor, Tensor)>>,
    ) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let shape =
            |y: Tensor, h: usize| -> Result<Tensor> { Ok(y.reshape((b, t, h, self.head_dim))?.transpose(1, 2)?) };
        let q = rotary.apply(&shape(self.q_proj.forward(x)?, self.heads)?, offset)?;
        let mut k = rotary.apply(&shape(self.k_proj.forward(x)?, self.kv_heads)?, offset)?;
        let mut v = shape(self.v_proj.forward(x)?, self.kv_heads)?.contiguous()?;
        if let Some(entry) = cache {
            if let Some((pk, pv)) = entry.as_ref() {
                k = Tensor::cat(&[pk, &k], 2)?;
                v = Tensor::cat(&[pv, &v], 2)?;
            }
            *entry = Some((k.clone(), v.clone()));
        }
        let rep = self.heads / self.kv_heads;
        let k = candle_transformers::utils::repeat_kv(k, rep)?.contiguous()?;
        let v = candle_transformers::utils::repeat_kv(v, rep)?.contiguous()?;
        // Scale q (head_dim wide) rather than the scores (key-length wide).
        let q = (q * (1.0 / (self.head_dim as f64).sqrt()))?;
        let mut scores = q.contiguous()?.matmul(&k.t()?)?;
        if let Some(m) = mask {
            scores = scores.broadcast_add(m)?;
        }
        let probs = if scores.track_op() {
            crate::fused::softmax_last_dim(&scores)?
        } else {
            candle_nn::ops::softmax_last_dim(&scores)?
        };
        let out = probs
            .matmul(&v)?
            .transpose(1, 2)?
            .reshape((b, t, self.heads * self.head_dim))?;
        self.o_proj.forward(&out)
    }
}

#[derive(Clone)]
pub struct Mlp {
    pub gate_proj: Linear,
    pub up_proj: Linear,
    pub down_proj: Linear,
}

impl Mlp {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let gate = candle_nn::ops::silu(&self.gate_proj.forward(x)?)?;
        self.down_proj.forward(&(gate * self.up_proj.forward(x)?)?)
    }
}

#[derive(Clone)]
pub struct Layer {
    pub input_layernorm: RmsNorm,
    pub self_attn: Attention,
    pub post_attention_layernorm: RmsNorm,
    pub mlp: Mlp,
}

/// Everything a decoder needs, by HF name, as the weight loaders produce it.
pub struct LayerWeights {
    pub input_layernorm: Tensor,
    pub post_attention_layernorm: Tensor,
    /// q, k, v, o, gate, up, down (the order of [`ModelConfig::linear_shapes`]).
    pub linears: [Linear; 7],
}

pub struct ModelWeights {
    pub embed_tokens: Embedding,
    pub layers: Vec<LayerWeights>,
    pub norm: Tensor,
    /// `None` when tied to the embedding.
    pub lm_head: Option<Linear>,
}

#[derive(Clone)]
pub struct Model {
    config: ModelConfig,
    embed_tokens: Embedding,
    layers: Vec<Layer>,
    norm: RmsNorm,
    lm_head: Linear,
    rotary: Rotary,
    device: Device,
}

impl Model {
    pub fn new(config: ModelConfig, w: ModelWeights, device: &Device) -> Result<Self> {
        let eps = config.rms_norm_eps;
        let norm = |weight: Tensor| RmsNorm { weight, eps };
        let layers = w
            .layers
            .into_iter()
            .map(|lw| {
                let [q, k, v, o, gate, up, down] = lw.linears;
                Layer {
                    input_layernorm: norm(lw.input_layernorm),
                    self_attn: Attention {
                        q_proj: q,
                        k_proj: k,
                        v_proj: v,
                        o_proj: o,
                        heads: config.num_attention_heads,
                        kv_heads: config.num_key_value_heads,
                        head_dim: config.head_dim,
                    },
                    post_attention_layernorm: norm(lw.post_attention_layernorm),
                    mlp: Mlp {
                        gate_proj: gate,
                        up_proj: up,
                        down_proj: down,
                    },
                }
            })
            .collect();
        let lm_head = match (w.lm_head, &w.embed_tokens) {
            (Some(h), _) => h,
            (None, Embedding::Dense(e)) => Linear::dense(e.clone(), None),
            (None, Embedding::Quantized(q)) => Linear::quantized_arc(q.clone())?,
        };
        let max_len = config.max_position_embeddings.min(32768);
        Ok(Model {
            rotary: Rotary::new(&config, max_len, device)?,
            embed_tokens: w.embed_tokens,
            layers,
            norm: norm(w.norm),
            lm_head,
            device: device.clone(),
            config,
        })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }
    pub fn device(&self) -> &Device {
        &self.device
    }
    pub fn new_cache(&self) -> Cache {
        Cache::new(self.layers.len())
    }
    pub fn embed_tokens(&self) -> &Embedding {
        &self.embed_tokens
    }
    pub fn layers(&self) -> &[Layer] {
        &self.layers
    }
    pub fn final_norm(&self) -> &RmsNorm {
        &self.norm
    }
    pub fn lm_head(&self) -> &Linear {
        &self.lm_head
    }

    /// Every linear projection with its HF name (`model.layers.3.mlp.up_proj`),
    /// for attaching adapters or swapping the frozen base. The LM head is not included.
    pub fn linears_mut(&mut self) -> impl Iterator<Item = (String, &mut Linear)> {
        self.layers.iter_mut().enumerate().flat_map(|(i, l)| {
            let p = format!("model.layers.{i}");
            [
                (format!("{p}.self_attn.q_proj"), &mut l.self_attn.q_proj),
                (format!("{p}.self_attn.k_proj"), &mut l.self_attn.k_proj),
                (format!("{p}.self_attn.v_proj"), &mut l.self_attn.v_proj),
                (format!("{p}.self_attn.o_proj"), &mut l.self_attn.o_proj),
                (format!("{p}.mlp.gate_proj"), &mut l.mlp.gate_proj),
                (format!("{p}.mlp.up_proj"), &mut l.mlp.up_proj),
                (format!("{p}.mlp.down_proj"), &mut l.mlp.down_proj),
            ]
        })
    }

    /// Same as [`Self::linears_mut`], read-only.
    pub fn linears(&self) -> impl Iterator<Item = (String, &Linear)> {
        self.layers.iter().enumerate().flat_map(|(i, l)| {
            let p = format!("model.layers.{i}");
            [
                (format!("{p}.self_attn.q_proj"), &l.self_attn.q_proj),
                (format!("{p}.self_attn.k_proj"), &l.self_attn.k_proj),
                (format!("{p}.self_attn.v_proj"), &l.self_attn.v_proj),
                (format!("{p}.self_attn.o_proj"), &l.self_attn.o_proj),
                (format!("{p}.mlp.gate_proj"), &l.mlp.gate_proj),
                (format!("{p}.mlp.up_proj"), &l.mlp.up_proj),
                (format!("{p}.mlp.down_proj"), &l.mlp.down_proj),
            ]
        })
    }

    /// Replace every quantized base weight (linears, embedding, head) by dense f32.
    pub fn dequantize(&mut self) -> Result<()> {
        let dev = self.device.clone();
        for (_, l) in self.linears_mut() {
            l.to_dense(&dev)?;
        }
        self.lm_head.to_dense(&dev)?;
        self.embed_tokens = Embedding::Dense(self.embed_tokens.dequantize(&dev)?);
        Ok(())
    }

    /// Additive mask `[t, offset + t]`: causal, plus the sliding window
    /// (query i sees key j iff j <= i and i - j < window). `None` when nothing is masked.
    fn mask(&self, t: usize, offset: usize) -> Result<Option<Tensor>> {
        let total = offset + t;
        let window = self.config.sliding_window.unwrap_or(usize::MAX);
        if t == 1 && total <= window {
            return Ok(None);
        }
        let m: Vec<f32> = (0..t)
            .flat_map(|i| {
                let qi = offset + i;
                (0..total).map(move |j| {
                    if j <= qi && qi - j < window {
                        0.0
                    } else {
                        f32::NEG_INFINITY
                    }
                })
            })
            .collect();
        Ok(Some(Tensor::from_vec(m, (t, total), &self.device)?))
    }

    /// Hidden states after the final norm, `[b, t, hidden]`.
    pub fn forward_hidden(&self, ids: &Tensor, offset: usize, mut cache: Option<&mut Cache>) -> Result<Tensor> {
        let (_, t) = ids.dims2()?;
        let mask = self.mask(t, offset)?;
        let mut x = self.embed_tokens.forward(ids)?;
        for (i, layer) in self.layers.iter().enumerate() {
            let entry = cache.as_deref_mut().map(|c| &mut c.kv[i]);
            let h = layer.input_layernorm.forward(&x)?;
            let h = layer
                .self_attn
                .forward(&h, &self.rotary, mask.as_ref(), offset, entry)?;
            x = (x + h)?;
            let h = layer.mlp.forward(&layer.post_attention_layernorm.forward(&x)?)?;
            x = (x + h)?;
        }
        self.norm.forward(&x)
    }

    /// Logits `[b, t, vocab]` for tokens `ids` `[b, t]` at positions `offset..`.
    /// With a cache, keys/values are appended to it (incremental decoding).
    pub fn forward(&self, ids: &Tensor, offset: usize, cache: Option<&mut Cache>) -> Result<Tensor> {
        let h = self.forward_hidden(ids, offset, cache)?;
        self.lm_head.forward(&h)
    }

    /// Logits of the last position only, `[b, vocab]` (generation: skips the
    /// LM head on every other position).
    pub fn forward_last(&self, ids: &Tensor, offset: usize, cache: Option<&mut Cache>) -> Result<Tensor> {
        let h = self.forward_hidden(ids, offset, cache)?;
        let t = h.dim(1)?;
        let last = h.narrow(1, t - 1, 1)?;
        Ok(self.lm_head.forward(&last)?.squeeze(1)?)
    }
}
