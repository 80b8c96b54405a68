"""A whole step and its kernels timed in alternating rounds, so both see the same machine.

Why: a VM's speed drifts by 10-20% over minutes (docs/model-step.md measured it: the same
decode step's median fell 19% between two runs of the same code on a quiet machine). A
kernel sum taken from cases measured minutes before a step then compares two machines, and
its ratio to the step moves more than the few percent it is read for. Here each round times
one whole step and each distinct kernel of it once (kernels first in every other round), and
the ratio step / kernel sum is taken per round: drift slower than a round cancels in it. The
median of the per-round ratios is reported with the distribution-free interval of
kernelmark.harness.stats.

Caches: between two calls of one kernel a whole step and the other kernels ran, so each
call starts as cold as the runner's rotated input sets leave its cases (the rest of the
model's weights evicted this kernel's). A kernel the step calls n times counts n times its
one call.

CPU only: there a call returns when its work is done, so the host clock times each call
(on a GPU each call would need its own synchronize, whose latency is not the kernel's).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

from kernelmark.harness import stats, timing

MIN_ROUNDS = 5          # never fewer, whatever the budget
TARGET_REL = 0.01       # stop early once the ratio's median is known to ±1%
MAX_ROUNDS = 61


@dataclass
class Kernel:
    name: str
    fn: Callable[[Any], Any]
    inputs: Any
    count: float        # calls of it in one step


def _now_ns() -> int:
    return time.perf_counter_ns()


def rounds(step: Callable[[], Any], kernels: list, budget_s: float, want: int = 15,
           clock_factory: Callable[[], Any] = timing._WaitClock) -> dict:
    """Alternate ``step()`` with one call of each kernel; at least ``want`` rounds while the
    budget allows (MIN_ROUNDS always), more until the ratio's median is known to TARGET_REL
    or the budget is spent. A round whose threads waited for a CPU over stats.WAIT_SHARE of
    its time stalled; the figures come from the rounds that did not, where 5 or more did not."""
    if not kernels:
        raise ValueError("paired rounds need at least one kernel")
    step()
    for k in kernels:
        k.fn(k.inputs)          # one warm-up pass outside timing
    clock = clock_factory()
    steps, sums, stalled, per = [], [], [], [[] for _ in kernels]
    t_end = time.perf_counter() + budget_s
    try:
        while True:
            n = len(steps)
            if n >= MAX_ROUNDS or (n >= MIN_ROUNDS and time.perf_counter() >= t_end):
                break
            if n >= max(want, MIN_ROUNDS) and _rel(steps, sums, stalled) <= TARGET_REL:
                break
            w0, r0 = clock.read(), _now_ns()
            if n % 2:
                total = _kernel_pass(kernels, per)
                step_ns = _timed(step)
            else:
                step_ns = _timed(step)
                total = _kernel_pass(kernels, per)
            wall = max(_now_ns() - r0, 1)
            steps.append(step_ns / 1e3)
            sums.append(total / 1e3)
            stalled.append(max(clock.read() - w0, 0) / wall > stats.WAIT_SHARE)
    finally:
        clock.close()
    return _result(steps, sums, stalled, per, kernels, clock.method)


def _timed(fn) -> int:
    t = _now_ns()
    fn()
    return _now_ns() - t


def _kernel_pass(kernels: list, per: list) -> float:
    total = 0.0
    for k, got in zip(kernels, per):
        ns = _timed(lambda k=k: k.fn(k.inputs))
        got.append(ns / 1e3)
        total += ns * k.count
    return total


def _kept(steps, sums, stalled) -> list:
    clean = [i for i, s in enumerate(stalled) if not s]
    return clean if len(clean) >= MIN_ROUNDS else list(range(len(steps)))


def _rel(steps, sums, stalled) -> float:
    ratios = [steps[i] / sums[i] for i in _kept(steps, sums, stalled) if sums[i] > 0]
    return stats.ci_relative_width(ratios) if len(ratios) >= MIN_ROUNDS else float("inf")


def _result(steps, sums, stalled, per, kernels, method: str) -> dict:
    keep = _kept(steps, sums, stalled)
    ratios = [steps[i] / sums[i] for i in keep]
    med, lo, hi = stats.median_ci(ratios)
    bad = sum(stalled)
    stall: Optional[str] = None
    if bad:
        stall = (f"{bad} of {len(steps)} rounds waited for a CPU over {100 * stats.WAIT_SHARE:.0f}% of their time"
                 + (" (left out)" if len(keep) < len(steps) else " (all kept: fewer than "
                    f"{MIN_ROUNDS} did not)"))
    return {"method": "paired rounds: a step, then each of its kernels once (kernels first every other round), "
                      "ratio per round", "rounds": len(steps), "rounds_used": len(keep), "stall": stall,
            "waited_method": method,
            "step_over_kernel_sum": med, "ci": [lo, hi],
            "step_us": stats.median_ci([steps[i] for i in keep])[0],
            "kernel_sum_us": stats.median_ci([sums[i] for i in keep])[0],
            "samples": {"step_us": [round(x, 3) for x in steps], "kernel_sum_us": [round(x, 3) for x in sums],
                        "stalled": stalled},
            "kernels": [{"name": k.name, "median_us": stats.median_ci([got[i] for i in keep])[0], "count": k.count}
                        for k, got in zip(kernels, per)]}
