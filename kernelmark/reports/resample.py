"""Drawing bootstrap medians through order statistics, fast: what `compare` spends its time
on for a large run, one draw of N_BOOT values per side of every timed pair.

The k-th smallest of a size-n resample is x_(j) with probability given by the binomial
(``order_stat_cdf``); a draw is the inverse of that CDF at uniform u, ``searchsorted``. That
costs a binary search per value, most of compare's time on 100,000 records. The CDF depends
on (n, k) only, and the timing engine's stopping rule leaves few distinct sample counts, so
each CDF is computed once, with a table of where each of BINS equal slices of [0, 1) starts
in it: a draw is then a table lookup and one comparison (a binary search only in the few
slices, out in the tails, that hold several steps of the CDF), and the same index the binary
search gives, exactly (tests/reports/test_streaming.py checks it).

And each draw is made once per (sample count, side) of a comparison, not once per pair
(``Draws``): the index a draw picks depends on (n, k) and the uniform only, never on the
samples, so the N_BOOT indices drawn for HEAD's first pair of n samples serve every HEAD of n
samples after it (common random numbers). Each pair's interval has the distribution it had
with draws of its own; only the Monte Carlo errors of different pairs are now correlated
(pairs of one sample count share theirs), which no per-pair verdict can see: each verdict
reads its own pair's interval alone. Per pair what remains is a gather, a division and the
quantile, instead of 2 x N_BOOT table lookups.
"""

from __future__ import annotations

from collections import OrderedDict
from functools import lru_cache

import numpy as np

BINS = 1 << 12        # a table of 16 kB: it stays in cache between pairs (a larger one did not)
HEAD, BASE = 0, 1     # the sides of a pair, in the order their draws were always made
KEEP = 256            # (n, side) draws held: 256 x 2 x 4000 indices is 16 MB at most


@lru_cache(maxsize=64)
def order_stat_cdf(n: int, k: int) -> np.ndarray:
    """P(k-th smallest of a size-n resample <= x_(j)), j = 0..n-1 (x sorted, k 1-based).

    The count of resampled values at or below x_(j) is Binomial(n, (j+1)/n).
    """
    cdf = np.asarray(_binom_sf()(k - 1, n, np.arange(1, n + 1) / n), dtype=float)
    cdf.flags.writeable = False
    return cdf


@lru_cache(maxsize=1)
def _binom_sf():
    """scipy.stats.binom.sf, for 0 <= k - 1 < n and p in (0, 1]: the ufunc it calls there
    (scipy.stats imports in 1.3 s, a second of a compare's CPU; scipy.special's ufuncs in
    0.6 s). Where this scipy has no such ufunc, binom.sf itself. tests/reports/test_bootci.py
    checks the two agree."""
    try:
        from scipy.special._ufuncs import _binom_sf
        return _binom_sf
    except ImportError:         # pragma: no cover (a scipy that moved it)
        from scipy.stats import binom
        return binom.sf


@lru_cache(maxsize=32)
def _table(n: int, k: int) -> tuple:
    """The CDF, and for each slice [b / BINS, (b + 1) / BINS) the first index the answer can
    be and whether the slice holds more than one step of the CDF (then search it)."""
    cdf = order_stat_cdf(n, k)
    edges = np.searchsorted(cdf, np.arange(BINS + 1) / BINS).astype(np.int32)
    return cdf, edges[:-1], np.diff(edges) > 1


def slices(u: np.ndarray) -> np.ndarray:
    """The slice b of each u in [0, 1): b / BINS <= u < (b + 1) / BINS. Exact: BINS is a power
    of two, so u * BINS is u scaled without rounding, below BINS."""
    return (u * BINS).astype(np.intp)


def order_stat_index(n: int, k: int, u: np.ndarray, b=None) -> np.ndarray:
    """np.searchsorted(order_stat_cdf(n, k), u) for u in [0, 1); ``b``: slices(u), where the
    caller draws two order statistics from the same u (the two middle ones of an even n)."""
    cdf, first, many = _table(n, k)
    # The answer lies between the first index whose CDF reaches b / BINS and the first
    # reaching (b + 1) / BINS.
    b = slices(u) if b is None else b
    idx = first[b].astype(np.intp)
    idx += cdf[np.minimum(idx, cdf.size - 1)] < u        # one step at most, where the slice has one
    hard = many[b]
    if hard.any():
        idx[hard] = np.searchsorted(cdf, u[hard])
    return idx


class Draws:
    """The bootstrap draws of one comparison: for each (sample count n, side), N_BOOT indices
    into the sorted samples whose values are the bootstrap medians, drawn from ``rng`` the
    first time they are asked for and given again to every later pair of that n and side.

    ``index(n, side)`` is (low, high): the median's order statistic for odd n (high None), the
    two middle ones, drawn from the same uniforms, for even n (compare.bootstrap_medians
    averages them). HEAD and BASE have draws of their own, so the two sides of a pair are
    independent even where their sample counts are equal. The last KEEP are held; an older
    one is drawn again if it is asked for (from wherever the generator then is, the same in
    the one-pair and the batched path, which ask in the same order).
    """

    def __init__(self, rng: np.random.Generator, n_boot: int):
        self.rng, self.n_boot = rng, n_boot
        self._held: OrderedDict = OrderedDict()

    def index(self, n: int, side: int) -> tuple:
        key = (n, side)
        got = self._held.get(key)
        if got is not None:
            self._held.move_to_end(key)
            return got
        u = self.rng.random(self.n_boot)
        low = np.minimum(order_stat_index(n, (n + 1) // 2, u), n - 1)
        high = None if n % 2 else np.minimum(order_stat_index(n, n // 2 + 1, u), n - 1)
        got = self._held[key] = (low, high)
        if len(self._held) > KEEP:
            self._held.popitem(last=False)
        return got


def medians_at(xs: np.ndarray, draw: tuple) -> np.ndarray:
    """The bootstrap medians of sorted samples ``xs`` (1-D, or one row per pair) at a draw of
    Draws.index."""
    low, high = draw
    m = xs[..., low]
    return m if high is None else (m + xs[..., high]) / 2
