//! The one linear layer every projection of the decoder goes through.
//!
//! The frozen base weight can be dense (f32/bf16), GGUF block-quantized
//! (Q4_1, Q8_0, … as candle reads them) or NF4 (bitsandbytes layout, for QLoRA);
//! a LoRA adapter may sit beside it. `y = base(x) + lora(x)`.
//!
//! Two paths through the base:
//! - nothing upstream needs a gradient (`!x.track_op()`, e.g. generation): the
//!   fastest kernel — candle's quantized matmul for GGUF, a plain matmul for dense;
//! - training (`x.track_op()`): [`FrozenMatmul`], a custom op whose backward
//!   returns `∂L/∂x = g · W` and nothing for W. candle's `QMatMul` has no
//!   backward at all, and a plain matmul would also compute the (unused) weight
//!   gradient. Quantized weights are dequantized per call, on the device the
//!   input lives on, and dropped right after: the autograd graph holds the
//!   quantized weight, never a dense copy.

use std::sync::Arc;

use candle_core::backend::BackendStorage;
use candle_core::quantized::{QMatMul, QTensor};
use candle_core::{CpuStorage, CustomOp1, DType, Device, Layout, Module, Shape, Storage, Tensor};

use crate::lora::{LoraDropout, LoraLayer};
use crate::nf4::Nf4Tensor;
use crate::Result;

/// A frozen weight `[out, in]`; never trained, only read.
#[derive(Clone)]
pub enum BaseWeight {
    Dense(Tensor),
    /// The QTensor is kept for dequantization (export, backward); the QMatMul
    /// runs candle's quantized kernels for inference.
    Quantized(Arc<QTensor>, QMatMul),
    Nf4(Arc<Nf4Tensor>),
}

impl BaseWeight {
    /// `[out, in]`.
    pub fn dims(&self) -> (usize, usize) {
        let dims = match self {
            BaseWeight::Dense(w) => w.dims().to_vec(),
            BaseWeight::Quantized(q, _) => q.shape().dims().to_vec(),
            BaseWeight::Nf4(n) => n.shape().to_vec(),
        };
        (dims[0], dims[1])
    }

    /// The weight as a contiguous dense tensor on `device` in `dtype`, made for
    /// this call only (quantized forms are dequantized there).
    pub fn dense_on(&self, device: &Device, dtype: DType) -> Result<Tensor> {
        let w = match self {
            BaseWeight::Dense(w) => w.to_device(device)?,
            BaseWeight::Quantized(q, _) => q.dequantize(device)?,
            // Dequantized where the codes live, straight into `dtype`.
            BaseWeight::Nf4(n) => n.dequantize(dtype)?.to_device(device)?,
        };
        Ok(w.to_dtype(dtype)?.contiguous()?)
    }
}

/// `x [m, in] ↦ x · Wᵀ [m, out]` with a backward for x only.
struct FrozenMatmul(BaseWeight);

impl FrozenMatmul {
    fn weight_on(&self, device: &Device, dtype: DType) -> candle_core::Result<Tensor> {
        self.0.dense_on(device, dtype).map_err(candle_core::Error::wrap)
    }
}

/// The matmul itself at storage level, shared by every backend.
fn matmul_wt<S: BackendStorage>(x: &S, xl: &Layout, w: &S, wl: &Layout) -> candle_core::Result<(S, Shape)> {
    let (m, k) = xl.shape().dims2()?;
    let (n, k2) = wl.shape().dims2()?;
    if k != k2 {
        candle_core::bail!("frozen linear: input has {k} features, weight expects {k2}");
    }
    let y = x.matmul(w, (1, m, n, k), xl, &wl.transpose(0, 1)?)?;
    Ok((y, Shape::from((m, n))))
}

impl CustomOp1 for FrozenMatmul {
    fn name(&self) -> &'static str {
        "frozen-matmul"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let w = self.weight_on(&Device::Cpu, s.dtype())?;
        let (ws, wl) = w.storage_and_layout();
        match &*ws {
            Storage::Cpu(ws) => matmul_wt(s, l, ws, wl),
            _ => candle_core::bail!("frozen linear: weight is not on the CPU"),
        }
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s: &candle_core::CudaStorage,
        l: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        let device = Device::Cuda(s.device().clone());
        let w = self.weight_on(&device, s.dtype())?;
        let (ws, wl) = w.storage_and_layout();
        match &*ws {
            Storage::Cuda(ws) => matmul_wt(s, l, ws, wl),
            _ => candle_core::bail!("frozen linear: weight is not on the input's CUDA device"),
        }
    }

    fn bwd(&self, _x: &Tensor, _y: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let w = self.weight_on(g.device(), g.dtype())?;
        Ok(Some(g.matmul(&w)?))
    }
}

#[derive(Clone)]
pub struct Linear {
    base: BaseWeight,
    bias: Option<Tensor>,
    lora: Option<LoraLayer>,
    /// Dropout on the adapter input, active only in training mode.
    lora_dropout: Option<LoraDropout>,
    train: bool,
}

impl Linear {
    fn with_base(base: BaseWeight, bias: Option<Tensor>) -> Self {
        Linear {
            base,
            bias,
            lora: None,
            lora_dropout: None,
            train: false,
        }
    }

    pub fn dense(weight: Tensor, bias: Option<Tensor>) -> Self {
        Self::with_base(BaseWeight::Dense(weight), bias)
    }

    pub fn quantized(weight: QTensor) -> Result<Self> {
        Self::quantized_arc(Arc::new(weight))
    }

    /// Shares the quantized tensor (a tied LM head reuses the embedding's).
    pub fn quantized_arc(q: Arc<QTensor>) -> Result<Self> {
        let mm = QMatMul::from_arc(q.clone())?;
        Ok(Self::with_base(BaseWeight::Quantized(q, mm), None))
    }

    pub fn nf4(weight: Nf4Tensor) -> Self {
        Self::with_base(BaseWeight::Nf4(Arc::new(weight)), None)
    }

    pub fn base(&self) -> &BaseWeight {
        &self.base
    }

    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    pub fn lora(&self) -> Option<&LoraLayer> {
        self.lora.as_ref()
    }

    pub fn lora_mut(&mut self) -> Option<&mut LoraLayer> {
        self.lora.as_mut()
    }

    pub fn set_lora(&mut self, lora: Option<LoraLayer>) {
        self.lora = lora;
    }

    /// Dropout on the adapter input (see [`LoraDropout`]); used in training mode only.
    pub fn set_lora_dropout(&mut self, dropout: Option<LoraDropout>) {
        self.lora_dropout = dropout;
    }

    pub fn lora_dropout_mut(&mut self) -> Option<&mut LoraDropout> {
        self.lora_dropout.as_mut()
    }

    /// Training mode turns the adapter dropout on (peft's `model.train()`).
    pub fn set_train(&mut self, train: bool) {
        self.train = train;
    }

    /// `[out, in]`.
    pub fn shape(&self) -> (usize, usize) {
        self.base.dims()
    }

    /// The base weight as a dense f32 tensor `[out, in]` (export, merge, checks).
    pub fn dequantize(&self, device: &Device) -> Result<Tensor> {
        self.base.dense_on(device, DType::F32)
    }

    /// Replace a quantized/NF4 base by its dense f32 form (`--dequantize`).
    pub fn to_dense(&mut self, device: &Device) -> Result<()> {
        let w = self.dequantize(device)?;
        self.base = BaseWeight::Dense(w);
        Ok(())
    }

    /// Replace the base by its NF4 double-quantized form (QLoRA), quantizing
    /// from the dense (or dequantized) weight on the CPU; the codes go to
    /// `device`. The dense copy is dropped.
    pub fn to_nf4(&mut self, device: &Device) -> Result<()> {
        if !matches!(self.base, BaseWeight::Nf4(_)) {
            let w = self.base.dense_on(&Device::Cpu, DType::F32)?;
            self.base = BaseWeight::Nf4(Arc::new(Nf4Tensor::quantize(&w)?.to_device(device)?));
        }
        Ok(())
    }

    /// Dense weights and bias in `dtype` (the model's compute dtype);
    /// quantized bases are left as they are and dequantize into it per call.
    pub fn set_dtype(&mut self, dtype: DType) -> Result<()> {
        if let BaseWeight::Dense(w) = &self.base {
            self.base = BaseWeight::Dense(w.to_dtype(dtype)?);
        }
        if let Some(b) = &self.bias {
            self.bias = Some(b.to_dtype(dtype)?);
        }
        Ok(())
    }

    /// Fold the adapter into a dense f32 base: `W' = deq(W) + scaling · B·A`;
    /// the adapter is removed. Without an adapter, only dequantizes.
    pub fn merge_lora(&mut self, device: &Device) -> Result<()> {
        let mut w = self.dequantize(device)?;
        if let Some(l) = self.lora.take() {
            w = (w + l.delta_weight()?.to_device(device)?)?;
        }
        self.base = BaseWeight::Dense(w);
        Ok(())
    }

    /// Frozen part only: `x · Wᵀ (+ b)`.
    pub fn forward_base(&self, x: &Tensor) -> Result<Tensor> {
        let y = if x.track_op() {
            self.forward_frozen(x)?
        } else {
            match &self.base {
                BaseWeight::Dense(w) => {
                    let w = if w.dtype() == x.dtype() {
                        w.clone()
                    } else {
                        w.to_dtype(x.dtype())?
                    };
                    x.broadcast_matmul(&w.t()?)?
                }
                // candle's quantized kernels take f32 activations.
                BaseWeight::Quantized(_, mm) => mm.forward(&x.to_dtype(DType::F32)?)?.to_dtype(x.dtype())?,
                BaseWeight::Nf4(n) => n.matmul_t(x)?,
            }
        };
        Ok(match &self.bias {
            Some(b) => y.broadcast_add(&b.to_dtype(y.dtype())?)?,
            None => y,
        })
    }

    /// The trainable-graph form of the base product (see the module docs).
    fn forward_frozen(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let (out, inn) = self.shape();
        let last = *dims.last().unwrap_or(&0);
        if last != inn {
            return Err(crate::Error::msg(format!(
                "linear [{out}, {inn}]: input has {last} features"
            )));
        }
        let x2 = x.reshape(((), inn))?.contiguous()?;
        let y = x2.apply_op1(FrozenMatmul(self.base.clone()))?;
        let mut out_dims = dims;
        *out_dims.last_mut().expect("non-empty") = out;
        Ok(y.reshape(out_dims)?)
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = self.forward_base(x)?;
        let Some(l) = &self.lora else { return Ok(y) };
        let h = match &self.lora_dropout {
            Some(d) if self.train => l.forward(&d.apply(x)?)?,
            _ => l.forward(x)?,
        };
        Ok((y + h)?)
    }
}
