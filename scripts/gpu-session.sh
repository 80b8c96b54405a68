#!/usr/bin/env bash
# One command on a lent GPU machine: environment, do_bench cross-check, the first-light suite
# (then any suites named as arguments while time remains), a peak check and a report, packed
# into at most 8 files under $OUT (else ./gpu-out). From a checkout with no install:
#
#     PYTHONPATH=. bash scripts/gpu-session.sh [--device cpu] [suite ...]
#
# Bounded: the whole script stops within KM_SESSION_S seconds (default 480 = 8 minutes);
# the suites get what is left after the earlier steps, minus a reserve for the report and
# the packing, as `kernelmark run --deadline`, and every backend at most 120 s (--timeout).
# --device cpu (or KM_DEVICE=cpu) is the rehearsal `make test` runs: the CPU block of the
# suites, tiny budgets, no do_bench (it needs a GPU). docs/gpu-session.md says what to read.
# Never changes clocks, power limits or modes: it measures the card as found.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=.
export PYTHONUNBUFFERED=1
export KERNELMARK_NO_HISTORY=1          # a lent machine's history store is thrown away with it
PY=${PYTHON:-python3}
DEVICE=${KM_DEVICE:-}
TOTAL=${KM_SESSION_S:-480}
RESERVE=${KM_RESERVE_S:-30}             # report, peak check and packing after the last suite
TIMEOUT=${KM_BACKEND_TIMEOUT_S:-120}

suites=()
while [ $# -gt 0 ]; do
    case "$1" in
        --device) DEVICE=${2:?--device needs a value}; shift 2 ;;
        --device=*) DEVICE=${1#--device=}; shift ;;
        -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
        -*) echo "gpu-session: error: unknown option $1" >&2; exit 2 ;;
        *) suites+=("$1"); shift ;;
    esac
done

# The whole script under one timeout; the inner copy knows it is inside (KM_SESSION_INNER).
if [ -z "${KM_SESSION_INNER:-}" ]; then
    export KM_SESSION_INNER=1 KM_SESSION_START=$(date +%s)
    exec timeout -k 10 "$TOTAL" bash "$0" ${DEVICE:+--device "$DEVICE"} "${suites[@]}"
fi
START=${KM_SESSION_START:-$(date +%s)}

OUT=${OUT:-gpu-out}
mkdir -p "$OUT" || exit 2
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu-session.XXXXXX") || exit 2
trap 'rm -rf "$WORK"' EXIT
LOG="$OUT/session.log"
: > "$LOG"

elapsed() { echo $(( $(date +%s) - START )); }
left() { echo $(( TOTAL - RESERVE - $(date +%s) + START )); }
say() { echo "[gpu-session +$(elapsed)s] $*" | tee -a "$LOG"; }
# step LIMIT FILE CMD...: CMD's standard output into FILE, its standard error (progress,
# warnings) into the log and onto the terminal; at most LIMIT seconds.
step() {
    local limit=$1 file=$2; shift 2
    timeout -k 5 "$limit" "$@" > "$file" 2> >(tee -a "$LOG" >&2)
}

devopt=(); budget=(); cpu=0
if [ "$DEVICE" = cpu ]; then
    cpu=1; devopt=(--device cpu); budget=(--budget 0.02)
elif [ -n "$DEVICE" ]; then
    devopt=(--device "$DEVICE")
fi
say "start: device ${DEVICE:-default}, ${TOTAL}s in all, output in $OUT"

if [ $cpu = 0 ]; then
    say "nvidia-smi"
    # clocks_event_reasons.active is the newer drivers' name for clocks_throttle_reasons.active.
    { nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,temperature.gpu,power.draw,clocks_event_reasons.active --format=csv \
      || nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,temperature.gpu,power.draw,clocks_throttle_reasons.active --format=csv; } > "$OUT/nvidia-smi.csv" 2>&1 || true
fi

say "env: device profile and measured peaks -> env.json"
step 90 "$OUT/env.json" "$PY" -m kernelmark env --json "${devopt[@]}" || say "env exited $? (see session.log)"

if [ $cpu = 1 ]; then
    echo "do_bench cross-check skipped: it needs a GPU (rehearsal on the CPU)" > "$OUT/do_bench.txt"
    say "do_bench: skipped on the CPU"
else
    say "do_bench cross-check: torch.matmul bf16 4096^3 and 8192^3 -> do_bench.txt"
    step 90 "$OUT/do_bench.txt" "$PY" scripts/crosscheck_do_bench.py 4096 8192 || say "do_bench exited $?"
    tee -a "$LOG" < "$OUT/do_bench.txt"
fi

runs=()
for s in first-light "${suites[@]}"; do
    dl=$(left)
    if [ "$dl" -lt 5 ]; then
        say "suite $s: not started, ${dl}s left before the reserve"
        echo "suite $s not started: session time used up" >> "$WORK/not-run.txt"
        continue
    fi
    say "suite $s: deadline ${dl}s, timeout ${TIMEOUT}s per backend"
    # The step's own limit is the deadline plus one backend's timeout: a case started just
    # before the deadline may finish; the outer timeout still bounds the whole script.
    step $((dl + TIMEOUT)) "$WORK/$s.md" "$PY" -m kernelmark run --suite "$s" "${devopt[@]}" "${budget[@]}" \
        --deadline "$dl" --timeout "$TIMEOUT" --progress-lines --format md --out "$WORK/$s.jsonl"
    rc=$?
    [ $rc = 0 ] || say "suite $s exited $rc"
    [ -s "$WORK/$s.jsonl" ] && runs+=("$WORK/$s.jsonl")
done

say "peak check: no rate above the datasheet -> peaks-check.txt"
if [ ${#runs[@]} -gt 0 ]; then
    step 30 "$OUT/peaks-check.txt" "$PY" scripts/check_peaks.py "${runs[@]}"
    rc=$?
    tee -a "$LOG" < "$OUT/peaks-check.txt"
    [ $rc = 0 ] || say "peak check: FAILED rows (exit $rc)"
    say "report -> report.md"
    step 30 "$OUT/report.md" "$PY" -m kernelmark report --format md "${runs[@]}" || say "report exited $?"
else
    echo "no run file was written" | tee "$OUT/peaks-check.txt" > "$OUT/report.md"
fi

say "packing run files and per-suite tables -> runs.tar.gz"
tar -czf "$OUT/runs.tar.gz" -C "$WORK" . || say "tar exited $?"
say "done in $(elapsed)s: $(ls "$OUT" | tr '\n' ' ')"
exit 0
