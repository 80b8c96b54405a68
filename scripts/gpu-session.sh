#!/usr/bin/env bash
# One call on a lent GPU machine: check, measure and tune everything, and leave the run
# files under $OUT (or ./gpu-out). Runs from a checkout with no install:
#     PYTHONPATH=. bash scripts/gpu-session.sh [suite ...]
# Never changes clocks, power limits or modes: it measures the card as found.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=.
export PYTHONUNBUFFERED=1
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
suites=("$@")
[ ${#suites[@]} -gt 0 ] || suites=(default)
# clocks_event_reasons.active is the newer drivers' name for clocks_throttle_reasons.active.
{ nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,temperature.gpu,power.draw,clocks_event_reasons.active --format=csv \
  || nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,temperature.gpu,power.draw,clocks_throttle_reasons.active --format=csv; } > "$OUT/nvidia-smi.csv" 2>&1 || true
python3 -m kernelmark env --remeasure | tee "$OUT/env.txt"
python3 scripts/crosscheck_do_bench.py 4096 8192 | tee "$OUT/do_bench.txt"
for s in "${suites[@]}"; do
    python3 -m kernelmark run --suite "$s" --out "$OUT/$s.jsonl" --quiet --format md > "$OUT/$s.md" \
        || echo "suite $s exited $?"
    tail -n +1 "$OUT/$s.md"
done
