"""The per-device table of one run. Reads run records and nothing else.

Columns: op, shape, dtype, backend, median µs ± the 95% CI half-width of the median (as
% of it), TFLOP/s, GB/s, % of the measured roofline (with the datasheet one beside it),
the bound (compute or memory), and the status. A failed check is shown as failed, never
as a number.
"""

from __future__ import annotations

import csv
import re

from tabulate import tabulate

from kernelmark.reports import energy as energy_cols
from kernelmark.results import strict_json
from kernelmark.reports.escape import csv_cell, md_cell, md_text, one_line, plain

COLUMNS = ("op", "label", "workload", "shape", "dtype", "backend", "median_us", "ci_pct", "tflops", "gbps",
           "pct_of_peak", "pct_of_datasheet", "bound", "status")
HEADERS = ("op", "label", "workload", "shape", "dtype", "backend", "median µs", "±95% CI", "TFLOP/s", "GB/s",
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
    h = rec.get("health") or {}
    clocks = ("THROTTLED: " + ",".join(h.get("throttle_reasons", [])) if h.get("throttled") else
              "below app clocks" if h.get("below_app_clocks") else None)
    stalled = stall_status(rec)
    if stalled:         # a stalled sample set on a throttled card says both
        return stalled + (f"; {clocks}" if clocks else "")
    if st == "ok":
        t = rec.get("timing", {})
        flags = []
        if rec.get("noisy"):
            flags.append("noisy")
        if clocks:
            flags.append(clocks)
        if t.get("method") == "cuda_graph":
            flags.append("graph")
        return "ok" + (f" ({', '.join(flags)})" if flags else "")
    if st == "checked":
        return "checked, not timed (interpreter)"
    if st == "failed_check":
        c = rec.get("check") or {}
        return f"FAILED check: {c.get('detail') or rec.get('reason', '')}"
    return f"{st}: {rec.get('reason', '')}"


def trace_of(rec: dict):
    """The FlashInfer-Trace fields of a record read from a trace dataset, else None."""
    tr = rec.get("trace")
    return tr if isinstance(tr, dict) and isinstance(tr.get("definition"), str) else None


def workload_text(tr: dict) -> str:
    """'seq_len=7 #b8f4f012': a workload by its var axes and its uuid (two workloads of one
    definition often have the same axes), a uuid4 by its first 8 hex digits."""
    axes = tr.get("axes") if isinstance(tr.get("axes"), dict) else {}
    uuid = tr.get("uuid") if isinstance(tr.get("uuid"), str) else ""
    if re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", uuid):
        uuid = uuid[:8]
    return " ".join([f"{k}={v}" for k, v in axes.items()] + ([f"#{uuid}"] if uuid else []))


def row(rec: dict) -> dict:
    tr = trace_of(rec)
    r = {"op": rec["op"], "label": rec.get("label", ""), "workload": workload_text(tr) if tr else "",
         "shape": shape_text(rec["shape"]),
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
    and the HTML page. The label column appears only when some record has a label, the
    workload column (a FlashInfer-Trace workload's axes and uuid) only when one has a trace."""
    rows = [{**row(r), **energy_cols.cells(r)} for r in records]
    hidden = {c for c in ("label", "workload") if not any(r[c] for r in rows)}
    # Energy (only for runs that have it): in words with its unit; the bare J per call is csv's.
    extra = [(c, h) for c, h in zip(energy_cols.COLUMNS, energy_cols.HEADERS)
             if c in energy_cols.SHOWN] if energy_cols.has_energy(records) else []
    all_cols = COLUMNS + tuple(c for c, _ in extra)
    cols = [c for c in all_cols if c not in hidden]
    heads = [h for c, h in zip(all_cols, HEADERS + tuple(h for _, h in extra)) if c in cols]
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


def pruned_notes(records: list) -> list:
    """One line per autotune config that tuning left out on this device (a record's
    `pruned`), with the reason and the rows it applies to: the times of those rows are of
    the best of the configs that were left in."""
    seen: dict = {}
    for r in records:
        for p in r.get("pruned") or ():
            rows = seen.setdefault((p["kernel"], p["config"], p["why"]), {})
            rows[(r["op"], r["dtype"])] = rows.get((r["op"], r["dtype"]), 0) + 1
    lines = []
    for (kernel, config, why), rows in seen.items():
        where = ", ".join(f"{op} {dt}" + (f" x{n}" if n > 1 else "") for (op, dt), n in rows.items())
        lines.append(f"left out of autotuning here: {kernel} {config}: {why} ({where})")
    return lines


def notes(header: dict, records: list) -> str:
    """The notes under the table, one per line ('' when there are none)."""
    lines = [x for x in [threads_note(header)] if x] + peak_notes(header, records) + pruned_notes(records)
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


class _Echo:
    """A csv writer's file whose write gives back the line: ``writerow`` then returns it
    (what the csv module's writerow returns is what write returned), with no buffer to fill
    and cut again."""

    @staticmethod
    def write(line: str) -> str:
        return line


def _csv(header: dict, records) -> str:
    """The csv of ``records``, gone through once (they may be a stream). Two columns depend on
    every record: the workload column is there only for a run of FlashInfer-Trace workloads,
    the energy columns only when some record has energy. So each row is written as it comes
    in two parts (the columns before the workload's place, the rest), and the workload and
    energy cells are kept only for the rows that have them; they are joined in at the end
    if any row had them."""
    device = csv_cell(header["device"].get("name"))
    cut = COLUMNS.index("workload")
    before, after = COLUMNS[:cut], COLUMNS[cut + 1:]
    # "\n" as the line end (csv quotes a cell holding a newline only when the line end has
    # one), then taken off again: each part ends where its row would.
    w = csv.writer(_Echo(), lineterminator="\n")
    firsts, rests, workload, energy = [], [], {}, {}
    for i, r in enumerate(records):
        cells = row(r)
        firsts.append(w.writerow([device] + [csv_cell(cells.get(k, "")) for k in before])[:-1])
        # ",shape,dtype,...": an empty first cell, which is nothing
        rests.append(w.writerow([""] + [csv_cell(cells.get(k, "")) for k in after])[:-1])
        if trace_of(r):
            workload[i] = csv_cell(cells.get("workload", ""))
        e = energy_cols.cells(r)
        if e:
            energy[i] = {k: csv_cell(v) for k, v in e.items()}
    before = ("device",) + before
    fields = before + (("workload",) if workload else ()) + after + (energy_cols.COLUMNS if energy else ())
    head = csv.writer(_Echo(), lineterminator="\n").writerow(fields)
    ew = csv.DictWriter(_Echo(), fieldnames=("_",) + energy_cols.COLUMNS, lineterminator="\n")
    out = [head]
    empty_energy = "," * len(energy_cols.COLUMNS)
    for i, (first, rest) in enumerate(zip(firsts, rests)):
        out.append(first)
        if workload:
            out.append(w.writerow(["", workload.get(i, "")])[:-1])
        out.append(rest)
        if energy:
            out.append(ew.writerow({"_": "", **energy[i]})[:-1] if i in energy else empty_energy)
        out.append("\n")
    return "".join(out).rstrip("\n")

