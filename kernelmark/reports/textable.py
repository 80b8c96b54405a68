"""A plain-text table, tabulate's "simple" format for cells that are already text.

`compare` of a large run prints a row per pair: 100,000 rows of 11 cells. tabulate infers
every cell's type (number, date, text) even with disable_numparse, a tenth of compare's time
on such a run; the cells here are text we formatted, so nothing is to be inferred. The
layout is tabulate's (tests/reports/test_textable.py compares the two): each cell stripped
of surrounding whitespace (headers are not), left-aligned in a column as wide as its widest cell or its
header plus 2, columns two spaces apart, a dashed rule under the headers, trailing spaces
cut from every line. Widths are character counts (tabulate's too, without wcwidth).
"""

from __future__ import annotations


def simple(rows: list, headers: list) -> str:
    """The table of ``rows`` (lists of str) under ``headers``."""
    heads = list(headers)
    rows = [[c.strip() for c in r] for r in rows]
    widths = [len(h) + 2 for h in heads]
    for i, col in enumerate(zip(*rows)):
        widths[i] = max(widths[i], max(map(len, col)))
    lines = ["  ".join(h.ljust(w) for h, w in zip(heads, widths)).rstrip(),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join(lines)
