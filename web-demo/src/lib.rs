//! sqlora-web: the browser demo and the embeddable JS API.
//!
//! Reading order: [`protocol`] (page ↔ worker messages) → [`engine`] (model,
//! prompt, generation; platform-free) → [`worker`] + [`download`] (the Web
//! Worker and its model cache) → [`client`] (the page's worker handle) →
//! [`ui`] (leptos) and [`api`] (`init` / `generate` for other pages).
//! [`highlight`], [`check`] and [`examples`] are small helpers of the UI.

pub mod check;
pub mod engine;
pub mod examples;
pub mod highlight;
pub mod protocol;

#[cfg(target_arch = "wasm32")]
pub mod api;
#[cfg(target_arch = "wasm32")]
pub mod client;
#[cfg(target_arch = "wasm32")]
pub mod download;
#[cfg(target_arch = "wasm32")]
pub mod ui;
#[cfg(target_arch = "wasm32")]
pub mod worker;
