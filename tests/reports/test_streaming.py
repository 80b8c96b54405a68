"""Large run files are read a record at a time: `report --format csv` and `compare` give what
they gave with the whole file in memory, holding only what they need. The statistics made
fast for them (ranktest, resample) give scipy's and numpy's numbers exactly.

The timing and peak memory on a 100,000-record file (551 MB) are measured by hand, not
here (no test asserts on a clock): see the commit that made compare stream."""
import json
import random
import warnings
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import mannwhitneyu, norm

from kernelmark import cli, results
from kernelmark.reports import compare, pairstats, ranktest, resample, sides, table

HEADER = {"type": "header", "schema": 1, "kernelmark": "0.1.0", "command": ["kernelmark", "run"],
          "suite": {"name": "big"}, "started": "2026-11-24T00:00:00+0000", "run_id": "b1",
          "device": {"name": "Test CPU", "kind": "cpu", "arch": "x86_64", "versions": {}, "git": {"commit": "c"},
                     "cpu": {"torch_threads": 1}, "host": {"hostname": "h"}},
          "peaks": {"copy_gbps": 10.0, "tflops": {"fp32": 0.1}}}
STATUSES = ["ok", "checked", "skipped", "failed_check", "error"]


def big_run(path, n_records: int, seed: int, scale: float = 1.0, drop_every: int = 0, footer: bool = True) -> str:
    """A synthetic run of every kind of record compare and report see: timed ones (some
    pooled from 3 processes, some with no stored samples), untimed ones, a duplicate key."""
    rng = random.Random(seed)
    lines = [HEADER]
    for i in range(n_records):
        if drop_every and i % drop_every == 0:
            continue                                   # missing on this side
        status = STATUSES[i % len(STATUSES)]
        rec = {"type": "record", "op": "gemm" if i % 2 else "kv_append", "label": f"case {i % 50}",
               "shape": {"m": i, "n": 64, "layout": "nt"}, "dtype": "fp32" if i % 3 else "bf16",
               "backend": "torch", "status": status, "case_index": i}
        if status == "ok":
            m = (5 + i % 97) * scale
            s = [round(m * (1 + rng.gauss(0, 0.02)), 4) for _ in range(21 + 10 * (i % 3))]
            ss = sorted(s)
            rec["timing"] = {"method": "cpu_perf_counter", "n": len(s), "median_us": ss[len(s) // 2],
                             "ci_low_us": ss[len(s) // 2 - 3], "ci_high_us": ss[len(s) // 2 + 3],
                             "ci_rel": 0.01, "samples_us": s}
            if i % 11 == 0:
                del rec["timing"]["samples_us"]        # compare falls back to the stored intervals
            elif i % 13 == 0:
                rec["timing"]["groups"] = [len(s) - 20, 10, 10]
            rec.update(tflops=0.01 * m, gbps=1.5 * m, pct_of_peak=10.0, bound="memory", flops=1000, bytes=64)
        else:
            rec["reason"] = f"why {i % 5}"
        lines.append(rec)
    lines.append(dict(lines[2]))                       # measured twice: the first record is used
    text = "".join(json.dumps(o) + "\n" for o in lines)
    if footer:
        text += json.dumps({"type": "footer", "records": len(lines) - 1}) + "\n"
    else:
        text += '{"type": "record", "op": "ge'          # killed mid-write
    path.write_text(text)
    return str(path)


def test_report_csv_streamed_is_the_table_of_the_loaded_run(tmp_path, capsys):
    for footer in (True, False):
        path = big_run(tmp_path / f"r{footer}.jsonl", 2000, seed=1, footer=footer)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            run = results.load(path)
        assert cli.main(["report", path, "--format", "csv"]) == 0
        out, err = capsys.readouterr()
        assert out == table.render(run.header, run.records, "csv") + "\n"
        assert out.count("\n") == len(run.records) + 1
        assert ("no footer" in err) == (not footer) and ("truncated last line" in err) == (not footer)


ENERGY = [{"status": "ok", "gross_j_per_call": 0.03, "net_j_per_call": 0.02, "window_s": 1.0, "calls": 10},
          {"status": "unavailable", "reason": "no counter"}]


def _csv_as_a_list_gives_it(header, records) -> str:
    """What csv was before it could be streamed: one DictWriter over the records held whole,
    the energy columns there when any record has energy."""
    import csv
    import io

    from kernelmark.reports import energy
    from kernelmark.reports.escape import csv_cell
    buf = io.StringIO()
    extra = energy.COLUMNS if energy.has_energy(records) else ()
    cols = tuple(c for c in table.COLUMNS if c != "workload" or any(table.trace_of(r) for r in records))
    w = csv.DictWriter(buf, fieldnames=("device",) + cols + extra, extrasaction="ignore",
                       lineterminator="\n")
    w.writeheader()
    for r in records:
        w.writerow({k: csv_cell(v) for k, v in {"device": header["device"].get("name"), **table.row(r),
                                                **energy.cells(r)}.items()})
    return buf.getvalue().rstrip("\n")


@pytest.mark.parametrize("energy_every, trace", [(0, False), (7, False), (1, False), (0, True), (7, True)])
def test_report_csv_streamed_keeps_the_energy_columns(tmp_path, capsys, energy_every, trace):
    """The energy columns depend on every record (any with energy): streamed, they are still
    there exactly when a record has energy, each row's cells in place, also for labels that
    csv must quote (a comma, a quote, a newline)."""
    path = big_run(tmp_path / "r.jsonl", 300, seed=3)
    lines = [json.loads(x) for x in open(path)]
    for i, o in enumerate(lines[1:-1]):
        if energy_every and i % energy_every == 0:
            o["energy"] = ENERGY[i % 2]
        if i % 5 == 1:
            o["label"] = f'=a, "b"\nc {i}'
        if trace and i % 3 == 0:     # the workload column: only in a run with trace workloads
            o["trace"] = {"definition": "d", "axes": {"M": i}, "uuid": f'u,"{i}"\n'}
    (tmp_path / "r.jsonl").write_text("".join(json.dumps(o) + "\n" for o in lines))
    run = results.load(path)
    want = _csv_as_a_list_gives_it(run.header, run.records)
    assert ("j_per_call" in want.splitlines()[0]) == bool(energy_every)
    assert (",workload," in want.splitlines()[0]) == trace
    assert table.render(run.header, iter(run.records), "csv") == want
    assert cli.main(["report", path, "--format", "csv"]) == 0
    assert capsys.readouterr().out == want + "\n"


def test_compare_streamed_is_compare_of_the_loaded_runs(tmp_path, capsys):
    base = big_run(tmp_path / "base.jsonl", 2000, seed=1)
    head = big_run(tmp_path / "head.jsonl", 2000, seed=2, scale=1.03, drop_every=97)
    expected = compare.compare_runs(results.load(base), results.load(head), 0.02, 0.01)
    verdicts = expected.counts()
    assert verdicts["slower"] and verdicts["missing"] and verdicts["unchanged"] and expected.notes
    assert cli.main(["compare", base, head, "--threshold", "2%", "--format", "json"]) == 1
    want = compare.render(expected, results.load(base).header, results.load(head).header, "json")
    assert capsys.readouterr().out == want + "\n"


def _reversed(src, dst):
    lines = open(src).read().splitlines(keepends=True)
    dst.write_text(lines[0] + "".join(reversed(lines[1:-1])) + lines[-1])
    return str(dst)


def test_compare_reads_each_record_once_when_the_runs_are_in_the_same_order(tmp_path, monkeypatch):
    base = big_run(tmp_path / "base.jsonl", 800, seed=1)
    head = big_run(tmp_path / "head.jsonl", 800, seed=2, scale=1.03)
    shuffled = _reversed(head, tmp_path / "reversed.jsonl")
    read_again = []
    real = results.RunReader.record_at
    monkeypatch.setattr(results.RunReader, "record_at", lambda self, w: read_again.append(w) or real(self, w))
    monkeypatch.setattr(sides, "FRESH", 100)         # HEAD records held whole while BASE catches up
    for other, again in ((head, False), (shuffled, True)):
        read_again.clear()
        with results.RunReader(base) as a, results.RunReader(other) as b:
            c = compare.compare_runs(a, b, 0.02, 0.01)
        loaded = compare.compare_runs(results.load(base), results.load(other), 0.02, 0.01)
        assert c.pairs == loaded.pairs and c.mismatch == loaded.mismatch == []
        timed = sum(p.base_us is not None and p.head_us is not None for p in c.pairs)
        # Same order: every partner is the next HEAD record, none read twice. Reversed: HEAD is
        # read to its end for BASE's first case; all but the last 100 timed partners read again.
        assert (0 < len(read_again) <= timed) if again else not read_again


@pytest.mark.parametrize("n1, n2, ties", [(30, 40, False), (21, 21, True), (500, 700, True), (3, 50, False),
                                           (5, 6, True), (8, 8, False), (9, 9, False), (2, 2, False)])
def test_rank_test_is_scipys(n1, n2, ties):
    rng = np.random.default_rng(n1 * 1000 + n2)
    for _ in range(20):
        x, y = rng.lognormal(0, 0.1, n1), rng.lognormal(0.02, 0.1, n2)
        if ties:
            x, y = np.round(x, 1), np.round(y, 1)
        if np.ptp(np.concatenate([x, y])) == 0:
            continue
        assert ranktest.mann_whitney_p(x, y) == float(mannwhitneyu(x, y, alternative="two-sided").pvalue)


def test_order_statistic_draws_are_searchsorteds():
    rng = np.random.default_rng(5)
    for n in (1, 2, 5, 21, 35, 155, 500, 1000, 1275, 5000):
        for k in {(n + 1) // 2, n // 2 + 1}:
            cdf = resample.order_stat_cdf(n, k)
            u = np.concatenate([rng.random(50_000), [0.0, 5e-324, 0.5, np.nextafter(1.0, 0.0)]])
            assert np.array_equal(resample.order_stat_index(n, k, u), np.searchsorted(cdf, u))


def test_interval_fallback_keeps_scipys_normal():
    ta, tb = {"median_us": 10.0, "ci_rel": 0.02}, {"median_us": 10.6, "ci_rel": 0.03}
    st = compare._from_intervals(ta, tb, 0.05, 0.01)
    s = np.hypot(np.log1p(0.02) / 1.96, np.log1p(0.03) / 1.96)
    assert st.p == float(2 * norm.sf(abs(np.log(1.06)) / s))
    assert st.ci_high == float(np.exp(np.log(1.06) + norm.ppf(0.995) * s))


# ------------------------------------------------------------------ the streamed compare is main's

PUBLISHED = Path(__file__).resolve().parents[2] / "published" / "cpu-amd-epyc" / "20261124T215946_default.jsonl"


def _in_memory_compare(base, head, threshold, alpha, seed=0):
    """compare_runs as it was before it streamed: both runs loaded whole, indexed by key, pairs
    in BASE's order then HEAD's, one seeded generator for every pair."""
    rng = np.random.default_rng(seed)
    notes = []

    def index(run, side):
        out = {}
        for rec in run.records:
            k = compare.record_key(rec)
            if k in out:
                notes.append(f"{side} measures {rec['op']} {rec['dtype']} {rec['backend']} twice: "
                             "the first record is used")
                continue
            out[k] = rec
        return out

    ia, ib = index(base, "BASE"), index(head, "HEAD")
    keys = list(ia) + [k for k in ib if k not in ia]
    draws = resample.Draws(rng, compare.N_BOOT)       # the comparison's, shared by its pairs
    pairs = [compare.compare_records(ia.get(k), ib.get(k), threshold, alpha, rng, draws=draws) for k in keys]
    rank = {v: i for i, v in enumerate(compare.VERDICTS)}
    pairs.sort(key=lambda p: (rank[p.verdict], -(p.ratio or 0)))
    return compare.Comparison(base.path, head.path, threshold, alpha, pairs, compare.mismatches(base, head), notes)


def _head_of_published(dst) -> str:
    """The published CPU run as a HEAD that differs in every way compare looks at: some
    backends slower or faster, one pooled from 3 processes, one stalled, one without its
    samples, one failing its check, one missing, one measured twice, the order rotated."""
    lines = [json.loads(x) for x in PUBLISHED.read_text().splitlines()]
    header, recs, footer = lines[0], lines[1:-1], lines[-1]
    timed = [r for r in recs if r["status"] == "ok"]
    for i, r in enumerate(timed):
        t = r["timing"]
        f = (1.12, 0.9, 1.0, 1.03)[i % 4]
        t["samples_us"] = [round(x * f, 4) for x in t["samples_us"]]
        t["median_us"] *= f
    timed[2]["timing"]["groups"] = [len(timed[2]["timing"]["samples_us"]) - 10, 5, 5]
    timed[4]["timing"]["stall"] = "3 stall clusters"
    del timed[5]["timing"]["samples_us"]
    timed[6].update(status="failed_check", reason="rel_l2 0.3 over 0.016")
    timed[6].pop("timing")
    recs.remove(timed[7])
    recs = recs[10:] + recs[:10] + [dict(recs[3])]
    dst.write_text("".join(json.dumps(o) + "\n" for o in [header, *recs, footer]))
    return str(dst)


@pytest.mark.parametrize("which", ["published", "synthetic"])
def test_compare_streamed_gives_mains_pairs_on_a_real_run(tmp_path, capsys, monkeypatch, which):
    """On the published run file against a HEAD made from it (and on synthetic runs of more
    timed pairs than one batch holds): the pairs (verdicts, ratios, intervals, p-values),
    notes and output of the streamed, batched compare are those of the in-memory compare one
    pair at a time with scipy's rank test and numpy's searchsorted bootstrap, exactly, as
    main had."""
    if which == "published":
        base, head = str(PUBLISHED), _head_of_published(tmp_path / "head.jsonl")
    else:           # small batches: several fill up; few draws held: some drawn again
        monkeypatch.setattr(pairstats, "BATCH", 16)
        monkeypatch.setattr(resample, "KEEP", 2)
        base = big_run(tmp_path / "base.jsonl", 400, seed=1)
        head = big_run(tmp_path / "head.jsonl", 400, seed=2, scale=1.03, drop_every=37)
    streamed, sides_ = {}, ((base, head), (head, base), (base, base))[:3 if which == "published" else 1]
    for a, b in sides_:
        with results.RunReader(a) as ra, results.RunReader(b) as rb:
            streamed[a, b] = compare.compare_runs(ra, rb, 0.05, 0.01)
        assert cli.main(["compare", a, b, "--format", "json"]) in (0, 1)
        streamed[a, b, "out"] = capsys.readouterr().out

    from scipy.stats import binom, mannwhitneyu, norm
    monkeypatch.setattr(compare.resample, "order_stat_index",
                        lambda n, k, u: np.searchsorted(binom.sf(k - 1, n, np.arange(1, n + 1) / n), u))
    monkeypatch.setattr(compare.ranktest, "mann_whitney_p",
                        lambda x, y: float(mannwhitneyu(x, y, alternative="two-sided").pvalue))
    monkeypatch.setattr(compare, "_norm_ppf", lambda q: float(norm.ppf(q)))
    for a, b in sides_:
        ra, rb = results.load(a), results.load(b)
        want = _in_memory_compare(ra, rb, 0.05, 0.01)
        got = streamed[a, b]
        assert got.pairs == want.pairs and got.notes == want.notes and got.mismatch == want.mismatch
        assert streamed[a, b, "out"] == compare.render(want, ra.header, rb.header, "json") + "\n"
    if which == "synthetic":
        assert sum(p.p is not None for p in streamed[base, head].pairs) > 3 * pairstats.BATCH
        assert any("processes" in p.note for p in streamed[base, head].pairs)
        return
    verdicts = streamed[base, head].counts()
    for v in ("slower", "faster", "noisy", "unchanged", "missing", "check-failed", "not timed"):
        assert verdicts[v], (v, verdicts)
    assert any("processes" in p.note for p in streamed[base, head].pairs)
    assert any("stored CIs" in p.note for p in streamed[base, head].pairs)
    assert not streamed[base, base].counts()["slower"] and not streamed[base, base].counts()["faster"]


def test_a_batch_gives_each_pairs_statistics_as_one_pair_alone(monkeypatch):
    """pairstats.Batch against compare_samples, pair by pair, one generator each: sample
    counts odd and even, of 1 and 2, ties, every value equal, pairs of differing sizes."""
    monkeypatch.setattr(pairstats, "BATCH", 64)
    rng = np.random.default_rng(9)
    pairs = []
    for i in range(150):
        na, nb = [(1, 1), (2, 3), (5, 5), (35, 36), (155, 155), (1000, 999), (8, 9)][i % 7]
        a, b = rng.lognormal(0, 0.05, na), rng.lognormal(0.03 * (i % 3), 0.05, nb)
        if i % 5 == 0:
            a, b = np.round(a, 2), np.round(b, 2)
        if i % 17 == 0:
            a, b = np.full(na, 3.0), np.full(nb, 3.0)
        pairs.append((a.tolist(), b.tolist()))
    one, batched = np.random.default_rng(4), np.random.default_rng(4)
    shared = resample.Draws(one, compare.N_BOOT)
    want = [compare.compare_samples(a, b, 0.05, 0.01, rng=one, draws=shared) for a, b in pairs]
    got = []
    batch = pairstats.Batch(0.01, compare.N_BOOT, batched)
    for a, b in pairs:
        batch.add(a, b, lambda *st: got.append(st))
    batch.flush()
    assert [(w.ratio, w.ci_low, w.ci_high, w.p) for w in want] == got
    assert one.random() == batched.random()          # the same draws, no more


def test_bootstrap_draws_are_made_once_per_sample_count_and_side():
    """Common random numbers: every pair of one sample count shares its side's draws, HEAD's
    and BASE's are drawn apart (independent even at one count), and each is the median's
    order statistic drawn as bootstrap_medians of its own draws gives it."""
    rng = np.random.default_rng(2)
    draws = resample.Draws(rng, compare.N_BOOT)
    for _ in range(3):
        for n in (35, 36):
            for side in (resample.HEAD, resample.BASE):
                draws.index(n, side)
    fresh = np.random.default_rng(2)
    fresh.random(4 * compare.N_BOOT)
    assert rng.random() == fresh.random()                 # 4 draws made, not 12
    assert draws.index(35, resample.HEAD) is draws.index(35, resample.HEAD)
    assert not np.array_equal(draws.index(35, resample.HEAD)[0], draws.index(35, resample.BASE)[0])
    x = np.random.default_rng(3).lognormal(0, 0.1, 36)
    assert np.array_equal(compare.bootstrap_medians(x, rng=np.random.default_rng(7)),
                          compare.bootstrap_medians(x, draws=resample.Draws(np.random.default_rng(7), compare.N_BOOT)))
    lo, hi = draws.index(36, resample.BASE)
    assert (lo <= hi).all() and lo.min() >= 0 and hi.max() <= 35 and draws.index(35, resample.BASE)[1] is None


@pytest.mark.parametrize("n1, n2", [(30, 40), (21, 21), (500, 700), (3, 50), (5, 6), (8, 8), (9, 9), (2, 2)])
def test_rank_test_of_rows_is_each_rows(n1, n2):
    rng = np.random.default_rng(n1 + n2)
    x, y = rng.lognormal(0, 0.1, (12, n1)), rng.lognormal(0.02, 0.1, (12, n2))
    x[::3], y[::3] = np.round(x[::3], 1), np.round(y[::3], 1)        # ties in every third row
    x[1], y[1] = 2.0, 2.0                                              # all equal
    assert ranktest.mann_whitney_p_rows(x, y) == [compare.mann_whitney_p(y[i], x[i]) for i in range(12)]


def test_records_pair_up_exactly_when_their_shapes_json_is_equal():
    """compare's key tells shapes apart as their JSON does (it was json.dumps of the shape)."""
    shapes = [{"m": 1}, {"m": 1.0}, {"m": True}, {"m": "1"}, {"m": 0.0}, {"m": -0.0}, {"m": 1, "n": 2},
              {"n": 2, "m": 1}, {"m": 1, "n": 2.5}, {"m": 1e300}, {"m": 10 ** 18}, {}, {"m": False}, {"m": 0}]
    rec = {"op": "gemm", "dtype": "fp32", "backend": "torch"}
    for a in shapes:
        for b in shapes:
            same_json = json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
            ka, kb = compare.record_key({**rec, "shape": a}), compare.record_key({**rec, "shape": b})
            assert (ka == kb) == same_json and (hash(ka) == hash(kb)) >= same_json, (a, b)


def test_compare_and_report_csv_read_with_the_cyclic_collector_paused(tmp_path, capsys, monkeypatch):
    """The collector's walks over every live object were 8% of compare's CPU on 100,000
    records (kernelmark/gcpause.py): paused while the records are read and reported, and on
    again afterwards, also when reading fails."""
    import gc
    seen = []
    real_compare, real_render = compare.compare_runs, table._csv
    monkeypatch.setattr(compare, "compare_runs", lambda *a, **k: seen.append(gc.isenabled()) or real_compare(*a, **k))
    monkeypatch.setattr(table, "_csv", lambda *a, **k: seen.append(gc.isenabled()) or real_render(*a, **k))
    path = big_run(tmp_path / "r.jsonl", 50, seed=1)
    assert cli.main(["compare", path, path]) == 0
    assert cli.main(["report", path, "--format", "csv"]) == 0
    capsys.readouterr()
    assert seen == [False, False] and gc.isenabled()
    (tmp_path / "bad.jsonl").write_text(Path(path).read_text().replace('"status": "ok"', '"status": 7', 1))
    assert cli.main(["compare", str(tmp_path / "bad.jsonl"), path]) == 2 and gc.isenabled()


def test_the_median_of_sorted_rows_is_numpys():
    rng = np.random.default_rng(5)
    for n in (1, 2, 3, 4, 35, 1000, 1001):
        x = np.sort(rng.lognormal(0, 3, (50, n)) * rng.choice([1e-6, 1.0, 1e9], (50, 1)), axis=1)
        x[::4] = np.round(x[::4], 1)
        assert pairstats._median_of_sorted(x).tolist() == np.median(x, axis=1).tolist()
