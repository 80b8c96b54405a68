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

    The same p as mann_whitney_p, exactly, from the same two numbers: U of x, the count of
    y below each x plus half those equal to it (the rank sum less n1(n1 + 1)/2, which is what
    it is), and the tie term, the sum over runs of equal values of c^3 - c. Both are sums of
    integers and halves, exact in any order; the rest is mann_whitney_p's arithmetic. Sorted
    rows need no sort of the pooled values: a stable sort of two sorted runs is one merge,
    and in it x_i (x first: it comes before the y equal to it) has i x and every y below it
    before it, so the y below all the x add up to the sum of the x's places less
    n1(n1 - 1)/2; the y equal to an x, to the sum over runs of equal values of (x in the
    run) x (y in the run). Every row at once, no loop over rows."""
    m, n1 = xs.shape
    n2 = ys.shape[1]
    n = n1 + n2
    pooled = np.concatenate([xs, ys], axis=1)
    order = np.argsort(pooled, axis=1, kind="stable")
    v = np.take_along_axis(pooled, order, axis=1)
    is_x = order < n1
    # per row, the y below each x, summed: the x's places less n1(n1 - 1)/2 (a product of
    # floats holding integers below 2**53: exact, in any order)
    below = is_x.astype(float) @ np.arange(n, dtype=float) - n1 * (n1 - 1) // 2
    start = np.ones((m, n), dtype=bool)              # where a run of equal values starts
    np.not_equal(v[:, 1:], v[:, :-1], out=start[:, 1:])
    tie_term, equal, tied = _ties(start.ravel(), is_x.ravel(), m, n)
    u1 = (2 * below + equal) / 2
    u = np.maximum(u1, n1 * n2 - u1)
    with np.errstate(invalid="ignore", divide="ignore"):
        s = np.sqrt(n1 * n2 / 12 * ((n + 1) - tie_term / (n * (n - 1))))
        from scipy.special import ndtr
        p = np.where(s > 0, 2 * ndtr(-((u - n1 * n2 / 2 - 0.5) / s)), 1.0)
    p = np.minimum(np.maximum(p, 0.0), 1.0)
    p[v[:, 0] == v[:, -1]] = 1.0                      # every value equal: compare.mann_whitney_p's 1
    out = p.tolist()
    if n1 <= 8 or n2 <= 8:
        for i in np.flatnonzero(~tied & (v[:, 0] != v[:, -1])):
            out[i] = mann_whitney_p(xs[i], ys[i])      # no ties: scipy's exact distribution
    return out


def _ties(start: np.ndarray, is_x: np.ndarray, m: int, n: int) -> tuple:
    """Per row of the merged samples (flattened, ``start``: a run of equal values starts
    here): the tie term (the sum over runs of c^3 - c), the y equal to an x (over runs, x in
    it times y in it), and whether the row has a tie at all. Only runs of two or more
    values count, and timings have few: the values equal to the one before them name them."""
    dup = np.flatnonzero(~start)                      # a value equal to the one before it
    if not dup.size:
        return np.zeros(m), np.zeros(m), np.zeros(m, dtype=bool)
    runs = np.flatnonzero(start)
    tied, member = np.unique(np.searchsorted(runs, dup, "right") - 1, return_inverse=True)
    first = runs[tied]                                # where each tied run starts
    c = np.bincount(member, minlength=tied.size) + 1  # its length: its start and the values after
    cx = is_x[first] + np.bincount(member, weights=is_x[dup], minlength=tied.size).astype(np.int64)
    row = first // n
    # Sums of integers below 2**53 (c <= n): exact as floats, in any order.
    tie_term = np.bincount(row, weights=(c ** 3 - c).astype(float), minlength=m)
    equal = np.bincount(row, weights=(cx * (c - cx)).astype(float), minlength=m)
    return tie_term, equal, np.bincount(row, minlength=m) > 0
