"""reports/bootci.py gives np.quantile of every bootstrap ratio, exactly, from the few draws
that can hold the order statistics the quantile reads."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernelmark.reports import bootci, compare, pairstats, resample


def _want(head, base, dh, db, alpha):
    """What pairstats computed before: every ratio, and numpy's quantile of them."""
    ratios = resample.medians_at(head, dh) / resample.medians_at(base, db)
    return np.quantile(ratios, [alpha / 2, 1 - alpha / 2], axis=1)


@settings(max_examples=60, deadline=None, database=None)
@given(st.sampled_from([1, 2, 3, 5, 8, 35, 36, 155, 999, 1000]), st.sampled_from([1, 2, 5, 36, 155, 1000]),
       st.sampled_from([100, 1000, 4000]), st.sampled_from([0.0, 0.001, 0.01, 0.05, 0.2, 0.5]),
       st.sampled_from([None, 1, 3]), st.integers(0, 2**32 - 1))
def test_the_interval_is_numpys_quantile_of_every_ratio(nh, nb, n_boot, alpha, digits, seed):
    rng = np.random.default_rng(seed)
    draws = resample.Draws(rng, n_boot)
    dh, db = draws.index(nh, resample.HEAD), draws.index(nb, resample.BASE)
    head, base = rng.lognormal(0.02, 0.05, (6, nh)), rng.lognormal(0, 0.05, (6, nb))
    if digits is not None:                  # ties, many
        head, base = np.round(head, digits), np.round(base, digits)
    head[0], base[0] = 2.0, 2.0             # a row all equal
    head, base = np.sort(head, axis=1), np.sort(base, axis=1)
    lo, hi = bootci.Plan(dh, db, alpha).interval(head, base)
    want = _want(head, base, dh, db, alpha)
    assert np.array_equal(lo, want[0]) and np.array_equal(hi, want[1])


def test_the_few_draws_are_used_where_they_can_be():
    """For compare's 4,000 draws and alpha 0.01, about 120 draws a side are read, not 4,000
    (a regression to the full quantile would not be seen otherwise)."""
    draws = resample.Draws(np.random.default_rng(1), compare.N_BOOT)
    plan = bootci.Plan(draws.index(1000, resample.HEAD), draws.index(1000, resample.BASE), 0.01)
    assert plan.low_draws is not None and 21 <= plan.low_draws[0].size < 400 and plan.high_draws[0].size < 400
    # wider intervals read more order statistics: past a quarter of the draws, np.quantile itself
    assert bootci.Plan(draws.index(1000, resample.HEAD), draws.index(1000, resample.BASE), 0.5).low_draws is None


def test_draws_whose_medians_are_not_ordered_take_numpys_quantile():
    """The shortcut rests on the distinct medians rising with their index: a draw made
    otherwise (low and high not rising together) gets the full quantile, the same numbers."""
    rng = np.random.default_rng(5)
    low = rng.integers(0, 9, 500)
    high = 9 - low                          # falls as low rises
    plan = bootci.Plan((low, high), (low, high), 0.01)
    assert not plan.head.ordered and plan.low_draws is None
    x, y = np.sort(rng.lognormal(0, 0.1, (4, 10)), axis=1), np.sort(rng.lognormal(0, 0.1, (4, 10)), axis=1)
    lo, hi = plan.interval(x, y)
    want = _want(x, y, (low, high), (low, high), 0.01)
    assert np.array_equal(lo, want[0]) and np.array_equal(hi, want[1])


@pytest.mark.parametrize("na, nb", [(1, 5), (5, 1), (1, 1), (2, 2)])
def test_a_side_of_one_sample_has_the_rank_tests_p_of_one(na, nb):
    rng = np.random.default_rng(na * 10 + nb)
    pairs = [(rng.lognormal(0, 0.1, na).tolist(), rng.lognormal(0.5, 0.1, nb).tolist()) for _ in range(3)]
    got = []
    batch = pairstats.Batch(0.01, compare.N_BOOT, np.random.default_rng(0))
    for a, b in pairs:
        batch.add(a, b, lambda *st: got.append(st))
    batch.flush()
    assert [st[3] for st in got] == [compare.mann_whitney_p(a, b) for a, b in pairs]


def test_the_order_statistic_cdf_is_scipy_stats_binom_sf():
    """resample takes binom.sf from the ufunc scipy.stats calls for it (scipy.stats costs a
    second to import): the same numbers, for every sample count a comparison meets."""
    from scipy.stats import binom
    resample.order_stat_cdf.cache_clear()
    for n in [1, 2, 3, 4, 5, 8, 35, 36, 75, 155, 999, 1000, 1001, 4000]:
        for k in {(n + 1) // 2, n // 2 + 1, 1, n}:
            want = binom.sf(k - 1, n, np.arange(1, n + 1) / n)
            assert np.array_equal(resample.order_stat_cdf(n, k), want), (n, k)


def test_samples_that_are_not_positive_times_take_numpys_quantile():
    """A zero or an infinity (never in a run file: the checks refuse them) would break the
    order the shortcut rests on: numpy's quantile decides, NaN and all."""
    draws = resample.Draws(np.random.default_rng(3), compare.N_BOOT)
    dh, db = draws.index(35, resample.HEAD), draws.index(35, resample.BASE)
    rng = np.random.default_rng(4)
    head, base = np.sort(rng.lognormal(0, 0.1, (3, 35)), axis=1), np.sort(rng.lognormal(0, 0.1, (3, 35)), axis=1)
    base[0, :20], head[1, 15:] = 0.0, np.inf
    head[2, :20], base[2, :20] = 0.0, 0.0          # 0 / 0: NaN ratios, which numpy lets through
    with np.errstate(divide="ignore", invalid="ignore"):
        lo, hi = bootci.Plan(dh, db, 0.01).interval(head, base)
        want = _want(head, base, dh, db, 0.01)
    assert np.array_equal(lo, want[0], equal_nan=True) and np.array_equal(hi, want[1], equal_nan=True)
