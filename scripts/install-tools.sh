#!/usr/bin/env bash
# Installs the tools the tests need, each only if it is missing or the wrong
# version: the wasm32 target, rustfmt/clippy, wasm-bindgen-cli (exactly the
# wasm-bindgen in Cargo.lock), trunk, Debian's chromium, and playwright-core
# (npm, from tests/browser/package-lock.json), and llama.cpp's Python `gguf`
# reader in a venv (the export test's independent reader). Everything comes from the
# ordinary registries, so a clean machine of this kind gets it all; a second
# run does nothing. Used by scripts/test-all.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

TRUNK_VERSION=0.21.14 # 0.22 needs a newer rustc than ours
WBG_VERSION=$(awk '$0 == "name = \"wasm-bindgen\"" { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)
[[ -n "$WBG_VERSION" ]] || { echo "install-tools: no wasm-bindgen in Cargo.lock" >&2; exit 1; }
grep -q "wasm_bindgen = \"$WBG_VERSION\"" Trunk.toml ||
  { echo "install-tools: Trunk.toml's [tools] wasm_bindgen must be $WBG_VERSION (Cargo.lock)" >&2; exit 1; }

BIN="${CARGO_INSTALL_ROOT:-${CARGO_HOME:-$HOME/.cargo}}/bin"
export PATH="$BIN:$PATH"

say() { echo "install-tools: $*"; }
as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi; }

# cargo install builds in its own temporary target dir (not the tests' one),
# at opt-level 1: these tools' speed does not matter, their build time does.
cargo_install() {
  env -u CARGO_TARGET_DIR CARGO_PROFILE_RELEASE_OPT_LEVEL=1 CARGO_PROFILE_RELEASE_LTO=false \
    CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 nice cargo install --force "$@"
}

rustup target list --installed | grep -qx wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown
for c in rustfmt clippy; do
  rustup component list --installed | grep -q "^$c" || rustup component add "$c"
done

if [[ "$(wasm-bindgen --version 2>/dev/null)" != "wasm-bindgen $WBG_VERSION" ]]; then
  say "installing wasm-bindgen-cli $WBG_VERSION"
  # Without --locked: with it, one locked dependency is missing from the registry.
  cargo_install wasm-bindgen-cli --version "$WBG_VERSION"
fi

if [[ "$(trunk --version 2>/dev/null)" != "trunk $TRUNK_VERSION" ]]; then
  say "installing trunk $TRUNK_VERSION"
  cargo_install trunk --version "$TRUNK_VERSION" --locked
fi

if ! command -v chromium >/dev/null; then
  say "installing chromium (apt)"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium
fi

if ! command -v npm >/dev/null; then
  say "installing node and npm (apt)"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm
fi

if [[ ! -f tests/browser/node_modules/playwright-core/package.json ]]; then
  say "installing playwright-core (npm)"
  (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)
fi

# llama.cpp's GGUF reader, pinned, in its own venv outside the clone (the
# export test reads our GGUF with it; scripts/test-all.sh points SQLORA_PYTHON here).
PY_VENV="${SQLORA_PY_VENV:-$HOME/.cache/sqlora-py}"
if ! "$PY_VENV/bin/python" -c "import gguf" 2>/dev/null; then
  say "installing python gguf==0.19.0 into $PY_VENV"
  if ! { python3 -m venv "$PY_VENV" && "$PY_VENV/bin/pip" install -q gguf==0.19.0; }; then
    # Not fatal: the export test then skips that one check and says so.
    say "WARNING: could not install python gguf; the independent GGUF reader check will be skipped"
  fi
fi

say "ok: $(wasm-bindgen --version), $(trunk --version), $(chromium --version 2>/dev/null | head -1), node $(node --version)"
