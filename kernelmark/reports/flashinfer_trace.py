"""Export a run of a FlashInfer-Trace dataset as FlashInfer-Trace traces.

``traces/<op_type>/<definition>.jsonl`` under the output directory, one trace per
(workload, backend) that ran: ``solution`` is ``kernelmark/<backend>``, ``evaluation`` is
built from the record and the run's header. Only what was measured is written:

  ok             PASSED, correctness from our check, performance from our median (ms);
                 reference_latency_ms / speedup_factor from the eager PyTorch baseline of
                 the same case where it was timed (0.0, their "not measured", otherwise)
  failed_check   INCORRECT_NUMERICAL (INCORRECT_SHAPE / INCORRECT_DTYPE where the check says
                 so), correctness only
  error, oom, crashed   RUNTIME_ERROR, the reason in ``log``;  timeout   TIMEOUT
  checked, skipped, unsupported   not written: nothing was timed (FlashInfer-Trace has no
                 status for "checked but not timed" or "not run")

Records not from a FlashInfer-Trace suite (no ``trace`` with a definition) are not written.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

_RUNTIME = {"error": "RUNTIME_ERROR", "oom": "RUNTIME_ERROR", "crashed": "RUNTIME_ERROR", "timeout": "TIMEOUT"}


def _is_baseline(backend: str) -> bool:
    """The eager PyTorch backend a FlashInfer-Bench reference would be: torch, torch-<variant>
    (torch-gather-sdpa), but not a compiled one."""
    return (backend == "torch" or backend.startswith("torch-")) and "compile" not in backend


def _failed_status(rec: dict) -> str:
    detail = str((rec.get("check") or {}).get("detail") or rec.get("reason") or "").lower()
    if "shape" in detail:
        return "INCORRECT_SHAPE"
    if "dtype" in detail:
        return "INCORRECT_DTYPE"
    return "INCORRECT_NUMERICAL"


def _num(x):
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else None


def _correctness(check: dict) -> dict:
    out = {"extra": {"kernelmark_check": check}}
    for ours, theirs in (("max_rel", "max_relative_error"), ("max_abs", "max_absolute_error")):
        v = _num(check.get(ours))
        if v is not None:
            out[theirs] = v
    return out


def environment(header: dict) -> dict:
    d = header["device"]
    libs = {k: str(v) for k, v in (d.get("versions") or {}).items() if v is not None}
    commit = (d.get("git") or {}).get("commit")
    if commit:
        libs["kernelmark_commit"] = commit
    hw = d.get("name") or d.get("kind") or "unknown"
    return {"hardware": f"{hw} ({d.get('kind')})" if d.get("kind") else hw, "libs": libs}


def trace(rec: dict, header: dict, baseline_us) -> dict | None:
    """The trace of one record, or None where nothing was measured."""
    st, meta = rec["status"], rec["trace"]
    log = "; ".join([*(meta.get("notes") or []), *([rec["reason"]] if rec.get("reason") else [])])
    ev = {"environment": environment(header), "timestamp": header.get("started") or "unknown", "log": log}
    if st == "ok":
        lat = rec["timing"]["median_us"] / 1000
        perf = {"latency_ms": lat}
        if baseline_us:
            perf.update(reference_latency_ms=baseline_us / 1000, speedup_factor=baseline_us / 1000 / lat)
        ev.update(status="PASSED", correctness=_correctness(rec.get("check") or {}), performance=perf)
    elif st == "failed_check":
        ev.update(status=_failed_status(rec), correctness=_correctness(rec.get("check") or {}))
        if ev["status"] != "INCORRECT_NUMERICAL":
            del ev["correctness"]          # their schema: correctness only with INCORRECT_NUMERICAL
    elif st in _RUNTIME:
        ev["status"] = _RUNTIME[st]
    else:
        return None
    workload = {"uuid": meta["uuid"], "axes": meta.get("axes", {}), "inputs": meta.get("inputs", {})}
    return {"definition": meta["definition"], "workload": workload, "solution": f"kernelmark/{rec['backend']}",
            "evaluation": ev}


def traces(header: dict, records: list) -> tuple:
    """({(op_type, definition): [trace]}, records left out)."""
    baseline: dict = {}
    for r in records:
        if r["status"] == "ok" and _is_baseline(r["backend"]) and (r.get("trace") or {}).get("uuid"):
            baseline.setdefault((r.get("case_index"), r["trace"]["uuid"]), r["timing"]["median_us"])
    out: dict = {}
    left = 0
    for r in records:
        meta = r.get("trace") or {}
        t = trace(r, header, baseline.get((r.get("case_index"), meta.get("uuid")))) \
            if meta.get("definition") and meta.get("uuid") and not meta.get("unsupported") else None
        if t is None:
            left += 1
            continue
        out.setdefault((meta["op_type"], meta["definition"]), []).append(t)
    return out, left


def write(header: dict, records: list, directory: str) -> tuple:
    """Write the traces; returns (traces written, files written, records left out)."""
    grouped, left = traces(header, records)
    root = Path(directory)
    n = 0
    for (op_type, name), ts in sorted(grouped.items()):
        p = root / "traces" / op_type / f"{name}.jsonl"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("".join(json.dumps(t, allow_nan=False) + "\n" for t in ts))
        n += len(ts)
    return n, len(grouped), left
