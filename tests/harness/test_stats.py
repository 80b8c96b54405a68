import math
import random

import pytest

from kernelmark.harness import stats


@pytest.mark.parametrize("n, ranks", [(20, (5, 14)), (100, (39, 60)), (10, (1, 8)), (6, (0, 5))])
def test_median_ci_ranks_match_binomial_tables(n, ranks):
    # Published distribution-free CIs for the median (e.g. Conover, Practical
    # Nonparametric Statistics): n=20 -> x(6)..x(15), n=100 -> x(40)..x(61), 1-based.
    assert stats.median_ci_ranks(n) == ranks


def test_too_few_samples_give_the_whole_range():
    assert stats.median_ci_ranks(5) == (0, 4)


@pytest.mark.parametrize("dist", ["exp", "lognormal"])
def test_median_ci_covers_the_true_median_about_95_percent(dist):
    rng = random.Random(7)
    true_median = math.log(2) if dist == "exp" else 1.0
    trials, hits = 1500, 0
    for _ in range(trials):
        xs = [rng.expovariate(1.0) if dist == "exp" else rng.lognormvariate(0, 0.5) for _ in range(40)]
        _, lo, hi = stats.median_ci(xs)
        hits += lo <= true_median <= hi
    # Exact order-statistic intervals are conservative: coverage >= 95%, and not absurdly so.
    assert 0.94 <= hits / trials <= 0.995


def test_normal_approximation_agrees_with_exact_ranks_near_the_switch():
    lo_exact, hi_exact = stats.median_ci_ranks(2000)
    lo_approx, hi_approx = stats.median_ci_ranks(2001)
    assert abs(lo_exact - lo_approx) <= 2 and abs(hi_exact - hi_approx) <= 3


def test_summary_fields_on_known_samples():
    s = stats.summarize([1.0, 2.0, 3.0, 4.0, 100.0])
    assert s.n == 5 and s.median_us == 3.0 and s.min_us == 1.0 and s.max_us == 100.0
    assert s.mean_us == pytest.approx(22.0)
    assert s.iqr_us == pytest.approx(2.0)
    assert s.samples_us == [1.0, 2.0, 3.0, 4.0, 100.0]


def test_ci_width_shrinks_with_more_samples():
    rng = random.Random(1)
    few = [10 + rng.gauss(0, 1) for _ in range(20)]
    many = [10 + rng.gauss(0, 1) for _ in range(2000)]
    assert stats.ci_relative_width(many) < stats.ci_relative_width(few)


def test_stored_samples_are_capped_but_span_the_run():
    xs = [float(i) for i in range(10 * stats.MAX_STORED_SAMPLES)]
    s = stats.summarize(xs)
    assert len(s.samples_us) == stats.MAX_STORED_SAMPLES
    assert s.samples_us[0] == 0.0 and s.samples_us[-1] > 0.9 * xs[-1]
    assert s.n == len(xs)
