#!/usr/bin/env bash
# The main job on the embedded defaults: fetch the base model, fine-tune a QLoRA
# adapter on Spider, evaluate it beside the zero-shot base, export the merged q8_0
# GGUF and serve the browser demo. Arguments go to `sqlora quickstart` (see --help).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
export RAYON_NUM_THREADS="${RAYON_NUM_THREADS:-2}"
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
cargo build --release -p sqlora
exec "${CARGO_TARGET_DIR:-target}/release/sqlora" quickstart "$@"
