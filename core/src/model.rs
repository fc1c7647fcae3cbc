//! The Mistral / Llama-family decoder (transformers' `MistralForCausalLM`).
//!
//! Token embedding → N × (RMSNorm → GQA attention with RoPE and an optional
//! sliding window → residual → RMSNorm → SwiGLU MLP → residual) → RMSNorm → LM head.
//! Every projection is a [`Linear`], so the same code runs dense, GGUF-quantized
//! and NF4 bases, with or without LoRA.
//!
//! candle's fused `rope`, `rms_norm` and `softmax_last_dim` have no backward pass;
//! when an input tracks gradients (LoRA training) [`crate::fused`] gives them one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use candle_core::quantized::QTensor;
use candle_core::{DType, Device, Tensor, Var};

use crate::config::ModelConfig;
use crate::fused::Backward;
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

    fn to_dtype(&self, dtype: DType) -> Result<Self> {
        Ok(Rotary {
            cos: self.cos.to_dtype(dtype)?,
            sin: self.sin.to_dtype(dtype)?,
        })
    }

    /// The tables for `t` tokens from position `offset`; with left padding
    /// (`pads[r]` pad tokens before row r's first real token) each row counts
    /// its positions from its own first token, pads at position 0.
    fn at(&self, offset: usize, t: usize, pads: &[usize]) -> Result<RopeAt> {
        if pads.iter().all(|&p| p == 0) {
            return Ok(RopeAt {
                cos: self.cos.narrow(0, offset, t)?,
                sin: self.sin.narrow(0, offset, t)?,
            });
        }
        let pos: Vec<u32> = pads
            .iter()
            .flat_map(|&p| (offset..offset + t).map(move |i| i.saturating_sub(p) as u32))
            .collect();
        let pos = Tensor::from_vec(pos, pads.len() * t, self.cos.device())?;
        let half = self.cos.dim(1)?;
        let rows =
            |table: &Tensor| -> Result<Tensor> { Ok(table.index_select(&pos, 0)?.reshape((pads.len(), t, half))?) };
        Ok(RopeAt {
            cos: rows(&self.cos)?,
            sin: rows(&self.sin)?,
        })
    }
}

/// Rotary tables at the positions of one forward pass: `[t, d/2]`, or
/// `[b, t, d/2]` when rows have their own positions (left-padded batches).
#[derive(Clone)]
pub struct RopeAt {
    cos: Tensor,
    sin: Tensor,
}

impl RopeAt {
    /// `x`: `[b, heads, t, head_dim]`.
    fn apply(&self, x: &Tensor) -> Result<Tensor> {
        if x.track_op() {
            Ok(crate::fused::rope(x, &self.cos, &self.sin)?)
        } else {
            Ok(candle_nn::rotary_emb::rope(
                &x.contiguous()?,
                &self.cos.contiguous()?,
                &self.sin.contiguous()?,
            )?)
        }
    }
}

/// Keys and values seen so far, one entry per layer: `[b, kv_heads, len, head_dim]`,
/// and, for a batch of prompts of different lengths, how many pad tokens
/// stand before each row's prompt (left padding; see [`Cache::left_padded`]).
#[derive(Clone, Default)]
pub struct Cache {
    kv: Vec<Option<(Tensor, Tensor)>>,
    pads: Vec<usize>,
}

impl Cache {
    pub fn new(layers: usize) -> Self {
        Cache {
            kv: vec![None; layers],
            pads: vec![],
        }
    }
    /// A cache for a left-padded batch: row r starts with `pads[r]` pad tokens,
    /// which no real token attends to and which do not count as positions.
    pub fn left_padded(layers: usize, pads: Vec<usize>) -> Self {
        Cache {
            kv: vec![None; layers],
            pads,
        }
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
        if !self.pads.is_empty() {
            let rows = rows.to_vec1::<u32>()?;
            self.pads = rows.iter().map(|&r| self.pads[r as usize]).collect();
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
        rope: &RopeAt,
        mask: Option<&Tensor>,
        cache: Option<&mut Option<(Tensor, Tensor)>>,
    ) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let shape =
            |y: Tensor, h: usize| -> Result<Tensor> { Ok(y.reshape((b, t, h, self.head_dim))?.transpose(1, 2)?) };
        let q = rope.apply(&shape(self.q_proj.forward(x)?, self.heads)?)?;
        let mut k = rope.apply(&shape(self.k_proj.forward(x)?, self.kv_heads)?)?;
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

impl Layer {
    fn linears(&self) -> [&Linear; 7] {
        let (a, m) = (&self.self_attn, &self.mlp);
        [
            &a.q_proj,
            &a.k_proj,
            &a.v_proj,
            &a.o_proj,
            &m.gate_proj,
            &m.up_proj,
            &m.down_proj,
        ]
    }

    /// The trainable adapter tensors (LoRA A and B variables) of this layer.
    fn trainable(&self) -> Vec<Tensor> {
        self.linears()
            .into_iter()
            .filter_map(|l| l.lora())
            .flat_map(|l| [l.a.clone(), l.b.clone()])
            .filter(Tensor::is_variable)
            .collect()
    }

    /// Norm → attention → residual → norm → MLP → residual.
    fn forward(
        &self,
        x: &Tensor,
        rope: &RopeAt,
        mask: Option<&Tensor>,
        cache: Option<&mut Option<(Tensor, Tensor)>>,
    ) -> Result<Tensor> {
        let h = self.input_layernorm.forward(x)?;
        let x = (x + self.self_attn.forward(&h, rope, mask, cache)?)?;
        let h = self.mlp.forward(&self.post_attention_layernorm.forward(&x)?)?;
        Ok((x + h)?)
    }
}

/// Gradient checkpointing of one layer: the forward keeps only the layer's
/// input; the backward runs the layer again (same dropout masks: `layer` is
/// the copy taken before the forward, its mask counters included) and
/// backpropagates through it. The adapter gradients it finds go to `grads`,
/// which the trainer adds to the step's gradients ([`Model::take_checkpoint_grads`]).
struct Recompute {
    layer: Layer,
    rope: RopeAt,
    mask: Option<Tensor>,
    grads: CheckpointGrads,
}

type CheckpointGrads = Arc<Mutex<Vec<(Tensor, Tensor)>>>;

/// Attention masks by (query length, offset); `None` where nothing is masked.
type MaskCache = Arc<Mutex<HashMap<(usize, usize), Option<Tensor>>>>;

impl Backward for Recompute {
    fn name(&self) -> &'static str {
        "sqlora-checkpoint"
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, g: &Tensor) -> candle_core::Result<Tensor> {
        let x = Var::from_tensor(&x.detach())?;
        let y = self
            .layer
            .forward(x.as_tensor(), &self.rope, self.mask.as_ref(), None)
            .map_err(candle_core::Error::wrap)?;
        let grads = (y * g.detach())?.sum_all()?.backward()?;
        let mut out = self.grads.lock().expect("checkpoint gradients");
        for t in self.layer.trainable() {
            if let Some(gt) = grads.get(&t) {
                out.push((t, gt.clone()));
            }
        }
        grads
            .get(x.as_tensor())
            .cloned()
            .ok_or_else(|| candle_core::Error::Msg("checkpoint: no gradient reached the layer input".into()))
    }
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

/// Positions the rotary tables cover (contexts beyond are cut to this).
const MAX_POSITIONS: usize = 32768;

#[derive(Clone)]
pub struct Model {
    config: ModelConfig,
    embed_tokens: Embedding,
    layers: Vec<Layer>,
    norm: RmsNorm,
    lm_head: Linear,
    rotary: Rotary,
    device: Device,
    /// Compute dtype of activations (f32, bf16, f16); adapters stay f32.
    dtype: DType,
    /// Attention masks by (query length, offset), built once per shape.
    masks: MaskCache,
    /// Recompute each layer in the backward pass instead of keeping its activations.
    checkpointing: bool,
    checkpoint_grads: CheckpointGrads,
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
        let max_len = config.max_position_embeddings.min(MAX_POSITIONS);
        Ok(Model {
            rotary: Rotary::new(&config, max_len, device)?,
            embed_tokens: w.embed_tokens,
            layers,
            norm: norm(w.norm),
            lm_head,
            device: device.clone(),
            config,
            dtype: DType::F32,
            masks: Default::default(),
            checkpointing: false,
            checkpoint_grads: Default::default(),
        })
    }

    /// The compute dtype: dense weights, norms, rotary tables and activations
    /// become `dtype`; NF4 and GGUF weights dequantize into it per call;
    /// LoRA weights stay f32 (cast per call, as peft's are).
    pub fn set_dtype(&mut self, dtype: DType) -> Result<()> {
        if let Embedding::Dense(w) = &self.embed_tokens {
            self.embed_tokens = Embedding::Dense(w.to_dtype(dtype)?);
        }
        for l in &mut self.layers {
            for n in [&mut l.input_layernorm, &mut l.post_attention_layernorm] {
                n.weight = n.weight.to_dtype(dtype)?;
            }
        }
        self.norm.weight = self.norm.weight.to_dtype(dtype)?;
        for (_, l) in self.linears_mut() {
            l.set_dtype(dtype)?;
        }
        self.lm_head.set_dtype(dtype)?;
        self.rotary = self.rotary.to_dtype(dtype)?;
        self.masks.lock().expect("mask cache").clear();
        self.dtype = dtype;
        Ok(())
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Gradient checkpointing (transformers' `gradient_checkpointing`): layers
    /// with trainable adapters keep only their input for the backward pass.
    pub fn set_gradient_checkpointing(&mut self, on: bool) {
        self.checkpointing = on;
    }

    /// Adapter gradients found by recomputed layers since the last call, as
    /// (variable, gradient) pairs; add them to the backward pass's gradients.
    pub fn take_checkpoint_grads(&self) -> Vec<(Tensor, Tensor)> {
        std::mem::take(&mut *self.checkpoint_grads.lock().expect("checkpoint gradients"))
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }
    /// Longest sequence (prompt + generated tokens) this model takes: its
    /// configured context, at most the 32,768 positions of the rotary tables.
    pub fn context_len(&self) -> usize {
        self.config.max_position_embeddings.min(MAX_POSITIONS)
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
    /// (query i sees key j iff j <= i and i - j < window). `None` when nothing
    /// is masked. Built once per shape and kept on the device.
    fn mask(&self, t: usize, offset: usize) -> Result<Option<Tensor>> {
        let mut cache = self.masks.lock().expect("mask cache");
        if let Some(m) = cache.get(&(t, offset)) {
            return Ok(m.clone());
        }
        let total = offset + t;
        let window = self.config.sliding_window.unwrap_or(usize::MAX);
        let m = if t == 1 && total <= window {
            None
        } else {
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
            Some(Tensor::from_vec(m, (t, total), &self.device)?.to_dtype(self.dtype)?)
        };
        // Decoding asks for a new offset every token: keep only training-sized shapes.
        if offset == 0 {
            cache.insert((t, offset), m.clone());
        }
        Ok(m)
    }

    /// Additive mask `[b, 1, t, offset + t]` of a left-padded batch: the causal
    /// and window rules of [`Self::mask`], and no real token sees a pad. A pad
    /// sees itself only, so its (unused) state stays finite.
    fn padded_mask(&self, t: usize, offset: usize, pads: &[usize]) -> Result<Tensor> {
        let total = offset + t;
        let window = self.config.sliding_window.unwrap_or(usize::MAX);
        let m: Vec<f32> = pads
            .iter()
            .flat_map(|&p| {
                (0..t).flat_map(move |i| {
                    let qi = offset + i;
                    (0..total).map(move |j| {
                        let visible = if qi < p {
                            j == qi
                        } else {
                            j >= p && j <= qi && qi - j < window
                        };
                        if visible {
                            0.0
                        } else {
                            f32::NEG_INFINITY
                        }
                    })
                })
            })
            .collect();
        Ok(Tensor::from_vec(m, (pads.len(), 1, t, total), &self.device)?.to_dtype(self.dtype)?)
    }

    /// Hidden states after the final norm, `[b, t, hidden]`, in the compute dtype.
    pub fn forward_hidden(&self, ids: &Tensor, offset: usize, mut cache: Option<&mut Cache>) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        let pads = cache.as_ref().map(|c| c.pads.clone()).unwrap_or_default();
        let (mask, rope) = if pads.iter().any(|&p| p > 0) {
            if pads.len() != b {
                return Err(crate::Error::msg(format!(
                    "a cache for {} padded rows was given a batch of {b}",
                    pads.len()
                )));
            }
            (
                Some(self.padded_mask(t, offset, &pads)?),
                self.rotary.at(offset, t, &pads)?,
            )
        } else {
            (self.mask(t, offset)?, self.rotary.at(offset, t, &[])?)
        };
        let mut x = self.embed_tokens.forward(ids)?.to_dtype(self.dtype)?;
        for (i, layer) in self.layers.iter().enumerate() {
            x = if self.checkpointing && cache.is_none() && !layer.trainable().is_empty() {
                self.checkpointed(layer, &x, &rope, mask.as_ref())?
            } else {
                let entry = cache.as_deref_mut().map(|c| &mut c.kv[i]);
                layer.forward(&x, &rope, mask.as_ref(), entry)?
            };
        }
        self.norm.forward(&x)
    }

    /// One layer under gradient checkpointing (see [`Recompute`]).
    fn checkpointed(&self, layer: &Layer, x: &Tensor, rope: &RopeAt, mask: Option<&Tensor>) -> Result<Tensor> {
        let saved = layer.clone();
        // The op must be on the graph even where nothing upstream is trained
        // (the first layer): a leaf variable makes it so.
        let x = if x.track_op() {
            x.clone()
        } else {
            Var::from_tensor(x)?.as_tensor().clone()
        };
        // The same path as the recompute (a tracked input), so both see the same numbers.
        let input = Var::from_tensor(&x.detach())?;
        let y = layer.forward(input.as_tensor(), rope, mask, None)?;
        Ok(crate::fused::attach(
            &x,
            &y,
            Recompute {
                layer: saved,
                rope: rope.clone(),
                mask: mask.cloned(),
                grads: self.checkpoint_grads.clone(),
            },
        )?)
    }

    /// Logits `[b, t, vocab]` (f32) for tokens `ids` `[b, t]` at positions `offset..`.
    /// With a cache, keys/values are appended to it (incremental decoding).
    pub fn forward(&self, ids: &Tensor, offset: usize, cache: Option<&mut Cache>) -> Result<Tensor> {
        let h = self.forward_hidden(ids, offset, cache)?;
        Ok(self.lm_head.forward(&h)?.to_dtype(DType::F32)?)
    }

    /// Logits of the last position only, `[b, vocab]` in f32 (generation: skips the
    /// LM head on every other position).
    pub fn forward_last(&self, ids: &Tensor, offset: usize, cache: Option<&mut Cache>) -> Result<Tensor> {
        let h = self.forward_hidden(ids, offset, cache)?;
        let t = h.dim(1)?;
        // Contiguous: for several rows the narrowed view is strided, and quantized kernels need rows packed.
        let last = h.narrow(1, t - 1, 1)?.contiguous()?;
        Ok(self.lm_head.forward(&last)?.squeeze(1)?.to_dtype(DType::F32)?)
    }
}
