"""The per-device table of one run. Reads run records and nothing else.

Columns: op, shape, dtype, backend, median µs ± the 95% CI half-width of the median (as
% of it), TFLOP/s, GB/s, % of the measured roofline (with the datasheet one beside it),
the bound (compute or memory), and the status. A failed check is shown as failed, never
as a number.
"""

from __future__ import annotations

import csv
import io
from array import array

from tabulate import tabulate

from kernelmark.reports import energy as energy_cols
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


def stall_status(rec: dict):
    """'noisy (why)' for a timed record whose samples stalled: its median is not the call's
    time however narrow its CI, so the row never reads ok. None otherwise."""
    stall = (rec.get("timing") or {}).get("stall") if rec.get("status") == "ok" else None
    return f"noisy ({stall})" if stall else None


def status_text(rec: dict) -> str:
    st = rec["status"]
    if stall_status(rec):
        return stall_status(rec)
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
        # Said neutrally: the 1-minute average still counts a run that just ended, ours included.
        lines.append(f"WARNING: load average {load[0]} over {cpus} CPUs when the run started "
                     "(any recent process counts, an earlier kernelmark run too): CPU timings may be inflated")
    ds = d.get("datasheet")
    if ds:
        dtf = ", ".join(f"{k} {x:g}" for k, x in sorted(ds["tflops"].items()))
        lines.append(f"datasheet ({ds['name']}): {ds['copy_gbps']:g} GB/s | TFLOP/s: {dtf}")
    return "\n".join(lines)


def cells(records: list) -> tuple:
    """(column headers, rows of display strings) of the table, shared by every text format
    and the HTML page. The label column appears only when some record has a label."""
    rows = [{**row(r), **energy_cols.cells(r)} for r in records]
    show_label = any(r["label"] for r in rows)
    extra = energy_cols.has_energy(records)
    all_cols = COLUMNS + (energy_cols.COLUMNS if extra else ())
    cols = [c for c in all_cols if c != "label" or show_label]
    heads = [h for c, h in zip(all_cols, HEADERS + (energy_cols.HEADERS if extra else ())) if c in cols]
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
                v = _num(v, 1) + (ABOVE_PEAK if c == "pct_of_peak" and above_peak(r) else "")
            out.append("" if v is None else v)
        body.append(out)
    return heads, body


# ---------------------------------------------------------------- notes under the table
# (CPU threads, and what % peak was measured against): kept apart from the layout above.

ABOVE_PEAK = "†"      # marks a % peak over 100; the note under the table says why it can be


def above_peak(r: dict) -> bool:
    v = r.get("pct_of_peak")
    return isinstance(v, (int, float)) and v > 100


def threads_note(header: dict):
    """'CPU threads: N (why)' for a CPU run whose profile recorded the choice; else None."""
    d = header.get("device") or {}
    th = (d.get("cpu") or {}).get("threads")
    if d.get("kind") != "cpu" or not isinstance(th, dict) or "chosen" not in th:
        return None
    return f"CPU threads: {th['chosen']} ({th.get('reason', th.get('source', ''))})"


def peak_notes(header: dict, records: list) -> list:
    """Lines saying what % peak was measured against where it is not the obvious ceiling: a
    dtype whose roof is another dtype's rate, values over 100 (marked), peaks measured on a
    busy machine."""
    pk = header.get("peaks") or {}
    tf = pk.get("tflops") or {}
    shown = [r for r in records if r.get("status") == "ok"]
    lines = []
    via: dict = {}
    for r in shown:
        if r.get("roof_dtype"):
            via.setdefault(r["roof_dtype"], set()).add(r["dtype"])
    for wide, dts in sorted(via.items()):
        native = ", ".join(f"{dt} {tf[dt]:.3g}" for dt in sorted(dts) if tf.get(dt))
        lines.append(f"% peak of {', '.join(sorted(dts))} rows is against the {wide} matmul rate"
                     + (f" ({tf[wide]:.3g} TFLOP/s)" if tf.get(wide) else "")
                     + ": this device computes them faster that way" + (f" than natively ({native})" if native else ""))
    above = [r for r in shown if above_peak(r)]
    if above:
        bounds = {r.get("bound") for r in above}
        why = []
        if "memory" in bounds:
            why.append("memory-bound: the copy peak counts each byte read and written once, and a kernel that "
                       "mostly reads, or whose data stays in cache, moves bytes faster than a copy")
        if bounds - {"memory"}:
            why.append("compute-bound: the case ran faster than the large matmul the peak was measured with")
        lines.append(f"{ABOVE_PEAK} over 100% of the measured peak ({len(above)} rows): the peak is a measurement "
                     "on this device, not a limit; " + "; ".join(why))
    if pk.get("stalled"):
        lines.append("WARNING: peaks measured while the machine was busy (" + ", ".join(sorted(pk["stalled"])) +
                     "): % peak is against ceilings that are too low (kernelmark env --remeasure on a quiet machine)")
    return lines


def notes(header: dict, records: list) -> str:
    """The notes under the table, one per line ('' when there are none)."""
    lines = [x for x in [threads_note(header)] if x] + peak_notes(header, records)
    return "\n".join(lines)


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
        return _csv(header, records)
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
    if records and notes(header, records):
        table += "\n\n" + "\n".join(text(line) for line in notes(header, records).splitlines())
    lines = [text(line) for line in title(one_line(header)).splitlines()]
    if fmt == "md":
        return "\n".join(f"> {line}" if line else ">" for line in lines) + "\n\n" + table
    return "\n".join(lines) + "\n\n" + table


def _csv(header: dict, records) -> str:
    """The csv of ``records``, gone through once. The energy columns are there only when some
    record has energy, which is known only at the end: each row's other columns are written
    as it comes, with where it ends, and the energy cells kept only for the rows that have
    them; they are joined in at the end if there were any."""
    device = header["device"].get("name")
    main = io.StringIO()
    w = csv.DictWriter(main, fieldnames=("device",) + COLUMNS, extrasaction="ignore", lineterminator="\n")
    ends, energy = array("q"), {}
    for i, r in enumerate(records):
        w.writerow({k: csv_cell(v) for k, v in {"device": device, **row(r)}.items()})
        ends.append(main.tell())
        cells = energy_cols.cells(r)
        if cells:
            energy[i] = {k: csv_cell(v) for k, v in cells.items()}
    fields = ("device",) + COLUMNS + (energy_cols.COLUMNS if energy else ())
    head = io.StringIO()
    csv.writer(head, lineterminator="\n").writerow(fields)
    head = head.getvalue()
    body = main.getvalue()
    if not energy:
        return (head + body).rstrip("\n")
    # Each row is "cells\n" (a quoted cell may hold a newline, hence the ends and not lines):
    # the energy cells go before its newline, as DictWriter writes them, or empty.
    tail = io.StringIO()
    ew = csv.DictWriter(tail, fieldnames=("_",) + energy_cols.COLUMNS, lineterminator="\n")
    out, start, empty = [head], 0, "," * len(energy_cols.COLUMNS)
    for i, end in enumerate(ends):
        out.append(body[start:end - 1])
        if i in energy:
            tail.seek(0)
            tail.truncate()
            ew.writerow({"_": "", **energy[i]})
            out.append(tail.getvalue()[:-1])      # ",e1,e2,e3" (the empty "_" cell is nothing)
        else:
            out.append(empty)
        out.append("\n")
        start = end
    return "".join(out).rstrip("\n")

