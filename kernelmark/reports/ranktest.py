"""The two-sided Mann-Whitney U test, as scipy.stats.mannwhitneyu computes it by default.

`compare` runs one test per pair; on a run of 100,000 records scipy's general-purpose
wrapper (axis and NaN policies, array-API dispatch) cost about 5 ms a call, more than the
arithmetic. This is the same arithmetic for one pair of 1-D samples: average ranks, U, the
normal approximation with tie correction and continuity correction. Where scipy's
``method="auto"`` would compute the exact distribution instead (both samples of 8 or fewer,
or either, with no ties), it is scipy that is called, so the p-value is scipy's in every case;
tests/reports/test_streaming.py checks the two agree.
"""

from __future__ import annotations

import math

import numpy as np


def mann_whitney_p(x, y) -> float:
    """p-value of the two-sided test of ``x`` against ``y`` (continuity-corrected)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    n1, n2 = x.size, y.size
    xy = np.concatenate([x, y])
    order = np.argsort(xy, kind="stable")
    v = xy[order]
    first = np.concatenate([[True], v[1:] != v[:-1]])       # where each run of equal values starts
    starts = np.flatnonzero(first)
    counts = np.diff(np.append(starts, xy.size))
    if (n1 <= 8 or n2 <= 8) and not (counts > 1).any():
        from scipy.stats import mannwhitneyu
        return float(mannwhitneyu(x, y, alternative="two-sided").pvalue)
    # Average rank of each run of ties (1-based), given back to the values in their order.
    ranks = np.empty(xy.size)
    ranks[order] = np.repeat(starts + 1 + (counts - 1) / 2, counts)
    u1 = ranks[:n1].sum() - n1 * (n1 + 1) / 2
    u = max(u1, n1 * n2 - u1)
    n = n1 + n2
    tie_term = float((counts.astype(float) ** 3 - counts).sum())
    s = math.sqrt(n1 * n2 / 12 * ((n + 1) - tie_term / (n * (n - 1))))
    from scipy.special import ndtr
    p = 2 * float(ndtr(-((u - n1 * n2 / 2 - 0.5) / s))) if s > 0 else 1.0
    return min(max(p, 0.0), 1.0)


def mann_whitney_p_rows(x: np.ndarray, y: np.ndarray) -> list:
    """mann_whitney_p(x[i], y[i]) for each row i of two 2-D arrays (rows of one size each), in
    one pass over all rows: what `compare` of a large run uses (kernelmark/reports/pairstats.py).
    Rows whose values are all equal get 1.0, as compare.mann_whitney_p gives them."""
    return mann_whitney_p_sorted_rows(np.sort(np.asarray(x, dtype=float), axis=1),
                                      np.sort(np.asarray(y, dtype=float), axis=1))


def mann_whitney_p_sorted_rows(xs: np.ndarray, ys: np.ndarray) -> list:
    """mann_whitney_p_rows of rows already sorted (pairstats sorts them for the medians).

    The same p as mann_whitney_p, exactly, from the same two numbers: U of x, counted as the
    y below each x plus half those equal to it (the rank sum less n1(n1 + 1)/2, which is what
    it is), and the tie term, the sum over runs of equal values of c^3 - c. Both are sums of
    integers and halves, exact in any order; the rest is mann_whitney_p's arithmetic. Sorted
    rows need no sort of the pooled values: a binary search of each x in its row of y, and
    the runs of the two rows merged (a stable sort of two sorted runs is one merge)."""
    m, n1 = xs.shape
    n2 = ys.shape[1]
    n = n1 + n2
    u1 = np.empty(m)
    for i in range(m):
        below = np.searchsorted(ys[i], xs[i], "left").sum()
        at_most = np.searchsorted(ys[i], xs[i], "right").sum()
        u1[i] = (below + at_most) / 2
    v = np.sort(np.concatenate([xs, ys], axis=1), axis=1, kind="stable")
    start = np.ones((m, n), dtype=bool)
    start[:, 1:] = v[:, 1:] != v[:, :-1]
    runs = np.flatnonzero(start)                       # where each run starts, row after row
    c = np.diff(np.append(runs, m * n))               # its length (a row's first run starts it)
    per_row = start.sum(axis=1)
    tie_term = np.add.reduceat(c ** 3 - c, np.concatenate([[0], np.cumsum(per_row)[:-1]])).astype(float)
    u = np.maximum(u1, n1 * n2 - u1)
    with np.errstate(invalid="ignore", divide="ignore"):
        s = np.sqrt(n1 * n2 / 12 * ((n + 1) - tie_term / (n * (n - 1))))
        from scipy.special import ndtr
        p = np.where(s > 0, 2 * ndtr(-((u - n1 * n2 / 2 - 0.5) / s)), 1.0)
    p = np.minimum(np.maximum(p, 0.0), 1.0)
    out = [float(q) for q in p]
    ties = per_row < n
    for i in range(m):
        if v[i, 0] == v[i, -1]:
            out[i] = 1.0
        elif (n1 <= 8 or n2 <= 8) and not ties[i]:
            out[i] = mann_whitney_p(xs[i], ys[i])      # scipy's exact distribution
    return out
