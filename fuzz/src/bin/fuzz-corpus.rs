//! `fuzz-corpus DIR`: writes each target's seeds to `DIR/<target>/seed-N`,
//! the starting corpus of the libFuzzer runs (scripts/fuzz.sh).

use sqlora_fuzz::Target;

fn main() -> std::io::Result<()> {
    let Some(dir) = std::env::args_os().nth(1) else {
        eprintln!("usage: fuzz-corpus DIR");
        std::process::exit(2);
    };
    for target in Target::ALL {
        let d = std::path::Path::new(&dir).join(target.name());
        std::fs::create_dir_all(&d)?;
        for (i, seed) in target.seeds().iter().enumerate() {
            std::fs::write(d.join(format!("seed-{i}")), seed)?;
        }
    }
    Ok(())
}
