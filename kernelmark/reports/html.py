"""The HTML report: one self-contained file (no script, no network at view time).

It holds the table (per device for one device, cross-device with speed-ups for several),
a roofline per device and a bar chart per op, as base64 PNG. Every string that comes
from a run file goes through ``esc`` (html.escape); the page also carries a Content
Security Policy that allows no script and no fetch, so a string that slipped through
could still not run or call out.
"""

from __future__ import annotations

import base64
import html as _html

from kernelmark.reports import crossdevice, plots, table, wide
from kernelmark.reports.escape import strip_unsafe

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"

STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #1a1a1a; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ccc; }
table.km { border-collapse: collapse; font-size: 12px; margin: 0.5em 0; max-width: 100%; }
table.km th, table.km td { border: 1px solid #ddd; padding: 2px 5px; text-align: left; white-space: nowrap; }
table.km thead th { background: #f3f3f3; position: sticky; top: 0; white-space: normal; }
table.km tr.op th { background: #e8eef6; text-align: left; font-size: 13px; padding: 4px 5px; }
table.km td.text { white-space: normal; min-width: 5em; max-width: 14em; overflow-wrap: anywhere; }
table.km td.shape { white-space: normal; min-width: 9em; max-width: 17em; }
table.km td.status { white-space: normal; min-width: 8em; max-width: 20em; overflow-wrap: anywhere; }
table.km td.num { text-align: right; font-variant-numeric: tabular-nums; }
table.km tr:nth-child(even) td { background: #fafafa; }
td.bad { color: #b00020; font-weight: 600; } td.dim { color: #888; }
td.faster { color: #006400; } td.slower { color: #b00020; }
.meta { font-family: ui-monospace, monospace; font-size: 12px; white-space: pre-wrap; background: #f7f7f7;
        padding: 0.5em; border-left: 3px solid #999; overflow-wrap: anywhere; }
.note { color: #7a4b00; } .plots img { max-width: 100%; height: auto; margin: 0.5em 0; display: block; }
.wrap { overflow-x: auto; }
"""

NOISY = "noisy: the 95% CI of the median is wider than the target"
_NUMERIC = {"median µs", "±95% CI", "TFLOP/s", "GB/s", "% peak", "% datasheet", "rate"}


def esc(x) -> str:
    """HTML-escaped, without NUL and bidirectional controls (they reorder what is shown)."""
    return _html.escape(strip_unsafe("" if x is None else str(x)), quote=True)


def _img(png, alt: str, cls: str) -> str:
    if not png:
        return ""
    data = base64.b64encode(png).decode("ascii")
    return f'<img class="km-plot {cls}" alt="{esc(alt)}" src="data:image/png;base64,{data}">'


def _status_class(text: str) -> str:
    t = text.lower()
    if t.startswith(("failed", "error")):
        return "bad"
    if t.startswith(("checked", "not timed", "skipped", "unsupported", "not run")):
        return "dim"
    return ""


def _op_row(op: str, span: int) -> str:
    """A row naming the op of the rows under it: one op column less to fit the page."""
    return f'<tr class="op"><th colspan="{span}">{esc(op)}</th></tr>'


def _shape_cell(shape: dict) -> str:
    """The short shape, the full one on hover (README, "What the columns mean")."""
    return f'<td class="shape" title="{esc(table.shape_text(shape))}">{esc(wide.compact_shape(shape))}</td>'


def device_table(records: list, table_id: str) -> str:
    """The long table (a row per case and backend), the op (for FlashInfer-Trace workloads,
    the definition, its model and our op) as a row above its rows."""
    heads, body = table.cells(records)
    heads = heads[1:]                                       # op: a row of its own
    out = [f'<div class="wrap"><table class="km device-table" id="{esc(table_id)}"><thead><tr>']
    out += [f"<th>{esc(h)}</th>" for h in heads] + ["</tr></thead><tbody>"]
    last = None
    for rec, cells in zip(records, body):
        group = wide.group_title(rec)
        if group != last:
            out.append(_op_row(group, len(heads)))
            last = group
        out.append("<tr>")
        for h, c in zip(heads, cells[1:]):
            if h == "shape":
                out.append(_shape_cell(rec["shape"]))
                continue
            cls = "num" if h in _NUMERIC else (f"status {_status_class(c)}" if h == "status" else
                                               ("text" if h in ("label", "backend") else ""))
            out.append(f'<td class="{cls}">{esc(c)}</td>' if cls else f"<td>{esc(c)}</td>")
        out.append("</tr>")
    out.append("</tbody></table></div>")
    if not records:
        out.append('<p class="note">No records: the run stopped before its first case finished.</p>')
    return "".join(out)


def cross_table(ct: crossdevice.CrossTable, table_id: str = "cross-device", timed: bool = True) -> str:
    """The rows timed on at least one device (``timed``), or the others. To fit the page with
    the speed-ups in view: the op as a row above its rows, short shapes, noisy as ~."""
    keys, groups, body = crossdevice.headed_rows(ct)
    rows = [(row, cells) for row, cells in zip(ct.rows, body)
            if any(c["status"] == "ok" for c in row.cells.values()) == timed]
    keys = keys[1:]                                         # op: a row of its own
    span = len(keys) + sum(len(hs) for _, hs in groups)
    out = [f'<div class="wrap"><table class="km" id="{esc(table_id)}"><thead><tr>']
    out += [f'<th rowspan="2">{esc(k)}</th>' for k in keys]
    out += [f'<th colspan="{len(hs)}">{esc(lab)}{" (baseline)" if lab == ct.baseline else ""}</th>'
            for lab, hs in groups]
    out.append("</tr><tr>")
    out += [f"<th>{esc(h)}</th>" for _, hs in groups for h in hs]
    out.append("</tr></thead><tbody>")
    last = None
    for row, cells in rows:
        if row.op != last:
            out.append(_op_row(row.op, span))
            last = row.op
        out.append("<tr>")
        for i, c in enumerate(cells[1:]):
            if i < len(keys):
                cls = "text" if keys[i] in ("label", "backend") else ""
                out.append(_shape_cell(row.shape) if keys[i] == "shape" else
                           f'<td class="{cls}">{esc(c)}</td>' if cls else f"<td>{esc(c)}</td>")
                continue
            cls, title = "num", ""
            if c.startswith("×"):
                cls += " faster" if float(c[1:]) > 1.05 else (" slower" if float(c[1:]) < 0.95 else "")
            elif c.endswith(" (noisy)"):
                c, title = "~" + c[:-len(" (noisy)")], f' title="{NOISY}"'
            elif c and not c[0].isdigit():
                cls = _status_class(c)
            out.append(f'<td class="{cls}"{title}>{esc(c)}</td>' if cls else f"<td{title}>{esc(c)}</td>")
        out.append("</tr>")
    out.append("</tbody></table></div>")
    return "".join(out)


def _op_unit(records: list) -> str:
    return "TFLOP/s" if any(r.get("flops") for r in records if r["status"] == "ok") else "GB/s"


def _rate(rec, unit):
    if not rec or rec["status"] != "ok":
        return None
    return rec.get("tflops") if unit == "TFLOP/s" else rec.get("gbps")


def _case_name(rec: dict) -> str:
    return " ".join(x for x in (rec.get("label") or "", wide.compact_shape(rec["shape"]), rec["dtype"]) if x)


def op_bars_one_device(records: list, device: str) -> list:
    """[(op, png)]: per op, a bar per (case, backend) that was timed."""
    out = []
    for op in dict.fromkeys(r["op"] for r in records):
        recs = [r for r in records if r["op"] == op]
        unit = _op_unit(recs)
        cats = list(dict.fromkeys(_case_name(r) for r in recs if r["status"] == "ok"))
        backends = list(dict.fromkeys(r["backend"] for r in recs if r["status"] == "ok"))
        by = {(_case_name(r), r["backend"]): r for r in recs}
        series = {b: [_rate(by.get((c, b)), unit) for c in cats] for b in backends}
        png = plots.bars(f"{op} on {device}: {unit} by backend", cats, series, unit)
        if png:
            out.append((op, png))
    return out


def op_bars_devices(ct: crossdevice.CrossTable) -> list:
    """[(op, png)]: per op, a bar per (row, device) that was timed."""
    out = []
    for op in dict.fromkeys(r.op for r in ct.rows):
        rows = [r for r in ct.rows if r.op == op and any(c["status"] == "ok" for c in r.cells.values())]
        if not rows:
            continue
        unit = "TFLOP/s" if any(c.get("flops") for r in rows for c in r.cells.values()) else "GB/s"
        cats = [" ".join(x for x in (r.label, wide.compact_shape(r.shape), r.dtype, r.backend) if x) for r in rows]
        series = {d.label: [_rate(r.cells.get(d.label), unit) for r in rows] for d in ct.devices}
        png = plots.bars(f"{op}: {unit} by device", cats, series, unit)
        if png:
            out.append((op, png))
    return out


def _roofline_section(dev: crossdevice.Device, idx: int) -> str:
    recs = list(dev.records.values())
    pts, no_flops = plots.roofline_points(recs)
    out = [f'<div class="plots" id="roofline-{idx}">']
    png = plots.roofline(dev.header, recs, f"roofline: {dev.label}")
    if png:
        out.append(_img(png, f"roofline of {dev.label}", "roofline"))
    else:
        out.append(f'<p class="note">No roofline for {esc(dev.label)}: no timed case with FLOPs.</p>')
    if no_flops:
        out.append(f'<p class="note">{no_flops} timed data-movement cases (no FLOPs) are not on the roofline; '
                   f"the bar charts and table have them.</p>")
    if not (dev.header["device"].get("datasheet")):
        out.append('<p class="note">No datasheet ceiling: this device is not in kernelmark/harness/datasheet.py.</p>')
    out.append("</div>")
    return "".join(out)


def page(runs: list, baseline: str | None = None, problems=()) -> str:
    """The whole report for ``runs`` (results.Run, at least one). ``problems``: messages about
    run files that could not be read, shown at the top."""
    ct = crossdevice.build(runs, baseline)
    no_plots = plots.available()
    devs = ct.devices
    title = ("kernelmark: " + devs[0].label) if len(devs) == 1 else \
        f"kernelmark: {len(devs)} devices against {ct.baseline}"
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>{esc(title)}</title><style>{STYLE}</style></head><body>", f"<h1>{esc(title)}</h1>"]
    for p in problems:
        out.append(f'<p class="note">Not included: {esc(p)}</p>')
    for n in ct.notes:
        out.append(f'<p class="note">{esc(n)}</p>')
    if no_plots:
        out.append(f'<p class="note">{esc(no_plots)}</p>')
    if len(devs) == 1:
        d = devs[0]
        recs = list(d.records.values())
        out.append('<h2 id="tables">Table</h2>')
        out.append(f'<div class="meta">{esc(table.title(d.header))}</div>')
        timed = [r for r in recs if r["status"] == "ok"]
        out.append(device_table(timed if timed else recs, "device-table-0"))
        if timed and len(timed) < len(recs):
            out.append(f"<details><summary>{len(recs) - len(timed)} records not timed (checked only, skipped, "
                       f"unsupported or failed)</summary>"
                       f"{device_table([r for r in recs if r['status'] != 'ok'], 'device-table-0-untimed')}</details>")
        if not no_plots:
            out.append('<h2 id="plots">Roofline</h2>' + _roofline_section(d, 0))
            out.append('<h2 id="bars">By op</h2><div class="plots">')
            out += [_img(png, f"{op} on {d.label}", "bars") for op, png in op_bars_one_device(recs, d.label)]
            out.append("</div>")
    else:
        out.append('<h2 id="tables">Cross-device table</h2>')
        lines = crossdevice.device_lines(ct) + crossdevice.summary_lines(ct)
        out.append(f'<div class="meta">speed-up = baseline median / device median (above 1: faster); '
                   f'~ noisy median; hover a shape for its parameters in full\n'
                   f'{esc(chr(10).join(lines))}</div>')
        out.append(cross_table(ct))
        untimed = sum(not any(c["status"] == "ok" for c in r.cells.values()) for r in ct.rows)
        if untimed:
            out.append(f"<details><summary>{untimed} rows timed on no device (checked only, skipped, "
                       f"unsupported or failed)</summary>{cross_table(ct, 'cross-device-untimed', False)}</details>")
        if not no_plots:
            out.append('<h2 id="bars">By op</h2><div class="plots">')
            out += [_img(png, f"{op} across devices", "bars") for op, png in op_bars_devices(ct)]
            out.append("</div>")
        for i, d in enumerate(devs):
            out.append(f'<h2 id="device-{i}">{esc(d.label)}</h2>')
            out.append(f'<div class="meta">{esc(table.title(d.header))}</div>')
            if not no_plots:
                out.append(_roofline_section(d, i))
            out.append(f"<details><summary>per-device table ({len(d.records)} records)</summary>"
                       f"{device_table(list(d.records.values()), f'device-table-{i}')}</details>")
    out.append('<p class="meta">Made by `kernelmark report --format html` from the run files alone. '
               "Roofline: measured ceilings solid, datasheet dashed.</p></body></html>")
    return "\n".join(out)
