//! The one linear layer every projection of the decoder goes through.
//!
//! The frozen base weight can be dense (f32/bf16), GGUF block-quantized
//! (Q4_1, Q8_0, … as candle reads them) or NF4 (bitsandbytes layout, for QLoRA);
//! a LoRA adapter may sit beside it. `y = base(x) + lora(x)`.

use std::sync::Arc;

use candle_core::quantized::{QMatMul, QTensor};
use candle_core::{DType, Device, Module, Tensor};

use crate::lora::LoraLayer;
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

#[derive(Clone)]
pub struct Linear {
    base: BaseWeight,
    bias: Option<Tensor>,
    lora: Option<LoraLayer>,
}

impl Linear {
    pub fn dense(weight: Tensor, bias: Option<Tensor>) -> Self {
        Linear { base: BaseWeight::Dense(weight), bias, lora: None }
    }

    pub fn quantized(weight: QTensor) -> Result<Self> {
        Self::quantized_arc(Arc::new(weight))
    }

    /// Shares the quantized tensor (a tied LM head reuses the embedding's).
    pub fn quantized_arc(q: Arc<QTensor>) -> Result<Self> {
        let mm = QMatMul::from_arc(q.clone())?;
        Ok(Linear { base: BaseWeight::Quantized(q, mm), bias: None, lora: None })
    }

    pub fn nf4(weight: Nf4Tensor) -> Self {
        Linear { base: BaseWeight::Nf4(Arc::new(weight)), bias: None, lora: None }
    }

    pub fn base(&self) -> &BaseWeight {
        &self.base
    }

    pub fn lora(&self) -> Option<&LoraLayer> {
        self.lora.as_ref()
    }

    pub fn set_lora(&mut self, lora: Option<LoraLayer>) {
        self.lora = lora;
    }

    /// `[out, in]`.
    pub fn shape(&self) -> (usize, usize) {
        let dims = match &self.base {
            BaseWeight::Dense(w) => w.dims().to_vec(),
            BaseWeight::Quantized(q, _) => q.shape().dims().to_vec(),
            BaseWeight::Nf4(n) => n.shape().to_vec(),
        };
        (dims[0], dims[1])
    }

    /// The base weight as a dense f32 tensor `[out, in]` (export, merge, checks).
    pub fn dequantize(&self, device: &Device) -> Result<Tensor> {
        Ok(match &self.base {
            BaseWeight::Dense(w) => w.to_dtype(DType::F32)?.to_device(device)?,
            BaseWeight::Quantized(q, _) => q.dequantize(device)?,
            BaseWeight::Nf4(n) => n.dequantize(device)?,
        })
    }

    /// Replace a quantized/NF4 base by its dense f32 form (`--dequantize`).
    pub fn to_dense(&mut self, device: &Device) -> Result<()> {
        let w = self.dequantize(device)?;
        self.base = BaseWeight::Dense(w);
        Ok(())
    }

    /// Frozen part only: `x · Wᵀ (+ b)`.
    pub fn forward_base(&self, x: &Tensor) -> Result<Tensor> {
        let y = match &self.base {
            BaseWeight::Dense(w) => {
                let w = if w.dtype() == x.dtype() { w.clone() } else { w.to_dtype(x.dtype())? };
                x.broadcast_matmul(&w.t()?)?
            }
            BaseWeight::Quantized(_, mm) => mm.forward(x)?,
            BaseWeight::Nf4(n) => n.matmul_t(x)?,
        };
        Ok(match &self.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = self.forward_base(x)?;
        match &self.lora {
            Some(l) => Ok((y + l.forward(x)?)?),
            None => Ok(y),
        }
    }
}
