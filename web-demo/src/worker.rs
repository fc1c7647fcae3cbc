//! The Web Worker: owns the model, answers [`ToWorker`] messages with
//! [`FromWorker`] ones. Generation runs synchronously inside the message
//! handler (the page stays responsive; it stops a run by terminating us).

use std::cell::RefCell;
use std::rc::Rc;

use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::{DedicatedWorkerGlobalScope, MessageEvent};

use crate::download;
use crate::engine::Engine;
use crate::protocol::{FromWorker, GenOptions, Stage, ToWorker};

thread_local! {
    static ENGINE: RefCell<Option<Rc<Engine>>> = const { RefCell::new(None) };
}

fn scope() -> DedicatedWorkerGlobalScope {
    js_sys::global().unchecked_into()
}

fn post(msg: &FromWorker) {
    // Posting only fails for uncloneable values; a string always clones.
    let _ = scope().post_message(&JsValue::from_str(&msg.to_json()));
}

/// A sub-millisecond clock (timings of single tokens).
fn now_ms() -> f64 {
    scope().performance().map(|p| p.now()).unwrap_or_else(js_sys::Date::now)
}

/// Entry point of the worker binary.
pub fn start() {
    console_error_panic_hook::set_once();
    let on_message = Closure::<dyn FnMut(MessageEvent)>::new(|ev: MessageEvent| {
        let Some(text) = ev.data().as_string() else {
            return;
        };
        match ToWorker::from_json(&text) {
            Ok(msg) => wasm_bindgen_futures::spawn_local(handle(msg)),
            Err(e) => post(&FromWorker::Error {
                stage: Stage::Generate,
                message: e,
            }),
        }
    });
    scope().set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    on_message.forget();
    post(&FromWorker::Ready);
}

async fn handle(msg: ToWorker) {
    match msg {
        ToWorker::Load { url } => load(url).await,
        ToWorker::Generate {
            schema,
            question,
            options,
        } => run(&schema, &question, &options),
        ToWorker::Bench {
            prompt,
            new_tokens,
            runs,
        } => bench(&prompt, new_tokens, runs),
        ToWorker::ClearCache => match download::clear().await {
            Ok(removed) => post(&FromWorker::CacheCleared { removed }),
            Err(message) => post(&FromWorker::Error {
                stage: Stage::Cache,
                message,
            }),
        },
    }
}

async fn load(url: String) {
    ENGINE.with(|e| e.borrow_mut().take());
    let t0 = now_ms();
    // Throttle progress messages to ~2 per percent.
    let mut last = -1.0;
    let mut progress = |loaded: f64, total: Option<f64>| {
        let step = total.map(|t| t / 200.0).unwrap_or(1_048_576.0);
        if loaded - last >= step || Some(loaded) == total {
            last = loaded;
            post(&FromWorker::Progress { loaded, total });
        }
    };
    let got = match download::fetch_model(&url, &mut progress).await {
        Ok(got) => got,
        Err(message) => {
            return post(&FromWorker::Error {
                stage: Stage::Download,
                message,
            })
        }
    };
    let t1 = now_ms();
    let size = got.bytes.len() as f64;
    match Engine::from_gguf_bytes(got.bytes, &url) {
        Ok(engine) => {
            let model = engine.name().to_string();
            ENGINE.with(|e| *e.borrow_mut() = Some(Rc::new(engine)));
            post(&FromWorker::Loaded {
                url,
                bytes: size,
                from_cache: got.from_cache,
                download_ms: t1 - t0,
                load_ms: now_ms() - t1,
                model,
            });
        }
        Err(message) => {
            // A corrupt file must not stay cached, or a retry would fail again.
            download::forget(&url).await;
            post(&FromWorker::Error {
                stage: Stage::Load,
                message: format!("the model file is unusable: {message}"),
            });
        }
    }
}

fn run(schema: &str, question: &str, options: &GenOptions) {
    let Some(engine) = ENGINE.with(|e| e.borrow().clone()) else {
        return post(&FromWorker::Error {
            stage: Stage::Generate,
            message: "no model is loaded".into(),
        });
    };
    let result = engine.prompt(schema, question).and_then(|prompt| {
        post(&FromWorker::Prompt { text: prompt.clone() });
        engine.generate(&prompt, Some(schema), options, &now_ms, &mut |piece| {
            post(&FromWorker::Token {
                text: piece.to_string(),
            });
            true
        })
    });
    match result {
        Ok(stats) => post(&FromWorker::Done { stats }),
        Err(message) => post(&FromWorker::Error {
            stage: Stage::Generate,
            message,
        }),
    }
}

fn bench(prompt: &str, new_tokens: usize, runs: usize) {
    let Some(engine) = ENGINE.with(|e| e.borrow().clone()) else {
        return post(&FromWorker::Error {
            stage: Stage::Generate,
            message: "no model is loaded".into(),
        });
    };
    match engine.bench(prompt, new_tokens, runs, &now_ms) {
        Ok(stats) => post(&FromWorker::BenchDone { stats }),
        Err(message) => post(&FromWorker::Error {
            stage: Stage::Generate,
            message,
        }),
    }
}
