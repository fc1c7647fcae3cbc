//! Weight loading: GGUF files, HF directories (config.json + safetensors), hub ids.
//!
//! Everything becomes a [`Checkpoint`]: the [`ModelConfig`], the [`ModelWeights`]
//! the decoder is built from, and what is needed to build the tokenizer and chat
//! template. Bytes come from a memory map natively and from a buffer in wasm.

mod bytes;
mod gguf;
#[cfg(all(feature = "hub", not(target_arch = "wasm32")))]
mod hub;
mod safetensors;

use candle_core::Device;

pub use self::bytes::Bytes;
pub use self::gguf::GgufFile;
pub use self::safetensors::HfCheckpoint;
use crate::config::ModelConfig;
use crate::model::{Model, ModelWeights};
use crate::{Error, Result};

/// How the frozen linear weights are held in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BaseFormat {
    /// As stored: GGUF blocks stay quantized, safetensors stay dense.
    #[default]
    AsStored,
    /// Dense f32 (reference parity, `--dequantize`).
    F32,
    /// NF4 with double quantization (QLoRA base), quantized while loading.
    Nf4,
}

/// Where a model comes from, as a user names it on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    Gguf(std::path::PathBuf),
    HfDir(std::path::PathBuf),
    HubId(String),
}

impl ModelSource {
    /// A path to a `.gguf` file, a directory with `config.json`, or a hub id `org/name`.
    pub fn parse(spec: &str) -> Result<Self> {
        let p = std::path::Path::new(spec);
        if p.is_file() {
            return Ok(ModelSource::Gguf(p.to_path_buf()));
        }
        if p.is_dir() {
            if !p.join("config.json").is_file() {
                return Err(Error::file(
                    p,
                    "directory has no config.json (expected an HF model directory)",
                ));
            }
            return Ok(ModelSource::HfDir(p.to_path_buf()));
        }
        let looks_like_id = spec.split('/').count() == 2
            && !spec.starts_with('.')
            && !spec.ends_with(".gguf")
            && spec.chars().all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c));
        if looks_like_id {
            return Ok(ModelSource::HubId(spec.to_string()));
        }
        Err(Error::file(p, "no such file or directory (expected a .gguf file, an HF model directory or a hub id like mistralai/Mistral-7B-Instruct-v0.2)"))
    }
}

/// A loaded checkpoint, ready to become a [`Model`].
pub struct Checkpoint {
    pub config: ModelConfig,
    pub weights: ModelWeights,
    pub tokenizer: crate::tokenizer::Tokenizer,
    /// The model's own chat template (Jinja), if it ships one.
    pub chat_template: Option<String>,
    /// Where it came from, for messages and adapter configs.
    pub name: String,
    /// [`crate::prompt::PromptSettings`] JSON stored in an exported GGUF.
    pub prompt_settings: Option<String>,
}

impl Checkpoint {
    pub fn into_model(self, device: &Device) -> Result<(Model, crate::tokenizer::Tokenizer, Option<String>)> {
        let model = Model::new(self.config, self.weights, device)?;
        Ok((model, self.tokenizer, self.chat_template))
    }
}

/// Load from a file, directory or hub id.
#[cfg(not(target_arch = "wasm32"))]
pub fn load(source: &ModelSource, format: BaseFormat, device: &Device) -> Result<Checkpoint> {
    match source {
        ModelSource::Gguf(path) => GgufFile::open(path)?.checkpoint(format, device),
        ModelSource::HfDir(dir) => HfCheckpoint::open(dir)?.checkpoint(format, device),
        ModelSource::HubId(id) => {
            #[cfg(feature = "hub")]
            {
                let dir = hub::download(id)?;
                HfCheckpoint::open(&dir)?.checkpoint(format, device)
            }
            #[cfg(not(feature = "hub"))]
            {
                Err(Error::Hub(format!(
                    "`{id}` looks like a hub id, but this build has no hub support (enable the `hub` feature)"
                )))
            }
        }
    }
}

/// Turn a dense weight (on any device) into the requested base format on `device`.
/// NF4 is quantized on the CPU (bitsandbytes-exact) and only its codes move.
pub(crate) fn dense_linear(
    w: candle_core::Tensor,
    format: BaseFormat,
    device: &Device,
) -> Result<crate::linear::Linear> {
    use crate::linear::Linear;
    use candle_core::DType;
    Ok(match format {
        BaseFormat::Nf4 => Linear::nf4(crate::nf4::Nf4Tensor::quantize(&w)?.to_device(device)?),
        BaseFormat::F32 => Linear::dense(w.to_dtype(DType::F32)?.to_device(device)?, None),
        BaseFormat::AsStored => Linear::dense(w.to_device(device)?, None),
    })
}
