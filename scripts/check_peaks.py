"""No measured rate may exceed the datasheet: a check on run files for scripts/gpu-session.sh.

    PYTHONPATH=. python3 scripts/check_peaks.py RUN.jsonl [RUN.jsonl ...]

A rate above the card's datasheet peak means a measurement is wrong (a cache not flushed, a
FLOP or byte count too high, a timer that missed work), so each such row is printed as
FAILED. The run's measured peaks (copy bandwidth, matmul TFLOP/s) are checked the same way.
It also counts what a first run must be read for (failed checks, errors, timeouts,
cases the deadline kept from starting, graph-replay fallbacks, throttling, noisy rows) as
notes. Where the device is not in kernelmark's datasheet table (the CPU), nothing can be checked and
the output says so. Exit 1 if any row FAILED, 2 if a run file cannot be read, else 0.
Reads run files only (kernelmark.results), like the reports.
"""

import sys

from kernelmark import results


def flags(run) -> list:
    """note lines for what a first run on a new card must be read for (they do not fail the
    check: a missing library or a throttled card is a fact about the machine, not a wrong number)."""
    out = []
    by_status: dict = {}
    for r in run.records:
        by_status.setdefault(r["status"], []).append(r)
    for st in ("failed_check", "error", "crashed", "timeout", "oom"):
        for r in by_status.get(st, []):
            out.append(("note", f"{st}: {r['op']} {r['dtype']} {r['backend']}: {(r.get('reason') or '')[:160]}"))
    late = [r for r in by_status.get("skipped", []) if (r.get("reason") or "").startswith("deadline reached")]
    if late:
        out.append(("note", f"{len(late)} (case, backend) pairs not started: the deadline was reached"))
    timed = by_status.get("ok", [])
    nograph = [r for r in timed if "graph replay not used" in ((r.get("timing") or {}).get("note") or "")]
    hot = [r for r in timed if (r.get("health") or {}).get("throttled") or (r.get("health") or {}).get("below_app_clocks")]
    noisy = [r for r in timed if r.get("noisy")]
    out.append(("note", f"{len(timed)} timed rows: {len(nograph)} with graph replay not used (timed with events), "
                        f"{len(hot)} throttled or below application clocks, {len(noisy)} noisy"))
    return out


def check(run) -> list:
    """(status, text) lines for one run: FAILED, ok, or note."""
    ds = run.header["device"].get("datasheet") or {}
    name = run.header["device"].get("name")
    if not ds:
        return [("note", f"{run.path}: {name} is not in the datasheet table; rates not checked")] + flags(run)
    out = []
    pk = run.header["peaks"]
    sheet_tf = ds.get("tflops") or {}
    if pk.get("copy_gbps") and ds.get("copy_gbps"):
        bad = pk["copy_gbps"] > ds["copy_gbps"]
        out.append(("FAILED" if bad else "ok",
                    f"measured copy {pk['copy_gbps']:.0f} GB/s vs datasheet {ds['copy_gbps']:g} GB/s "
                    f"({100 * pk['copy_gbps'] / ds['copy_gbps']:.1f}%)"))
    for dt, tf in sorted((pk.get("tflops") or {}).items()):
        if sheet_tf.get(dt):
            out.append(("FAILED" if tf > sheet_tf[dt] else "ok",
                        f"measured matmul {dt} {tf:.0f} TFLOP/s vs datasheet {sheet_tf[dt]:g} "
                        f"({100 * tf / sheet_tf[dt]:.1f}%)"))
    over = [r for r in run.records if r["status"] == "ok" and (r.get("pct_of_datasheet") or 0) > 100]
    for r in over:
        shape = ",".join(f"{k}={v}" for k, v in r["shape"].items())
        out.append(("FAILED", f"{r['op']} {r['dtype']} {r['backend']} [{shape}]: "
                              f"{r['pct_of_datasheet']:.1f}% of the datasheet ({r.get('bound')} bound)"))
    n_ok = sum(r["status"] == "ok" for r in run.records)
    out.append(("ok" if not over else "FAILED",
                f"{n_ok - len(over)} of {n_ok} timed rows within the datasheet peaks of {ds.get('name')}"))
    return out + flags(run)


def main(paths) -> int:
    if not paths:
        print("usage: check_peaks.py RUN.jsonl [...]", file=sys.stderr)
        return 2
    failed = False
    for p in paths:
        try:
            run = results.load(p)
        except results.RunFileError as e:
            print(f"check_peaks: error: {e}", file=sys.stderr)
            return 2
        print(f"== {p}")
        for status, text in check(run):
            failed |= status == "FAILED"
            print(f"{status:<6} {text}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
