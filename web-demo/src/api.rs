//! The embeddable JS API (exported by the `sqlora-web` binary):
//!
//! ```js
//! await init(modelUrl, (loaded, total) => …);             // resolves {bytes, fromCache, loadMs, model}
//! const r = await generate(schema, question, {maxNewTokens: 64, temperature: 0}, t => …);
//! r.sql; r.check.ok; r.decodeTps;
//! stop();                                                 // abandons a running generate
//! const b = await bench(chatPrompt, 128, 3);              // {promptTps, decodeTps, …}, as `sqlora bench decode`
//! ```
//!
//! One model worker per page, shared by all calls; one call of each kind at a time.

use std::cell::RefCell;

use js_sys::{Function, Promise};
use serde::Serialize;
use wasm_bindgen::prelude::*;

use crate::check;
use crate::client::{page_base, Client};
use crate::protocol::{FromWorker, GenOptions, GenStats, ToWorker};

struct Pending {
    resolve: Function,
    reject: Function,
}

#[derive(Default)]
struct Api {
    client: Option<Client>,
    url: Option<String>,
    load: Option<Pending>,
    on_progress: Option<Function>,
    gen: Option<(Pending, String)>,
    on_token: Option<Function>,
    bench: Option<Pending>,
}

thread_local! {
    static API: RefCell<Api> = RefCell::new(Api::default());
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct LoadResult<'a> {
    url: &'a str,
    bytes: f64,
    from_cache: bool,
    download_ms: f64,
    load_ms: f64,
    model: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GenerateResult<'a> {
    #[serde(flatten)]
    stats: &'a GenStats,
    check: CheckJs,
}

#[derive(Serialize)]
struct CheckJs {
    ok: bool,
    summary: String,
    issues: Vec<String>,
}

fn to_js(v: &impl Serialize) -> JsValue {
    v.serialize(&serde_wasm_bindgen::Serializer::json_compatible())
        .unwrap_or(JsValue::NULL)
}

fn js_err(msg: &str) -> JsValue {
    js_sys::Error::new(msg).into()
}

/// Resolve `asset_base` (where sqlora-worker.js lives) against the page.
fn absolute_base(asset_base: Option<String>) -> String {
    let page = page_base();
    match asset_base {
        Some(b) => web_sys::Url::new_with_base(&b, &page).map(|u| u.href()).unwrap_or(b),
        None => page,
    }
}

fn client(asset_base: Option<String>) -> Client {
    API.with(|api| {
        let mut api = api.borrow_mut();
        api.client
            .get_or_insert_with(|| Client::new(&absolute_base(asset_base), on_message))
            .clone()
    })
}

/// `init(modelUrl, onProgress?, assetBase?)`: download (or take from the
/// cache) and load a GGUF model in the worker.
pub fn init(model_url: String, on_progress: Option<Function>, asset_base: Option<String>) -> Promise {
    let client = client(asset_base);
    Promise::new(&mut |resolve, reject| {
        API.with(|api| {
            let mut api = api.borrow_mut();
            if let Some(old) = api.load.take() {
                let _ = old
                    .reject
                    .call1(&JsValue::NULL, &js_err("superseded by a newer init()"));
            }
            api.load = Some(Pending { resolve, reject });
            api.on_progress = on_progress.clone();
            api.url = Some(model_url.clone());
        });
        client.send(ToWorker::Load { url: model_url.clone() });
    })
}

/// `generate(schema, question, options?, onToken?)`: resolves with the SQL, the
/// completion, timings and the check against `schema`.
pub fn generate(schema: String, question: String, options: JsValue, on_token: Option<Function>) -> Promise {
    let options: Result<GenOptions, _> = if options.is_undefined() || options.is_null() {
        Ok(GenOptions::default())
    } else {
        serde_wasm_bindgen::from_value(options)
    };
    let options = match options {
        Ok(o) => o,
        Err(e) => return Promise::reject(&js_err(&format!("bad options: {e}"))),
    };
    let loaded = API.with(|api| api.borrow().client.is_some() && api.borrow().url.is_some());
    if !loaded {
        return Promise::reject(&js_err("call init(modelUrl) before generate()"));
    }
    let client = client(None);
    Promise::new(&mut |resolve, reject| {
        let busy = API.with(|api| {
            let mut api = api.borrow_mut();
            if api.gen.is_some() {
                return true;
            }
            api.gen = Some((
                Pending {
                    resolve: resolve.clone(),
                    reject: reject.clone(),
                },
                schema.clone(),
            ));
            api.on_token = on_token.clone();
            false
        });
        if busy {
            let _ = reject.call1(&JsValue::NULL, &js_err("a generation is already running"));
            return;
        }
        client.send(ToWorker::Generate {
            schema: schema.clone(),
            question: question.clone(),
            options: options.clone(),
        });
    })
}

/// `bench(prompt, newTokens, runs)`: speed of the loaded model measured as
/// `sqlora bench decode` does natively (`prompt` is sent to the model as is).
pub fn bench(prompt: String, new_tokens: usize, runs: usize) -> Promise {
    let loaded = API.with(|api| api.borrow().client.is_some() && api.borrow().url.is_some());
    if !loaded {
        return Promise::reject(&js_err("call init(modelUrl) before bench()"));
    }
    let client = client(None);
    Promise::new(&mut |resolve, reject| {
        API.with(|api| api.borrow_mut().bench = Some(Pending { resolve, reject }));
        client.send(ToWorker::Bench {
            prompt: prompt.clone(),
            new_tokens,
            runs,
        });
    })
}

/// `stop()`: abandon the running generation (its promise rejects with
/// "stopped"); the model is reloaded from the cache in the background.
pub fn stop() {
    let (client, url, gen) = API.with(|api| {
        let mut api = api.borrow_mut();
        (api.client.clone(), api.url.clone(), api.gen.take())
    });
    if let Some((p, _)) = gen {
        let _ = p.reject.call1(&JsValue::NULL, &js_err("stopped"));
    }
    if let Some(client) = client {
        client.restart();
        if let Some(url) = url {
            client.send(ToWorker::Load { url });
        }
    }
}

fn on_message(msg: FromWorker) {
    match msg {
        FromWorker::Progress { loaded, total } => {
            if let Some(f) = API.with(|a| a.borrow().on_progress.clone()) {
                let total = total.map(JsValue::from_f64).unwrap_or(JsValue::NULL);
                let _ = f.call2(&JsValue::NULL, &JsValue::from_f64(loaded), &total);
            }
        }
        FromWorker::Loaded {
            url,
            bytes,
            from_cache,
            download_ms,
            load_ms,
            model,
        } => {
            if let Some(p) = API.with(|a| a.borrow_mut().load.take()) {
                let r = LoadResult {
                    url: &url,
                    bytes,
                    from_cache,
                    download_ms,
                    load_ms,
                    model: &model,
                };
                let _ = p.resolve.call1(&JsValue::NULL, &to_js(&r));
            }
        }
        FromWorker::Token { text } => {
            if let Some(f) = API.with(|a| a.borrow().on_token.clone()) {
                let _ = f.call1(&JsValue::NULL, &JsValue::from_str(&text));
            }
        }
        FromWorker::Done { stats } => {
            if let Some((p, schema)) = API.with(|a| a.borrow_mut().gen.take()) {
                let c = check::check(&schema, &stats.sql);
                let r = GenerateResult {
                    stats: &stats,
                    check: CheckJs {
                        ok: c.ok,
                        summary: c.summary,
                        issues: c.issues,
                    },
                };
                let _ = p.resolve.call1(&JsValue::NULL, &to_js(&r));
            }
        }
        FromWorker::BenchDone { stats } => {
            if let Some(p) = API.with(|a| a.borrow_mut().bench.take()) {
                let _ = p.resolve.call1(&JsValue::NULL, &to_js(&stats));
            }
        }
        FromWorker::Error { message, .. } => {
            // An error answers whichever call is waiting (one at a time).
            let pending = API.with(|a| {
                let mut a = a.borrow_mut();
                a.gen
                    .take()
                    .map(|(p, _)| p)
                    .or_else(|| a.bench.take())
                    .or_else(|| a.load.take())
            });
            if let Some(p) = pending {
                let _ = p.reject.call1(&JsValue::NULL, &js_err(&message));
            }
        }
        FromWorker::Ready | FromWorker::Prompt { .. } | FromWorker::CacheCleared { .. } => {}
    }
}
