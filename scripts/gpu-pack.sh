#!/usr/bin/env bash
# Build, on this (CPU) machine, what scripts/gpu-bench.sh needs on a lent GPU
# machine, into .gpu/ (git-ignored; name it in the device tool's `carry`):
# the stripped CUDA release binary and test binaries (xz), and the ../shared
# files the peers and the eval check read. ~35 MB.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
SHARED=${SQLORA_SHARED:-../shared}
eval "$("$SHARED/tools/cuda-toolkit.sh")"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/sqlora-target-cuda}
cargo build --release -p sqlora --features cuda
core_tests=$(cargo test --release -p sqlora-core --features cuda --test cuda --no-run --message-format=json 2>/dev/null |
  python3 -c 'import json,sys; print([j["executable"] for j in map(json.loads, sys.stdin) if j.get("executable") and j["target"]["name"]=="cuda"][-1])')
bin_tests=$(cargo test --release -p sqlora --features cuda --bins --no-run --message-format=json 2>/dev/null |
  python3 -c 'import json,sys; print([j["executable"] for j in map(json.loads, sys.stdin) if j.get("executable") and j["target"]["name"]=="sqlora"][-1])')
G=.gpu
rm -rf $G && mkdir -p $G/bin $G/shared/peer/gpu $G/shared/peer/out $G/shared/data/tokenizers $G/shared/data/spider/database
for pair in "sqlora:$CARGO_TARGET_DIR/release/sqlora" "cuda-tests:$core_tests" "sqlora-tests:$bin_tests"; do
  name=${pair%%:*}; src=${pair#*:}
  strip -o "$G/bin/$name" "$src" && xz -6 -T0 "$G/bin/$name"
done
cp "$SHARED"/peer/gpu/*.py $G/shared/peer/gpu/
cp -r "$SHARED/peer/out/smollm2-config" "$SHARED/peer/out/smollm2-tokenizer" $G/shared/peer/out/
cp -r "$SHARED/data/tokenizers/mistral-7b-v0.1" $G/shared/data/tokenizers/
cp "$SHARED/data/spider/tables.json" $G/shared/data/spider/
python3 - "$SHARED/data/spider/dev.json" $G/shared/data/spider/dev.json <<'PY'
import json, sys
dev = json.load(open(sys.argv[1]))
json.dump([d for d in dev if d["db_id"] == "concert_singer"][:8], open(sys.argv[2], "w"))
PY
cp -r "$SHARED/data/spider/database/concert_singer" $G/shared/data/spider/database/
du -sh $G
