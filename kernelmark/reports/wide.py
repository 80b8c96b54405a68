"""The default per-device table: one row per case, a column group per backend.

A hardware engineer reads a run as "for this shape, which backend wins, and how close to
the roof is it". So each op gets its own section: rows are cases (label, shape, dtype),
columns are, for every backend that ran in that op, the median µs and the % of the
measured peak; the fastest timed backend of a row is marked. A backend that failed its
check says FAILED in its cell and a Triton kernel checked in the interpreter says
`checked`: neither ever shows a number. Rows a backend could not run here are counted
under the table by reason, as in the long table.

The long table (one row per case and backend, every column) is ``table.render`` and
stays behind ``--long``; csv and json are always that long form.

Everything is sized for a 160-column terminal. Where a section would be wider (long
labels, many backends), backend names break after their hyphens; then the labels move out
of the columns onto lines of their own; if it is still wider, the backends are split over
several tables that repeat the case columns.
"""

from __future__ import annotations

import json
import textwrap
from dataclasses import dataclass, field

from kernelmark.reports import energy, table
from kernelmark.reports.escape import md_cell, md_text, one_line, plain

WIDTH = 160

# Shape parameters by a short name (documented in the README, "What the columns mean").
# The names are those of the ops' params; one unknown here is shown as name=value.
SHORT = {"batch": "b", "seq": "s", "seq_len": "s", "context": "ctx", "head_dim": "d", "kv_heads": "kvh",
         "page_size": "pg", "num_blocks": "blocks", "tokens": "tok", "seq_tokens": "tok/seq",
         "padding": "pad", "host_blocks": "host"}
# 0/1 parameters shown by their name when 1, left out when 0.
FLAGS = ("causal", "ragged")

# What a cell says for a record that has no time; never a number.
STATUS_WORD = {"checked": "checked", "failed_check": "FAILED", "skipped": "skipped", "unsupported": "n/a",
               "error": "error", "oom": "oom", "crashed": "crashed", "timeout": "timeout"}
PROBLEMS = ("failed_check", "error", "oom", "crashed", "timeout")

LEGEND = {
    "*": "* fastest timed backend of the row",
    "~": "~ noisy (the median's 95% CI is wider than the target)",
    "!": "! throttled or below application clocks while timed",
    "checked": "checked: a Triton kernel checked in the interpreter, not timed",
    "FAILED": "FAILED: differs from the reference, never timed",
    "skipped": "skipped / n/a: not run here (counted below)",
    "n/a": "skipped / n/a: not run here (counted below)",
}


def compact_shape(shape: dict) -> str:
    """'b=1 s=64 h=4/2 d=64 causal': the shape with short parameter names, q and kv heads as
    one h=Q/KV, flags by name when on, words (layouts, formats) as they are."""
    parts = []
    for k, v in shape.items():
        if k == "kv_heads" and "q_heads" in shape:
            continue                    # shown with q_heads
        if k == "q_heads" and "kv_heads" in shape:
            parts.append(f"h={v}/{shape['kv_heads']}")
        elif k in FLAGS and v in (0, 1) and not isinstance(v, bool):
            if v:
                parts.append(k)
        elif isinstance(v, str):
            parts.append(v)
        else:
            parts.append(f"{SHORT.get(k, k)}={v}")
    return " ".join(parts)


@dataclass
class Row:
    label: str
    shape: dict
    dtype: str
    cells: dict = field(default_factory=dict)       # backend -> record


@dataclass
class Section:
    op: str
    backends: list                                  # column groups, in the order the run met them
    rows: list
    title: str = ""                                 # the heading, when not the op's name
    label_head: str = "label"                       # what the label column holds

    @property
    def with_energy(self) -> bool:
        """Whether a record of the section has measured energy: only then do its backend
        groups get the energy columns (a run without --energy looks as it always did)."""
        return any(energy.measured(c) for row in self.rows for c in row.cells.values())

    @property
    def sub(self) -> tuple:
        """The columns of each backend's group."""
        return ("µs", "% peak") + (energy.WIDE_SUB if self.with_energy else ())


def _group(r: dict) -> tuple:
    """(section key, title, label head, row label, row id) of a record. A FlashInfer-Trace
    record is in its definition's section, one row per workload (by its whole uuid); any
    other in its op's, by label."""
    tr = table.trace_of(r)
    if tr is None:
        return r["op"], r["op"], "label", r.get("label") or "", None
    model = tr.get("model") if isinstance(tr.get("model"), str) else None
    title = " · ".join([tr["definition"]] + ([f"model {model}"] if model else []) + [f"op {r['op']}"])
    return (("trace", tr["definition"], r["op"]), title, "workload", table.workload_text(tr),
            str(tr.get("uuid")))


def group_title(rec: dict) -> str:
    """The heading of the section a record is in: its op, or for a FlashInfer-Trace workload
    'definition · model m · op o'."""
    return _group(rec)[1]


def sections(records: list) -> list:
    """One section per op, in run order; for a run of FlashInfer-Trace workloads, one per
    definition (and op), its rows the workloads. A backend gets a column only if some row of
    the section shows it (a backend skipped everywhere is only in the summary under the
    table); a row only if one of its backends ran (a case skipped by all of them is in the
    summary too)."""
    groups: dict = {}
    for r in records:
        key, title, head, label, rid = _group(r)
        sec = groups.setdefault(key, (r["op"], title, head, {}))
        rkey = (label, rid, json.dumps(r["shape"], sort_keys=True), r["dtype"])
        row = sec[3].setdefault(rkey, Row(label, r["shape"], r["dtype"]))
        row.cells[r["backend"]] = r
    out = []
    for op, title, head, rows in groups.values():
        shown = [row for row in rows.values() if any(c["status"] not in table.FOLDED for c in row.cells.values())]
        backends = list(dict.fromkeys(b for row in shown for b, c in row.cells.items()
                                      if c["status"] not in table.FOLDED))
        if shown:
            out.append(Section(op, backends, shown, title, head))
    return out


def section_notes(sec: Section) -> list:
    """What a definition's runs differ from it in (a FlashInfer-Trace record's notes: the op's
    own routing, synthesised index tensors, ...): the notes every workload of the section
    shares, once, and how many more vary by workload. [] for other sections."""
    per = []
    for row in sec.rows:
        tr = table.trace_of(next(iter(row.cells.values()))) or {}
        per.append([n for n in tr.get("notes") or [] if isinstance(n, str)])
    shared = [n for n in dict.fromkeys(per[0] if per else []) if all(n in p for p in per[1:])]
    rest = len({n for p in per for n in p} - set(shared))
    return [f"note: {n}" for n in shared] + \
        ([f"note: {rest} more vary by workload (trace.notes in the run file)"] if rest else [])


def fastest(row: Row) -> set:
    """The backends with the lowest median of the row, when two or more were timed."""
    timed = {b: c["timing"]["median_us"] for b, c in row.cells.items() if c["status"] == "ok"}
    if len(timed) < 2:
        return set()
    best = min(timed.values())
    return {b for b, t in timed.items() if t == best}


def _marks(rec: dict, is_fastest: bool) -> tuple:
    """(prefix, suffix) of a timed cell."""
    h = rec.get("health") or {}
    suffix = ("*" if is_fastest else "") + ("!" if h.get("throttled") or h.get("below_app_clocks") else "")
    return ("~" if rec.get("noisy") else ""), suffix


def cell_text(rec: dict | None, is_fastest: bool, md: bool = False) -> tuple:
    """(median cell, % peak cell) of one backend in one row."""
    if rec is None:
        return "", ""
    if rec["status"] != "ok":
        return STATUS_WORD.get(rec["status"], rec["status"]), ""
    pre, suf = _marks(rec, is_fastest)
    num = table._num(rec["timing"]["median_us"], 2)
    # over 100% of the measured peak: the mark the note under the table explains
    pct = table._num(rec.get("pct_of_peak"), 1) + (table.ABOVE_PEAK if table.above_peak(rec) else "")
    if md:
        num = f"**{num}**" if is_fastest else num
        return pre + num + suf.replace("*", ""), pct
    return pre + num + suf, pct


def _key_columns(sec: Section, with_label: bool) -> tuple:
    heads = ([sec.label_head] if with_label else []) + ["shape", "dtype"]
    body = [([row.label] if with_label else []) + [compact_shape(row.shape), row.dtype] for row in sec.rows]
    return heads, body


def _group_cells(sec: Section, md: bool = False) -> dict:
    """backend -> [(median cell, % peak cell[, J per call, per J])] aligned with sec.rows."""
    out = {b: [] for b in sec.backends}
    with_energy = sec.with_energy
    for row in sec.rows:
        best = fastest(row)
        for b in sec.backends:
            c = cell_text(row.cells.get(b), b in best, md)
            out[b].append(c + energy.wide_cells(row.cells.get(b)) if with_energy else c)
    return out


def _wrap_name(name: str, width: int) -> list:
    """A backend name over lines of at most ``width``, broken after its hyphens."""
    if len(name) <= width:
        return [name]
    lines, cur = [], ""
    for piece in name.replace("-", "-\n").split("\n"):
        if cur and len(cur) + len(piece) > width:
            lines.append(cur)
            cur = ""
        cur += piece
    return lines + [cur]


def _suffix_aligned(column: list) -> list:
    """Timed cells padded so their digits line up whether or not they carry a mark."""
    def split(c):
        n = len(c) - len(c.rstrip("*!"))
        return (c[:len(c) - n], c[len(c) - n:]) if c and (c[0].isdigit() or c[0] == "~") else (c, "")
    parts = [split(c) for c in column]
    w = max((len(s) for _, s in parts), default=0)
    return [body + s.ljust(w) if body and (body[0].isdigit() or body[0] == "~") else body for body, s in parts]


def _text_table(key_heads: list, key_body: list, groups: list, wrap: bool = False,
                sub: tuple = ("µs", "% peak")) -> list:
    """Lines of one table: the case columns left-aligned, then per backend a group of
    right-aligned columns (``sub``: µs and % peak, and energy where measured) under its name
    (broken after hyphens where the group is narrower than the name, if ``wrap``).
    ``groups``: [(backend, [(median, % peak, ...)])], one cell per column of ``sub``."""
    kw = [max([len(h)] + [len(r[i]) for r in key_body]) for i, h in enumerate(key_heads)]
    cols, names = [], []
    for name, cells in groups:
        columns = [_suffix_aligned([c[0] for c in cells])] + [[c[j] for c in cells] for j in range(1, len(sub))]
        widths = [max([len(h)] + [len(c) for c in col]) for h, col in zip(sub, columns)]
        group_w = sum(widths) + len(widths) - 1
        lines = _wrap_name(name, group_w) if wrap else [name]
        widths[0] += max(0, max(len(x) for x in lines) - group_w)    # a piece wider than the group
        cols.append((columns, widths))
        names.append(lines)

    def group(texts, widths):
        return " ".join(f"{t:>{w}}" for t, w in zip(texts, widths))
    depth = max((len(n) for n in names), default=1)
    head_rows = []
    for level in range(depth):       # backend names sit right above their columns
        parts = [" " * w for w in kw]
        for lines, (_, widths) in zip(names, cols):
            i = level - (depth - len(lines))
            parts.append((lines[i] if i >= 0 else "").center(sum(widths) + len(widths) - 1))
        head_rows.append("  ".join(parts).rstrip())
    head_rows.append("  ".join([h.ljust(w) for h, w in zip(key_heads, kw)]
                               + [group(sub, widths) for _, widths in cols]).rstrip())
    head_rows.append("  ".join(["-" * w for w in kw] + ["-" * (sum(ws) + len(ws) - 1) for _, ws in cols]))
    body = []
    for i, keys in enumerate(key_body):
        parts = [k.ljust(w) for k, w in zip(keys, kw)]
        parts += [group([col[i] for col in columns], widths) for columns, widths in cols]
        body.append("  ".join(parts).rstrip())
    return head_rows + body


def _width(lines: list) -> int:
    return max((len(x) for x in lines), default=0)


def _labelled(lines: list, sec: Section, n_head: int) -> list:
    """The body rows of a table with no label column, each new label on a line of its own."""
    out, last = lines[:n_head], None
    for row, line in zip(sec.rows, lines[n_head:]):
        if row.label and row.label != last:
            out.append(f"{sec.label_head}: {row.label}")
        last = row.label
        out.append(line)
    return out


def section_text(sec: Section, width: int = WIDTH) -> list:
    """Lines of one op's section, as narrow as it needs to be to fit ``width``."""
    cells = _group_cells(sec)
    groups = [(b, cells[b]) for b in sec.backends]
    has_label = any(row.label for row in sec.rows)
    # Narrower and narrower: backend names whole, then broken over lines; then the labels
    # on lines of their own; then the backends over several tables.
    for labels in ((True, False) if has_label else (False,)):
        for wrap in (False, True):
            lines = _text_table(*_key_columns(sec, labels), groups, wrap, sec.sub)
            if _width(lines) <= width:
                return _labelled(lines, sec, len(lines) - len(sec.rows)) if has_label and not labels else lines
    heads, keys = _key_columns(sec, False)
    chunks, start = [], 0
    while start < len(groups):
        end = len(groups)
        while end > start + 1 and _width(_text_table(heads, keys, groups[start:end], True, sec.sub)) > width:
            end -= 1
        chunks.append(groups[start:end])
        start = end
    out, first = [], 1
    for i, chunk in enumerate(chunks):
        t = _text_table(heads, keys, chunk, True, sec.sub)
        if len(chunks) > 1:       # the names are in the table's own header
            out.append(f"({i + 1}/{len(chunks)}: backends {first}-{first + len(chunk) - 1} of {len(groups)})")
            first += len(chunk)
        out += _labelled(t, sec, len(t) - len(keys)) if has_label else t
        out.append("")
    return out[:-1]


def _md_section(sec: Section) -> list:
    cells = _group_cells(sec, md=True)
    has_label = any(row.label for row in sec.rows)
    heads, keys = _key_columns(sec, has_label)
    heads = heads + [f"{b} {h}" for b in sec.backends for h in sec.sub]
    body = [k + [c for b in sec.backends for c in cells[b][i]] for i, k in enumerate(keys)]

    def line(cs):       # the records' text is md_cell-escaped already (render): not again
        return "| " + " | ".join(cs) + " |"
    right = len(heads) - len(sec.sub) * len(sec.backends)
    return [line(heads), "|" + "|".join(["---"] * right + ["---:"] * (len(sec.sub) * len(sec.backends))) + "|"] + \
        [line(r) for r in body]


def legend(secs: list, md: bool = False) -> list:
    """Legend items for the marks and words that the tables show (Markdown marks the fastest
    in bold, not with a star)."""
    seen = set()
    for sec in secs:
        for row in sec.rows:
            best = fastest(row)
            for b in sec.backends:
                us, _ = cell_text(row.cells.get(b), b in best)
                seen |= {m for m in "*~!" if m in us} | ({us} & set(STATUS_WORD.values()))
    items = [LEGEND[k] for k in LEGEND if k in seen]
    if md and "*" in seen:
        items[0] = "**bold**: fastest timed backend of the row"
    return list(dict.fromkeys(items))


def _pack(items: list, width: int) -> list:
    """Items joined by '; ' on lines of at most ``width``, never breaking an item."""
    lines = []
    for item in items:
        if lines and len(lines[-1]) + 2 + len(item) <= width:
            lines[-1] += "; " + item
        else:
            lines.append(item)
    return lines


def problems(records: list, width: int = WIDTH) -> list:
    """One line per record that failed its check or did not finish, with why; cut to ``width``
    (``--long`` and the run file have the whole reason)."""
    out = []
    for r in records:
        if r["status"] in PROBLEMS:
            what = " ".join(x for x in (r["op"], r.get("label"), compact_shape(r["shape"]), r["dtype"], r["backend"])
                            if x)
            line = f"  {what}: {table.status_text(r)}".replace("\n", " ")
            out.append(line if len(line) <= width else line[:width - 1] + "…")
    return ([f"failed or did not finish ({len(out)}; --long shows every column):"] + out) if out else []


def render(header: dict, records: list, fmt: str = "table", long: bool = False) -> str:
    """The per-device table in ``fmt``: wide for table and md unless ``long``; csv, json and
    ``long`` are table.render's one row per (case, backend)."""
    if long or fmt not in ("table", "md"):
        return table.render(header, records, fmt)
    # Text from the run file, escaped for where it is shown (kernelmark/reports/escape.py):
    # Markdown markup and links inert, newlines and control characters out.
    clean = md_cell if fmt == "md" else plain
    header = one_line(header)
    records = [_escaped(r, clean) for r in records]
    md = fmt == "md"
    secs = sections(records)
    folded = [r for r in records if r["status"] in table.FOLDED]
    intro = "one row per case; per backend: median µs of one call and % of the measured peak" + \
        ("; energy per call and work per joule where --energy measured it" if any(s.with_energy for s in secs)
         else "") + " (--long: one row per case and backend, every column)"
    out = []
    for sec in secs:
        out += ([f"### {sec.title or sec.op}", ""] + _md_section(sec)) if md else \
            [sec.title or sec.op] + section_text(sec)
        notes = section_notes(sec)
        if notes:       # md: a list under the table; text: wrapped to the width
            out += [""] + [f"- {n}" for n in notes] if md else \
                [w for n in notes for w in textwrap.wrap(n, WIDTH, subsequent_indent="  ")]
        out.append("")
    if not records:
        out = ["(no records: the run stopped before its first case finished)", ""]
    elif not secs:
        out = ["(no case ran here: every backend was skipped or unsupported)", ""]
    # the energy notes carry the counters' reasons, text from the run file
    notes = legend(secs, md) + [(md_text if md else plain)(x) for x in energy.wide_notes(records)]
    if notes:
        out += ["; ".join(notes)] if md else _pack(notes, WIDTH)      # md: one paragraph anyway
        out.append("")
    bad = problems(records)
    out += bad + ([""] if bad else [])
    if folded:
        out += table.folded_summary(folded).splitlines()
    extra = table.notes(header, records)      # CPU threads, what % peak is measured against
    if extra:
        out += [""] + [w for line in extra.splitlines()
                       for w in (textwrap.wrap(line, WIDTH, subsequent_indent="  ") if not md else [line])]
    if md:      # the indented detail lines as a list, not one run-on paragraph
        out = [f"- {line[2:]}" if line.startswith("  ") else line for line in out]
    text = "\n".join(out).rstrip("\n")
    title = "\n".join((md_text if md else plain)(line) for line in table.title(header).splitlines())
    if md:
        title = "\n".join(f"> {line}" if line else ">" for line in title.splitlines())
        return f"{title}\n>\n> {intro}\n\n{text}"
    return f"{title}\n{intro}\n\n{text}"


def _escaped(rec: dict, clean) -> dict:
    """A copy of a record with the strings a table shows passed through ``clean``."""
    r = dict(rec)
    for k in ("op", "label", "backend", "dtype", "reason", "detail", "bound"):
        if isinstance(r.get(k), str):
            r[k] = clean(r[k])
    if isinstance(r.get("shape"), dict):
        r["shape"] = {clean(str(k)): clean(v) if isinstance(v, str) else v for k, v in r["shape"].items()}
    tr = table.trace_of(r)
    if tr is not None:          # the definition's section heading and the workload column
        tr = {k: clean(v) if isinstance(v, str) else [clean(x) if isinstance(x, str) else x for x in v]
              if isinstance(v, list) else v for k, v in tr.items()}
        if isinstance(tr.get("axes"), dict):
            tr["axes"] = {clean(str(k)): clean(v) if isinstance(v, str) else v for k, v in tr["axes"].items()}
        r["trace"] = tr
    return r
