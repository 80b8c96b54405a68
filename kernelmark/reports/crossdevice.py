"""Runs from several devices side by side. Reads run files and nothing else.

Runs are grouped by device (kind, name and host; for a CPU also its matmul ISA features):
several runs of one device (a GEMM suite and an attention suite, say) become one column
group; where both measured a case, the later run's record is shown and a note says so.
Two machines with the same GPU (two clouds' H100s) stay apart, labelled by host; two CPUs
of one model name with different matmul features (AVX-512 BF16 or not: 300x in bf16
matmul) stay apart, labelled by their fastest matmul feature.

Rows are op × shape × dtype × backend; each device has a column group: median µs, the
rate (TFLOP/s for compute-bound rows, GB/s for memory-bound and data-movement rows, one
unit per row) and % of that device's *measured* peak. The speed-up against the baseline
device is baseline median / device median: above 1 is faster than the baseline.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from typing import Optional

from tabulate import tabulate

from kernelmark import results
from kernelmark.reports import energy, table
from kernelmark.reports.escape import csv_cell, md_cell, md_text, plain


@dataclass
class Device:
    label: str                      # unique column-group name
    runs: list                      # results.Run, oldest first
    records: dict                   # case key -> record (the later run wins)
    notes: list = field(default_factory=list)

    @property
    def header(self) -> dict:
        """The newest run's header: its peaks are the ones % of peak was computed against."""
        return self.runs[-1].header

    @property
    def kind(self) -> str:
        return self.header["device"].get("kind") or "?"


@dataclass
class Row:
    op: str
    label: str
    shape: dict
    dtype: str
    backend: str
    unit: str                       # "TFLOP/s" or "GB/s"
    cells: dict                     # device label -> record (absent: not in that device's runs)


@dataclass
class CrossTable:
    devices: list
    baseline: str
    rows: list
    notes: list

    @property
    def energy_devices(self) -> list:
        """Labels of the devices with measured energy, when at least two have it (only then
        is there an energy comparison; one device's energy is in its own table)."""
        labs = [d.label for d in self.devices if any(energy.measured(r) for r in d.records.values())]
        return labs if len(labs) >= 2 else []


def case_key(rec: dict) -> tuple:
    return (rec["op"], json.dumps(rec["shape"], sort_keys=True), rec["dtype"], rec["backend"])


def cpu_isa(dev: dict) -> Optional[tuple]:
    isa = (dev.get("cpu") or {}).get("isa") if dev.get("kind") == "cpu" else None
    return tuple(isa) if isinstance(isa, list) else None


def _identity(run: results.Run) -> tuple:
    d = run.device
    return (d.get("kind"), d.get("name"), (d.get("host") or {}).get("hostname"), cpu_isa(d))


# The matmul features that set a CPU apart, the fastest first (names as in /proc/cpuinfo).
_ISA_RANK = ("amx_fp16", "amx_bf16", "avx512_fp16", "avx512_bf16", "avx512f", "avx2", "sme", "sve2", "sve",
             "bf16", "asimd")


def isa_tag(isa: Optional[tuple]) -> str:
    """The fastest matmul feature of a CPU, naming it in a column label."""
    if isa is None:
        return "ISA unknown"
    return next((f for f in _ISA_RANK if f in isa), "no vector matmul ISA")


def device_label(dev: dict) -> str:
    name = str(dev.get("name") or "unknown device")
    return f"{name} (CPU)" if dev.get("kind") == "cpu" else name


SAME_SPEED = 2.0      # measured matmul peaks further apart than this are not one machine


def same_speed(a: results.Run, b: results.Run) -> bool:
    """Whether two runs measured their device's matmul peaks alike (within SAME_SPEED in every
    dtype both measured; True when they share none)."""
    pa, pb = ((r.header.get("peaks") or {}).get("tflops") or {} for r in (a, b))
    for dt in set(pa) & set(pb):
        x, y = pa[dt], pb[dt]
        if isinstance(x, (int, float)) and isinstance(y, (int, float)) and x > 0 and y > 0 and \
                max(x / y, y / x) > SAME_SPEED:
            return False
    return True


def group_by_device(runs: list) -> list:
    """Devices in the order their first run was given; runs of one device merged."""
    groups: dict = {}
    for run in runs:
        groups.setdefault(_identity(run), []).append(run)
    # A run file written before the ISA was recorded joins the one device of its host that has
    # it, if it measured the same matmul speed there: a host name can outlive its machine (a
    # VM of one name on a CPU with AVX-512 BF16, then on one with AVX2 only, 300x apart in bf16).
    for ident in [i for i in groups if i[3] is None]:
        known = [i for i in groups if i[:3] == ident[:3] and i[3] is not None]
        if len(known) == 1 and same_speed(groups[ident][0], groups[known[0]][0]):
            groups[known[0]] = groups.pop(ident) + groups[known[0]]
    labels = {}
    for ident, rs in groups.items():
        labels[ident] = device_label(rs[0].device)
    clash = {lab for lab in labels.values() if list(labels.values()).count(lab) > 1}
    for lab in clash:
        same = [i for i in labels if labels[i] == lab]
        isas = {i[3] for i in same}
        for ident in same:
            if len(isas) > 1:                 # CPUs of one name that multiply differently
                labels[ident] += f" [{isa_tag(ident[3])}]"
    clash = {lab for lab in labels.values() if list(labels.values()).count(lab) > 1}
    for ident in labels:
        if labels[ident] in clash:
            labels[ident] += f" @ {ident[2] or 'unknown host'}"
    seen: dict = {}
    for ident, lab in labels.items():             # same name, same host name: number them
        seen[lab] = seen.get(lab, 0) + 1
        if seen[lab] > 1:
            labels[ident] = f"{lab} #{seen[lab]}"
    out = []
    for ident, rs in groups.items():
        rs = sorted(rs, key=lambda r: str(r.header.get("started", "")))
        recs: dict = {}
        dup = 0
        for run in rs:
            for rec in run.records:
                k = case_key(rec)
                dup += k in recs
                recs[k] = rec
        dev = Device(labels[ident], rs, recs)
        if len(rs) > 1:
            dev.notes.append(f"{dev.label}: {len(rs)} runs merged" +
                             (f"; {dup} cases measured in more than one, the later run's shown" if dup else ""))
        out.append(dev)
    return out


def pick_baseline(devices: list, wanted: str | None) -> str:
    """The device named by ``wanted`` (exact label, else a unique case-insensitive substring),
    else the first device. Raises ValueError naming the choices."""
    labels = [d.label for d in devices]
    if not wanted:
        return labels[0]
    if wanted in labels:
        return wanted
    hits = [lab for lab in labels if wanted.lower() in lab.lower()]
    if len(hits) == 1:
        return hits[0]
    why = "matches several devices" if hits else "matches no device"
    raise ValueError(f"--baseline {wanted!r} {why}; devices: {', '.join(repr(x) for x in labels)}")


def _row_unit(recs: list) -> str:
    ok = [r for r in recs if r and r["status"] == "ok"]
    if ok and ok[0].get("flops") and ok[0].get("bound") == "compute":
        return "TFLOP/s"
    if not ok and recs and any(r and r.get("flops") for r in recs):
        return "TFLOP/s"
    return "GB/s"


def build(runs: list, baseline: str | None = None) -> CrossTable:
    devices = group_by_device(runs)
    base = pick_baseline(devices, baseline)
    order = [d for d in devices if d.label == base] + [d for d in devices if d.label != base]
    keys: dict = {}
    for d in devices:
        for k, rec in d.records.items():
            keys.setdefault(k, rec)
    units: dict = {}        # one unit per case (op, shape, dtype), whatever the backend
    for k in keys:
        units.setdefault(k[:3], []).extend(d.records.get(k) for d in order)
    rows = []
    for k, first in keys.items():
        cells = {d.label: d.records[k] for d in devices if k in d.records}
        rows.append(Row(first["op"], first.get("label", ""), first["shape"], first["dtype"], first["backend"],
                        _row_unit(units[k[:3]]), cells))
    notes = [n for d in devices for n in d.notes]
    for d in devices:
        if not d.records:
            notes.append(f"{d.label}: the run holds no records (stopped before its first case finished)")
        elif not any(r["status"] == "ok" for r in d.records.values()):
            notes.append(f"{d.label}: no case was timed (none passed its check, or all were skipped)")
        if not all(r.complete for r in d.runs):
            notes.append(f"{d.label}: a run has no footer (interrupted): showing what it holds")
    return CrossTable(devices, base, rows, notes)


def speedup(base_rec: dict | None, rec: dict | None):
    if not base_rec or not rec or base_rec["status"] != "ok" or rec["status"] != "ok":
        return None
    b, t = base_rec["timing"]["median_us"], rec["timing"]["median_us"]
    return b / t if t > 0 else None


def _spread(values: list) -> dict:
    if not values:
        return {"rows": 0, "geomean": None, "min": None, "max": None}
    gm = math.exp(sum(math.log(s) for s in values) / len(values))
    return {"rows": len(values), "geomean": gm, "min": min(values), "max": max(values)}


def energy_ratio(base_rec: dict | None, rec: dict | None):
    """Baseline J per call / device J per call (net against net, else gross against gross)."""
    got = energy.efficiency_vs(base_rec, rec)
    return got[0] if got else None


def summary(ct: CrossTable) -> list:
    """Per non-baseline device: geometric mean, min and max speed-up over rows timed on both;
    where both have energy, the same of the energy ratio under "energy"."""
    out = []
    with_energy = ct.baseline in ct.energy_devices
    for d in ct.devices:
        if d.label == ct.baseline:
            continue
        sp = [s for row in ct.rows if (s := speedup(row.cells.get(ct.baseline), row.cells.get(d.label)))]
        out.append({"device": d.label, **_spread(sp)})
        if with_energy and d.label in ct.energy_devices:
            out[-1]["energy"] = _spread([x for row in ct.rows
                                         if (x := energy_ratio(row.cells.get(ct.baseline), row.cells.get(d.label)))])
    return out


def short_status(rec: dict | None) -> str:
    if rec is None:
        return "not run"
    return {"checked": "not timed", "failed_check": "FAILED check", "unsupported": "unsupported",
            "skipped": "skipped", "error": "error"}.get(rec["status"], rec["status"])


def cell_values(row: Row, rec: dict | None, base_rec: dict | None) -> dict:
    """Display strings of one device's cell group."""
    if rec is None or rec["status"] != "ok":
        return {"median": short_status(rec), "rate": "", "pct": "", "speedup": "", "per_j": "", "energy_vs": ""}
    rate = rec.get("tflops") if row.unit == "TFLOP/s" else rec.get("gbps")
    sp = speedup(base_rec, rec)
    wj = energy.work_per_j(rec, row.unit)
    ev = energy.efficiency_vs(base_rec, rec)
    return {"median": table._num(rec["timing"]["median_us"], 2) + (" (noisy)" if rec.get("noisy") else ""),
            "rate": table._num(rate, 1), "pct": table._num(rec.get("pct_of_peak"), 1),
            "speedup": f"×{sp:.2f}" if sp else "",
            "per_j": "" if wj is None else f"{wj:.3g}" + ("" if energy.preferred(rec) == "net" else " g"),
            "energy_vs": "" if ev is None else f"×{ev[0]:.2f}" + ("" if ev[1] == "net" else " g")}


def _energy_heads(ct: CrossTable, d: Device) -> list:
    """The energy columns of one device's group: work per joule where it has energy, and the
    energy ratio against the baseline where both have it."""
    if d.label not in ct.energy_devices:
        return []
    vs = d.label != ct.baseline and ct.baseline in ct.energy_devices
    return ["work/J"] + ([f"energy vs {ct.baseline}"] if vs else [])


def headed_rows(ct: CrossTable) -> tuple:
    """(key headers, [(device label, [group headers])], rows of string lists) for the renderers."""
    keys = ["op", "label", "shape", "dtype", "backend", "unit"]
    groups = []
    for d in ct.devices:
        hs = ["median µs", "rate", "% peak"] + ([] if d.label == ct.baseline else [f"vs {ct.baseline}"])
        groups.append((d.label, hs + _energy_heads(ct, d)))
    body = []
    for row in ct.rows:
        cells = [row.op, row.label, table.shape_text(row.shape), row.dtype, row.backend, row.unit]
        base_rec = row.cells.get(ct.baseline)
        for d in ct.devices:
            v = cell_values(row, row.cells.get(d.label), base_rec)
            cells += [v["median"], v["rate"], v["pct"]] + ([] if d.label == ct.baseline else [v["speedup"]])
            cells += [v["per_j"], v["energy_vs"]][:len(_energy_heads(ct, d))]
        body.append(cells)
    return keys, groups, body


def device_lines(ct: CrossTable) -> list:
    out = []
    for d in ct.devices:
        h = d.header
        git = (h["device"].get("git") or {})
        commit = (git.get("commit") or "unknown")[:10] + ("+dirty" if git.get("dirty") else "")
        pk = h.get("peaks") or {}
        tf = ", ".join(f"{k} {v:.3g}" for k, v in sorted((pk.get("tflops") or {}).items()))
        suites = ", ".join(sorted({str(r.header["suite"].get("name")) for r in d.runs}))
        out.append(f"{d.label}{' [baseline]' if d.label == ct.baseline else ''}: {d.kind}, "
                   f"{len(d.runs)} run(s) of {suites}, {h.get('started', '')}, kernelmark @ {commit}; "
                   f"measured copy {pk.get('copy_gbps', 0):.1f} GB/s" + (f", matmul TFLOP/s {tf}" if tf else ""))
    return out


def summary_lines(ct: CrossTable) -> list:
    out = []
    for s in summary(ct):
        if s["rows"]:
            out.append(f"{s['device']} vs {ct.baseline}: geometric-mean speed-up ×{s['geomean']:.2f} over "
                       f"{s['rows']} rows timed on both (×{s['min']:.2f} to ×{s['max']:.2f})")
        else:
            out.append(f"{s['device']} vs {ct.baseline}: no row timed on both")
        e = s.get("energy")
        if e and e["rows"]:
            out.append(f"{s['device']} vs {ct.baseline}: geometric-mean energy efficiency ×{e['geomean']:.2f} "
                       f"(baseline J per call / device J per call; above 1: less energy) over {e['rows']} rows "
                       f"with energy on both (×{e['min']:.2f} to ×{e['max']:.2f})")
        elif e:
            out.append(f"{s['device']} vs {ct.baseline}: no row with energy measured on both")
    if ct.energy_devices:
        out.append("work/J: GFLOP/J for TFLOP/s rows, GB/J for GB/s rows, from the --energy window's J per call "
                   "(net of idle; g: gross, where a side has no positive net: compared gross with gross)")
    return out


def render(ct: CrossTable, fmt: str = "table") -> str:
    if fmt == "json":
        return results.strict_json(as_json(ct), indent=1)
    if fmt == "csv":
        return as_csv(ct)
    keys, groups, body = headed_rows(ct)
    heads = list(keys)
    for label, hs in groups:
        heads += [f"{label}: {h}" if i == 0 else h for i, h in enumerate(hs)]
    # Names from the run files, escaped for the format (kernelmark/reports/escape.py).
    cell = md_cell if fmt == "md" else plain
    body = [[cell(c) for c in r] for r in body]
    heads = [cell(h) for h in heads]
    tab = tabulate(body, headers=heads, tablefmt="github" if fmt == "md" else "simple", disable_numparse=True)
    intro = ["kernelmark cross-device table: speed-up = baseline median / device median (above 1: faster)"]
    intro += device_lines(ct) + summary_lines(ct) + [f"note: {n}" for n in ct.notes]
    if fmt == "md":
        intro = [f"> {md_text(line)}" for line in intro]
    return "\n".join(plain(line) for line in intro) + "\n\n" + tab


def as_json(ct: CrossTable) -> dict:
    return {
        "baseline": ct.baseline,
        "devices": [{"label": d.label, "kind": d.kind, "runs": [r.path for r in d.runs],
                     "header": d.header} for d in ct.devices],
        "summary": summary(ct), "notes": ct.notes,
        "rows": [{"op": r.op, "label": r.label, "shape": r.shape, "dtype": r.dtype, "backend": r.backend,
                  "unit": r.unit,
                  "devices": {lab: _cell_json(rec, r.cells.get(ct.baseline)) for lab, rec in r.cells.items()}}
                 for r in ct.rows],
    }


def _cell_json(rec: dict, base_rec: dict | None) -> dict:
    out = {"status": rec["status"]}
    if rec["status"] == "ok":
        out.update({"median_us": rec["timing"]["median_us"], "ci_rel": rec["timing"].get("ci_rel"),
                    "tflops": rec.get("tflops"), "gbps": rec.get("gbps"), "pct_of_peak": rec.get("pct_of_peak"),
                    "speedup_vs_baseline": speedup(base_rec, rec)})
        if energy.measured(rec):
            kind = energy.preferred(rec)
            ev = energy.efficiency_vs(base_rec, rec)
            out.update({"j_per_call": energy.joules(rec, kind)[0], "energy_kind": kind,
                        "energy_vs_baseline": ev[0] if ev else None,
                        "energy_vs_baseline_kind": ev[1] if ev else None})
    else:
        out["reason"] = rec.get("reason", "")
    return out


CSV_COLUMNS = ("device", "op", "label", "shape", "dtype", "backend", "status", "median_us", "tflops", "gbps",
               "pct_of_peak", "baseline", "speedup_vs_baseline")
CSV_ENERGY = ("j_per_call", "energy_kind", "energy_vs_baseline", "energy_vs_baseline_kind")


def as_csv(ct: CrossTable) -> str:
    """Long form: one line per (row, device) that has a record."""
    buf = io.StringIO()
    extra = CSV_ENERGY if ct.energy_devices else ()
    w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS + extra, lineterminator="\n")
    w.writeheader()
    for r in ct.rows:
        for d in ct.devices:
            rec = r.cells.get(d.label)
            if rec is None:
                continue
            c = _cell_json(rec, r.cells.get(ct.baseline))
            row = {"device": d.label, "op": r.op, "label": r.label, "shape": table.shape_text(r.shape),
                   "dtype": r.dtype, "backend": r.backend, "status": rec["status"],
                   "median_us": c.get("median_us"), "tflops": c.get("tflops"), "gbps": c.get("gbps"),
                   "pct_of_peak": c.get("pct_of_peak"), "baseline": ct.baseline,
                   "speedup_vs_baseline": c.get("speedup_vs_baseline"), **{k: c.get(k) for k in extra}}
            w.writerow({k: csv_cell(v) for k, v in row.items()})
    return buf.getvalue().rstrip("\n")
