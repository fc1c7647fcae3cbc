//! The page's handle on the model worker: spawns it, queues messages until it
//! says it is ready, hands every answer to one callback, and restarts it (the
//! only way to interrupt a running generation).

use std::cell::RefCell;
use std::rc::Rc;

use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::{Blob, BlobPropertyBag, ErrorEvent, MessageEvent, Url, Worker};

use crate::protocol::{FromWorker, Stage, ToWorker};

/// The worker's files, as trunk writes them (`filehash = false` in Trunk.toml).
pub const WORKER_JS: &str = "sqlora-worker.js";
pub const WORKER_WASM: &str = "sqlora-worker_bg.wasm";

type Handler = Rc<dyn Fn(FromWorker)>;

#[derive(Clone)]
pub struct Client {
    inner: Rc<RefCell<Inner>>,
}

struct Inner {
    worker: Option<Worker>,
    ready: bool,
    queue: Vec<ToWorker>,
    /// Where the worker's files are, ending in `/`.
    asset_base: String,
    handler: Handler,
    // Kept alive as long as the worker they are attached to.
    _closures: Vec<Closure<dyn FnMut(JsValue)>>,
}

/// The directory of the page (its `<base>` if any), ending in `/`.
pub fn page_base() -> String {
    absolute_url("./")
}

/// `url` made absolute against the page: the worker runs from a `blob:` URL,
/// where relative URLs do not resolve.
pub fn absolute_url(url: &str) -> String {
    let base = web_sys::window()
        .and_then(|w| w.document())
        .and_then(|d| d.base_uri().ok().flatten())
        .unwrap_or_default();
    Url::new_with_base(url, &base)
        .map(|u| u.href())
        .unwrap_or_else(|_| url.to_string())
}

impl Client {
    pub fn new(asset_base: &str, handler: impl Fn(FromWorker) + 'static) -> Client {
        let mut base = asset_base.to_string();
        if !base.is_empty() && !base.ends_with('/') {
            base.push('/');
        }
        let client = Client {
            inner: Rc::new(RefCell::new(Inner {
                worker: None,
                ready: false,
                queue: Vec::new(),
                asset_base: base,
                handler: Rc::new(handler),
                _closures: Vec::new(),
            })),
        };
        client.spawn();
        client
    }

    /// Send now, or as soon as the worker is ready.
    pub fn send(&self, msg: ToWorker) {
        let msg = match msg {
            ToWorker::Load { url } => ToWorker::Load {
                url: absolute_url(&url),
            },
            other => other,
        };
        let mut inner = self.inner.borrow_mut();
        match (&inner.worker, inner.ready) {
            (Some(w), true) => {
                let _ = w.post_message(&JsValue::from_str(&msg.to_json()));
            }
            _ => inner.queue.push(msg),
        }
    }

    /// Kill the worker (and whatever it is doing) and start a fresh one.
    pub fn restart(&self) {
        if let Some(w) = self.inner.borrow_mut().worker.take() {
            w.terminate();
        }
        self.spawn();
    }

    fn spawn(&self) {
        let handler = self.inner.borrow().handler.clone();
        let worker = match new_worker(&self.inner.borrow().asset_base) {
            Ok(w) => w,
            Err(message) => {
                return handler(FromWorker::Error {
                    stage: Stage::Load,
                    message,
                })
            }
        };
        let weak = Rc::downgrade(&self.inner);
        let on_message = Closure::<dyn FnMut(JsValue)>::new(move |ev: JsValue| {
            let Some(text) = ev.unchecked_into::<MessageEvent>().data().as_string() else {
                return;
            };
            let msg = FromWorker::from_json(&text).unwrap_or_else(|message| FromWorker::Error {
                stage: Stage::Generate,
                message,
            });
            let Some(inner) = weak.upgrade() else { return };
            if msg == FromWorker::Ready {
                let mut inner = inner.borrow_mut();
                inner.ready = true;
                let queue = std::mem::take(&mut inner.queue);
                if let Some(w) = &inner.worker {
                    for m in queue {
                        let _ = w.post_message(&JsValue::from_str(&m.to_json()));
                    }
                }
                return;
            }
            let handler = inner.borrow().handler.clone();
            handler(msg);
        });
        let on_error = {
            let handler = handler.clone();
            Closure::<dyn FnMut(JsValue)>::new(move |ev: JsValue| {
                let detail = ev.dyn_ref::<ErrorEvent>().map(|e| e.message()).unwrap_or_default();
                handler(FromWorker::Error {
                    stage: Stage::Load,
                    message: format!("the model worker failed: {detail} (are {WORKER_JS} and {WORKER_WASM} served?)"),
                });
            })
        };
        worker.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        worker.set_onerror(Some(on_error.as_ref().unchecked_ref()));
        let mut inner = self.inner.borrow_mut();
        inner.ready = false;
        inner.worker = Some(worker);
        inner._closures = vec![on_message, on_error];
    }
}

/// trunk builds the worker with wasm-bindgen's `no-modules` target: a tiny
/// classic script imports it and starts its wasm.
fn new_worker(base: &str) -> Result<Worker, String> {
    let script = format!(r#"importScripts("{base}{WORKER_JS}"); wasm_bindgen("{base}{WORKER_WASM}");"#);
    let parts = js_sys::Array::of1(&JsValue::from_str(&script));
    let opts = BlobPropertyBag::new();
    opts.set_type("text/javascript");
    let fail = |e: JsValue| format!("cannot start the model worker: {}", crate::download::js_error(e));
    let blob = Blob::new_with_str_sequence_and_options(&parts, &opts).map_err(fail)?;
    let url = Url::create_object_url_with_blob(&blob).map_err(fail)?;
    Worker::new(&url).map_err(fail)
}
