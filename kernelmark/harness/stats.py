"""Statistics of timing samples: the median, its confidence interval, and the summary a
record stores.

The confidence interval of the median is distribution-free: the order statistics
x(j), x(k) such that P(j <= B < k) >= level for B ~ Binomial(n, 1/2), the number of
samples below the true median. Timing samples are skewed (a floor with a long tail of
interruptions), so no normality is assumed.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Optional

# Samples kept in a record: enough for a later rank test or bootstrap, bounded in size.
MAX_STORED_SAMPLES = 1000


def _binom_cdf_table(n: int) -> list:
    """P(B <= i) for B ~ Binomial(n, 1/2), i = 0..n, computed in log space."""
    logs = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) - n * math.log(2)
            for i in range(n + 1)]
    cdf, acc = [], 0.0
    for lp in logs:
        acc += math.exp(lp)
        cdf.append(min(acc, 1.0))
    return cdf


def median_ci_ranks(n: int, level: float = 0.95) -> tuple:
    """0-based ranks (lo, hi) of the order statistics bounding the median's CI.

    For n < 6 no interval reaches 95%: (0, n-1), the whole range, is returned.
    """
    if n <= 0:
        raise ValueError("no samples")
    alpha = 1.0 - level
    if n > 2000:
        # Normal approximation to the binomial; exact enough here and O(1).
        z = _z(1 - alpha / 2)
        half = z * math.sqrt(n) / 2
        lo = max(int(math.floor(n / 2 - half)) - 1, 0)
        hi = min(int(math.ceil(n / 2 + half)), n - 1)
        return lo, hi
    cdf = _binom_cdf_table(n)
    # [x(d), x(n-d+1)] (1-based) covers the median with probability 1 - 2·P(B <= d-1):
    # take the largest d that keeps that at or above the level.
    d = 0
    while d < n // 2 and 2 * cdf[d] <= alpha:
        d += 1
    if d == 0:
        return 0, n - 1
    return d - 1, n - d


def _z(p: float) -> float:
    """Inverse of the standard normal CDF (Acklam's rational approximation, |err| < 1.2e-9)."""
    a = [-3.969683028665376e+01, 2.209460984245205e+02, -2.759285104469687e+02,
         1.383577518672690e+02, -3.066479806614716e+01, 2.506628277459239e+00]
    b = [-5.447609879822406e+01, 1.615858368580409e+02, -1.556989798598866e+02,
         6.680131188771972e+01, -1.328068155288572e+01]
    c = [-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e+00,
         -2.549732539343734e+00, 4.374664141464968e+00, 2.938163982698783e+00]
    d = [7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00, 3.754408661907416e+00]
    pl = 0.02425
    if p < pl:
        q = math.sqrt(-2 * math.log(p))
        return (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) / \
            ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1)
    if p > 1 - pl:
        return -_z(1 - p)
    q = p - 0.5
    r = q * q
    return (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q / \
        (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1)


def quantile(sorted_xs: list, q: float) -> float:
    """Linear-interpolated quantile of already sorted data (numpy's default method)."""
    n = len(sorted_xs)
    pos = q * (n - 1)
    i = int(math.floor(pos))
    f = pos - i
    if i + 1 < n:
        return sorted_xs[i] * (1 - f) + sorted_xs[i + 1] * f
    return sorted_xs[i]


def median_ci(samples, level: float = 0.95) -> tuple:
    """(median, ci_low, ci_high) of the samples."""
    xs = sorted(samples)
    lo, hi = median_ci_ranks(len(xs), level)
    return quantile(xs, 0.5), xs[lo], xs[hi]


def ci_relative_width(samples, level: float = 0.95) -> float:
    """Half-width of the median's CI relative to the median: the stopping criterion."""
    med, lo, hi = median_ci(samples, level)
    if med <= 0:
        return math.inf
    return max(med - lo, hi - med) / med


@dataclass(frozen=True)
class Summary:
    n: int
    median_us: float
    mean_us: float
    min_us: float
    max_us: float
    iqr_us: float
    ci_low_us: float
    ci_high_us: float
    ci_rel: float           # half-width of the 95% CI of the median / median
    samples_us: list        # the samples, in the order measured (capped)

    def as_dict(self) -> dict:
        return asdict(self)


def summarize(samples_us, level: float = 0.95) -> Summary:
    xs = list(samples_us)
    if not xs:
        raise ValueError("no samples to summarize")
    s = sorted(xs)
    med, lo, hi = median_ci(s, level)
    kept = xs if len(xs) <= MAX_STORED_SAMPLES else _thin(xs, MAX_STORED_SAMPLES)
    return Summary(
        n=len(xs), median_us=med, mean_us=sum(xs) / len(xs), min_us=s[0], max_us=s[-1],
        iqr_us=quantile(s, 0.75) - quantile(s, 0.25), ci_low_us=lo, ci_high_us=hi,
        ci_rel=(max(med - lo, hi - med) / med) if med > 0 else math.inf,
        samples_us=[round(x, 4) for x in kept])


def process_median(samples, groups) -> float:
    """The median of samples pooled from several processes (``groups``: the size of each
    consecutive block), every process weighted equally whatever its sample count: the lower
    weighted median, each sample weighing 1 / its process's count. (kernelmark.reports.compare
    computes the same in numpy; reports may not import the harness.)"""
    xs = list(samples)
    if not groups or len(groups) == 1 or sum(groups) != len(xs) or min(groups) <= 0:
        return quantile(sorted(xs), 0.5)
    weighted = sorted((x, 1.0 / k) for k, start in zip(groups, _starts(groups)) for x in xs[start:start + k])
    half, acc = len(groups) / 2 * (1 - 1e-12), 0.0
    for x, w in weighted:
        acc += w
        if acc >= half:
            return x
    return weighted[-1][0]


def _starts(groups) -> list:
    out, at = [], 0
    for k in groups:
        out.append(at)
        at += k
    return out


# ---------------------------------------------------------------- stalls
#
# A CPU call that waits for a descheduled thread (a parallel region's barrier on a busy
# machine, or the calling thread itself preempted) takes a scheduler slice, milliseconds,
# instead of microseconds. When that happens to most calls, every sample is inflated alike:
# the median is tight and its CI narrow, yet the median is the machine's stall, not the
# kernel's time. The CI cannot see this; these tests can. Quiet runs (a floor with a thin
# tail: CPU samples within ~20% of their fastest, GPU within a few %) pass all of them.

# The median more than this many times the fastest samples: a run whose typical sample
# took 1.5 times its fastest ones was not measuring one thing. "Fastest" is the 1% quantile
# (the minimum below 100 samples), so that the extreme of 1000 jittery samples does not count.
STALL_RATIO = 1.5
FLOOR_QUANTILE = 0.01
# A jump this large between two neighbouring sorted samples splits them into two clusters...
GAP_RATIO = 1.5
# ...and an upper cluster holding this share of the samples makes the set bimodal: a share
# that varies between runs moves the median across the gap (an A/A false alarm).
CLUSTER_SHARE = 0.25
# A sample during which this process's threads waited for a CPU for over this share of its
# wall time was disturbed. Disturbed samples matter where they move the median: above the
# median of the undisturbed ones by more than its CI half-width, and at least MIN_SHIFT (a
# few preempted samples out of many, or samples no slower for it, leave the median be).
WAIT_SHARE = 0.1
MIN_SHIFT = 0.02


def stall_reason(samples, waited=None) -> Optional[str]:
    """Why the median of ``samples`` is not the call's time, or None where nothing says so.

    ``waited``: per sample (same order), the time this process's threads spent runnable
    but not running (or the calling thread off its CPU), as a share of the sample's wall
    time; only the CPU timer measures it. It catches the case the samples alone cannot:
    every call stalled alike, so the fastest sample is as slow as the median.
    """
    xs = sorted(samples)
    n = len(xs)
    if waited and len(waited) == n:
        clean = sorted(x for x, w in zip(samples, waited) if w <= WAIT_SHARE)
        bad = n - len(clean)
        what = f"waited for a CPU over {100 * WAIT_SHARE:.0f}% of their time (the cores were busy)"
        if bad and not clean:
            return f"stalls: all {n} samples {what}"
        if bad:
            med, med_clean = quantile(xs, 0.5), quantile(clean, 0.5)
            if med > med_clean * (1 + max(ci_relative_width(xs), MIN_SHIFT)):
                return (f"stalls: {bad} of {n} samples {what}, moving the median {100 * (med / med_clean - 1):.0f}% "
                        f"above that of the {len(clean)} that did not")
    if n < 3 or xs[0] <= 0:
        return None
    med, floor = quantile(xs, 0.5), quantile(xs, FLOOR_QUANTILE)
    if med > STALL_RATIO * floor:
        return f"stalls: median {med:.4g} µs is {med / floor:.1f}x the fastest samples ({floor:.4g} µs)"
    # The lowest gap with enough samples above it: the stall cluster, seen from below.
    for i in range(n - 1):
        above = n - 1 - i
        if above < CLUSTER_SHARE * n:
            break
        if xs[i] > 0 and xs[i + 1] > GAP_RATIO * xs[i]:
            return (f"bimodal: {above} of {n} samples are {xs[i + 1] / xs[i]:.1f}x or more above the "
                    f"rest ({xs[i]:.4g} µs, then {xs[i + 1]:.4g} µs)")
    return None


def _thin(xs: list, k: int) -> list:
    """k samples spread evenly over the measurement order (keeps drift visible)."""
    step = len(xs) / k
    return [xs[int(i * step)] for i in range(k)]
