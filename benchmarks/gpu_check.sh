#!/usr/bin/env bash
# Every GPU figure of the project in one prepared run on a bare GPU machine: the image's python3
# (torch, numpy, pandas, pyarrow, transformers), this repo on PYTHONPATH, nothing installed, no
# network, and dagster/mlflow/dbt/duckdb unimportable (benchmarks/gpu_bench.py blocks them).
#
#   OUT=/some/folder bash benchmarks/gpu_check.sh          # on the GPU machine
#   OUT=/tmp/smoke bash benchmarks/gpu_check.sh --cpu-smoke  # the same stages at toy sizes on a CPU
#
# Each stage is its own process under its own `timeout` and writes $OUT/<stage>.json as soon as it
# has a figure (rewritten after each one, so a stage killed by its limit keeps what it measured).
# Stage limits in seconds, 465 in all (7 min 45 s):
#   preflight 25   device, CUDA, torch, the peak FLOP/s MFU divides by; stops the run without a GPU
#                  (about 10 s expected: torch's import and CUDA's start on a fresh machine)
#   data 30        synthetic cohort -> vocabulary -> token sequences (pure core), kept in $WORK
#   train_small 85 / train_mid 90 / train_10m 120   (torch.compile's first compiles are in these)
#                  ours eager + compiled vs HF GPT-2 fp32 and bf16+TF32: tokens/s, MFU, peak memory;
#                  train_10m also: ours compiled with the dense mask, profiler's attention kernels
#   generate 115   ours vs HF generate at batch 64, 256, 1024; host syncs per decode step
# $OUT also gets status.jsonl (one line per stage: exit code, seconds) and gpu_check.log: 8 files.
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
OUT="${OUT:-$PWD/benchmarks/out/gpu_check}"
WORK="${GPU_CHECK_WORK:-/tmp/synehrgy_gpu_check}"
SMOKE=()
SCALE=1  # the smoke run checks that the stages work, not their time: a busy CPU gets 4x the limits
if [ "${1:-}" = "--cpu-smoke" ]; then SMOKE=(--cpu-smoke); SCALE=4; fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
mkdir -p "$OUT" "$WORK"
: > "$OUT/status.jsonl"

stage() {  # stage NAME LIMIT_SECONDS
  local name=$1 budget=$2 limit=$(( $2 * SCALE )) start rc
  start=$(date +%s)
  echo "== $name (limit ${limit}s) $(date -u +%H:%M:%S)"
  timeout --kill-after=5 "$limit" "$PY" benchmarks/gpu_bench.py ${SMOKE[@]+"${SMOKE[@]}"} --stage "$name" \
    --out "$OUT" --work "$WORK"
  rc=$?
  echo "{\"stage\": \"$name\", \"rc\": $rc, \"timed_out\": $([ $rc = 124 ] || [ $rc = 137 ] && echo true || echo false), \"seconds\": $(( $(date +%s) - start )), \"budget\": $budget, \"limit\": $limit}" >> "$OUT/status.jsonl"
  echo "== $name rc=$rc in $(( $(date +%s) - start ))s"
  return $rc
}

{
  stage preflight 25 || { echo "preflight failed: no run"; exit 1; }
  stage data 30 || { echo "no token data: no run"; exit 1; }
  stage train_small 85
  stage train_mid 90
  stage train_10m 120
  stage generate 115
  echo "== done; results in $OUT"
} 2>&1 | tee "$OUT/gpu_check.log"
exit "${PIPESTATUS[0]}"
