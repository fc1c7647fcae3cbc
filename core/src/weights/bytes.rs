//! Read-only bytes of a weight file: memory-mapped natively, owned in wasm.

use std::ops::Deref;
use std::sync::Arc;

#[derive(Clone)]
pub enum Bytes {
    Owned(Arc<Vec<u8>>),
    #[cfg(not(target_arch = "wasm32"))]
    Mapped(Arc<memmap2::Mmap>),
}

impl Bytes {
    #[cfg(not(target_arch = "wasm32"))]
    pub fn map(path: &std::path::Path) -> crate::Result<Self> {
        let io = |source| crate::Error::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        // SAFETY: weight files are not modified while a model is loaded; the
        // map is read-only and dropped with the last tensor that borrows it.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
        Ok(Bytes::Mapped(Arc::new(map)))
    }
}

impl From<Vec<u8>> for Bytes {
    fn from(v: Vec<u8>) -> Self {
        Bytes::Owned(Arc::new(v))
    }
}

impl Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Owned(v) => v,
            #[cfg(not(target_arch = "wasm32"))]
            Bytes::Mapped(m) => m,
        }
    }
}
