//! With the `cuda` feature, compile src/kernels/sqlora.cu to PTX with nvcc
//! (the driver compiles the PTX for the GPU it finds at run time). Without it,
//! nothing: CPU and wasm builds need no CUDA toolkit.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-changed=src/kernels/sqlora.cu");
    println!("cargo::rerun-if-env-changed=CUDA_COMPUTE_CAP");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("sqlora_kernels.ptx");
    // bf16 arithmetic needs compute capability 8.0; PTX for 8.0 also runs on 9.0.
    let cap = std::env::var("CUDA_COMPUTE_CAP").unwrap_or_else(|_| "80".into());
    let cap = if cap.parse::<u32>().is_ok_and(|c| c >= 80) {
        cap
    } else {
        "80".into()
    };
    let nvcc = std::env::var_os("CUDA_ROOT")
        .map(|r| PathBuf::from(r).join("bin/nvcc"))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("nvcc"));
    let status = Command::new(&nvcc)
        .args(["--ptx", "-O3", "-std=c++17", &format!("-arch=compute_{cap}"), "-o"])
        .arg(&out)
        .arg("src/kernels/sqlora.cu")
        .status()
        .unwrap_or_else(|e| panic!("cannot run {}: {e} (set CUDA_ROOT, see README 'CUDA')", nvcc.display()));
    assert!(status.success(), "nvcc failed on src/kernels/sqlora.cu");
}
