//! sqlora-core: everything the native CLI and the browser share.
//!
//! Reading order: [`config`] → [`linear`] → [`model`] (the decoder), [`weights`]
//! (GGUF / safetensors / hub loading), [`tokenizer`] and [`chat`] (text ↔ ids),
//! [`schema`] and [`prompt`] (what the model is asked), [`generate`] (decoding),
//! [`sqlcheck`] (is the answer usable), and the QLoRA pieces [`nf4`], [`lora`],
//! [`adapter`].

pub mod adapter;
pub mod chat;
pub mod config;
pub mod constrain;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod default_model;
pub mod dropout;
pub mod error;
pub mod export;
pub mod fused;
pub mod generate;
pub mod linear;
pub mod lora;
pub mod model;
pub mod nf4;
pub mod pipeline;
pub mod prompt;
pub mod schema;
pub mod sqlcheck;
pub mod tokenizer;
pub mod weights;

pub use error::{Error, Result};
