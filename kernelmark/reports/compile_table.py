"""Compile run files (`kernelmark compile --out`): read, render, compare two.

A compile run file is JSON lines like a timing run: a header with ``kind: "compile"``, one
record per kernel × config × target, a footer. Timing runs have no ``kind`` (they are kind
"run"); the two are never compared with each other.
"""

from __future__ import annotations

import json

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


def render(records: list) -> str:
    """One row per kernel × config × target, then a count per target and status."""
    cols = ("target", "op", "kernel", "config", "status", "time", "shared", "regs", "spills", "note")
    rows = [(r["target"], r.get("op", ""), r["kernel"], r["config"] or "-", r["status"],
             _cell(r.get("compile_s"), " s"), _cell(r.get("shared_bytes"), " B"), _cell(r.get("registers")),
             _cell(r.get("spills")), (r.get("error") or "")[:120]) for r in records]
    widths = [max([len(c)] + [len(str(row[i])) for row in rows]) for i, c in enumerate(cols)]
    out = ["  ".join(c.ljust(w) for c, w in zip(cols, widths)).rstrip()]
    out += ["  ".join(str(v).ljust(w) for v, w in zip(row, widths)).rstrip() for row in rows]
    counts: dict = {}
    for r in records:
        counts.setdefault(r["target"], {}).setdefault(r["status"], 0)
        counts[r["target"]][r["status"]] += 1
    out.append("")
    for t, c in counts.items():
        out.append(f"{t}: " + ", ".join(f"{n} {s}" for s, n in sorted(c.items())))
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
    return "\n".join(out) + "\n"
