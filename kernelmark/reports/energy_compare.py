"""`kernelmark compare BASE HEAD --energy`: J per call of HEAD against BASE, for the pairs both
runs measured with `run --energy`. Opt-in, and never a regression: the exit status stays
the timing comparison's. An energy change is a finding to read, not a slower kernel, and
the counters' resolution (NVML: about 5% over a 2 s window) is coarser than a timing CI.

Per pair, with J and its bound δ on each side (kernelmark.reports.energy.joules), compared
net with net where both have a positive net, else gross with gross:

    ratio = J_head / J_base
    bounds: [(J_head - δ_head) / (J_base + δ_base), (J_head + δ_head) / (J_base - δ_base)]
    more energy  where the lower bound is above 1 + threshold
    less energy  where the upper bound is below 1 / (1 + threshold)
    unchanged    otherwise (the change is within the counters' bounds or the threshold)

A pair with energy on one side only is `not measured`, with why.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from kernelmark.reports import energy

VERDICTS = ("more energy", "less energy", "unchanged", "not measured")


@dataclass
class EnergyPair:
    op: str
    shape: dict
    dtype: str
    backend: str
    verdict: str
    kind: str | None = None
    base_j: float | None = None
    head_j: float | None = None
    ratio: float | None = None
    low: float | None = None
    high: float | None = None
    note: str = ""


def _key(rec: dict) -> tuple:
    return (rec["op"], repr(sorted(rec["shape"].items())), rec["dtype"], rec["backend"])


def compare_pair(a: dict, b: dict, threshold: float) -> EnergyPair:
    p = EnergyPair(a["op"], a["shape"], a["dtype"], a["backend"], "not measured")
    kind = energy.common_kind(a, b)
    if kind is None:
        lack = [f"{side}: {energy.lack_reason(r)}" for side, r in (("BASE", a), ("HEAD", b))
                if not energy.measured(r)]
        p.note = "; ".join(lack)
        return p
    (jb, db), (jh, dh) = energy.joules(a, kind), energy.joules(b, kind)
    p.kind, p.base_j, p.head_j, p.ratio = kind, jb, jh, jh / jb
    if db is None or dh is None:
        p.note = "a side has no uncertainty bound: compared on the threshold alone"
        db, dh = db or 0.0, dh or 0.0
    p.low = (jh - dh) / (jb + db)
    p.high = (jh + dh) / (jb - db) if jb > db else math.inf
    if p.low > 1 + threshold:
        p.verdict = "more energy"
    elif p.high < 1 / (1 + threshold):
        p.verdict = "less energy"
    else:
        p.verdict = "unchanged"
    return p


def compare_runs(base_records: list, head_records: list, threshold: float) -> list:
    """EnergyPairs for the (case, backend) timed on both sides where either has an energy field."""
    ib = {_key(r): r for r in head_records if r.get("status") == "ok"}
    out = []
    for a in base_records:
        b = ib.get(_key(a))
        if a.get("status") == "ok" and b is not None and ("energy" in a or "energy" in b):
            out.append(compare_pair(a, b, threshold))
    rank = {v: i for i, v in enumerate(VERDICTS)}
    out.sort(key=lambda p: (rank[p.verdict], -(p.ratio or 0)))
    return out


def as_json(pairs: list) -> list:
    return [asdict(p) for p in pairs]


def summary_line(pairs: list) -> str:
    if not pairs:
        return "energy (--energy): no pair timed on both sides has an energy field (run --energy)"
    counts = ", ".join(f"{n} {v}" for v in VERDICTS if (n := sum(p.verdict == v for p in pairs)))
    rs = [p.ratio for p in pairs if p.ratio]
    gm = f"geometric mean J ratio HEAD/BASE {math.exp(sum(map(math.log, rs)) / len(rs)):.3f} over {len(rs)} " \
         "pairs; " if rs else ""
    return f"energy (--energy; never a regression, the exit status is the timing's): {gm}{counts}"


def rows(pairs: list) -> tuple:
    """(headers, rows of strings) of the energy table."""
    def j(x):
        return "" if x is None else energy.fmt_joules(x)
    from kernelmark.reports.table import shape_text
    body = [[p.verdict, p.op, shape_text(p.shape), p.dtype, p.backend, p.kind or "", j(p.base_j), j(p.head_j),
             "" if p.ratio is None else f"{p.ratio:.3f}",
             "" if p.low is None else f"[{p.low:.3f}, {p.high:.3f}]", p.note] for p in pairs]
    return ["energy", "op", "shape", "dtype", "backend", "J kind", "BASE J/call", "HEAD J/call", "ratio",
            "counter bounds", "note"], body


def render(pairs: list, fmt: str = "table") -> str:
    """The energy section printed under the timing comparison (table or md)."""
    from tabulate import tabulate

    from kernelmark.reports.escape import md_cell, md_text, plain
    cell, text = (md_cell, md_text) if fmt == "md" else (plain, plain)
    heads, body = rows(pairs)
    line = text(summary_line(pairs))
    if not pairs:
        return f"> {line}" if fmt == "md" else line
    tab = tabulate([[cell(c) for c in r] for r in body], headers=heads,
                   tablefmt="github" if fmt == "md" else "simple", disable_numparse=True)
    return (f"> {line}" if fmt == "md" else line) + "\n\n" + tab
