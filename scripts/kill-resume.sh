#!/usr/bin/env bash
# Kills a small QLoRA training (SIGKILL) at random moments, KILLS times,
# resuming it after each kill, then lets it finish: its adapter and metrics
# must be byte-identical to those of the same training run without a kill.
#
# Usage: scripts/kill-resume.sh [KILLS (20)] [SEED (random)]
# Environment: SQLORA_BIN (default: builds `sqlora` into CARGO_TARGET_DIR),
# SQLORA_SHARED (default ../shared: Spider), the default base model
# (sqlora fetch-model), RAYON_NUM_THREADS (default 2).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

KILLS=${1:-20}
SEED=${2:-$RANDOM}
# Enough steps that the kills land before the end.
STEPS=$((2 * KILLS + 8))
export RAYON_NUM_THREADS="${RAYON_NUM_THREADS:-2}"
SHARED="${SQLORA_SHARED:-$(cd .. && pwd)/shared}"
SPIDER="$SHARED/data/spider"
if [[ -z "${SQLORA_BIN:-}" ]]; then
  cargo build -q -p sqlora
  SQLORA_BIN="${CARGO_TARGET_DIR:-target}/debug/sqlora"
fi
WORK=$(mktemp -d)
# Kept when the check fails, for a look at both runs.
trap '[[ ${fail:-1} == 0 ]] && rm -rf "$WORK"' EXIT
RANDOM=$SEED
echo "kill-resume: $KILLS kills, seed $SEED, in $WORK"

# A small run that saves every step, so that most kills lose some work.
# `exec`: run in the background, `$!` is then the trainer itself, not a
# subshell whose death would leave the trainer running.
train() {
  exec "$SQLORA_BIN" train --quiet \
    --set "train_data=[\"$SPIDER/train_spider.jsonl\"]" \
    --set "eval_data=\"$SPIDER/dev.json\"" \
    --set "tables=\"$SPIDER/tables.json\"" \
    --set "output_dir=\"$1\"" \
    --set quantization="${SQLORA_KILL_QUANT:-none}" \
    --set limit_train=24 --set limit_eval=4 --set max_length=192 --set schema_budget=96 \
    --set batch_size=2 --set grad_accum=1 --set max_steps=$STEPS --set save_steps=1 \
    --set eval_steps=6 --set logging_steps=1 --set lora_r=8 --set lora_alpha=16 \
    --set learning_rate=1e-3 --set seed=11 "${@:2}"
}

ms() { echo $((($(date +%s%N) - t0) / 1000000)); }
t0=$(date +%s%N)
train "$WORK/ref" &
ref=$!
first_ms=
while kill -0 "$ref" 2>/dev/null; do
  [[ -z $first_ms && -d "$WORK/ref/checkpoint-000001" ]] && first_ms=$(ms)
  sleep 0.05
done
wait "$ref"
ref_ms=$(ms)
first_ms=${first_ms:-$ref_ms}
step_ms=$(((ref_ms - first_ms) / STEPS + 1))
echo "kill-resume: uninterrupted run: ${ref_ms} ms, first checkpoint after ${first_ms} ms"

# Each kill comes at a random moment between the start and three steps past
# the first checkpoint: while loading, in a step, or writing a checkpoint.
run="$WORK/run"
killed=0
for ((k = 1; k <= KILLS; k++)); do
  args=()
  compgen -G "$run/checkpoint-*" >/dev/null && args=(--resume)
  train "$run" "${args[@]}" 2>"$WORK/stderr" &
  pid=$!
  delay_ms=$(((RANDOM * 32768 + RANDOM) % (first_ms + 3 * step_ms)))
  sleep "$(printf '%d.%03d' $((delay_ms / 1000)) $((delay_ms % 1000)))"
  if kill -9 "$pid" 2>/dev/null; then
    killed=$((killed + 1))
    wait "$pid" 2>/dev/null || true
    if pgrep -f "output_dir=\"$run\"" >/dev/null; then
      echo "kill-resume: FAIL: a trainer of the run outlived kill $k" >&2
      exit 1
    fi
  elif wait "$pid"; then
    echo "kill-resume: the run finished before kill $k: resuming once more proves nothing new"
    break
  else
    cat "$WORK/stderr" >&2
    echo "kill-resume: FAIL: the run failed on its own after $killed kills" >&2
    exit 1
  fi
  last=$(compgen -G "$run/checkpoint-*" | sort | tail -1 || true)
  echo "kill-resume: kill $k after ${delay_ms} ms; newest checkpoint: ${last##*/}"
done
if [[ ! -f "$run/adapter_model.safetensors" ]]; then
  args=()
  compgen -G "$run/checkpoint-*" >/dev/null && args=(--resume)
  (train "$run" "${args[@]}")
fi

fail=0
if cmp -s "$WORK/ref/adapter_model.safetensors" "$run/adapter_model.safetensors"; then
  echo "kill-resume: adapter_model.safetensors identical"
else
  echo "kill-resume: FAIL: adapter_model.safetensors differs from the uninterrupted run's" >&2
  fail=1
fi
# The metrics line for line, less the throughput (a clock reading). Logged
# losses are f64 means of f32 sums and may differ in the last digit between
# two fresh runs, so numbers compare to 1e-12 relative; the adapter above is exact.
if python3 - "$WORK/ref/metrics.jsonl" "$run/metrics.jsonl" <<'PY'
import json, math, sys
a, b = ([json.loads(l) for l in open(p)] for p in sys.argv[1:])
same = lambda x, y: math.isclose(x, y, rel_tol=1e-12) if isinstance(x, float) and isinstance(y, float) else x == y
for r in a + b:
    r.pop("tokens_per_s", None)
bad = [(x, y) for x, y in zip(a, b) if x.keys() != y.keys() or not all(same(x[k], y[k]) for k in x)]
if len(a) != len(b) or bad:
    print(f"{len(a)} vs {len(b)} records; first difference: {bad[:1]}", file=sys.stderr)
    sys.exit(1)
print(f"kill-resume: metrics.jsonl identical ({len(a)} records, throughput aside)")
PY
then :; else
  echo "kill-resume: FAIL: metrics.jsonl differs from the uninterrupted run's" >&2
  fail=1
fi
leftovers=$(find "$run" -name '*.tmp*' -o -name '.tmp-*' | wc -l)
if [[ $leftovers != 0 ]]; then
  echo "kill-resume: FAIL: $leftovers temporaries left behind" >&2
  fail=1
fi
[[ $killed -ge 1 ]] || { echo "kill-resume: FAIL: no kill landed" >&2; fail=1; }
echo "kill-resume: $killed kills, $([[ $fail == 0 ]] && echo "1 passed, 0 failed" || echo "0 passed, 1 failed")"
exit $fail
