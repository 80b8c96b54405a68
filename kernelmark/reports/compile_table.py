"""Compile run files (`kernelmark compile --out`): read, render, compare two.

A compile run file is JSON lines like a timing run: a header with ``kind: "compile"``, one
record per kernel × config × target, a footer. Timing runs have no ``kind`` (they are kind
"run"); the two are never compared with each other.
"""

from __future__ import annotations

import csv
import io
import json

from kernelmark.reports.escape import csv_cell, md_cell, md_text, plain
from kernelmark.results import strict_json

KIND = "compile"
GOOD = ("compiled",)
BAD = ("failed", "over_limit")


class CompileFileError(ValueError):
    """A file that is not a readable compile run; the message names the file and line."""


def file_kind(path: str) -> str:
    """'compile' or 'run' (anything without a compile header), from the first line."""
    try:
        with open(path, encoding="utf-8") as f:
            first = json.loads(f.readline() or "{}")
    except (OSError, ValueError, UnicodeDecodeError):
        return "run"
    return KIND if isinstance(first, dict) and first.get("kind") == KIND else "run"


def load(path: str) -> tuple:
    """(header, records) of a compile run file."""
    header, records = None, []
    try:
        with open(path, encoding="utf-8") as f:
            for i, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except ValueError as e:
                    raise CompileFileError(f"{path}:{i}: not JSON ({e})") from None
                t = obj.get("type") if isinstance(obj, dict) else None
                if t == "header":
                    header = obj
                elif t == "record":
                    for k in ("kernel", "config", "target", "status"):
                        if not isinstance(obj.get(k), str):
                            raise CompileFileError(f"{path}:{i}: record has no {k!r} string")
                    records.append(obj)
                elif t != "footer":
                    raise CompileFileError(f"{path}:{i}: unknown line type {t!r}")
    except OSError as e:
        raise CompileFileError(f"{path}: cannot read ({e.strerror})") from None
    if header is None or header.get("kind") != KIND:
        raise CompileFileError(f"{path}: not a compile run file (no header with kind \"compile\")")
    return header, records


def key(r: dict) -> tuple:
    return (r.get("op", ""), r.get("backend", ""), r.get("case", ""), r["kernel"], r["config"], r["target"])


def _cell(v, unit=""):
    return "-" if v is None else f"{v}{unit}"


COLUMNS = ("target", "op", "kernel", "config", "status", "time", "shared", "regs", "spills", "note")
FIELDS = ("target", "op", "backend", "case", "kernel", "config", "status", "error", "compile_s", "shared_bytes",
          "registers", "spills", "fits")


def _row(r: dict) -> tuple:
    return (r["target"], r.get("op", ""), r["kernel"], r["config"] or "-", r["status"],
            _cell(r.get("compile_s"), " s"), _cell(r.get("shared_bytes"), " B"), _cell(r.get("registers")),
            _cell(r.get("spills")), (r.get("error") or "")[:120])


def left_out(records: list) -> dict:
    """{target: ["kernel config: why", ...]}: the autotune configs that failed to compile or
    are over a limit on each target (what tuning there must leave out); plain kernels (no
    config) are not tuning choices. The compile file's footer and this table's both."""
    out: dict = {}
    for r in records:
        if r["config"] and r["status"] in BAD:
            line = f"{r['kernel']} {r['config']}: {r.get('error')}"
            if line not in out.setdefault(r["target"], []):
                out[r["target"]].append(line)
    return out


def tuning_exclusions(records: list, source: str) -> list:
    """[{target, op, backend, case, kernel, config, why}, ...]: each autotune config that failed
    to compile or is over a limit, for the case it was compiled for; what `kernelmark run
    --compile-check` has tuning leave out (`why` names `source`, the compile file)."""
    out = []
    for r in records:
        if r["config"] and r["status"] in BAD:
            out.append({"target": r["target"], "op": str(r.get("op", "")), "backend": str(r.get("backend", "")),
                        "case": str(r.get("case", "")), "kernel": r["kernel"], "config": r["config"],
                        "why": f"compile check {source}: {r['status']}: {r.get('error') or 'no reason given'}"})
    return out


def title(header: dict) -> str:
    """'compile check | triton 3.9.0 | suite smoke | targets cuda:90, hip:gfx942 | started ...'."""
    h = header or {}
    targets = ", ".join(str(t.get("name")) for t in h.get("targets") or () if isinstance(t, dict))
    suite = (h.get("suite") or {}).get("name") if isinstance(h.get("suite"), dict) else None
    parts = ["compile check", f"triton {h.get('triton', '?')}"]
    parts += [f"suite {suite}"] if suite else []
    parts += [f"targets {targets}"] if targets else []
    parts += [f"started {h['started']}"] if h.get("started") else []
    return " | ".join(str(p) for p in parts)


def render(records: list, fmt: str = "table", header=None) -> str:
    """One row per kernel × config × target, then a count per target and status and the
    configs each target's tuning must leave out; with `header`, a title line first. Text from
    the file is escaped for the format (kernelmark/reports/escape.py)."""
    if fmt == "json":
        return strict_json({"header": header, "records": records, "left_out": left_out(records)}, indent=1) + "\n"
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=FIELDS, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        for r in records:
            w.writerow({k: csv_cell(r.get(k)) for k in FIELDS})
        return buf.getvalue()
    md = fmt == "md"
    text = md_text if md else plain
    rows = [tuple((md_cell if md else plain)(v) for v in _row(r)) for r in records]
    if md:
        out = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join("---" for _ in COLUMNS) + "|"]
        out += ["| " + " | ".join(row) + " |" for row in rows]
    else:
        widths = [max([len(c)] + [len(row[i]) for row in rows]) for i, c in enumerate(COLUMNS)]
        out = ["  ".join(c.ljust(w) for c, w in zip(COLUMNS, widths)).rstrip()]
        out += ["  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in rows]
    counts: dict = {}
    for r in records:
        counts.setdefault(r["target"], {}).setdefault(r["status"], 0)
        counts[r["target"]][r["status"]] += 1
    out.append("")
    for t, c in counts.items():
        out.append(text(f"{t}: " + ", ".join(f"{n} {s}" for s, n in sorted(c.items()))))
    for t, lines in left_out(records).items():
        out.append(text(f"left out of autotuning on {t}: " + "; ".join(lines)))
    if header is not None:
        out = [text(title(header)), ""] + out
    return "\n".join(out) + "\n"


def compare(base: list, head: list) -> dict:
    """regressions: compiled (and fitting) in BASE, failed or over the limit in HEAD;
    fixed: the other way; new / missing: kernel × config × target in one file only."""
    b, h = {key(r): r for r in base}, {key(r): r for r in head}
    regress = [(k, b[k], h[k]) for k in b if k in h and b[k]["status"] in GOOD and h[k]["status"] in BAD]
    fixed = [(k, b[k], h[k]) for k in b if k in h and b[k]["status"] in BAD and h[k]["status"] in GOOD]
    return {"regressions": regress, "fixed": fixed,
            "new": [k for k in h if k not in b], "missing": [k for k in b if k not in h]}


def render_compare(diff: dict) -> str:
    def name(k):
        op, backend, case, kernel, config, target = k
        return f"{target} {op}/{backend} [{case}] {kernel} {config or '-'}"
    out = []
    for title, items in (("REGRESSION", diff["regressions"]), ("fixed", diff["fixed"])):
        for k, br, hr in items:
            out.append(f"{title}: {name(k)}: {br['status']} -> {hr['status']}"
                       + (f" ({hr.get('error') or br.get('error')})" if (hr.get("error") or br.get("error")) else ""))
    out += [f"new: {name(k)}" for k in diff["new"]] + [f"missing: {name(k)}" for k in diff["missing"]]
    out.append(f"{len(diff['regressions'])} regression(s), {len(diff['fixed'])} fixed, "
               f"{len(diff['new'])} new, {len(diff['missing'])} missing")
    return "\n".join(plain(line) for line in out) + "\n"      # names from the files: no terminal controls
