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
statistics of the same sorted samples, and medians and quantiles are numpy's own along an
axis. The rank test's rank sums are sums of half-integers, exact in any order.
tests/reports/test_streaming.py checks pairs, verdicts and output against the one-pair code.

Pairs the batch does not take (a side pooled from several processes: a cluster bootstrap)
are computed one at a time, as they come, with the same draws (``Batch.draws``) for their
unpooled side.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from kernelmark.reports import ranktest, resample

# Pairs held at once. Each step then works on arrays of BATCH x N_BOOT (64 x 4000 doubles,
# 2 MB: they stay in cache, and the allocator reuses them): 256 took 1.7x as long, measured
# on 3,942 pairs of 1,000 samples (1.65 s against 0.93 s; 32 was no faster than 64).
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
        med_b, boot_b, head = _medians(head, [d[0] for d in draws], self.n_boot)
        med_a, boot_a, base = _medians(base, [d[1] for d in draws], self.n_boot)
        lo, hi = np.quantile(boot_b / boot_a, [self.alpha / 2, 1 - self.alpha / 2], axis=1)
        p = _rank_tests(base, head)
        for i, d in enumerate(done):
            d(float(med_b[i]) / float(med_a[i]), float(lo[i]), float(hi[i]), p[i])


def _medians(arrays: list, draws: list, n_boot: int) -> tuple:
    """(median of each array, its n_boot bootstrap medians at its draw, the array sorted), as
    compare.bootstrap_medians gives them: one sort and one gather for all the arrays of a draw
    (of a sample count)."""
    med = np.empty(len(arrays))
    boot = np.empty((len(arrays), n_boot))
    ordered = [None] * len(arrays)
    rows: dict = {}
    for i, d in enumerate(draws):
        rows.setdefault(id(d), (d, []))[1].append(i)
    for d, at in rows.values():
        xs = np.sort(np.stack([arrays[i] for i in at]), axis=1)
        for i, row in zip(at, xs):
            ordered[i] = row
        if len(at) == len(arrays):                # the usual batch: one sample count
            at = slice(None)
        med[at] = np.median(xs, axis=1)
        boot[at] = resample.medians_at(xs, d)
    return med, boot, ordered


def _rank_tests(base: list, head: list) -> list:
    """compare.mann_whitney_p of each pair (HEAD against BASE), from the samples sorted."""
    p = [1.0] * len(base)
    sizes: dict = {}
    for i, (a, b) in enumerate(zip(base, head)):
        if a.size >= 2 and b.size >= 2:
            sizes.setdefault((b.size, a.size), []).append(i)
    for rows in sizes.values():
        x = np.stack([head[i] for i in rows])
        y = np.stack([base[i] for i in rows])
        for i, v in zip(rows, ranktest.mann_whitney_p_sorted_rows(x, y)):
            p[i] = v
    return p
