"""The statistics of many timed pairs at once, for `compare` of a large run: the same numbers
compare.compare_samples gives one pair at a time, exactly, in a fraction of the time.

One pair costs about 2 ms, nearly all of it numpy's fixed cost per call (a sort, two bootstrap
draws, a quantile, a rank test: some twenty small calls), so 40,000 timed pairs took over a
minute. Here pairs wait in a ``Batch`` until BATCH of them are there, and each step is one
call over all the pairs of one sample count (a run has few: the timing engine's stopping rule
leaves 5, 35, 75, 155, ... and the budget cap).

Exactly the same numbers, not nearly: the bootstrap draws are the comparison's
(resample.Draws, one per sample count and side, shared by every pair of that count), asked
for as each pair is added, in the order the one-pair code asks (HEAD's, then BASE's), so the
generator is drawn from in the same order; the bootstrap medians are the same order
statistics of the same sorted samples, the medians numpy's own (the same arithmetic), and the
interval numpy's quantile of the same ratios, from the few order statistics it reads
(reports/bootci.py). The rank test's rank sums are sums of half-integers, exact in any order.
tests/reports/test_streaming.py checks pairs, verdicts and output against the one-pair code.

Pairs the batch does not take (a side pooled from several processes: a cluster bootstrap)
are computed one at a time, as they come, with the same draws (``Batch.draws``) for their
unpooled side.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from kernelmark.reports import bootci, ranktest, resample

# Pairs held at once. Each step then works on arrays of BATCH x 2n (the rank test's pooled
# samples; 64 x 2000 doubles, 1 MB: they stay in cache): 256 took 1.7x as long, measured on
# 3,942 pairs of 1,000 samples (1.65 s against 0.93 s; 32 was no faster than 64).
BATCH = 64


class Batch:
    """Pairs waiting for their statistics; ``done(ratio, ci_low, ci_high, p)`` is called for
    each, in the order they were added, when the batch is flushed (full, or by flush())."""

    def __init__(self, alpha: float, n_boot: int, rng: np.random.Generator,
                 draws: resample.Draws = None):
        self.alpha, self.n_boot, self.rng = alpha, n_boot, rng
        self.draws = draws or resample.Draws(rng, n_boot)
        self._base: list = []
        self._head: list = []
        self._draws: list = []      # per pair: (HEAD's draw, BASE's draw)
        self._done: list = []
        self._plans = bootci.Plans(alpha)     # the interval of each (HEAD draw, BASE draw)

    def add(self, base, head, done: Callable) -> None:
        a, b = np.asarray(base, dtype=float), np.asarray(head, dtype=float)
        self._draws.append((self.draws.index(b.size, resample.HEAD), self.draws.index(a.size, resample.BASE)))
        self._base.append(a)
        self._head.append(b)
        self._done.append(done)
        if len(self._done) >= BATCH:
            self.flush()

    def flush(self) -> None:
        if not self._done:
            return
        base, head, draws, done = self._base, self._head, self._draws, self._done
        self._base, self._head, self._draws, self._done = [], [], [], []
        # Pairs of one (HEAD draw, BASE draw) -- of one sample count each side -- at once.
        groups: dict = {}
        for i, (dh, db) in enumerate(draws):
            groups.setdefault((id(dh), id(db)), (dh, db, []))[2].append(i)
        out = [None] * len(done)
        for dh, db, at in groups.values():
            xs_b, xs_a = np.stack([head[i] for i in at]), np.stack([base[i] for i in at])
            xs_b.sort(axis=1)
            xs_a.sort(axis=1)
            med_b, med_a = _median_of_sorted(xs_b), _median_of_sorted(xs_a)
            lo, hi = self._plans.get(dh, db).interval(xs_b, xs_a)
            # HEAD against BASE; compare.mann_whitney_p's 1 where a side has one sample
            p = (ranktest.mann_whitney_p_sorted_rows(xs_b, xs_a) if min(xs_a.shape[1], xs_b.shape[1]) >= 2
                 else [1.0] * len(at))
            for j, i in enumerate(at):
                out[i] = (float(med_b[j]) / float(med_a[j]), float(lo[j]), float(hi[j]), p[j])
        for d, st in zip(done, out):
            d(*st)


def _median_of_sorted(xs: np.ndarray) -> np.ndarray:
    """np.median(xs, axis=1) of rows already sorted, without its partition: the middle value,
    or the mean of the middle two as numpy takes it ((a + b) / 2), so the same bits."""
    h = xs.shape[1] // 2
    if xs.shape[1] % 2:
        return xs[:, h].copy()
    return (xs[:, h - 1] + xs[:, h]) / 2
