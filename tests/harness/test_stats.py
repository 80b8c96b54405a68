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


# ---------------------------------------------------------------- stalls

def _clean_cpu(rng, n, floor=6.0, sigma=0.03):
    """A quiet CPU run: a floor, lognormal jitter, and a thin tail of interruptions."""
    xs = [floor * rng.lognormvariate(0, sigma) for _ in range(n)]
    for i in rng.sample(range(n), max(1, n // 50)):
        xs[i] *= 1 + rng.expovariate(1.0)          # 2% of samples interrupted, up to a few x
    return xs


def test_quiet_cpu_and_tight_gpu_sample_sets_are_not_stalled():
    rng = random.Random(3)
    for n in (5, 11, 35, 155, 1000):
        for _ in range(100):
            assert stats.stall_reason(_clean_cpu(rng, n)) is None
            gpu = [100.0 * rng.lognormvariate(0, 0.005) for _ in range(n)]
            assert stats.stall_reason(gpu) is None
    # Two clusters 20% apart (what docs/design.md saw between processes) are not a stall either.
    assert stats.stall_reason([6.0] * 60 + [7.2] * 40) is None


def test_a_stall_cluster_holding_the_median_is_caught_though_the_ci_is_narrow():
    # The GEMM: ~6 us when quiet; most calls waited ~8 ms at a barrier.
    rng = random.Random(4)
    xs = [6.0 * rng.lognormvariate(0, 0.02) for _ in range(30)] + \
        [7985.0 * rng.lognormvariate(0, 0.002) for _ in range(70)]
    assert stats.ci_relative_width(xs) < 0.01             # the CI alone calls it converged
    why = stats.stall_reason(xs)
    assert why is not None and why.startswith("stalls: median") and "x the fastest samples" in why


def test_a_bimodal_set_with_a_quarter_far_above_is_caught_and_a_thin_tail_is_not():
    rng = random.Random(5)
    low = [10.0 * rng.lognormvariate(0, 0.02) for _ in range(70)]
    why = stats.stall_reason(low + [25.0 * rng.lognormvariate(0, 0.02) for _ in range(30)])
    assert why is not None and why.startswith("bimodal: 30 of 100 samples")
    assert stats.stall_reason(low + [25.0] * 10) is None        # 1 in 8: the median stands


def test_every_sample_stalled_alike_is_caught_only_by_the_measured_waits():
    xs = [8000.0 + i for i in range(20)]              # min ~ median: the samples cannot tell
    assert stats.stall_reason(xs) is None
    assert stats.stall_reason(xs, [1.6] * 20).startswith("stalls: all 20 samples waited for a CPU")
    assert stats.stall_reason(xs, [0.0] * 17 + [0.9] * 3) is None     # a few preempted samples


def test_samples_that_waited_count_where_they_move_the_median():
    rng = random.Random(7)
    quick = [6.0 * rng.lognormvariate(0, 0.02) for _ in range(30)]
    slow = [8000.0 * rng.lognormvariate(0, 0.002) for _ in range(70)]
    why = stats.stall_reason(quick + slow, [0.0] * 30 + [1.5] * 70)
    assert why.startswith("stalls: 70 of 100 samples waited for a CPU") and "that of the 30 that did not" in why
    # Half the samples preempted, but no slower for it (a short preemption in a long sample).
    assert stats.stall_reason([10.0 + 0.01 * i for i in range(10)], [0.0, 0.5] * 5) is None


def test_process_median_weighs_each_process_equally():
    # One quick process took 1000 samples in its budget, two stalled ones 5 each: by sample
    # count the pooled median is the quick one's; by process it is the stalled majority's.
    xs = [10.0] * 1000 + [100.0] * 5 + [110.0] * 5
    assert stats.quantile(sorted(xs), 0.5) == 10.0
    assert stats.process_median(xs, [1000, 5, 5]) == 100.0
    assert stats.process_median(xs, None) == 10.0
    assert stats.process_median([1.0, 2.0, 3.0], [3]) == 2.0


def test_process_median_agrees_with_the_comparisons():
    from kernelmark.reports import compare
    rng = random.Random(6)
    for _ in range(50):
        groups = [rng.randint(1, 40) for _ in range(rng.randint(2, 6))]
        xs = [rng.lognormvariate(0, 0.3) for _ in range(sum(groups))]
        assert stats.process_median(xs, groups) == compare.process_median(xs, groups)
