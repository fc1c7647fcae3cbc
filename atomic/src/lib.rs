//! Files written whole or not at all.
//!
//! Every file the tools write goes through [`write`] or [`AtomicFile`] (and
//! directories through [`TempDir`]): the bytes go to a temporary beside the
//! destination, named uniquely (`.NAME.PID.N.tmp`: process id, a per-process
//! counter and a clock part), are synced, then renamed over the destination.
//! A reader, or a concurrent writer, sees the old file or one writer's whole
//! new file, never a mix: a fixed temporary name let two concurrent exports
//! write into the same temporary.
//!
//! A killed writer leaves its temporary behind; the next writer to the same
//! place removes those that are stale ([`clean_stale`]): their process is
//! gone (where `/proc` tells), or they are old. A live writer's file is never
//! taken.

use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

/// What went wrong, and with which file.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {what}: {source}")]
    Io {
        path: PathBuf,
        what: &'static str,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    BadDestination { path: PathBuf, message: String },
}

pub type Result<T> = std::result::Result<T, Error>;

fn io(path: &Path, what: &'static str) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.to_path_buf();
    move |source| Error::Io { path, what, source }
}

/// A temporary with a live process id is kept this long (the id may have
/// been reused by an unrelated process after the writer died).
const STALE_LIVE_PID: Duration = Duration::from_secs(24 * 3600);
/// A temporary whose writer cannot be checked (no pid in the name, or no
/// `/proc`) is kept this long.
const STALE_UNKNOWN: Duration = Duration::from_secs(30 * 60);

/// Longest destination name kept whole in a temporary's name (file names
/// are limited to 255 bytes; the suffix takes at most ~45).
const NAME_KEEP: usize = 200;

/// Check that `dest` can name a file: not an existing directory, not ending
/// in a path separator. Cheap; call it before expensive work.
pub fn check_file_destination(dest: &Path) -> Result<()> {
    let bad = |message: &str| {
        Err(Error::BadDestination {
            path: dest.to_path_buf(),
            message: message.into(),
        })
    };
    let text = dest.as_os_str().to_string_lossy();
    if dest.is_dir() {
        return bad("is a directory; give a file path");
    }
    if text.ends_with('/') || text.ends_with(std::path::MAIN_SEPARATOR) {
        return bad("ends with a path separator; give a file path");
    }
    if dest.file_name().is_none() {
        return bad("has no file name");
    }
    Ok(())
}

/// Write `bytes` to `dest` atomically (creating the parent directory),
/// cleaning stale temporaries of `dest` first.
pub fn write(dest: &Path, bytes: impl AsRef<[u8]>) -> Result<()> {
    let mut f = AtomicFile::create(dest)?;
    f.write_all(bytes.as_ref()).map_err(io(f.temp_path(), "cannot write"))?;
    f.commit()
}

/// A file being written under a unique temporary name beside its destination;
/// [`commit`](Self::commit) renames it into place. Dropped without a commit
/// (an error, a panic), the temporary is removed.
pub struct AtomicFile {
    dest: PathBuf,
    tmp: PathBuf,
    file: Option<BufWriter<File>>,
}

impl AtomicFile {
    /// Start writing `dest`: its parent directory is created, stale
    /// temporaries of `dest` are removed, and a fresh temporary is opened.
    pub fn create(dest: &Path) -> Result<Self> {
        check_file_destination(dest)?;
        let dir = parent(dest);
        std::fs::create_dir_all(dir).map_err(io(dir, "cannot create directory"))?;
        clean_stale(dest);
        let (tmp, file) = unique(dest, |p| {
            std::fs::OpenOptions::new()
                .write(true)
                .read(true)
                .create_new(true)
                .open(p)
        })?;
        Ok(AtomicFile {
            dest: dest.to_path_buf(),
            tmp,
            file: Some(BufWriter::with_capacity(1 << 20, file)),
        })
    }

    pub fn temp_path(&self) -> &Path {
        &self.tmp
    }

    pub fn destination(&self) -> &Path {
        &self.dest
    }

    /// Flush, sync, and rename over the destination (replacing it).
    pub fn commit(mut self) -> Result<()> {
        let file = self.file.take().expect("present until commit");
        let file = file
            .into_inner()
            .map_err(|e| io(&self.tmp, "cannot write")(e.into_error()))?;
        file.sync_all().map_err(io(&self.tmp, "cannot sync"))?;
        drop(file);
        if self.dest.is_dir() {
            // Appeared while we wrote; rename would fail with a vaguer error.
            return Err(Error::BadDestination {
                path: self.dest.clone(),
                message: "is a directory; give a file path".into(),
            });
        }
        std::fs::rename(&self.tmp, &self.dest).map_err(io(&self.dest, "cannot rename the temporary into place"))?;
        sync_dir(parent(&self.dest));
        Ok(())
    }

    fn file(&mut self) -> &mut BufWriter<File> {
        self.file.as_mut().expect("present until commit")
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.file().write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.file().write_all(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file().flush()
    }
}

impl Seek for AtomicFile {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        self.file().seek(pos)
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.file.is_some() {
            self.file = None;
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// A directory being filled under a unique temporary name beside its
/// destination; [`commit`](Self::commit) renames it into place. Dropped
/// without a commit, it is removed.
pub struct TempDir {
    dest: PathBuf,
    tmp: PathBuf,
    done: bool,
}

impl TempDir {
    /// Start building `dest` (its parent is created; stale temporaries of
    /// `dest` are removed).
    pub fn create(dest: &Path) -> Result<Self> {
        let dir = parent(dest);
        std::fs::create_dir_all(dir).map_err(io(dir, "cannot create directory"))?;
        clean_stale(dest);
        let (tmp, ()) = unique(dest, |p| std::fs::create_dir(p))?;
        Ok(TempDir {
            dest: dest.to_path_buf(),
            tmp,
            done: false,
        })
    }

    pub fn path(&self) -> &Path {
        &self.tmp
    }

    /// Sync every file in it, then rename it over the destination (an
    /// existing destination directory is removed first).
    pub fn commit(mut self) -> Result<()> {
        let entries = std::fs::read_dir(&self.tmp).map_err(io(&self.tmp, "cannot list"))?;
        for entry in entries {
            let path = entry.map_err(io(&self.tmp, "cannot list"))?.path();
            if path.is_file() {
                File::open(&path)
                    .and_then(|f| f.sync_all())
                    .map_err(io(&path, "cannot sync"))?;
            }
        }
        if self.dest.is_dir() {
            std::fs::remove_dir_all(&self.dest).map_err(io(&self.dest, "cannot replace"))?;
        }
        std::fs::rename(&self.tmp, &self.dest).map_err(io(&self.dest, "cannot rename the temporary into place"))?;
        sync_dir(parent(&self.dest));
        self.done = true;
        Ok(())
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_dir_all(&self.tmp);
        }
    }
}

fn parent(dest: &Path) -> &Path {
    dest.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Makes a rename durable; best effort (not every platform can open a
/// directory).
fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

fn dest_name(dest: &Path) -> String {
    let name = dest.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
    let mut end = name.len().min(NAME_KEEP);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    name[..end].to_string()
}

/// Create a temporary beside `dest` with `make`, under a name no other
/// writer uses: `make` must fail when the path exists (`create_new`,
/// `create_dir`), and a collision is retried with the next name.
fn unique<T>(dest: &Path, make: impl Fn(&Path) -> std::io::Result<T>) -> Result<(PathBuf, T)> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = dest_name(dest);
    let dir = parent(dest);
    let clock = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    for _ in 0..100 {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(".{name}.{}.{n}-{clock:08x}.tmp", std::process::id()));
        match make(&tmp) {
            Ok(t) => return Ok((tmp, t)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io(&tmp, "cannot create a temporary")(e)),
        }
    }
    Err(Error::BadDestination {
        path: dest.to_path_buf(),
        message: "no free temporary name beside it".into(),
    })
}

/// If `file` (a name in the destination's directory) is a temporary for a
/// destination named `name`, the writer's process id when the name holds one.
///
/// Besides this crate's `.NAME.PID.N-CLOCK.tmp`, the names earlier versions
/// used are recognised, so that what they left behind is cleaned too:
/// `.NAME.tmp` (export), `.NAME.tmpPID` (adapter files), `NAME.part`
/// (downloads), `NAME.tmp` (metrics), `.tmp-NAME-PID` (checkpoints).
fn temporary_of(file: &str, name: &str) -> Option<Option<u32>> {
    if let Some(rest) = file
        .strip_prefix('.')
        .and_then(|f| f.strip_prefix(name))
        .and_then(|f| f.strip_prefix('.'))
    {
        if let Some(tail) = rest.strip_suffix(".tmp") {
            // PID.N-CLOCK
            if let Some((pid, unique)) = tail.split_once('.') {
                if unique.split_once('-').is_some_and(|(n, c)| is_digits(n) && is_hex(c)) {
                    return pid.parse().ok().map(Some);
                }
            }
            return None;
        }
        if rest == "tmp" {
            return Some(None);
        }
        if let Some(pid) = rest.strip_prefix("tmp").filter(|p| is_digits(p)) {
            return pid.parse().ok().map(Some);
        }
        return None;
    }
    if let Some(rest) = file.strip_prefix(name) {
        if rest == ".part" || rest == ".tmp" {
            return Some(None);
        }
    }
    if let Some(pid) = file
        .strip_prefix(".tmp-")
        .and_then(|f| f.strip_prefix(name))
        .and_then(|f| f.strip_prefix('-'))
        .filter(|p| is_digits(p))
    {
        return pid.parse().ok().map(Some);
    }
    None
}

fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

fn is_hex(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Whether process `pid` runs on this machine; `None` when that cannot be
/// told (no `/proc`).
fn process_alive(pid: u32) -> Option<bool> {
    let proc = Path::new("/proc");
    if !proc.join("self").exists() {
        return None;
    }
    Some(proc.join(pid.to_string()).exists())
}

fn is_stale(pid: Option<u32>, path: &Path) -> bool {
    let age = std::fs::symlink_metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .unwrap_or_default();
    if pid == Some(std::process::id()) {
        // Ours: another thread of this process may be writing it.
        return age > STALE_LIVE_PID;
    }
    match pid.map(process_alive) {
        Some(Some(false)) => true,
        Some(Some(true)) => age > STALE_LIVE_PID,
        _ => age > STALE_UNKNOWN,
    }
}

/// Remove the stale temporaries of `dest` left by killed writers (see the
/// module documentation for what counts as stale). Returns what was removed;
/// failures to remove are ignored (another writer may be cleaning too).
pub fn clean_stale(dest: &Path) -> Vec<PathBuf> {
    let name = dest_name(dest);
    clean_stale_in(parent(dest), |file| temporary_of(file, &name))
}

/// [`clean_stale`] for every destination in `dir` whose name `wanted`
/// accepts (e.g. every `checkpoint-*` of a training run).
pub fn clean_stale_matching(dir: &Path, wanted: impl Fn(&str) -> bool) -> Vec<PathBuf> {
    clean_stale_in(dir, |file| {
        // The destination name is what remains once a known pattern is
        // stripped; try each candidate split.
        let candidates = [
            file.strip_prefix('.').and_then(strip_new_suffix),
            file.strip_prefix('.')
                .and_then(|f| f.rsplit_once(".tmp").map(|(n, _)| n)),
            file.strip_suffix(".part"),
            file.strip_suffix(".tmp"),
            file.strip_prefix(".tmp-")
                .and_then(|f| f.rsplit_once('-').map(|(n, _)| n)),
        ];
        candidates
            .into_iter()
            .flatten()
            .filter(|n| wanted(n))
            .find_map(|n| temporary_of(file, n))
    })
}

/// `NAME.PID.N-CLOCK.tmp` → `NAME`.
fn strip_new_suffix(f: &str) -> Option<&str> {
    let rest = f.strip_suffix(".tmp")?;
    let (rest, _unique) = rest.rsplit_once('.')?;
    let (name, _pid) = rest.rsplit_once('.')?;
    Some(name)
}

fn clean_stale_in(dir: &Path, temporary: impl Fn(&str) -> Option<Option<u32>>) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return removed;
    };
    for entry in entries.flatten() {
        let file = entry.file_name();
        let Some(file) = file.to_str() else { continue };
        let Some(pid) = temporary(file) else { continue };
        let path = entry.path();
        if !is_stale(pid, &path) {
            continue;
        }
        let gone = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        if gone.is_ok() {
            removed.push(path);
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_temporaries_new_and_old() {
        let me = std::process::id();
        assert_eq!(
            temporary_of(&format!(".out.gguf.{me}.3-0af1.tmp"), "out.gguf"),
            Some(Some(me))
        );
        assert_eq!(temporary_of(".out.gguf.tmp", "out.gguf"), Some(None));
        assert_eq!(
            temporary_of(".adapter_config.json.tmp77", "adapter_config.json"),
            Some(Some(77))
        );
        assert_eq!(temporary_of("model.gguf.part", "model.gguf"), Some(None));
        assert_eq!(temporary_of("metrics.jsonl.tmp", "metrics.jsonl"), Some(None));
        assert_eq!(
            temporary_of(".tmp-checkpoint-000009-1", "checkpoint-000009"),
            Some(Some(1))
        );
        // Not temporaries, or another destination's.
        assert_eq!(temporary_of("out.gguf", "out.gguf"), None);
        assert_eq!(temporary_of(".out.gguf.old", "out.gguf"), None);
        assert_eq!(temporary_of(".out.gguf.1.2-zz.tmp", "out.gguf"), None);
        assert_eq!(temporary_of(".other.gguf.tmp", "out.gguf"), None);
        assert_eq!(temporary_of(".out.gguf.tmp", "out"), None);
    }

    #[test]
    fn check_file_destination_refuses_directories() {
        let dir = std::env::temp_dir();
        assert!(check_file_destination(&dir).is_err());
        assert!(check_file_destination(Path::new("no/such/dir/")).is_err());
        assert!(check_file_destination(&dir.join("x.gguf")).is_ok());
    }
}
