"""The statistics of many timed pairs at once, for `compare` of a large run: the same numbers
compare.compare_samples gives one pair at a time, exactly, in a fraction of the time.

One pair costs about 2 ms, nearly all of it numpy's fixed cost per call (a sort, two bootstrap
draws, a quantile, a rank test: some twenty small calls), so 40,000 timed pairs took over a
minute. Here pairs wait in a ``Batch`` until BATCH of them are there, and each step is one
call over all the pairs of one sample count (a run has few: the timing engine's stopping rule
leaves 5, 35, 75, 155, ... and the budget cap).

Exactly the same numbers, not nearly: the generator is drawn from in the order the one-pair
code draws (per pair HEAD's N_BOOT uniforms, then BASE's; ``Generator.random`` gives the same
stream in one call as in many), the bootstrap medians are the same order statistics of the
same sorted samples, and medians and quantiles are numpy's own along an axis. The rank test's
rank sums are sums of half-integers, exact in any order. tests/reports/test_streaming.py
checks pairs, verdicts and output against the one-pair code.

Pairs the batch does not take (a side pooled from several processes: a cluster bootstrap)
are computed one at a time, after the batch is flushed, so the draws stay in order.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from kernelmark.reports import ranktest, resample

BATCH = 256       # pairs held at once: 256 x 2 x 1000 samples is 4 MB


class Batch:
    """Pairs waiting for their statistics; ``done(ratio, ci_low, ci_high, p)`` is called for
    each, in the order they were added, when the batch is flushed (full, or by flush())."""

    def __init__(self, alpha: float, n_boot: int, rng: np.random.Generator):
        self.alpha, self.n_boot, self.rng = alpha, n_boot, rng
        self._base: list = []
        self._head: list = []
        self._done: list = []

    def add(self, base, head, done: Callable) -> None:
        self._base.append(np.asarray(base, dtype=float))
        self._head.append(np.asarray(head, dtype=float))
        self._done.append(done)
        if len(self._done) >= BATCH:
            self.flush()

    def flush(self) -> None:
        if not self._done:
            return
        base, head, done = self._base, self._head, self._done
        self._base, self._head, self._done = [], [], []
        u = self.rng.random((len(done), 2, self.n_boot))     # per pair: HEAD's draws, then BASE's
        med_b, boot_b = _medians(head, u[:, 0])
        med_a, boot_a = _medians(base, u[:, 1])
        lo, hi = np.quantile(boot_b / boot_a, [self.alpha / 2, 1 - self.alpha / 2], axis=1)
        p = _rank_tests(base, head)
        for i, d in enumerate(done):
            d(float(med_b[i]) / float(med_a[i]), float(lo[i]), float(hi[i]), p[i])


def _by_size(arrays: list) -> dict:
    """{n: [indices of the arrays of n samples]}"""
    out: dict = {}
    for i, x in enumerate(arrays):
        out.setdefault(x.size, []).append(i)
    return out


def _medians(arrays: list, u: np.ndarray) -> tuple:
    """(median of each array, its N_BOOT bootstrap medians from the uniforms ``u``), as
    compare.bootstrap_medians draws them through the order statistics."""
    med = np.empty(len(arrays))
    boot = np.empty(u.shape)
    for n, rows in _by_size(arrays).items():
        every = len(rows) == len(arrays)          # the usual batch: one sample count
        at = slice(None) if every else rows
        xs = np.sort(np.stack([arrays[i] for i in rows]), axis=1)
        med[at] = np.median(xs, axis=1)
        ur = u if every else u[rows]
        b = resample.slices(ur)
        lo = np.take_along_axis(xs, np.minimum(resample.order_stat_index(n, (n + 1) // 2, ur, b), n - 1), axis=1)
        if n % 2 == 0:
            hi = np.take_along_axis(xs, np.minimum(resample.order_stat_index(n, n // 2 + 1, ur, b), n - 1),
                                    axis=1)
            lo = (lo + hi) / 2
        boot[at] = lo
    return med, boot


def _rank_tests(base: list, head: list) -> list:
    """compare.mann_whitney_p of each pair (HEAD against BASE)."""
    p = [1.0] * len(base)
    sizes: dict = {}
    for i, (a, b) in enumerate(zip(base, head)):
        if a.size >= 2 and b.size >= 2:
            sizes.setdefault((b.size, a.size), []).append(i)
    for rows in sizes.values():
        x = np.stack([head[i] for i in rows])
        y = np.stack([base[i] for i in rows])
        for i, v in zip(rows, ranktest.mann_whitney_p_rows(x, y)):
            p[i] = v
    return p
