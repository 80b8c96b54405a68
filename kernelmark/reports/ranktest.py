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
