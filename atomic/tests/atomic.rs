//! Concurrent writers to one path end with one writer's complete bytes,
//! torn temporaries of dead writers are cleaned on the next write (a live
//! writer's are kept), and a directory is refused as a destination.

use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use sqlora_atomic::{clean_stale, clean_stale_matching, AtomicFile, TempDir};

fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sqlora-atomic-{tag}-{}", std::process::id()));
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

/// A process id that no process has (above Linux's largest pid_max).
const DEAD_PID: u32 = 4_194_304 + 12_345;

fn age(path: &Path, secs: u64) {
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.set_modified(SystemTime::now() - Duration::from_secs(secs)).unwrap();
}

#[test]
fn concurrent_writers_leave_one_whole_file() {
    let dir = scratch("concurrent");
    let dest = dir.join("out.gguf");
    // 8 distinct 4 MB payloads, written in small pieces so that the writers
    // interleave, with a seek back to patch a header as the GGUF writer does.
    let payload = |i: u8| -> Vec<u8> {
        (0..4 << 20)
            .map(|j: u32| i.wrapping_mul(31) ^ (j % 251) as u8)
            .collect()
    };
    for round in 0..3 {
        std::thread::scope(|s| {
            for i in 0..8u8 {
                let dest = &dest;
                s.spawn(move || {
                    let bytes = payload(i);
                    let mut f = AtomicFile::create(dest).unwrap();
                    f.write_all(&[0; 8]).unwrap();
                    for chunk in bytes[8..].chunks(4096) {
                        f.write_all(chunk).unwrap();
                    }
                    f.seek(SeekFrom::Start(0)).unwrap();
                    f.write_all(&bytes[..8]).unwrap();
                    f.commit().unwrap();
                });
            }
        });
        let got = std::fs::read(&dest).unwrap();
        assert!(
            (0..8u8).any(|i| got == payload(i)),
            "round {round}: the file matches no writer"
        );
        // Nothing but the destination is left.
        assert_eq!(names(&dir), vec!["out.gguf".to_string()]);
    }
    // The one-call form, from several threads too.
    std::thread::scope(|s| {
        for i in 0..8u8 {
            let dest = &dest;
            s.spawn(move || sqlora_atomic::write(dest, payload(i)).unwrap());
        }
    });
    let got = std::fs::read(&dest).unwrap();
    assert!((0..8u8).any(|i| got == payload(i)));
    assert_eq!(names(&dir), vec!["out.gguf".to_string()]);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn failed_writer_leaves_nothing() {
    let dir = scratch("dropped");
    let dest = dir.join("report.json");
    std::fs::write(&dest, "old").unwrap();
    {
        let mut f = AtomicFile::create(&dest).unwrap();
        f.write_all(b"half of the new one").unwrap();
        // dropped: an error or a panic before commit
    }
    assert_eq!(std::fs::read_to_string(&dest).unwrap(), "old");
    assert_eq!(names(&dir), vec!["report.json".to_string()]);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn stale_temporaries_are_cleaned_and_live_ones_kept() {
    let dir = scratch("stale");
    let dest = dir.join("out.gguf");
    let me = std::process::id();
    let dead_new = dir.join(format!(".out.gguf.{DEAD_PID}.0-1f.tmp"));
    let live_new = dir.join(format!(".out.gguf.{me}.999-1f.tmp"));
    let old_export = dir.join(".out.gguf.tmp"); // the fixed name earlier versions used
    let fresh_unknown = dir.join("out.gguf.part");
    let other = dir.join(format!(".other.gguf.{DEAD_PID}.0-1f.tmp"));
    for p in [&dead_new, &live_new, &old_export, &fresh_unknown, &other] {
        std::fs::write(p, b"torn").unwrap();
    }
    age(&old_export, 2 * 3600);

    sqlora_atomic::write(&dest, b"new").unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), b"new");
    for p in [&dead_new, &old_export] {
        assert!(!p.exists(), "{} was not cleaned", p.display());
    }
    // A live writer's, a recent one whose writer cannot be told, and another
    // destination's are left alone.
    for p in [&live_new, &fresh_unknown, &other] {
        assert!(p.exists(), "{} was removed", p.display());
    }
    assert!(clean_stale(&dir.join("other.gguf")).contains(&other));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn stale_checkpoint_directories_are_cleaned() {
    let dir = scratch("ckpt");
    let torn_old = dir.join(format!(".tmp-checkpoint-000009-{DEAD_PID}"));
    let torn_new = dir.join(format!(".checkpoint-000012.{DEAD_PID}.4-2a.tmp"));
    let live = dir.join(format!(".checkpoint-000013.{}.4-2a.tmp", std::process::id()));
    for d in [&torn_old, &torn_new, &live] {
        std::fs::create_dir_all(d).unwrap();
        std::fs::write(d.join("trainer_state.json"), "{").unwrap();
    }
    let removed = clean_stale_matching(&dir, |n| n.starts_with("checkpoint-"));
    assert_eq!(removed.len(), 2, "{removed:?}");
    assert!(!torn_old.exists() && !torn_new.exists() && live.exists());

    // A directory built under a temporary name and renamed into place.
    let dest = dir.join("checkpoint-000014");
    let t = TempDir::create(&dest).unwrap();
    std::fs::write(t.path().join("a"), "1").unwrap();
    assert!(!dest.exists());
    t.commit().unwrap();
    assert_eq!(std::fs::read_to_string(dest.join("a")).unwrap(), "1");
    // Dropped without commit: removed.
    let t = TempDir::create(&dir.join("checkpoint-000015")).unwrap();
    let tmp = t.path().to_path_buf();
    drop(t);
    assert!(!tmp.exists() && !dir.join("checkpoint-000015").exists());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn directory_destination_is_refused_and_nothing_written() {
    let dir = scratch("dir");
    let sub = dir.join("models");
    std::fs::create_dir_all(&sub).unwrap();
    for dest in [
        sub.clone(),
        PathBuf::from(format!("{}/", sub.display())),
        dir.join("new/"),
    ] {
        let err = match AtomicFile::create(&dest) {
            Ok(_) => panic!("{} accepted as a file", dest.display()),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("give a file path"), "{err}");
        assert!(sqlora_atomic::write(&dest, b"x").is_err());
    }
    assert_eq!(names(&dir), vec!["models".to_string()]);
    assert!(names(&sub).is_empty());
    std::fs::remove_dir_all(dir).unwrap();
}
