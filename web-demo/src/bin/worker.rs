//! The model worker (trunk `data-type="worker"`); see `sqlora_web::worker`.

#[cfg(target_arch = "wasm32")]
fn main() {
    sqlora_web::worker::start();
}

#[cfg(not(target_arch = "wasm32"))]
fn main() {
    eprintln!("sqlora-worker runs in a browser: build it with trunk (see index.html)");
}
