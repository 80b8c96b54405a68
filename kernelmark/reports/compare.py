"""Compare two runs, BASE and HEAD: one verdict per (op, shape, dtype, backend).

For a pair timed on both sides:

* ``ratio`` = median(HEAD) / median(BASE) (> 1 is slower); a side pooled from several
  processes (``kernelmark ab`` stores ``timing.groups``, the sample count of each process)
  weights every process equally, whatever its sample count (a process slowed by stalls
  takes fewer samples in its budget, and must not count for less);
* ``[ci_low, ci_high]``: its two-sided (1 - alpha) bootstrap percentile interval, from the
  stored samples. A pooled side of at least MIN_GROUPS processes is resampled by process (a
  cluster bootstrap, each process weighted equally), so the spread *between* processes is
  in the interval; otherwise the samples themselves are resampled, and the pair's note says
  the between-process spread is not in it;
* ``p``: the two-sided Mann-Whitney U test of HEAD's samples against BASE's.

Decision rule (T = ``threshold``, alpha = ``alpha``):

* ``slower``  p < alpha  and  ci_low > 1  and  ratio > 1 + T
* ``faster``  p < alpha  and  ci_high < 1  and  ratio < 1 / (1 + T)
* ``noisy``   neither, but the ratio is beyond a threshold (the tests do not confirm it),
  or the interval reaches beyond a threshold and is wider than the band itself
  (ln(ci_high / ci_low) > ln(1 + T)): it cannot tell no change from a T-sized one
* ``unchanged`` otherwise: no change, or a real one smaller than T.

Stalls (``timing.stall``: calls waited for a descheduled thread, so the median is the
machine's stall, however narrow its CI) only ever add time: a stalled median is at or above
the call's true one. So a stalled HEAD is never ``slower`` and a stalled BASE never
``faster``: such a verdict becomes ``noisy``. The other way round the verdict stands (HEAD
slower than a BASE inflated by stalls is slower still than the true BASE), and the note
names every stalled side either way.

Why the point estimate and not ci_low > 1 + T: the threshold is the size of change that
matters, in the meaning every tool gives it (pytest-benchmark's ``median:5%``, asv's
``--factor``): a change beyond it fails, one within it does not. Requiring the interval's
lower end beyond 1 + T would make the effective threshold T plus the interval's
half-width, so it would move with the sample count and miss most changes of T to
T + 2%. Significance (both tests) keeps within-run noise from crossing the line;
the threshold keeps small real changes from failing CI. A change of exactly T is
a coin flip by construction: to catch slowdowns of X reliably, set T to about 0.6 X
(``scripts/compare_power.py`` measures this).

What protects against between-run drift: a run is one process, and a per-process
offset (clocks, placement, allocator state) is indistinguishable from a real shift
when each side has one process: only the threshold stands between it and a false
alarm. With several processes per side (``kernelmark ab --rounds N``) the cluster
bootstrap widens the interval by the between-process spread, and wide drift gives
``noisy`` rather than ``slower``. (The rank test still treats pooled samples as
independent, so it is over-confident there; the process-aware interval is the guard.)

Records match on (op, shape, dtype, backend) without the case index, so a suite whose
cases were reordered or extended between the two commits still pairs up.

Other verdicts: ``new`` (timed in HEAD only), ``missing`` (timed in BASE, not in HEAD),
``check-failed`` (passed its correctness check in BASE; in HEAD it fails the check,
raises, crashes, times out or runs out of memory: always a regression), ``not timed``
(in both runs, timed in neither: checked only, skipped, unsupported or failed on both sides;
never counted as unchanged, never a regression).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Optional

import numpy as np

from kernelmark.reports import pairstats, ranktest, resample, sides, textable
from kernelmark.reports.escape import md_cell, md_text, plain
from kernelmark.results import strict_json

VERDICTS = ("check-failed", "slower", "noisy", "missing", "new", "unchanged", "faster", "not timed")
REGRESSIONS = {"slower": ("slower", "check-failed"),
               "any": ("slower", "check-failed", "faster", "missing", "noisy")}
N_BOOT = 4000
# Below this many processes a cluster bootstrap has too few distinct resamples.
MIN_GROUPS = 3
_PASSED = ("ok", "checked")
# What HEAD can do instead of producing a correct result (results.STATUSES).
_BROKEN = ("failed_check", "error", "crashed", "timeout", "oom")


# ------------------------------------------------------------------ statistics

def bootstrap_medians(samples, groups: Optional[list] = None, n_boot: int = N_BOOT,
                      rng: Optional[np.random.Generator] = None, draws: Optional[resample.Draws] = None,
                      side: int = resample.HEAD) -> np.ndarray:
    """``n_boot`` bootstrap replicates of the median of ``samples``.

    Ungrouped: the exact bootstrap distribution of the median, drawn through the
    order statistics (the distribution resampling and taking the median gives), in
    O(n + n_boot). For even n the two middle order statistics are drawn comonotone,
    which widens the interval slightly (conservative); the timing engine's stopping
    rule leaves odd counts (5 + 10 + 20 + ...). ``draws``: the comparison's draws, shared by
    every side of this n (kernelmark/reports/resample.py, common random numbers); without
    it, draws of its own from ``rng``.
    Grouped (``groups`` = sizes of consecutive per-process blocks, at least MIN_GROUPS):
    processes are resampled with replacement, and the median of the pooled resample, each
    process weighted equally (``process_median``), is taken; the spread is widened by
    sqrt(G / (G - 1)) around the estimate, the usual correction for few clusters.
    """
    rng = rng or np.random.default_rng()
    x = np.asarray(samples, dtype=float)
    n = x.size
    if n == 0:
        raise ValueError("no samples")
    if groups and len(groups) >= MIN_GROUPS and sum(groups) == n:
        return _cluster_medians(x, groups, n_boot, rng)
    draws = draws or resample.Draws(rng, n_boot)
    return resample.medians_at(np.sort(x), draws.index(n, side))


def valid_groups(groups: Optional[list], n: int) -> Optional[list]:
    """``groups`` if they are per-process sizes that add up to the ``n`` samples, else None."""
    if groups and all(isinstance(k, int) and k > 0 for k in groups) and sum(groups) == n:
        return list(groups)
    return None


def process_median(samples, groups: Optional[list] = None) -> float:
    """The median of pooled samples with every process (consecutive block of ``groups``)
    weighted equally: the lower weighted median, each sample weighing 1 / its process's
    count. Without valid groups, the plain median."""
    x = np.asarray(samples, dtype=float)
    groups = valid_groups(groups, x.size)
    if not groups or len(groups) == 1:
        return float(np.median(x))
    w = np.repeat([1.0 / k for k in groups], groups)
    order = np.argsort(x, kind="stable")
    cum = np.cumsum(w[order])
    return float(x[order][np.searchsorted(cum, cum[-1] / 2 * (1 - 1e-12))])


def _cluster_medians(x: np.ndarray, groups: list, n_boot: int, rng) -> np.ndarray:
    g, n = len(groups), x.size
    label = np.repeat(np.arange(g), groups)
    order = np.argsort(x, kind="stable")
    xs = x[order]
    # below[j, i]: the share of process i's samples at or before position j of the sorted
    # pool: each process weighs 1 however many samples it took.
    below = np.cumsum(np.eye(g)[label[order]], axis=0) / np.asarray(groups, float)   # (n, G)
    counts = rng.multinomial(g, np.full(g, 1 / g), size=n_boot)          # (B, G) draws per process
    half = counts.sum(axis=1) / 2 * (1 - 1e-12)      # (the tolerance: float sums of shares)
    # The pooled (lower) median of each resample: the first position whose cumulative
    # weight reaches half the total, found by bisection (weights only grow along j).
    pos = np.zeros(n_boot, dtype=np.int64)
    step = 1 << (n.bit_length() - 1)
    while step:
        cand = np.minimum(pos + step, n)
        below_half = (counts * below[cand - 1]).sum(axis=1) < half
        pos = np.where(below_half, cand, pos)
        step >>= 1
    med = xs[np.minimum(pos, n - 1)]
    est = process_median(x, groups)
    return est * np.exp(np.log(med / est) * math.sqrt(g / (g - 1)))


def mann_whitney_p(base, head) -> float:
    """Two-sided Mann-Whitney U test of HEAD against BASE (kernelmark/reports/ranktest.py)."""
    if len(base) < 2 or len(head) < 2:
        return 1.0
    if np.ptp(np.concatenate([base, head])) == 0:
        return 1.0
    return ranktest.mann_whitney_p(head, base)


@dataclass
class Stat:
    ratio: float
    ci_low: float
    ci_high: float
    p: float
    verdict: str


def decide(ratio: float, ci_low: float, ci_high: float, p: float, threshold: float, alpha: float) -> str:
    """The decision rule of the module docstring."""
    up, down = 1 + threshold, 1 / (1 + threshold)
    if p < alpha and ci_low > 1 and ratio > up:
        return "slower"
    if p < alpha and ci_high < 1 and ratio < down:
        return "faster"
    if ratio > up or ratio < down:
        return "noisy"
    if (ci_high > up or ci_low < down) and math.log(ci_high / ci_low) > math.log(up):
        return "noisy"
    return "unchanged"


def compare_samples(base, head, threshold: float = 0.05, alpha: float = 0.01,
                    base_groups: Optional[list] = None, head_groups: Optional[list] = None,
                    n_boot: int = N_BOOT, rng: Optional[np.random.Generator] = None,
                    draws: Optional[resample.Draws] = None) -> Stat:
    """Ratio HEAD/BASE of medians, its (1 - alpha) bootstrap interval, the rank test, the verdict.
    ``draws``: the comparison's bootstrap draws (bootstrap_medians); without it, its own."""
    rng = rng or np.random.default_rng()
    draws = draws or resample.Draws(rng, n_boot)
    a, b = np.asarray(base, float), np.asarray(head, float)
    base_groups, head_groups = valid_groups(base_groups, a.size), valid_groups(head_groups, b.size)
    ratio = process_median(b, head_groups) / process_median(a, base_groups)
    reps = (bootstrap_medians(b, head_groups, n_boot, rng, draws, resample.HEAD) /
            bootstrap_medians(a, base_groups, n_boot, rng, draws, resample.BASE))
    lo, hi = np.quantile(reps, [alpha / 2, 1 - alpha / 2])
    p = mann_whitney_p(a, b)
    return Stat(ratio, float(lo), float(hi), p, decide(ratio, float(lo), float(hi), p, threshold, alpha))


def _from_intervals(ta: dict, tb: dict, threshold: float, alpha: float) -> Stat:
    """Records without stored samples: combine the two stored 95% median intervals on the
    log scale (normal approximation), rescaled to the (1 - alpha) level."""
    from scipy.special import ndtr      # the normal CDF, as scipy.stats.norm computes it
    ma, mb = ta["median_us"], tb["median_us"]
    sa, sb = (math.log1p(t.get("ci_rel") or 0.0) / 1.96 for t in (ta, tb))
    s = math.hypot(sa, sb)
    lr = math.log(mb / ma)
    z = _norm_ppf(1 - alpha / 2)
    p = float(2 * ndtr(-(abs(lr) / s))) if s > 0 else (0.0 if lr else 1.0)
    lo, hi = math.exp(lr - z * s), math.exp(lr + z * s)
    return Stat(mb / ma, lo, hi, p, decide(mb / ma, lo, hi, p, threshold, alpha))


@lru_cache(maxsize=16)
def _norm_ppf(q: float) -> float:
    from scipy.stats import norm
    return float(norm.ppf(q))


# ------------------------------------------------------------------ matching runs

def record_key(rec: dict) -> tuple:
    """(op, shape, dtype, backend). The shape as its sorted (name, type, value) triples: equal
    exactly when the shapes' JSON (sort_keys) is, 1, 1.0 and true told apart by their type and
    -0.0 from 0.0 by its text, without encoding 200,000 shapes as JSON (a tenth of compare's
    time on a large run)."""
    return (rec["op"], tuple(sorted((k, type(v), repr(v) if type(v) is float else v)
                                    for k, v in rec["shape"].items())), rec["dtype"], rec["backend"])


@dataclass
class Pair:
    op: str
    shape: dict
    dtype: str
    backend: str
    label: str
    verdict: str
    ratio: Optional[float] = None
    ci_low: Optional[float] = None
    ci_high: Optional[float] = None
    p: Optional[float] = None
    base_us: Optional[float] = None
    head_us: Optional[float] = None
    base_n: Optional[int] = None
    head_n: Optional[int] = None
    note: str = ""


@dataclass
class Comparison:
    base: str
    head: str
    threshold: float
    alpha: float
    pairs: list
    mismatch: list = field(default_factory=list)     # why the runs are not comparable (when allowed)
    notes: list = field(default_factory=list)

    @property
    def geomean(self) -> Optional[float]:
        rs = [p.ratio for p in self.pairs if p.ratio and p.base_n is not None]
        return float(math.exp(sum(map(math.log, rs)) / len(rs))) if rs else None

    def counts(self) -> dict:
        tally = Counter(p.verdict for p in self.pairs)      # one pass, not one per verdict
        return {v: tally[v] for v in VERDICTS}

    def regressions(self, fail_on: str = "slower") -> list:
        return [p for p in self.pairs if p.verdict in REGRESSIONS[fail_on]]


# Identity fields a run file may lack (written before kernelmark recorded them): where
# either side lacks one, it is unknown and does not make the devices differ.
_RECORDED_LATER = ("isa", "torch_capability")


def device_identity(header: dict) -> dict:
    d = header.get("device") or {}
    ident = {"kind": d.get("kind"), "name": d.get("name"), "arch": d.get("arch"),
             "capability": d.get("capability")}
    if d.get("kind") == "cpu":
        cpu = d.get("cpu") or {}
        ident["torch_threads"] = cpu.get("torch_threads")
        # Two CPUs of one model name can differ 300x in bf16 matmul (AVX-512 BF16 or not).
        ident["isa"] = cpu.get("isa")
        ident["torch_capability"] = cpu.get("torch_capability")
    else:
        ident["multiprocessors"] = d.get("multiprocessors")     # a MIG slice has fewer
    return ident


def incomparable(base, head):
    """Why two runs cannot be compared at all (not even with --allow-device-mismatch), or None:
    one ran on the CPU and the other on a GPU. Their identities hold different fields (thread
    count, multiprocessors), and a ratio of a CPU time to a GPU time says nothing about a change."""
    kinds = [(run, (run.header.get("device") or {}).get("kind")) for run in (base, head)]
    on_cpu = [kind == "cpu" for _, kind in kinds]
    if on_cpu.count(True) != 1 or not all(kind for _, kind in kinds):
        return None     # both of one kind, or one of unknown kind: mismatches() says how they differ
    where = [f"{side} {run.path} ran on {'the CPU' if kind == 'cpu' else kind} "
             f"({(run.header.get('device') or {}).get('name')})" for side, (run, kind) in zip(("BASE", "HEAD"), kinds)]
    return (f"cannot compare a CPU run with a GPU run: {where[0]}, {where[1]}. Compare runs of one device; "
            "for a side-by-side table of devices use `kernelmark report BASE HEAD`")


def same_device(da: dict, db: dict) -> list:
    """The identity fields on which two devices differ ([] for the same device)."""
    return [k for k in dict.fromkeys([*da, *db]) if da.get(k) != db.get(k)
            and not (k in _RECORDED_LATER and (da.get(k) is None or db.get(k) is None))]


def mismatches(base, head) -> list:
    """Why two runs should not be compared: a different device, or different dtypes."""
    return mismatch_reasons(base.header, head.header, *({r["dtype"] for r in run.records} for run in (base, head)))


def mismatch_reasons(base_header: dict, head_header: dict, ta=None, tb=None) -> list:
    """The devices differ; the dtype sets ``ta`` and ``tb`` differ (unless None: not read yet)."""
    out = []
    da, db = device_identity(base_header), device_identity(head_header)
    diff = same_device(da, db)
    if diff:
        out.append("different devices: " + "; ".join(f"{k} {da.get(k)!r} vs {db.get(k)!r}" for k in diff))
    if ta is not None and ta != tb:
        out.append(f"different dtype sets: BASE {', '.join(sorted(ta))} vs HEAD {', '.join(sorted(tb))}")
    return out


def _one_process(groups, n: int) -> bool:
    """Whether a side is plain samples (no per-process blocks to weigh or resample): what
    pairstats.Batch computes; a pooled side goes through compare_samples."""
    g = valid_groups(groups, n)
    return g is None or len(g) == 1


def _samples(t: dict) -> tuple:
    s = t.get("samples_us")
    if s is None or len(s) == 0:        # a list, or a numpy array (results.RunReader(sample_arrays=True))
        s = []
    g = t.get("groups")
    if g and sum(g) != len(s):
        g = None
    return s, g


def compare_records(a: Optional[dict], b: Optional[dict], threshold: float, alpha: float,
                    rng: np.random.Generator, later: Optional[pairstats.Batch] = None,
                    draws: Optional[resample.Draws] = None) -> Pair:
    """The pair of BASE record ``a`` and HEAD record ``b`` (either may be None) with its verdict.
    ``later``: a timed pair's statistics may wait in this batch (compare_runs flushes it
    before it reads the verdicts), and its bootstrap draws are the batch's; ``draws``: those
    of the comparison otherwise (without either, the pair's own). The generator is drawn
    from in the same order either way."""
    r = a or b
    pair = Pair(r["op"], r["shape"], r["dtype"], r["backend"], r.get("label", ""), "unchanged")
    sa, sb = (a or {}).get("status"), (b or {}).get("status")
    if a is not None and sa == "ok":
        pair.base_us, pair.base_n = a["timing"]["median_us"], a["timing"].get("n")
    if b is not None and sb == "ok":
        pair.head_us, pair.head_n = b["timing"]["median_us"], b["timing"].get("n")
    if sa in _PASSED and sb in _BROKEN:
        pair.verdict = "check-failed"
        pair.note = f"HEAD {sb}: {b.get('reason', '')}"[:160]
    elif sa == "ok" and sb == "ok":
        ta, tb = a["timing"], b["timing"]
        (xa, ga), (xb, gb) = _samples(ta), _samples(tb)
        if not (len(xa) and len(xb)):
            pair.note = "no stored samples: interval from the stored CIs"
        ma, mb = ta.get("method"), tb.get("method")
        if ma != mb:
            pair.note = f"timed differently: {ma} vs {mb}"
        if len(ga or []) >= MIN_GROUPS or len(gb or []) >= MIN_GROUPS:
            pair.note = pair.note or f"{len(ga or [1])} vs {len(gb or [1])} processes"
        elif len(ga or []) > 1 or len(gb or []) > 1:
            pair.note = pair.note or (f"{len(ga or [1])} vs {len(gb or [1])} processes: too few to resample "
                                      "processes; the interval holds no between-process spread")

        def finish(st: Stat) -> None:
            pair.ratio, pair.ci_low, pair.ci_high, pair.p, pair.verdict = \
                st.ratio, st.ci_low, st.ci_high, st.p, st.verdict
            _stalls_make_noisy(pair, ta, tb)       # after the notes above: it adds to them

        if not (len(xa) and len(xb)):
            finish(_from_intervals(ta, tb, threshold, alpha))
            return pair
        pair.base_n, pair.head_n = len(xa), len(xb)
        if later is not None and _one_process(ga, len(xa)) and _one_process(gb, len(xb)):
            later.add(xa, xb, lambda ratio, lo, hi, p: finish(
                Stat(ratio, lo, hi, p, decide(ratio, lo, hi, p, threshold, alpha))))
            return pair
        finish(compare_samples(xa, xb, threshold, alpha, ga, gb, rng=rng,
                               draws=later.draws if later is not None else draws))
    elif sa == "ok":
        pair.verdict = "missing"
        pair.note = "not in HEAD" if b is None else f"HEAD {sb}: {b.get('reason', '')}"[:160]
    elif sb == "ok":
        pair.verdict = "new"
        pair.note = "not in BASE" if a is None else f"BASE {sa}: {a.get('reason', '')}"[:160]
    else:
        # Untimed on both sides (a Triton kernel checked in the CPU interpreter, a skipped
        # backend): nothing was measured, so nothing can be called unchanged.
        pair.verdict = "missing" if b is None else "new" if a is None else "not timed"
        pair.note = "not timed: " + " -> ".join(s for s in (sa, sb) if s)
    return pair


def _stalls_make_noisy(pair: Pair, ta: dict, tb: dict) -> None:
    """A change that stalls could have made is noisy: slower with HEAD stalled, faster with
    BASE stalled (stalls only add time; see the module docstring)."""
    stalled = [f"{side} {t['stall']}" for side, t in (("BASE", ta), ("HEAD", tb)) if t.get("stall")]
    if not stalled:
        return
    if (pair.verdict == "slower" and tb.get("stall")) or (pair.verdict == "faster" and ta.get("stall")):
        pair.verdict = "noisy"
    pair.note = "; ".join([pair.note] * bool(pair.note) + stalled)[:240]


def compare_runs(base, head, threshold: float = 0.05, alpha: float = 0.01,
                 seed: Optional[int] = 0) -> Comparison:
    """Match records by (op, shape, dtype, backend) and give each pair its verdict.

    ``base`` and ``head``: results.Run, or results.RunReader, read a record at a time
    (kernelmark/reports/sides.py): a bad line raises RunFileError. Pairs go in BASE's order,
    then what only HEAD has; the bootstrap is seeded (``seed``) so the same two files always
    give the same table.
    """
    rng = np.random.default_rng(seed)
    later = pairstats.Batch(alpha, N_BOOT, rng)         # many pairs' statistics at once
    base_notes, head_notes, base_dtypes = [], [], set()
    ahead = sides.Ahead(head, "HEAD", record_key, head_notes)
    pairs = []
    for k, ra in sides.first_records(base, "BASE", record_key, base_notes, base_dtypes):
        rb = ahead.get(k)
        if rb is not None and ra["status"] == "ok" and rb["status"] == "ok":
            rb = ahead.full(k)
        pairs.append(compare_records(ra, rb, threshold, alpha, rng, later))
        ahead.done_with(k)
    for rb in ahead.unpaired():        # only in HEAD
        pairs.append(compare_records(None, rb, threshold, alpha, rng, later))
    later.flush()
    rank = {v: i for i, v in enumerate(VERDICTS)}
    pairs.sort(key=lambda p: (rank[p.verdict], -(p.ratio or 0)))
    return Comparison(base.path, head.path, threshold, alpha, pairs,
                      mismatch_reasons(base.header, head.header, base_dtypes, ahead.dtypes),
                      base_notes + head_notes + env_notes(base.header, head.header))


def env_notes(base_header: dict, head_header: dict) -> list:
    """The recorded environment variables that change the timed code and differ between the
    sides (an A/B of one of them is legitimate, so this is said, not refused)."""
    ea, eb = ((h.get("device") or {}).get("env") or {} for h in (base_header, head_header))
    return [f"environment differs: {k} {ea.get(k, '(unset)')!r} in BASE, {eb.get(k, '(unset)')!r} in HEAD"
            for k in sorted(set(ea) | set(eb)) if ea.get(k) != eb.get(k)]


# ------------------------------------------------------------------ rendering

def _commit(run_header: dict) -> str:
    g = (run_header.get("device") or {}).get("git") or {}
    return (g.get("commit") or "unknown")[:10] + ("+dirty" if g.get("dirty") else "")


def summary_lines(c: Comparison, fail_on: str = "slower") -> list:
    from kernelmark.reports.table import shape_text
    lines = []
    gm = c.geomean
    n_timed = sum(1 for p in c.pairs if p.ratio and p.base_n is not None)
    lines.append(f"geometric mean ratio HEAD/BASE: {gm:.3f} over {n_timed} timed pairs (>1 is slower)"
                 if gm else "geometric mean ratio: no pair timed on both sides")
    cnt = c.counts()
    lines.append("verdicts: " + ", ".join(f"{n} {v}" for v, n in cnt.items() if n) +
                 f" | threshold {100 * c.threshold:g}%, alpha {c.alpha:g}")
    bad = c.regressions(fail_on)
    # Worst first: the regressions, then what could not be told, then the largest ratios.
    rest = sorted((p for p in c.pairs if p not in bad and p.verdict in ("unchanged", "faster") and p.ratio),
                  key=lambda p: -p.ratio)
    worst = bad + [p for p in c.pairs if p.verdict == "noisy" and p not in bad] + rest
    if worst:
        lines.append("worst first:")
    for p in worst[:5]:
        what = f"{p.ratio:.3f}x [{p.ci_low:.3f}, {p.ci_high:.3f}]" if p.ratio else p.note
        lines.append(f"  {p.verdict.upper()}: {p.op} {shape_text(p.shape)} {p.dtype} {p.backend}: {what}")
    if len(bad) > 5:
        lines.append(f"  ... and {len(bad) - 5} more regressions")
    lines.append(f"result: {len(bad)} regression(s)" if bad else "result: no regression")
    return lines + [f"note: {n}" for n in dict.fromkeys(c.notes)]


def render(c: Comparison, base_header: dict, head_header: dict, fmt: str = "table",
           fail_on: str = "slower") -> str:
    from tabulate import tabulate

    from kernelmark.reports.table import shape_text
    if fmt == "json":
        return strict_json({"base": {"path": c.base, "commit": _commit(base_header)},
                           "head": {"path": c.head, "commit": _commit(head_header)},
                           "threshold": c.threshold, "alpha": c.alpha, "mismatch": c.mismatch,
                           "geomean_ratio": c.geomean, "counts": c.counts(),
                           "regressions": len(c.regressions(fail_on)), "notes": c.notes,
                           "pairs": [dict(vars(p)) for p in c.pairs]}, indent=1)   # asdict deep-copies every shape

    def num(x, f):
        return "" if x is None else format(x, f)

    rows = [[p.verdict, p.op, shape_text(p.shape), p.dtype, p.backend, num(p.base_us, ".2f"),
             num(p.head_us, ".2f"), num(p.ratio, ".3f"),
             f"[{p.ci_low:.3f}, {p.ci_high:.3f}]" if p.ci_low else "",
             "" if p.p is None else f"{p.p:.2g}", p.note] for p in c.pairs]
    heads = ["verdict", "op", "shape", "dtype", "backend", "BASE µs", "HEAD µs", "ratio",
             f"{100 * (1 - c.alpha):g}% CI", "p", "note"]
    top = [f"WARNING: compared despite {m} (--allow-device-mismatch)" for m in c.mismatch]
    top += [f"BASE {c.base} @ {_commit(base_header)}", f"HEAD {c.head} @ {_commit(head_header)}",
           f"device: {(head_header.get('device') or {}).get('name')}"]
    summary = summary_lines(c, fail_on)
    # Names and notes come from the run files: escaped for the format (kernelmark/reports/escape.py).
    if fmt == "md":
        table = tabulate([[md_cell(x) for x in r] for r in rows], headers=heads, tablefmt="github",
                         disable_numparse=True)
    else:       # tabulate's simple table, without its type inference per cell (textable.py)
        table = textable.simple([[plain(x) for x in r] for r in rows], heads)
    if fmt == "md":
        return "\n".join([f"> {md_text(x)}  " for x in top + summary]) + "\n\n" + table
    return "\n".join(plain(x) for x in top + summary) + "\n\n" + table
