#!/usr/bin/env bash
# The accuracy figures of BENCHMARKS.md (issues 5 and 6), in one run:
#   - the default base zero-shot and a trained adapter (unmerged, base in f32) on the
#     first N_MAIN Spider dev examples;
#   - the adapter merged and exported as q8_0, q4k and q4_1 GGUFs: exact match and
#     execution on the first N_EXPORT, and greedy agreement with the unmerged model on
#     the first N_AGREE (identical generated SQL).
# Usage: scripts/bench-accuracy.sh ADAPTER_DIR [OUT_DIR]  (evaluations already in OUT_DIR are kept)
# Env: SQLORA_DATA (Spider folder, default ../shared/data/spider), N_MAIN (300),
#      N_EXPORT (200), N_AGREE (50), JOBS (parallel single-thread evals, default 2).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

ADAPTER=${1:?usage: scripts/bench-accuracy.sh ADAPTER_DIR [OUT_DIR]}
OUT=${2:-runs/accuracy}
DATA=${SQLORA_DATA:-../shared/data/spider}
N_MAIN=${N_MAIN:-300} N_EXPORT=${N_EXPORT:-200} N_AGREE=${N_AGREE:-50} JOBS=${JOBS:-2}
SQLORA=${CARGO_TARGET_DIR:-target}/release/sqlora
mkdir -p "$OUT"
cargo build --release -q -p sqlora

for q in q8_0 q4k q4_1; do
  "$SQLORA" export --adapter "$ADAPTER" --quant "$q" --out "$OUT/merged-$q.gguf" --force | tee "$OUT/export-$q.txt"
done

BASE=$("$SQLORA" fetch-model) # prints the cached path (fetches on first use)
# tag limit model-args...; longest first so that the parallel queues end together.
eval_jobs() {
  echo "adapter $N_MAIN --base $BASE --dequantize --adapter $ADAPTER"
  echo "base $N_MAIN --base $BASE --dequantize"
  echo "q8_0 $N_EXPORT --base $OUT/merged-q8_0.gguf"
  echo "q4k $N_EXPORT --base $OUT/merged-q4k.gguf"
  echo "q4_1 $N_AGREE --base $OUT/merged-q4_1.gguf"
}
run_one() {
  local tag=$1 limit=$2
  shift 2
  # A finished evaluation is kept (the zero-shot base does not change with the adapter):
  # delete $OUT/eval-TAG.json to run it again.
  if [[ -f "$OUT/eval-$tag.json" && -f "$OUT/eval-$tag.jsonl" ]]; then
    echo "kept: $tag ($OUT/eval-$tag.json exists)"
    return
  fi
  RAYON_NUM_THREADS=1 "$SQLORA" eval "$@" --data "$DATA/dev.json" --tables "$DATA/tables.json" \
    --db-dir "$DATA/database" --limit "$limit" --out "$OUT/eval-$tag.json" \
    --per-example "$OUT/eval-$tag.jsonl" >"$OUT/eval-$tag.log" 2>&1
  echo "done: $tag"
}
export -f run_one
export SQLORA DATA OUT
start=$(date +%s)
eval_jobs | xargs -P "$JOBS" -L 1 bash -c 'run_one "$@"' _
echo "evaluations: $(($(date +%s) - start)) s with $JOBS parallel single-thread jobs"

python3 - "$OUT" "$N_EXPORT" "$N_AGREE" <<'EOF'
import json, sys
out, n_export, n_agree = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
recs = {t: [json.loads(l) for l in open(f"{out}/eval-{t}.jsonl")] for t in ["base", "adapter", "q8_0", "q4k", "q4_1"]}

def frac(rs, key):
    return sum(bool(r[key]) for r in rs) / len(rs)

def row(label, rs):
    print(f"| {label} | {len(rs)} | {frac(rs, 'exact_match'):.3f} | {frac(rs, 'exec_match'):.3f} | {frac(rs, 'valid_sql'):.3f} |")

print("| model | examples | exact match | execution | valid SQL |\n|---|---|---|---|---|")
row("zero-shot base (f32)", recs["base"])
row("adapter, unmerged (f32 base)", recs["adapter"])
print()
print("| model | examples | exact match | execution | valid SQL |\n|---|---|---|---|---|")
row("adapter, unmerged (f32 base)", recs["adapter"][:n_export])
for q in ["q8_0", "q4k"]:
    row(f"merged export, {q}", recs[q][:n_export])
print()
print(f"| export | identical greedy SQL to the unmerged adapter (first {n_agree}) |\n|---|---|")
for q in ["q8_0", "q4k", "q4_1"]:
    same = sum(a["prediction"] == b["prediction"] for a, b in zip(recs["adapter"][:n_agree], recs[q][:n_agree]))
    print(f"| {q} | {same} / {n_agree} |")
EOF
ls -l "$OUT"/merged-*.gguf
