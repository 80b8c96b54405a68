"""kernelmark/reports/compare.py and `kernelmark compare`: the verdicts, their error
rates on synthetic timings with known shifts, exit codes, and real runs on this CPU."""
import importlib.util
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from kernelmark import cli, results
from kernelmark.reports import compare

ROOT = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------ decision rule

@pytest.mark.parametrize("ratio, lo, hi, p, verdict", [
    (1.10, 1.07, 1.13, 1e-9, "slower"),        # significant and beyond 5%
    (0.90, 0.87, 0.93, 1e-9, "faster"),
    (1.03, 1.02, 1.04, 1e-9, "unchanged"),     # real but within the threshold
    (1.04, 1.02, 1.06, 1e-9, "unchanged"),     # precise enough: the band is not straddled widely
    (1.10, 1.07, 1.13, 0.2, "noisy"),          # beyond the threshold, rank test does not confirm
    (1.10, 0.98, 1.25, 1e-3, "noisy"),         # interval holds 1: not significant
    (1.01, 0.97, 1.08, 0.5, "noisy"),          # cannot tell no change from a 5% one
    (1.00, 0.98, 1.02, 0.9, "unchanged"),
])
def test_decide(ratio, lo, hi, p, verdict):
    assert compare.decide(ratio, lo, hi, p, threshold=0.05, alpha=0.01) == verdict


def test_exact_bootstrap_of_the_median_matches_resampling():
    rng = np.random.default_rng(3)
    x = rng.lognormal(0, 0.05, 75)
    exact = compare.bootstrap_medians(x, n_boot=100_000, rng=rng)
    naive = np.median(x[rng.integers(0, x.size, (20_000, x.size))], axis=1)
    qs = [0.005, 0.025, 0.5, 0.975, 0.995]
    assert np.allclose(np.quantile(exact, qs), np.quantile(naive, qs), rtol=2e-3)


def test_cluster_bootstrap_carries_between_process_spread():
    rng = np.random.default_rng(4)
    offsets = [0.0, 0.08, -0.05, 0.06, -0.07]          # each process lands elsewhere
    x = np.concatenate([100 * np.exp(o + rng.normal(0, 0.01, 60)) for o in offsets])
    flat = compare.bootstrap_medians(x, rng=rng)
    grouped = compare.bootstrap_medians(x, [60] * 5, rng=rng)
    width = lambda b: np.log(np.quantile(b, 0.995) / np.quantile(b, 0.005))  # noqa: E731
    assert width(grouped) > 3 * width(flat)
    # Same data, same process spread on HEAD: pooled samples alone would call a shift,
    # the process-aware interval says it cannot tell.
    y = np.concatenate([103 * np.exp(o + rng.normal(0, 0.01, 60)) for o in offsets[::-1]])
    assert compare.compare_samples(x, y, 0.02, 0.01, rng=rng).verdict == "slower"
    assert compare.compare_samples(x, y, 0.02, 0.01, [60] * 5, [60] * 5, rng=rng).verdict == "noisy"


# ------------------------------------------------------------------ error rates (scripts/compare_power.py)

def _power_module():
    spec = importlib.util.spec_from_file_location("compare_power", ROOT / "scripts" / "compare_power.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["compare_power"] = mod           # its dataclasses look themselves up there
    spec.loader.exec_module(mod)
    return mod


def test_false_alarms_and_detection_over_1000_trials():
    """One process per side with docs/design.md's between-process spread (sigma 0.5%), the
    timing engine's sample counts, T = 3%: a 5% slowdown is caught, A/A never fails."""
    pw = _power_module()
    sc = pw.Scenario("test", threshold=0.03, sigma_p=0.005)
    aa = pw.verdict_rates(sc, 0.0, 1000, seed=11)
    slow = pw.verdict_rates(sc, 0.05, 1000, seed=12)
    assert aa.get("slower", 0) <= 0.01, aa
    assert slow.get("slower", 0) >= 0.95, slow
    assert 10 <= aa["median_n"] <= 320


def test_process_clusters_read_noisy_not_slower_when_processes_are_pooled():
    """docs/design.md's tiny matmuls: each process lands in one of two clusters 20% apart. One
    process per side cannot be protected (the threshold is all there is); five pooled
    processes per side give `noisy`, never `slower`."""
    pw = _power_module()
    single = pw.verdict_rates(pw.Scenario("1", 0.05, clusters=0.2), 0.0, 300, seed=21)
    pooled = pw.verdict_rates(pw.Scenario("5", 0.05, clusters=0.2, rounds=5), 0.0, 300, seed=22)
    assert single.get("slower", 0) > 0.1
    assert pooled.get("slower", 0) <= 0.01 and pooled.get("noisy", 0) > 0.5


# ------------------------------------------------------------------ matching runs, files, exit codes

HEADER = {"kernelmark": "0.1.0", "command": ["test"], "suite": {"name": "t", "path": "t.toml", "sha256": "0"},
          "device": {"kind": "cpu", "name": "Test CPU", "arch": "x86_64", "capability": None,
                     "cpu": {"torch_threads": 2}, "git": {"commit": "abc", "dirty": False}},
          "peaks": {}, "timing": {}, "started": "2026-11-01T00:00:00+0000"}


def rec(m, status="ok", median=10.0, shift=1.0, n=75, seed=0, dtype="fp32", backend="torch"):
    r = {"op": "gemm", "shape": {"m": m, "n": 8}, "dtype": dtype, "backend": backend, "status": status}
    if status == "ok":
        s = (median * shift * np.exp(np.random.default_rng(seed).normal(0, 0.02, n))).round(4).tolist()
        r["timing"] = {"method": "cpu_perf_counter", "n": n, "median_us": float(np.median(s)), "samples_us": s,
                       "ci_rel": 0.005}
    elif status == "failed_check":
        r["reason"] = "relative L2 error 0.3 exceeds tolerance 1e-05"
    return r


def write_run(path, records, header=None, footer=True, run_id="r1"):
    w = results.RunWriter(str(path))
    w.header({**(header or HEADER), "run_id": run_id})
    for r in records:
        w.record(r)
    if footer:
        w.footer({"finished": "2026-11-01T00:01:00+0000", "wall_s": 1.0})
    w.close()
    return str(path)


def test_every_verdict_and_worst_first(tmp_path):
    base = write_run(tmp_path / "a.jsonl", [rec(1, seed=1), rec(2, seed=2), rec(3, seed=3), rec(4, seed=4),
                                            rec(5, seed=5), rec(7, "checked")])
    head = write_run(tmp_path / "b.jsonl", [rec(1, seed=11), rec(2, shift=1.5, seed=12), rec(3, shift=0.5, seed=13),
                                            rec(4, "failed_check"), rec(6, seed=16), rec(7, "error")])
    c = compare.compare_runs(results.load(base), results.load(head), 0.05, 0.01)
    got = {p.shape["m"]: p.verdict for p in c.pairs}
    assert got == {1: "unchanged", 2: "slower", 3: "faster", 4: "check-failed", 5: "missing", 6: "new",
                   7: "check-failed"}
    assert [p.verdict for p in c.pairs][:3] == ["check-failed", "check-failed", "slower"]
    assert c.pairs[2].ratio == pytest.approx(1.5, rel=0.03) and c.pairs[2].ci_low > 1.4
    assert c.geomean == pytest.approx((1.5 * 0.5 * 1.0) ** (1 / 3), rel=0.05)   # timed pairs only
    assert {p.shape["m"] for p in c.regressions("slower")} == {2, 4, 7}
    assert {p.shape["m"] for p in c.regressions("any")} == {2, 3, 4, 5, 7}


def test_cli_exit_codes_and_formats(tmp_path, capsys):
    a = write_run(tmp_path / "a.jsonl", [rec(1, seed=1), rec(2, seed=2)])
    same = write_run(tmp_path / "same.jsonl", [rec(1, seed=3), rec(2, seed=4)])
    slow = write_run(tmp_path / "slow.jsonl", [rec(1, seed=3), rec(2, shift=1.3, seed=4)])
    assert cli.main(["compare", a, same]) == 0
    out = capsys.readouterr().out
    assert "geometric mean ratio HEAD/BASE" in out and "result: no regression" in out
    assert cli.main(["compare", a, slow, "--format", "md"]) == 1
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].startswith("> BASE ") and lines[3].startswith("> geometric mean ratio") and "SLOWER: gemm m=2 n=8" in out and "| slower" in out
    assert cli.main(["compare", a, slow, "--format", "json", "--threshold", "40%"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["threshold"] == 0.4 and doc["regressions"] == 0 and doc["pairs"][0]["verdict"] == "unchanged"
    assert cli.main(["compare", a, slow, "--threshold", "0.5", "--fail-on", "any"]) == 0
    assert cli.main(["compare", a, slow, "--threshold", "5 percent"]) == 2
    assert "--threshold" in capsys.readouterr().err


def test_device_or_dtype_mismatch_is_refused_unless_allowed(tmp_path, capsys):
    a = write_run(tmp_path / "a.jsonl", [rec(1, seed=1)])
    other = {**HEADER, "device": {**HEADER["device"], "name": "Other CPU"}}
    b = write_run(tmp_path / "b.jsonl", [rec(1, seed=2)], header=other)
    c = write_run(tmp_path / "c.jsonl", [rec(1, seed=2), rec(1, seed=3, dtype="bf16")])
    assert cli.main(["compare", a, b]) == 2
    assert "different devices: name 'Test CPU' vs 'Other CPU'" in capsys.readouterr().err
    assert cli.main(["compare", a, c]) == 2
    assert "different dtype sets" in capsys.readouterr().err
    assert cli.main(["compare", a, b, "--allow-device-mismatch"]) == 0
    assert capsys.readouterr().out.startswith("WARNING: compared despite different devices")


GPU_DEVICE = {"kind": "cuda", "name": "NVIDIA H100", "arch": "sm_90", "capability": [9, 0], "multiprocessors": 132,
              "git": {"commit": "abc", "dirty": False}}


@pytest.mark.parametrize("allow", [[], ["--allow-device-mismatch"]])
def test_a_cpu_run_and_a_gpu_run_are_refused_in_either_order(tmp_path, capsys, allow):
    cpu = write_run(tmp_path / "cpu.jsonl", [rec(1, seed=1)])
    gpu = write_run(tmp_path / "gpu.jsonl", [rec(1, seed=2)], header={**HEADER, "device": GPU_DEVICE})
    for base, head in ((cpu, gpu), (gpu, cpu)):
        assert cli.main(["compare", base, head, *allow]) == 2      # 2: bad input, never 1 (a regression)
        err = capsys.readouterr().err
        assert err.startswith("kernelmark: error: refusing to compare: cannot compare a CPU run with a GPU run")
        assert err.count("\n") == 1 and "Traceback" not in err and "ran on cuda (NVIDIA H100)" in err


def test_devices_whose_identities_have_different_fields_are_a_mismatch(tmp_path, capsys):
    # A header without a device kind carries a GPU's fields, a CPU's header a thread count.
    a = write_run(tmp_path / "a.jsonl", [rec(1, seed=1)])
    b = write_run(tmp_path / "b.jsonl", [rec(1, seed=2)], header={**HEADER, "device": {"name": "Test CPU"}})
    assert cli.main(["compare", a, b]) == 2
    err = capsys.readouterr().err
    assert "different devices: kind 'cpu' vs None" in err and "torch_threads 2 vs None" in err
    assert cli.main(["compare", a, b, "--allow-device-mismatch"]) == 0


def test_rows_timed_on_neither_side_are_not_timed_not_unchanged(tmp_path, capsys):
    base = write_run(tmp_path / "a.jsonl", [rec(1, seed=1), rec(2, "checked", backend="triton"),
                                            rec(3, "skipped", backend="flash-attn")])
    head = write_run(tmp_path / "b.jsonl", [rec(1, seed=2), rec(2, "checked", backend="triton"),
                                            rec(3, "skipped", backend="flash-attn")])
    c = compare.compare_runs(results.load(base), results.load(head), 0.05, 0.01)
    got = {p.shape["m"]: p.verdict for p in c.pairs}
    assert got == {1: "unchanged", 2: "not timed", 3: "not timed"}
    assert c.counts()["unchanged"] == 1 and c.counts()["not timed"] == 2 and not c.regressions("any")
    assert cli.main(["compare", base, head]) == 0
    assert "verdicts: 1 unchanged, 2 not timed" in capsys.readouterr().out


def test_bad_input(tmp_path, capsys):
    a = write_run(tmp_path / "a.jsonl", [rec(1, seed=1), rec(2, seed=2)])
    # A run killed mid-write: the truncated last line is dropped with a warning.
    cut = tmp_path / "cut.jsonl"
    text = Path(a).read_text().splitlines(keepends=True)
    cut.write_text("".join(text[:-1])[:-40])
    assert cli.main(["compare", a, str(cut)]) == 0
    err = capsys.readouterr().err
    assert "truncated last line dropped" in err and "no footer" in err
    newer = tmp_path / "newer.jsonl"
    newer.write_text(Path(a).read_text().replace('"schema": 1', '"schema": 2', 1))
    assert cli.main(["compare", a, str(newer)]) == 2
    assert "newer kernelmark (run file schema 2)" in capsys.readouterr().err
    older = tmp_path / "older.jsonl"
    older.write_text(Path(a).read_text().replace('"schema": 1', '"schema": 0', 1))
    assert cli.main(["compare", str(older), a]) == 2
    assert "older than any this kernelmark reads" in capsys.readouterr().err
    pb = tmp_path / "pb.json"
    pb.write_text(json.dumps({"machine_info": {}, "benchmarks": []}))
    assert cli.main(["compare", str(pb), a]) == 2
    assert "pytest-benchmark JSON, not a kernelmark run file" in capsys.readouterr().err
    junk = tmp_path / "junk.jsonl"
    junk.write_bytes(b"\x80\x04\x95 pickle-ish bytes")
    assert cli.main(["compare", str(junk), a]) == 2
    assert "cannot read it as a run file" in capsys.readouterr().err
    assert cli.main(["compare", str(tmp_path / "nope.jsonl"), a]) == 2


# ------------------------------------------------------------------ stalls, processes, CPU identity

def stalled(m, seed=0):
    """The issue's GEMM when most calls waited for a descheduled thread: 70% of the samples at
    ~8 ms, the rest at the ~6 us the call takes; the harness marks such timings with a stall."""
    rng = np.random.default_rng(seed)
    s = np.concatenate([6 * np.exp(rng.normal(0, 0.02, 22)), 7985 * np.exp(rng.normal(0, 0.002, 53))])
    rng.shuffle(s)
    s = s.round(4).tolist()
    return {"op": "gemm", "shape": {"m": m, "n": 8}, "dtype": "fp32", "backend": "torch", "status": "ok",
            "timing": {"method": "cpu_perf_counter", "n": len(s), "median_us": float(np.median(s)), "samples_us": s,
                       "ci_rel": 0.003, "stall": "stalls: median 7985 µs is 1331x the fastest samples (6 µs)"}}


def test_a_stalled_side_reads_noisy_never_slower_or_faster(tmp_path, capsys):
    clean = write_run(tmp_path / "clean.jsonl", [rec(1, median=6.0, seed=1), rec(2, median=6.0, seed=2)])
    bad = write_run(tmp_path / "bad.jsonl", [stalled(1, seed=3), rec(2, median=6.0, seed=4)])
    assert cli.main(["compare", clean, bad, "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    p = {q["shape"]["m"]: q for q in doc["pairs"]}
    assert p[1]["verdict"] == "noisy" and p[1]["ratio"] > 1000 and p[1]["note"].startswith("HEAD stalls: median")
    assert p[2]["verdict"] == "unchanged"
    assert cli.main(["compare", bad, clean, "--format", "json"]) == 0          # would read `faster`
    doc = json.loads(capsys.readouterr().out)
    assert {q["shape"]["m"]: q["verdict"] for q in doc["pairs"]}[1] == "noisy"


def test_slower_than_a_stalled_base_is_slower_still(tmp_path, capsys):
    # Stalls only add time: HEAD at 20 ms is slower than BASE's true ~6 us, not only its 8 ms median.
    bad = write_run(tmp_path / "bad.jsonl", [stalled(1, seed=3)])
    slow = write_run(tmp_path / "slow.jsonl", [rec(1, median=20_000.0, seed=5)])
    assert cli.main(["compare", bad, slow, "--format", "json"]) == 1
    (p,) = json.loads(capsys.readouterr().out)["pairs"]
    assert p["verdict"] == "slower" and p["note"].startswith("BASE stalls: median")


def test_processes_weigh_equally_whatever_their_sample_count():
    rng = np.random.default_rng(8)
    base = np.concatenate([100 * np.exp(rng.normal(0, 0.01, 300)) for _ in range(5)])
    # HEAD: two quick processes took 600 samples each; three slowed ones 20 each in their budget.
    head = np.concatenate([100 * np.exp(rng.normal(0, 0.01, 600)) for _ in range(2)] +
                          [130 * np.exp(rng.normal(0, 0.01, 20)) for _ in range(3)])
    groups = [600, 600, 20, 20, 20]
    assert np.median(head) < 101                        # by sample count the slowed majority vanishes
    st = compare.compare_samples(base, head, 0.05, 0.01, [300] * 5, groups, rng=rng)
    assert st.ratio == pytest.approx(1.3, rel=0.02)
    reps = compare.bootstrap_medians(head, groups, rng=rng)
    assert np.mean(reps > 120) > 0.5                    # resamples with 3 or more slowed processes


def test_too_few_processes_to_resample_are_said(tmp_path):
    a, b = rec(1, seed=1, n=60), rec(1, seed=2, n=60)
    a["timing"]["groups"], b["timing"]["groups"] = [30, 30], [30, 30]
    pair = compare.compare_records(a, b, 0.05, 0.01, np.random.default_rng(0))
    assert pair.note == "2 vs 2 processes: too few to resample processes; the interval holds no between-process spread"


def _cpu_header(isa):
    cpu = {"torch_threads": 1, **({"isa": isa, "torch_capability": "AVX2"} if isa is not None else {})}
    return {**HEADER, "device": {**HEADER["device"], "name": "AMD EPYC", "cpu": cpu}}


def test_cpus_of_one_name_with_different_matmul_isa_are_different_devices(tmp_path, capsys):
    avx2 = write_run(tmp_path / "avx2.jsonl", [rec(1, seed=1)], header=_cpu_header(["avx2", "fma"]))
    bf16 = write_run(tmp_path / "bf16.jsonl", [rec(1, seed=2)],
                     header=_cpu_header(["avx2", "fma", "avx512f", "avx512_bf16"]))
    old = write_run(tmp_path / "old.jsonl", [rec(1, seed=3)], header=_cpu_header(None))   # before ISA was recorded
    assert cli.main(["compare", avx2, bf16]) == 2
    assert "different devices: isa ['avx2', 'fma'] vs ['avx2', 'fma', 'avx512f', 'avx512_bf16']" in capsys.readouterr().err
    assert cli.main(["compare", old, avx2]) == 0


# ------------------------------------------------------------------ end to end on this CPU

DELAY_US = 100.0   # the gemm cases here take ~10 us: the slowed side is several times slower


@pytest.fixture
def slowable_gemm(monkeypatch):
    """The gemm op, with a torch backend that busy-waits KERNELMARK_TEST_DELAY_US when set.
    Test-only: the op is swapped in the runner, nothing in the package changes."""
    import dataclasses
    import os

    import torch

    from kernelmark.harness import runner
    from kernelmark.ops.registry import get_op

    op = get_op("gemm")
    real = op.backend("torch").run

    def run(x):
        delay = float(os.environ.get("KERNELMARK_TEST_DELAY_US", "0"))
        if delay:
            end = time.perf_counter_ns() + delay * 1e3
            while time.perf_counter_ns() < end:
                pass
        return real(x)

    slowed = dataclasses.replace(op, backends=tuple(dataclasses.replace(b, run=run) if b.name == "torch" else b
                                                    for b in op.backends))
    monkeypatch.setattr(runner, "get_op", lambda name: slowed if name == "gemm" else get_op(name))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)      # one thread: other processes on this 2-core machine disturb it less
    yield monkeypatch
    torch.set_num_threads(threads)


def _run(path, delay_us=0.0, monkeypatch=None):
    monkeypatch.setenv("KERNELMARK_TEST_DELAY_US", str(delay_us))
    assert cli.main(["run", "--suite", "smoke", "--ops", "gemm", "--dtypes", "fp32", "--backends", "torch",
                     "--budget", "0.05", "--out", str(path), "--quiet", "--no-history", "--format", "csv",
                     "--isolation", "none"]) == 0        # in this process: the swapped op is used
    return str(path)


ROUNDS = 5


def test_real_runs_same_code_pass_slowed_backend_fails(tmp_path, slowable_gemm, capsys):
    """As `kernelmark ab` does: rounds interleaved, each side pooled with one sample group per
    run. The order rotates (A B S, B S A, S A B, ...) so that no side always runs in the same
    place (with A B S, S B A, B always ran second, right after a busy-waiting run). Between-run
    drift on this shared 2-core machine reaches 40% for these ~10 us cases while the whole
    suite runs beside them (a CI run saw one side 1.31x the other, every process of it slower),
    so the same-code threshold is 50%: the slowed side is several times slower, far beyond it."""
    from kernelmark.harness import ab
    files = {"a": [], "b": [], "slow": []}
    sides = ("a", "b", "slow")
    for r in range(ROUNDS):
        for side in sides[r % 3:] + sides[:r % 3]:
            files[side].append(_run(tmp_path / f"{side}{r}.jsonl", DELAY_US if side == "slow" else 0.0,
                                    slowable_gemm))
    pooled = {k: ab.pool(v, str(tmp_path / f"{k}.jsonl"), ["test"]).path for k, v in files.items()}
    capsys.readouterr()
    assert cli.main(["compare", pooled["a"], pooled["b"], "--threshold", "50%"]) == 0, capsys.readouterr().out
    capsys.readouterr()
    assert cli.main(["compare", pooled["a"], pooled["slow"], "--threshold", "50%", "--format", "json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert [p["verdict"] for p in doc["pairs"]] == ["slower"] * 4, \
        [(p["verdict"], p["ratio"], p["ci_low"], p["p"], p["note"]) for p in doc["pairs"]]
    assert all(p["ratio"] > 2 and p["note"].startswith("5 vs 5 processes") for p in doc["pairs"])


def test_a_code_generation_variable_that_differs_is_said_not_refused(tmp_path, capsys):
    env_a = {**HEADER, "device": {**HEADER["device"], "env": {"TRITON_DEFAULT_FP_FUSION": "0", "OMP_NUM_THREADS": "2"}}}
    env_b = {**HEADER, "device": {**HEADER["device"], "env": {"OMP_NUM_THREADS": "2"}}}
    a = write_run(tmp_path / "a.jsonl", [rec(1, seed=1)], header=env_a)
    b = write_run(tmp_path / "b.jsonl", [rec(1, seed=2)], header=env_b)
    assert cli.main(["compare", a, b]) == 0
    out = capsys.readouterr().out
    assert "environment differs: TRITON_DEFAULT_FP_FUSION '0' in BASE, '(unset)' in HEAD" in out
    assert "OMP_NUM_THREADS" not in out
    assert cli.main(["compare", a, a]) == 0 and "environment differs" not in capsys.readouterr().out
