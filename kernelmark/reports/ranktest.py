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
    Rows whose values are all equal get 1.0, as compare.mann_whitney_p gives them. The same
    arithmetic as mann_whitney_p, element by element; rank sums and the tie term are sums of
    half-integers and integers, exact in any order, so each p is the one-row p exactly."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    m, n1 = x.shape
    n2 = y.shape[1]
    n = n1 + n2
    xy = np.concatenate([x, y], axis=1)
    # Not a stable sort: every value of a run of ties gets the run's average rank, so which
    # side's value stands where within the run changes no rank sum.
    order = np.argsort(xy, axis=1)
    v = np.take_along_axis(xy, order, axis=1)
    step = v[:, 1:] != v[:, :-1]
    edge = np.ones((m, 1), dtype=bool)
    pos = np.arange(n)
    # Where the run of equal values holding each sorted position starts and ends.
    start = np.maximum.accumulate(np.where(np.concatenate([edge, step], axis=1), pos, 0), axis=1)
    end = np.minimum.accumulate(np.where(np.concatenate([step, edge], axis=1), pos, n)[:, ::-1], axis=1)[:, ::-1]
    count = end - start + 1
    rank = start + 1 + (count - 1) / 2                   # average rank (1-based) at each sorted position
    u1 = np.where(order < n1, rank, 0.0).sum(axis=1) - n1 * (n1 + 1) / 2
    u = np.maximum(u1, n1 * n2 - u1)
    tie_term = (count.astype(float) ** 2 - 1).sum(axis=1)   # each run of c adds c(c^2 - 1) = c^3 - c
    with np.errstate(invalid="ignore", divide="ignore"):
        s = np.sqrt(n1 * n2 / 12 * ((n + 1) - tie_term / (n * (n - 1))))
        from scipy.special import ndtr
        p = np.where(s > 0, 2 * ndtr(-((u - n1 * n2 / 2 - 0.5) / s)), 1.0)
    p = np.minimum(np.maximum(p, 0.0), 1.0)
    out = [float(q) for q in p]
    ties = (count > 1).any(axis=1)
    for i in range(m):
        if v[i, 0] == v[i, -1]:
            out[i] = 1.0
        elif (n1 <= 8 or n2 <= 8) and not ties[i]:
            out[i] = mann_whitney_p(x[i], y[i])        # scipy's exact distribution
    return out
