"""The per-device table of one run. Reads run records and nothing else.

Columns: op, shape, dtype, backend, median µs ± the 95% CI half-width of the median (as
% of it), TFLOP/s, GB/s, % of the measured roofline (with the datasheet one beside it),
the bound (compute or memory), and the status. A failed check is shown as failed, never
as a number.
"""

from __future__ import annotations

import csv
import io

from tabulate import tabulate

from kernelmark.results import strict_json
from kernelmark.reports.escape import csv_cell, md_cell, md_text, one_line, plain

COLUMNS = ("op", "label", "shape", "dtype", "backend", "median_us", "ci_pct", "tflops", "gbps",
           "pct_of_peak", "pct_of_datasheet", "bound", "status")
HEADERS = ("op", "label", "shape", "dtype", "backend", "median µs", "±95% CI", "TFLOP/s", "GB/s",
           "% peak", "% datasheet", "bound", "status")


def shape_text(shape: dict) -> str:
    """'m=64 n=48 k=64 nt': numbers with their names, words as they are."""
    parts = []
    for k, v in shape.items():
        parts.append(str(v) if isinstance(v, str) else f"{k}={v}")
    return " ".join(parts)


def _num(x, digits: int = 1):
    if x is None:
        return ""
    if isinstance(x, str):
        return x
    if x >= 1000:
        return f"{x:,.0f}"
    if x >= 100:
        return f"{x:.0f}" if digits <= 1 else f"{x:.{max(digits - 2, 0)}f}"
    return f"{x:.{digits}f}" if x >= 1 else f"{x:.{digits + 2}g}"


def status_text(rec: dict) -> str:
    st = rec["status"]
    if st == "ok":
        t = rec.get("timing", {})
        flags = []
        if rec.get("noisy"):
            flags.append("noisy")
        h = rec.get("health") or {}
        if h.get("throttled"):
            flags.append("THROTTLED: " + ",".join(h.get("throttle_reasons", [])))
        elif h.get("below_app_clocks"):
            flags.append("below app clocks")
        if t.get("method") == "cuda_graph":
            flags.append("graph")
        return "ok" + (f" ({', '.join(flags)})" if flags else "")
    if st == "checked":
        return "checked, not timed (interpreter)"
    if st == "failed_check":
        c = rec.get("check") or {}
        return f"FAILED check: {c.get('detail') or rec.get('reason', '')}"
    return f"{st}: {rec.get('reason', '')}"


def row(rec: dict) -> dict:
    r = {"op": rec["op"], "label": rec.get("label", ""), "shape": shape_text(rec["shape"]),
         "dtype": rec["dtype"], "backend": rec["backend"], "status": status_text(rec)}
    if rec["status"] == "ok":
        t = rec["timing"]
        r.update({"median_us": t["median_us"], "ci_pct": 100 * t["ci_rel"], "tflops": rec.get("tflops"),
                  "gbps": rec.get("gbps"), "pct_of_peak": rec.get("pct_of_peak"),
                  "pct_of_datasheet": rec.get("pct_of_datasheet"), "bound": rec.get("bound")})
    return r


def title(header: dict) -> str:
    d = header["device"]
    v = d.get("versions", {})
    git = d.get("git") or {}
    commit = (git.get("commit") or "unknown")[:10] + ("+dirty" if git.get("dirty") else "")
    pk = header.get("peaks", {})
    tf = ", ".join(f"{k} {x:.3g}" for k, x in sorted((pk.get("tflops") or {}).items()))
    lines = [
        f"kernelmark {header.get('kernelmark', '?')} @ {commit} | suite {header['suite'].get('name')} | "
        f"{header.get('started', '')}",
        f"device: {d.get('name')} ({d.get('kind')}, {d.get('arch') or ''}) | torch {v.get('torch')} | "
        f"triton {v.get('triton')}" + (f" | driver {d['driver']}" if d.get("driver") else ""),
        f"measured peaks: copy {pk.get('copy_gbps', 0):.1f} GB/s"
        + (f", h2d {pk['h2d_gbps']:.1f} GB/s" if pk.get("h2d_gbps") else "")
        + (f" | matmul TFLOP/s: {tf}" if tf else ""),
    ]
    load, cpus = d.get("load_avg"), (d.get("cpu") or {}).get("logical_cpus")
    if d.get("kind") == "cpu" and isinstance(load, list) and load and isinstance(cpus, int) and cpus > 0 \
            and isinstance(load[0], (int, float)) and load[0] > 0.5 * cpus:
        lines.append(f"WARNING: load average {load[0]} on {cpus} CPUs when the run started: "
                     "other work shared these cores, CPU timings are unreliable")
    ds = d.get("datasheet")
    if ds:
        dtf = ", ".join(f"{k} {x:g}" for k, x in sorted(ds["tflops"].items()))
        lines.append(f"datasheet ({ds['name']}): {ds['copy_gbps']:g} GB/s | TFLOP/s: {dtf}")
    return "\n".join(lines)


def cells(records: list) -> tuple:
    """(column headers, rows of display strings) of the table, shared by every text format
    and the HTML page. The label column appears only when some record has a label."""
    rows = [row(r) for r in records]
    show_label = any(r["label"] for r in rows)
    cols = [c for c in COLUMNS if c != "label" or show_label]
    heads = [h for c, h in zip(COLUMNS, HEADERS) if c in cols]
    body = []
    for r in rows:
        out = []
        for c in cols:
            v = r.get(c)
            if c == "median_us":
                v = _num(v, 2) if v is not None else ""
            elif c == "ci_pct":
                v = f"±{v:.1f}%" if v is not None else ""
            elif c in ("tflops", "gbps", "pct_of_peak", "pct_of_datasheet"):
                v = _num(v, 1)
            out.append("" if v is None else v)
        body.append(out)
    return heads, body


FOLDED = ("skipped", "unsupported")


def folded_summary(records: list) -> str:
    """'not run here: 12 rows' with one line per (backend, status, reason)."""
    groups: dict = {}
    for r in records:
        key = (r["backend"], r["status"], str(r.get("reason", "")))
        groups[key] = groups.get(key, 0) + 1
    lines = [f"not run here ({len(records)} rows; all of them are in the run file):"]
    for (backend, status, reason), n in sorted(groups.items()):
        lines.append(f"  {backend}: {status} x{n}: {reason}")
    return "\n".join(lines)


def render(header: dict, records, fmt: str = "table") -> str:
    """The table of one run in ``fmt``. For csv, ``records`` may be any iterable (a run
    file's records read one at a time): it is gone through once and not kept."""
    if fmt == "json":
        return strict_json({"header": header, "records": records}, indent=1)
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=("device",) + COLUMNS, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        for r in records:
            w.writerow({k: csv_cell(v) for k, v in {"device": header["device"].get("name"), **row(r)}.items()})
        return buf.getvalue().rstrip("\n")
    # Rows a backend could not run here (a library not installed, a dtype it lacks) are
    # counted under the table rather than shown one by one; csv and json keep them all.
    shown = [r for r in records if r["status"] not in FOLDED]
    folded = [r for r in records if r["status"] in FOLDED]
    heads, body = cells(shown)
    # Text from the run file, escaped for where it is shown (kernelmark/reports/escape.py).
    text = md_text if fmt == "md" else plain
    body = [[md_cell(c) if fmt == "md" else plain(c) for c in r] for r in body]
    table = tabulate(body, headers=heads, tablefmt="github" if fmt == "md" else "simple",
                     disable_numparse=True)
    if not records:
        table = "(no records: the run stopped before its first case finished)"
    elif folded:
        table += "\n\n" + "\n".join(text(line) for line in folded_summary(one_line(folded)).splitlines())
    lines = [text(line) for line in title(one_line(header)).splitlines()]
    if fmt == "md":
        return "\n".join(f"> {line}" if line else ">" for line in lines) + "\n\n" + table
    return "\n".join(lines) + "\n\n" + table
