#!/usr/bin/env bash
# The GPU check of issue 15, as one script for a lent GPU machine (run from the
# repository root there). It needs what scripts/gpu-pack.sh puts in .gpu/ on
# the build machine: the CUDA release binary, the CUDA test binaries and the
# few ../shared files the peers need. It
#   1. runs the CUDA tests (kernels bit-exact with the CPU, forward/backward
#      parity, checkpointing, AdamW);
#   2. makes random-weight checkpoints of SmolLM2-135M and Mistral-7B with
#      ../shared/peer/gpu/mk_model.py (torch on that machine);
#   3. runs `sqlora bench train --device cuda:0` and the transformers + peft
#      peer (peft_bench.py, bf16 LoRA) on the same GPU, batch and length,
#      sampling GPU utilization during each sqlora run;
#   4. runs `sqlora eval --device cuda:0` on a few Spider dev examples;
#   5. prints the table (tok/s, peak GiB, GPU busy %) and writes the JSON lines
#      to $OUT (or .gpu/out).
# Usage: scripts/gpu-bench.sh [full|quick|m7|ncu]
#   quick: SmolLM2 only; m7: no tests, the Mistral-7B shape only, with a
#   profile of one micro-batch, batch 8, and a dense-bf16-base run beside NF4;
#   ncu: Nsight Compute's per-kernel time summary of two SmolLM2 training steps
#   (which kernels the time goes to; the same op structure as Mistral-7B).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
G=.gpu
OUT=${OUT:-$G/out}
mkdir -p "$OUT"
T=${TMPDIR:-/tmp}/sqlora-gpu
mkdir -p "$T"
export PYTHONUNBUFFERED=1
NV=$(ls -d /opt/torch/.venv/lib/python3*/site-packages/nvidia/cu13/lib 2>/dev/null | head -1)
export LD_LIBRARY_PATH=/usr/local/nvidia/lib64:${NV}:${LD_LIBRARY_PATH:-}
for b in sqlora cuda-tests sqlora-tests; do
  [[ -x $T/$b ]] || { xz -dc "$G/bin/$b.xz" >"$T/$b" && chmod +x "$T/$b"; }
done
SQ=$T/sqlora
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"

MODE=${1:-full}
if [[ $MODE != m7 && $MODE != ncu ]]; then
  echo "== CUDA tests"
  "$T/cuda-tests" --test-threads=1 --nocapture 2>&1 | tail -25 | tee "$OUT/tests.txt"
  "$T/sqlora-tests" --test-threads=1 cuda_steps_equal_cpu_steps 2>&1 | tail -4 | tee -a "$OUT/tests.txt"
fi

echo "== checkpoints"
[[ $MODE == m7 ]] || python3 $G/shared/peer/gpu/mk_model.py smol "$T/smol" || exit 1
[[ $MODE == quick || $MODE == ncu ]] || python3 $G/shared/peer/gpu/mk_model.py m7 "$T/m7" || exit 1

# busy MODEL LABEL ARGS...: one sqlora bench with 200 ms utilization samples.
busy() {
  local label=$1; shift
  # Utilization is sampled from when the bench says its timed steps start (SQLORA_TIMED_MARK).
  rm -f "$T/mark-$label"
  nvidia-smi --query-gpu=utilization.gpu --format=csv,noheader,nounits -lms 100 >"$T/util-$label.txt" &
  local smi=$!
  SQLORA_TIMED_MARK="$T/mark-$label" timeout 300 "$SQ" bench train --device cuda:0 --json "$@" >"$T/bench-$label.json" 2>"$T/bench-$label.err" &
  local pid=$!
  while kill -0 $pid 2>/dev/null && [[ ! -e $T/mark-$label ]]; do sleep 0.05; done
  local from
  from=$(wc -l <"$T/util-$label.txt")
  wait $pid
  local rc=$?
  local to
  to=$(wc -l <"$T/util-$label.txt")
  kill $smi 2>/dev/null; wait $smi 2>/dev/null
  grep profile "$T/bench-$label.err" | tee -a "$OUT/profile.txt"
  local util
  util=$(awk -v a="$from" -v b="$to" 'NR>a && NR<=b {s+=$1; n++} END {if (n) printf "%.0f", s/n; else print "-"}' "$T/util-$label.txt")
  if [[ $rc -ne 0 ]]; then
    echo "{\"label\": \"$label\", \"error\": $(tail -3 "$T/bench-$label.err" | python3 -c 'import json,sys; print(json.dumps(sys.stdin.read()))')}" | tee -a "$OUT/results.jsonl"
  else
    python3 - "$label" "$util" "$T/bench-$label.json" <<'PY' | tee -a "$OUT/results.jsonl"
import json, sys
r = json.loads(open(sys.argv[3]).read().strip().splitlines()[-1])
r["label"], r["gpu_busy_pct"] = sys.argv[1], sys.argv[2]
print(json.dumps(r))
PY
  fi
}
peer() {
  local label=$1; shift
  timeout 300 python3 $G/shared/peer/gpu/peft_bench.py "$@" 2>"$T/peer-$label.err" | tail -1 |
    python3 -c "import json,sys; r=json.loads(sys.stdin.read()); r['label']='$label'; print(json.dumps(r))" | tee -a "$OUT/results.jsonl" ||
    echo "{\"label\": \"$label\", \"error\": \"peer failed\"}" | tee -a "$OUT/results.jsonl"
}

if [[ $MODE == ncu ]]; then
  # Kernel durations only (no replay of other metrics), clocks as found; one CSV row per launch.
  timeout 400 ncu --clock-control none --metrics gpu__time_duration.sum --csv --page raw \
    "$SQ" bench train --device cuda:0 --base "$T/smol" --batch 4 --steps 1 --warmup 1 >"$T/ncu.csv" 2>"$T/ncu.err"
  head -c 15000000 "$T/ncu.csv" >"$OUT/ncu.csv"
  tail -20 "$T/ncu.err" >"$OUT/ncu.err"
  python3 - "$T/ncu.csv" <<'PY' | tee "$OUT/ncu-top.txt"
import csv, sys
from collections import defaultdict
lines = [l for l in open(sys.argv[1], errors="replace") if l.startswith('"')]
rows = list(csv.reader(lines))
head = rows[0]
k, m = head.index("Kernel Name"), head.index("gpu__time_duration.sum")
scale = {"nsecond": 1e-3, "usecond": 1.0, "msecond": 1e3, "second": 1e6}
unit, total = 1e-3, defaultdict(float)
calls = defaultdict(int)
for r in rows[1:]:
    v = r[m].replace(",", "")
    try:
        t = float(v)
    except ValueError:
        unit = scale.get(v, unit)  # the units row
        continue
    total[r[k]] += t * unit
    calls[r[k]] += 1
all_us = sum(total.values()) or 1
print(f"{len(rows) - 2} launches, {all_us / 1e3:.1f} ms of kernel time")
print(f"{'total us':>10} {'share':>6} {'calls':>6}  kernel")
for name, t in sorted(total.items(), key=lambda x: -x[1])[:40]:
    print(f"{t:>10.0f} {t / all_us:>6.1%} {calls[name]:>6}  {name[:110]}")
PY
  exit 0
fi
if [[ $MODE == m7 ]]; then
  busy m7-b4 --base "$T/m7" --batch 4 --grad-accum 2 --steps 6 --warmup 2 --profile
  busy m7-b8 --base "$T/m7" --batch 8 --steps 6 --warmup 2
  busy m7-b4-dense --base "$T/m7" --batch 4 --grad-accum 2 --steps 6 --warmup 2 --dense-base-cache
  peer peer-m7-b4 "$T/m7" 4 256 20
fi
[[ $MODE == m7 ]] || {
echo "== SmolLM2-135M shape"
busy smol-b4 --base "$T/smol" --batch 4 --grad-accum 2 --steps 20 --warmup 3
busy smol-b16 --base "$T/smol" --batch 16 --steps 20 --warmup 3
peer peer-smol-b4 "$T/smol" 4 256 30
peer peer-smol-b16 "$T/smol" 16 256 30
if [[ ${1:-} != quick ]]; then
  echo "== Mistral-7B shape"
  busy m7-b4 --base "$T/m7" --batch 4 --grad-accum 2 --steps 6 --warmup 2
  busy m7-b4-ckpt --base "$T/m7" --batch 4 --grad-accum 2 --steps 6 --warmup 2 --gradient-checkpointing
  peer peer-m7-b4 "$T/m7" 4 256 20
fi

echo "== eval on the GPU (random weights: checks that it runs, not accuracy)"
S=$G/shared/data/spider
timeout 120 "$SQ" eval --base "$T/smol" --device cuda:0 --data $S/dev.json --tables $S/tables.json \
  --db-dir $S/database --limit 8 --batch 8 --max-new-tokens 24 --out "$OUT/eval-smol.json" 2>&1 | tail -4 | tee "$OUT/eval.txt"
}

echo "== table"
python3 - "$OUT/results.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
print(f"{'run':<14}{'tok/s':>10}{'peak GiB':>10}{'GPU busy %':>12}  note")
for r in rows:
    if "error" in r:
        print(f"{r['label']:<14}{'-':>10}{'-':>10}{'-':>12}  {r['error'][-150:]!r}")
    elif "peer" in r:
        print(f"{r['label']:<14}{r['tok_s']:>10.0f}{r['peak_gib']:>10.2f}{'':>12}  {r['peer']}")
    else:
        gib = r.get("peak_device_gib") or 0
        print(f"{r['label']:<14}{r['tokens_per_s']:>10.0f}{gib:>10.2f}{r['gpu_busy_pct']:>12}  load {r['load_s']:.1f}s loss {r.get('mean_loss') or 0:.3f}")
PY
