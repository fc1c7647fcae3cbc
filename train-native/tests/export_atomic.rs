//! `sqlora export --out`: concurrent exports to one path each succeed and
//! leave one export's whole file, a directory is refused before any work
//! with nothing left behind, and the torn temporaries of a killed export are
//! cleaned by the next one.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use common::{default_base, sqlora, stdout_ok as ok};

fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sqlora-export-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn need_base() {
    default_base();
}

#[test]
fn concurrent_exports_to_one_out_leave_one_whole_file() {
    need_base();
    let dir = scratch("concurrent");
    let quants = ["q8_0", "q4_0"];
    let reference = |q: &str| dir.join(format!("ref-{q}.gguf"));
    for q in quants {
        ok(&sqlora(&[
            "export",
            "--quant",
            q,
            "--out",
            reference(q).to_str().unwrap(),
        ]));
    }
    let refs: Vec<Vec<u8>> = quants.iter().map(|q| std::fs::read(reference(q)).unwrap()).collect();
    assert_ne!(refs[0], refs[1]);
    let out = dir.join("out.gguf");
    for round in 0..3 {
        let children: Vec<_> = (0..4)
            .map(|i| {
                Command::new(env!("CARGO_BIN_EXE_sqlora"))
                    .args(["export", "--quant", quants[i % 2], "--force", "--out"])
                    .arg(&out)
                    .env("RUST_BACKTRACE", "0")
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for child in children {
            let o = child.wait_with_output().unwrap();
            assert!(
                o.status.success(),
                "round {round}: a concurrent export failed: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
        let got = std::fs::read(&out).unwrap();
        assert!(
            refs.contains(&got),
            "round {round}: {} matches neither export",
            out.display()
        );
        assert_eq!(names(&dir), ["out.gguf", "ref-q4_0.gguf", "ref-q8_0.gguf"]);
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn directory_out_is_refused_before_any_work() {
    let dir = scratch("dir");
    let sub = dir.join("models");
    std::fs::create_dir_all(&sub).unwrap();
    let with_slash = format!("{}/", sub.display());
    let missing_with_slash = format!("{}/", dir.join("new").display());
    for out in [sub.to_str().unwrap(), &with_slash, &missing_with_slash] {
        let t = Instant::now();
        let o = sqlora(&["export", "--force", "--out", out]);
        assert!(!o.status.success());
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("give a file path"), "{err}");
        assert!(err.contains(out.trim_end_matches('/')), "{err}");
        // Refused before the base is even loaded.
        assert!(t.elapsed() < Duration::from_secs(5), "took {:?}", t.elapsed());
    }
    assert_eq!(names(&dir), ["models"]);
    assert!(names(&sub).is_empty());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn torn_temporaries_of_a_killed_export_are_cleaned() {
    need_base();
    let dir = scratch("torn");
    // Above Linux's largest pid_max: no such process.
    let dead = dir.join(".out.gguf.4206649.0-1f.tmp");
    let legacy = dir.join(".out.gguf.tmp"); // the fixed name earlier versions used
    let live = dir.join(format!(".out.gguf.{}.0-1f.tmp", std::process::id()));
    for p in [&dead, &legacy, &live] {
        std::fs::write(p, vec![7u8; 1 << 20]).unwrap();
    }
    let f = std::fs::OpenOptions::new().write(true).open(&legacy).unwrap();
    f.set_modified(SystemTime::now() - Duration::from_secs(3 * 3600))
        .unwrap();
    drop(f);
    let out = dir.join("out.gguf");
    ok(&sqlora(&["export", "--out", out.to_str().unwrap()]));
    assert!(out.is_file());
    assert!(!dead.exists() && !legacy.exists(), "{:?}", names(&dir));
    assert!(live.exists(), "a live writer's temporary was removed");
    std::fs::remove_dir_all(dir).unwrap();
}
