//! Fetch a model file with progress, keeping it in the Cache API so a reload
//! does not download it again. Runs in the worker (`fetch` and `caches` exist
//! there), so the bytes never cross to the page.

use js_sys::{Reflect, Uint8Array};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{Cache, ReadableStreamDefaultReader, Response, WorkerGlobalScope};

/// The Cache API bucket that holds model files, keyed by URL.
pub const CACHE_NAME: &str = "sqlora-models-v1";

/// GGUF files start with these bytes; anything else (an HTML error page served
/// with status 200, a truncated header) is refused before parsing.
const GGUF_MAGIC: &[u8] = b"GGUF";

pub struct Downloaded {
    pub bytes: Vec<u8>,
    pub from_cache: bool,
}

fn scope() -> WorkerGlobalScope {
    js_sys::global().unchecked_into()
}

/// A readable message from whatever JS threw.
pub fn js_error(e: JsValue) -> String {
    if let Some(err) = e.dyn_ref::<js_sys::Error>() {
        return String::from(err.message());
    }
    e.as_string().unwrap_or_else(|| format!("{e:?}"))
}

async fn open_cache() -> Result<Cache, String> {
    let caches = scope()
        .caches()
        .map_err(|e| format!("Cache API unavailable: {}", js_error(e)))?;
    let cache = JsFuture::from(caches.open(CACHE_NAME))
        .await
        .map_err(|e| format!("cannot open cache: {}", js_error(e)))?;
    Ok(cache.unchecked_into())
}

/// The model at `url`, from the cache when present, else downloaded (and then
/// cached). `on_progress(loaded, total)` sees download progress.
pub async fn fetch_model(url: &str, on_progress: &mut dyn FnMut(f64, Option<f64>)) -> Result<Downloaded, String> {
    // The cache is an optimisation: if it is unavailable (e.g. an insecure
    // origin) the model is still downloaded.
    let cache = open_cache().await.ok();
    if let Some(cache) = &cache {
        let hit = JsFuture::from(cache.match_with_str(url))
            .await
            .unwrap_or(JsValue::UNDEFINED);
        if let Ok(resp) = hit.dyn_into::<Response>() {
            let bytes = read_body(&resp, None, on_progress).await?;
            if bytes.starts_with(GGUF_MAGIC) {
                return Ok(Downloaded {
                    bytes,
                    from_cache: true,
                });
            }
            forget(url).await;
        }
    }
    let bytes = download(url, on_progress).await?;
    if let Some(cache) = &cache {
        // Best effort: a full quota only costs a re-download next time.
        let mut copy = bytes.clone();
        if let Ok(resp) = Response::new_with_opt_u8_array(Some(&mut copy)) {
            let _ = JsFuture::from(cache.put_with_str(url, &resp)).await;
        }
    }
    Ok(Downloaded {
        bytes,
        from_cache: false,
    })
}

async fn download(url: &str, on_progress: &mut dyn FnMut(f64, Option<f64>)) -> Result<Vec<u8>, String> {
    let resp = JsFuture::from(scope().fetch_with_str(url)).await.map_err(|e| {
        format!(
            "could not download {url}: {} (is the URL right and the server up?)",
            js_error(e)
        )
    })?;
    let resp: Response = resp.unchecked_into();
    if !resp.ok() {
        return Err(format!(
            "could not download {url}: HTTP {} {}",
            resp.status(),
            resp.status_text()
        ));
    }
    let total = resp
        .headers()
        .get("content-length")
        .ok()
        .flatten()
        .and_then(|s| s.parse::<f64>().ok());
    let bytes = read_body(&resp, total, on_progress).await?;
    if let Some(total) = total {
        if (bytes.len() as f64) < total {
            return Err(format!(
                "download of {url} was cut short: {} of {total} bytes",
                bytes.len()
            ));
        }
    }
    if !bytes.starts_with(GGUF_MAGIC) {
        let start = String::from_utf8_lossy(&bytes[..bytes.len().min(16)]).into_owned();
        return Err(format!(
            "{url} is not a GGUF model file (it starts with {start:?}); check the URL"
        ));
    }
    Ok(bytes)
}

/// Read a response body chunk by chunk, reporting progress.
async fn read_body(
    resp: &Response,
    total: Option<f64>,
    on_progress: &mut dyn FnMut(f64, Option<f64>),
) -> Result<Vec<u8>, String> {
    let body = resp.body().ok_or("the response has no body")?;
    let reader: ReadableStreamDefaultReader = body.get_reader().unchecked_into();
    let mut bytes = Vec::with_capacity(total.unwrap_or(0.0) as usize);
    loop {
        let chunk = JsFuture::from(reader.read())
            .await
            .map_err(|e| format!("download interrupted after {} bytes: {}", bytes.len(), js_error(e)))?;
        let done = Reflect::get(&chunk, &"done".into())
            .ok()
            .and_then(|v| v.as_bool())
            .unwrap_or(true);
        if done {
            break;
        }
        let value: Uint8Array = Reflect::get(&chunk, &"value".into())
            .map_err(js_error)?
            .unchecked_into();
        let at = bytes.len();
        bytes.resize(at + value.length() as usize, 0);
        value.copy_to(&mut bytes[at..]);
        on_progress(bytes.len() as f64, total);
    }
    Ok(bytes)
}

/// Drop one URL from the cache (after it proved corrupt).
pub async fn forget(url: &str) {
    if let Ok(cache) = open_cache().await {
        let _ = JsFuture::from(cache.delete_with_str(url)).await;
    }
}

/// Delete every cached model; returns how many files there were.
pub async fn clear() -> Result<usize, String> {
    let cache = open_cache().await?;
    let keys = JsFuture::from(cache.keys()).await.map_err(js_error)?;
    let n = js_sys::Array::from(&keys).length() as usize;
    let caches = scope().caches().map_err(js_error)?;
    JsFuture::from(caches.delete(CACHE_NAME)).await.map_err(js_error)?;
    Ok(n)
}
