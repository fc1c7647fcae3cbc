#!/usr/bin/env bash
# Coverage-guided fuzzing of every reader of untrusted input (fuzz/src:
# GGUF, safetensors, adapters, tables.json, pasted schemas, SQL) with
# libFuzzer through cargo-fuzz, on stable Rust (`-s none`: no sanitizer, so
# a finding is a panic, an abort, a leak of time or memory past the limits).
#
# Usage: scripts/fuzz.sh [RUNS (1000000)] [TARGET ...]   (default: all six)
# Prints each target's executions, time and final coverage; exits non-zero
# on the first finding (libFuzzer saves the input under
# fuzz/libfuzzer/artifacts/TARGET/). The corpus grows in $SQLORA_FUZZ_CORPUS
# (default ~/.cache/sqlora-fuzz), seeded by `fuzz-corpus`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

CARGO_FUZZ_VERSION=0.13.2
RUNS=${1:-1000000}
shift || true
TARGETS=("$@")
[[ ${#TARGETS[@]} -gt 0 ]] || TARGETS=(gguf safetensors adapter tables_json schema sql)
CORPUS="${SQLORA_FUZZ_CORPUS:-$HOME/.cache/sqlora-fuzz}"
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"

if [[ "$(cargo fuzz --version 2>/dev/null)" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]]; then
  env -u CARGO_TARGET_DIR cargo install --locked cargo-fuzz --version "$CARGO_FUZZ_VERSION"
fi
# The dev build that cargo test already made: the seeds need no speed.
cargo run -q -p sqlora-fuzz --bin fuzz-corpus -- "$CORPUS"

for t in "${TARGETS[@]}"; do
  echo "=== fuzz $t: $RUNS runs"
  start=$(date +%s)
  # -rss_limit_mb: a reader that allocates what a header claims is a finding.
  # -timeout: one input may take at most 10 s.
  set +e
  cargo fuzz run --fuzz-dir fuzz/libfuzzer -s none -O "$t" "$CORPUS/$t" -- \
    -runs="$RUNS" -rss_limit_mb=2048 -timeout=10 -max_len=65536 -print_final_stats=1 2>&1 |
    grep -E '^(stat::|Done|==|INFO: Seed|#[0-9]+ +DONE)|panicked|ERROR|SUMMARY|artifact'
  rc=${PIPESTATUS[0]}
  set -e
  echo "=== fuzz $t: exit $rc after $(($(date +%s) - start)) s"
  [[ $rc == 0 ]] || exit "$rc"
done
