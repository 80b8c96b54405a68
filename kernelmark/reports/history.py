"""The history store: every run's medians in one SQLite file, and each case's trend.

The database lives in the user's data directory: ``$KERNELMARK_DATA_DIR/history.sqlite``,
else ``$XDG_DATA_HOME/kernelmark/history.sqlite``, else
``~/.local/share/kernelmark/history.sqlite``. ``kernelmark run`` adds every run to it
(``--db PATH`` elsewhere, ``--no-history`` or ``KERNELMARK_NO_HISTORY=1`` not at all).

Ingesting is idempotent: a run is keyed by its header's ``run_id`` and a measurement by
(run_id, op, shape, dtype, backend), so ingesting the same file twice changes nothing.
The store keeps medians and their intervals, not samples: the run files stay the
source of truth, and any table here can be rebuilt from them.

A step change in a case's series is flagged where every run after it sits beyond
every run before it (no overlap), the two segments' medians differ by more than the
threshold, and at least two runs are on each side (so one odd run is not a step).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import sqlite3
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Optional

from kernelmark.reports.escape import md_cell, md_text, plain
from kernelmark.results import strict_json

SCHEMA = 1
_DDL = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, started TEXT, started_ts REAL, commit_id TEXT, dirty INTEGER,
    device TEXT, device_kind TEXT, suite TEXT, path TEXT, kernelmark TEXT, ingested TEXT);
CREATE TABLE IF NOT EXISTS measurements (
    run_id TEXT NOT NULL, op TEXT NOT NULL, shape TEXT NOT NULL, dtype TEXT NOT NULL,
    backend TEXT NOT NULL, label TEXT, status TEXT, median_us REAL, ci_low_us REAL,
    ci_high_us REAL, n INTEGER, method TEXT, shape_shown TEXT,
    PRIMARY KEY (run_id, op, shape, dtype, backend));
CREATE INDEX IF NOT EXISTS measurements_case ON measurements (op, dtype, backend);
"""


class HistoryError(ValueError):
    """The database cannot be opened or is not a kernelmark history."""


def default_path() -> Path:
    if os.environ.get("KERNELMARK_DATA_DIR"):
        return Path(os.environ["KERNELMARK_DATA_DIR"]) / "history.sqlite"
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "kernelmark" / "history.sqlite"


def connect(path) -> sqlite3.Connection:
    p = Path(path)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(p), timeout=30)
        conn.executescript(_DDL)
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        if row is None:
            conn.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA),))
            conn.commit()
        elif row[0] != str(SCHEMA):
            raise HistoryError(f"{p}: history schema {row[0]}; this kernelmark reads {SCHEMA}")
    except sqlite3.DatabaseError as e:
        raise HistoryError(f"{p}: cannot use it as the history database ({e})") from None
    except OSError as e:
        raise HistoryError(f"{p}: cannot create the history database ({e.strerror or e})") from None
    return conn


def _epoch(started: str) -> Optional[float]:
    for fmt in ("%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S"):
        try:
            return datetime.strptime(started, fmt).timestamp()
        except (TypeError, ValueError):
            continue
    return None


def run_id(header: dict) -> str:
    """The header's run_id; a run file without one is keyed by a hash of its header."""
    return header.get("run_id") or hashlib.sha256(
        json.dumps(header, sort_keys=True, default=str).encode()).hexdigest()[:12]


def ingest(conn: sqlite3.Connection, run) -> tuple:
    """Add a loaded run. Returns (measurements added, measurements already there)."""
    h = run.header
    rid = run_id(h)
    d = h.get("device") or {}
    git = d.get("git") or {}
    added = 0
    with conn:
        conn.execute("INSERT OR IGNORE INTO runs VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                     (rid, h.get("started"), _epoch(h.get("started")), git.get("commit"),
                      None if git.get("dirty") is None else int(bool(git.get("dirty"))), d.get("name"),
                      d.get("kind"), (h.get("suite") or {}).get("name"), str(Path(run.path).resolve()),
                      h.get("kernelmark"), time.strftime("%Y-%m-%dT%H:%M:%S%z")))
        for r in run.records:
            t = (r.get("timing") or {}) if r["status"] == "ok" else {}
            cur = conn.execute(
                "INSERT OR IGNORE INTO measurements VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (rid, r["op"], json.dumps(r["shape"], sort_keys=True), r["dtype"], r["backend"],
                 r.get("label"), r["status"], t.get("median_us"), t.get("ci_low_us"), t.get("ci_high_us"),
                 t.get("n"), t.get("method"), json.dumps(r["shape"])))
            added += cur.rowcount
    return added, len(run.records) - added


@dataclass
class Point:
    run_id: str
    started: str
    commit: Optional[str]
    dirty: Optional[bool]
    median_us: float
    ci_low_us: Optional[float]
    ci_high_us: Optional[float]


@dataclass
class Step:
    at: int                  # index of the first point after the step
    ratio: float             # median after / median before
    commit: Optional[str]
    started: str


@dataclass
class CaseHistory:
    op: str
    shape: dict
    dtype: str
    backend: str
    device: str
    label: str = ""
    points: list = field(default_factory=list)
    step: Optional[Step] = None


def parse_since(text: str) -> float:
    """'7d', '12h', '30m' ago, or an ISO date/time, as epoch seconds."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([dhmw])\s*", text or "")
    if m:
        unit = {"w": 7 * 86400, "d": 86400, "h": 3600, "m": 60}[m.group(2)]
        return time.time() - float(m.group(1)) * unit
    try:
        dt = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"--since {text!r}: expected an ISO date (2026-11-01) or an age (7d, 12h)") from None
    return dt.timestamp()      # a date without a zone is local time


def query(conn: sqlite3.Connection, op: Optional[list] = None, device: Optional[str] = None,
          since: Optional[float] = None, backend: Optional[list] = None, dtype: Optional[list] = None,
          threshold: float = 0.05) -> list:
    """Each timed case's series of run medians, oldest first, with its step change if any."""
    sql = ("SELECT m.op, m.shape, m.dtype, m.backend, r.device, m.label, r.run_id, r.started, r.commit_id, "
           "r.dirty, m.median_us, m.ci_low_us, m.ci_high_us, m.shape_shown FROM measurements m JOIN runs r USING (run_id) "
           "WHERE m.status = 'ok' AND m.median_us IS NOT NULL")
    args: list = []
    for col, vals in (("m.op", op), ("m.backend", backend), ("m.dtype", dtype)):
        if vals:
            sql += f" AND {col} IN ({','.join('?' * len(vals))})"
            args += list(vals)
    if device:
        sql += " AND r.device LIKE ?"
        args.append(f"%{device}%")
    if since is not None:
        sql += " AND r.started_ts >= ?"
        args.append(since)
    sql += " ORDER BY r.started_ts, r.started"
    cases: dict = {}
    for row in conn.execute(sql, args):
        key = row[:5]
        c = cases.get(key)
        if c is None:
            # The key's shape is sorted (identity); the one shown keeps the op's parameter order.
            c = cases[key] = CaseHistory(row[0], json.loads(row[13] or row[1]), row[2], row[3], row[4] or "",
                                         row[5] or "")
        c.points.append(Point(row[6], row[7], row[8], None if row[9] is None else bool(row[9]), *row[10:13]))
    out = list(cases.values())
    for c in out:
        c.step = find_step(c.points, threshold)
    return out


def find_step(points: list, threshold: float = 0.05) -> Optional[Step]:
    """The largest step change in the series (see the module docstring), or None."""
    logs = [math.log(p.median_us) for p in points]
    best = None
    for i in range(2, len(logs) - 1):
        before, after = logs[:i], logs[i:]
        jump = _median(after) - _median(before)
        separated = min(after) > max(before) if jump > 0 else max(after) < min(before)
        if separated and abs(jump) > math.log1p(threshold) and (best is None or abs(jump) > abs(best[1])):
            best = (i, jump)
    if best is None:
        return None
    i, jump = best
    return Step(i, math.exp(jump), points[i].commit, points[i].started)


def _median(xs: list) -> float:
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


_BARS = "▁▂▃▄▅▆▇█"


def sparkline(values: list) -> str:
    lo, hi = min(values), max(values)
    if hi <= lo:
        return _BARS[0] * len(values)
    return "".join(_BARS[min(int((v - lo) / (hi - lo) * len(_BARS)), len(_BARS) - 1)] for v in values)


def render(cases: list, fmt: str = "table", last: int = 20, points: bool = False) -> str:
    from tabulate import tabulate

    from kernelmark.reports.table import shape_text
    if fmt == "json":
        return strict_json([asdict(c) for c in cases], indent=1)
    if not cases:
        return "no timed runs in the history match"
    many_devices = len({c.device for c in cases}) > 1
    rows = []
    for c in sorted(cases, key=lambda c: (c.step is None, c.op, c.dtype, c.backend, c.device)):
        pts = c.points[-last:]
        meds = [p.median_us for p in pts]
        step = ""
        if c.step:
            step = f"{100 * (c.step.ratio - 1):+.1f}% at {(c.step.commit or 'unknown')[:10]} ({c.step.started[:10]})"
        prev = _median(meds[:-1]) if len(meds) > 1 else None
        rows.append([c.op, shape_text(c.shape), c.dtype, c.backend] + ([c.device] if many_devices else []) +
                    [len(c.points), f"{meds[0]:.2f}", f"{meds[-1]:.2f}",
                     f"{100 * (meds[-1] / prev - 1):+.1f}%" if prev else "", sparkline(meds), step])
    heads = ["op", "shape", "dtype", "backend"] + (["device"] if many_devices else []) + \
        ["runs", "first µs", "last µs", "last vs earlier", f"trend (last {last})", "step change"]
    # Names come from the run files ingested: escaped for the format (kernelmark/reports/escape.py).
    cell, text = (md_cell, md_text) if fmt == "md" else (plain, plain)
    rows = [[cell(x) for x in r] for r in rows]
    out = tabulate(rows, headers=heads, tablefmt="github" if fmt == "md" else "simple", disable_numparse=True)
    if points:
        for c in cases:
            out += f"\n\n{text(f'{c.op} {shape_text(c.shape)} {c.dtype} {c.backend} on {c.device}')}\n"
            out += tabulate([[cell(p.started), cell((p.commit or "")[:10]) + ("+dirty" if p.dirty else ""),
                              f"{p.median_us:.2f}",
                              f"[{p.ci_low_us:.2f}, {p.ci_high_us:.2f}]" if p.ci_low_us else ""]
                             for p in c.points[-last:]],
                            headers=["started", "commit", "median µs", "95% CI"],
                            tablefmt="github" if fmt == "md" else "simple", disable_numparse=True)
    n_steps = sum(c.step is not None for c in cases)
    return f"{len(cases)} cases, {n_steps} with a step change\n\n" + out
