//! The demo page (leptos UI) and the embeddable JS API. The API functions are
//! defined here, in the binary, so wasm-bindgen exports them from this module.

#[cfg(target_arch = "wasm32")]
mod exports {
    use js_sys::{Function, Promise};
    use wasm_bindgen::prelude::*;

    /// Load a GGUF model in a Web Worker: `init(modelUrl, onProgress?, assetBase?)`.
    #[wasm_bindgen]
    pub fn init(model_url: String, on_progress: Option<Function>, asset_base: Option<String>) -> Promise {
        sqlora_web::api::init(model_url, on_progress, asset_base)
    }

    /// Generate SQL: `generate(schema, question, options?, onToken?)`.
    #[wasm_bindgen]
    pub fn generate(schema: String, question: String, options: JsValue, on_token: Option<Function>) -> Promise {
        sqlora_web::api::generate(schema, question, options, on_token)
    }

    /// Speed as `sqlora bench decode` measures it: `bench(prompt, newTokens, runs)`.
    #[wasm_bindgen]
    pub fn bench(prompt: String, new_tokens: usize, runs: usize) -> Promise {
        sqlora_web::api::bench(prompt, new_tokens, runs)
    }

    /// Abandon a running generation.
    #[wasm_bindgen]
    pub fn stop() {
        sqlora_web::api::stop()
    }
}

#[cfg(target_arch = "wasm32")]
fn main() {
    console_error_panic_hook::set_once();
    // The demo mounts into #sqlora-app; a page that only embeds the API has none.
    let has_app = web_sys::window()
        .and_then(|w| w.document())
        .and_then(|d| d.get_element_by_id("sqlora-app"))
        .is_some();
    if has_app {
        sqlora_web::ui::mount();
    }
}

#[cfg(not(target_arch = "wasm32"))]
fn main() {
    eprintln!("sqlora-web runs in a browser: build it with trunk (see index.html)");
}
