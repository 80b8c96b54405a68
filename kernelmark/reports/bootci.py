"""The bootstrap interval of many pairs that share their draws, without forming every ratio:
what pairstats.Batch spends most of its time on, made cheap, with the same numbers exactly.

A pair's interval is ``np.quantile(boot_head / boot_base, [alpha/2, 1 - alpha/2])`` over
N_BOOT ratios: 2 x N_BOOT gathers and a partition of N_BOOT values per pair (8 ms and 6 ms
a batch of 64 pairs of 1,000 samples). Two facts make that cheaper:

* A draw (resample.Draws) holds N_BOOT (low, high) indices into the sorted samples, but few
  distinct ones (about 100 for n = 1,000: the median's order statistic varies little). So
  the distinct bootstrap medians are computed once per pair ((x[low] + x[high]) / 2, the
  arithmetic of resample.medians_at) and each draw is an index into them.
* The interval needs only a few order statistics of the ratios: for N_BOOT = 4,000 and
  alpha = 0.01 the 20th and 21st smallest and largest. The distinct medians of a sorted
  sample are non-decreasing in their index (the draws' indices are), so a draw (b, a) --
  HEAD's median b over BASE's median a -- is at most as large as draw (b', a') whenever
  b <= b' and a >= a', for every pair at once. A draw that more than k other draws of
  distinct (b, a) are so below can never be among the k + 1 smallest ratios, whatever the
  samples; the draws kept (about 120 of 4,000) hold the k + 1 smallest ratios, ties
  included. (If an excluded draw e had a value below the (k+1)-th smallest, take e minimal
  in that order among such: the draws strictly below it, more than k, are all kept and all
  at most its value: a contradiction.) The same from above for the largest.

The quantile is then numpy's from those order statistics: numpy's indices ((n - 1) q, its
floor and the next) and its interpolation (``_lerp`` of numpy 2.x, restated here; the tests
compare with np.quantile, so a numpy that interpolates otherwise fails them). Where the
draws' medians are not ordered so, or too few draws would be left out, it is np.quantile.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

KEEP = 64               # plans held: one per (HEAD draw, BASE draw) of the comparison's sample counts


class _Side:
    """A draw (low, high) as its distinct (low, high) and, for each of the N_BOOT values,
    which of those it is."""

    def __init__(self, draw: tuple):
        low, high = draw
        self.draw = draw        # held, so that the id keying the plan cache is not reused
        self.odd = high is None
        hi = low if high is None else high
        width = int(max(low.max(), hi.max())) + 1
        key, self.which = np.unique(low.astype(np.int64) * width + hi, return_inverse=True)
        self.low, self.high = key // width, key % width
        # The distinct medians are non-decreasing in their index where both ends are.
        self.ordered = bool((np.diff(self.low) >= 0).all() and (np.diff(self.high) >= 0).all())

    def medians(self, xs: np.ndarray) -> np.ndarray:
        """The distinct bootstrap medians of each row of sorted samples."""
        m = xs[:, self.low]
        return m if self.odd else (m + xs[:, self.high]) / 2


class Plan:
    """What the interval of pairs of one (HEAD draw, BASE draw) needs: the distinct medians
    of each side, and the draws that can hold the order statistics the quantile reads."""

    def __init__(self, head_draw: tuple, base_draw: tuple, alpha: float):
        self.head, self.base = _Side(head_draw), _Side(base_draw)
        n = self.head.which.size
        self.q = np.array([alpha / 2, 1 - alpha / 2])
        vi = (n - 1) * self.q                     # np.quantile's "linear" virtual indices
        prev = np.floor(vi)
        self.gamma = (vi - prev).reshape(2, 1)
        prev = prev.astype(np.intp)
        nxt = prev + 1
        top = vi >= n - 1                         # as numpy: at or past the end, the last value
        prev[top], nxt[top] = n - 1, n - 1
        self.prev, self.next = prev, nxt
        self.low_draws = self.high_draws = None
        k_low, k_high = int(max(prev[0], nxt[0])), int(n - 1 - min(prev[1], nxt[1]))
        if not (self.head.ordered and self.base.ordered) or k_low + k_high + 2 > n // 4:
            return                                # np.quantile of every ratio
        b, a = self.head.which, self.base.which
        # counts[i, j]: the draws whose HEAD median is the i-th and BASE median the j-th
        counts = np.zeros((self.head.low.size, self.base.low.size), np.int64)
        np.add.at(counts, (b, a), 1)
        # below[i, j]: draws with HEAD index <= i and BASE index >= j (ratios at most this one's)
        below = np.cumsum(np.cumsum(counts[:, ::-1], axis=0), axis=1)[:, ::-1] - counts
        above = np.cumsum(np.cumsum(counts[::-1, :], axis=0), axis=1)[::-1, :] - counts
        low = np.flatnonzero(below[b, a] <= k_low)
        high = np.flatnonzero(above[b, a] <= k_high)
        if low.size + high.size > n // 2:
            return
        self.low_draws, self.high_draws = (b[low], a[low]), (b[high], a[high])

    def interval(self, head_sorted: np.ndarray, base_sorted: np.ndarray) -> tuple:
        """(lower ends, upper ends): np.quantile(boot_head / boot_base, q, axis=1) of each row
        of sorted samples (rows: pairs; one sample count per side)."""
        mb, ma = self.head.medians(head_sorted), self.base.medians(base_sorted)
        # The order rests on finite medians and positive BASE ones (a run file's times are);
        # anything else, as numpy would have it.
        if self.low_draws is None or not (np.isfinite(mb).all() and np.isfinite(ma).all() and (ma > 0).all()):
            b, a = self.head.which, self.base.which
            lo, hi = np.quantile(mb[:, b] / ma[:, a], self.q, axis=1, overwrite_input=True)
            return lo, hi
        (bl, al), (bh, ah) = self.low_draws, self.high_draws
        low = np.sort(mb[:, bl] / ma[:, al], axis=1)      # holds the smallest ratios, ranks 0, 1, ...
        high = np.sort(mb[:, bh] / ma[:, ah], axis=1)     # the largest: rank r of all is r - skip here
        skip = self.head.which.size - high.shape[1]
        prev = np.stack([low[:, self.prev[0]], high[:, self.prev[1] - skip]])
        nxt = np.stack([low[:, self.next[0]], high[:, self.next[1] - skip]])
        # numpy's _lerp: from the lower value, or from the upper where gamma >= 0.5
        diff = nxt - prev
        out = prev + diff * self.gamma
        np.subtract(nxt, diff * (1 - self.gamma), out=out, where=self.gamma >= 0.5)
        return out[0], out[1]


class Plans:
    """The plans of one comparison, made once per (HEAD draw, BASE draw)."""

    def __init__(self, alpha: float):
        self.alpha = alpha
        self._held: OrderedDict = OrderedDict()

    def get(self, head_draw: tuple, base_draw: tuple) -> Plan:
        key = (id(head_draw), id(base_draw))
        plan = self._held.get(key)
        if plan is None or plan.head.draw is not head_draw or plan.base.draw is not base_draw:
            plan = self._held[key] = Plan(head_draw, base_draw, self.alpha)
            if len(self._held) > KEEP:
                self._held.popitem(last=False)
        else:
            self._held.move_to_end(key)
        return plan
