"""How often `kernelmark compare` cries wolf, and how often it catches a real slowdown.

Synthetic timings with known shifts, modelled on what docs/design.md measured:

* within a run: lognormal jitter (sigma_w drawn per case, 1-5%) and interruptions (2% of
  samples slowed by 1 + Exp(0.5));
* between runs: every process lands at its own offset, lognormal sigma_p (0.5% for the
  256x256 and 512x512 matmuls docs/design.md measured across fresh processes; GPU users report
  several percent), or in one of two clusters (the tiny CPU matmuls: about 20% apart);
* sample counts from the timing engine's stopping rule: batches of 5, 10, 20, ... until the
  median's 95% CI half-width is within 1% (at least 10 samples), or the budget (311 here).

Each trial compares BASE and HEAD with ``kernelmark.reports.compare.compare_samples``, the
function `kernelmark compare` uses. A/A trials have no shift: any `slower` is a false
alarm. Shifted trials plant a slowdown: `slower` is a catch.

    python scripts/compare_power.py [--trials 2000] [--seed 1]
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kernelmark.harness import stats  # noqa: E402
from kernelmark.reports.compare import compare_samples  # noqa: E402

# Cumulative sample counts at which the engine checks its stopping rule (batches 5, 10, 20, ...).
CHECKPOINTS = (15, 35, 75, 155, 311)
TARGET_CI = 0.01


@dataclass(frozen=True)
class Scenario:
    name: str
    threshold: float
    sigma_p: float = 0.005        # per-process offset (lognormal sigma)
    clusters: float = 0.0         # two clusters this far apart instead (0: normal offsets)
    rounds: int = 1               # processes per side (kernelmark ab --rounds)
    alpha: float = 0.01


SCENARIOS = (
    Scenario("1 process/side, sigma_p 0.5%, T 3%", 0.03),
    Scenario("1 process/side, sigma_p 0.5%, T 5% (default)", 0.05),
    Scenario("1 process/side, sigma_p 1%, T 5%", 0.05, sigma_p=0.01),
    Scenario("1 process/side, sigma_p 2%, T 5%", 0.05, sigma_p=0.02),
    Scenario("ab 3 rounds, sigma_p 2%, T 5%", 0.05, sigma_p=0.02, rounds=3),
    Scenario("ab 5 rounds, sigma_p 2%, T 5%", 0.05, sigma_p=0.02, rounds=5),
    Scenario("ab 5 rounds, sigma_p 0.5%, T 3%", 0.03, rounds=5),
    Scenario("1 process/side, 2 clusters 20%, T 5%", 0.05, clusters=0.2),
    Scenario("ab 3 rounds, 2 clusters 20%, T 5%", 0.05, clusters=0.2, rounds=3),
    Scenario("ab 5 rounds, 2 clusters 20%, T 5%", 0.05, clusters=0.2, rounds=5),
)


def stopping_counts(x: np.ndarray) -> np.ndarray:
    """Samples the stopping rule keeps for each row of x (rows of CHECKPOINTS[-1] samples)."""
    n = np.full(x.shape[0], CHECKPOINTS[-1])
    done = np.zeros(x.shape[0], bool)
    for c in CHECKPOINTS:
        s = np.sort(x[:, :c], axis=1)
        lo, hi = stats.median_ci_ranks(c)
        med = np.median(s, axis=1)
        rel = np.maximum(med - s[:, lo], s[:, hi] - med) / med
        stop = ~done & (rel <= TARGET_CI)
        n[stop] = c
        done |= stop
    return n


def draw_side(rng: np.random.Generator, sc: Scenario, trials: int, sigma_w: np.ndarray, shift: float) -> list:
    """One side of every trial: (pooled samples, per-process sizes) per trial."""
    m = CHECKPOINTS[-1]
    if sc.clusters:
        offset = np.log1p(sc.clusters) * rng.integers(0, 2, (trials, sc.rounds))
    else:
        offset = rng.normal(0.0, sc.sigma_p, (trials, sc.rounds))
    z = rng.standard_normal((trials, sc.rounds, m)) * sigma_w[:, None, None]
    x = 100.0 * (1 + shift) * np.exp(offset[:, :, None] + z)
    hit = rng.random(x.shape) < 0.02
    x = np.where(hit, x * (1 + rng.exponential(0.5, x.shape)), x)
    counts = stopping_counts(x.reshape(-1, m)).reshape(trials, sc.rounds)
    return [(np.concatenate([x[t, r, :counts[t, r]] for r in range(sc.rounds)]), counts[t].tolist())
            for t in range(trials)]


def verdict_rates(sc: Scenario, shift: float, trials: int, seed: int) -> dict:
    """Fraction of trials given each verdict when HEAD is ``shift`` slower than BASE."""
    rng = np.random.default_rng(seed)
    sigma_w = rng.uniform(0.01, 0.05, trials)
    base = draw_side(rng, sc, trials, sigma_w, 0.0)
    head = draw_side(rng, sc, trials, sigma_w, shift)
    out: dict = {}
    for (a, ga), (b, gb) in zip(base, head):
        v = compare_samples(a, b, sc.threshold, sc.alpha, ga if sc.rounds > 1 else None,
                            gb if sc.rounds > 1 else None, n_boot=2000, rng=rng).verdict
        out[v] = out.get(v, 0) + 1 / trials
    out["median_n"] = float(np.median([len(a) / sc.rounds for a, _ in base]))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    print(f"{args.trials} trials per cell; rates of the `slower` verdict (and `noisy` in A/A)\n")
    print(f"{'scenario':<46} {'samples':>7} {'A/A slower':>10} {'A/A noisy':>9} "
          f"{'5% caught':>9} {'10% caught':>10}")
    for i, sc in enumerate(SCENARIOS):
        aa = verdict_rates(sc, 0.0, args.trials, args.seed + 10 * i)
        s5 = verdict_rates(sc, 0.05, args.trials, args.seed + 10 * i + 1)
        s10 = verdict_rates(sc, 0.10, args.trials, args.seed + 10 * i + 2)
        print(f"{sc.name:<46} {aa['median_n']:>7.0f} {100 * aa.get('slower', 0):>9.2f}% "
              f"{100 * aa.get('noisy', 0):>8.1f}% {100 * s5.get('slower', 0):>8.1f}% "
              f"{100 * s10.get('slower', 0):>9.1f}%", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
