"""Collectives: bus bandwidth factors, inputs and references, the lockstep rules, and the suite
end to end under torchrun with two gloo processes on this CPU (as docs/multi-gpu.md says to
launch it; `python -m torch.distributed.run` is the torchrun script)."""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from kernelmark import cli, results
from kernelmark.multi import distributed
from kernelmark.harness import timing
from kernelmark.ops import collectives
from kernelmark.ops.registry import get_op

ROOT = Path(__file__).resolve().parents[2]
OPS = ("all_reduce", "all_gather", "reduce_scatter", "all_to_all", "broadcast")


def _torchrun(*args, env_extra=None, timeout=150):
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "WORLD_SIZE", "RANK")}
    env.update({"PYTHONPATH": str(ROOT), "KERNELMARK_NO_HISTORY": "1", **(env_extra or {})})
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           "-m", "kernelmark", "run", *args], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=timeout)


# ---------------------------------------------------------------- formulas

@pytest.mark.parametrize("n", [2, 3, 4, 8, 16, 64])
def test_bus_factors_are_nccl_tests_closed_forms(n):
    assert collectives.bus_factor("all_reduce", n) == pytest.approx(2 * (n - 1) / n)
    for op in ("all_gather", "reduce_scatter", "all_to_all"):
        assert collectives.bus_factor(op, n) == pytest.approx((n - 1) / n)
    assert collectives.bus_factor("broadcast", n) == 1.0


def test_busbw_examples():
    # 8 ranks: all_reduce moves 2*7/8 of S per rank; 100 GB/s algbw is 175 GB/s on the bus.
    assert collectives.busbw_gbps("all_reduce", 100.0, 8) == pytest.approx(175.0)
    assert collectives.busbw_gbps("all_gather", 80.0, 2) == pytest.approx(40.0)
    assert collectives.busbw_gbps("broadcast", 42.0, 8) == pytest.approx(42.0)
    assert set(collectives.BUS_FACTOR) == set(OPS) == set(collectives.NAMES)


def test_message_is_whole_elements_per_rank(monkeypatch):
    monkeypatch.setattr(collectives, "world", lambda: (0, 3))
    op = get_op("all_gather")
    assert op.nbytes({"bytes": 1024}, "fp32") == 255 * 4        # 256 elements -> 85 per rank
    assert op.nbytes({"bytes": 1024}, "bf16") == 510 * 2
    assert op.flops({"bytes": 1024}) == 0
    b = op.backend("torch")
    assert b.supports({"bytes": 8}, "fp32", "cpu", None) is not None   # 2 elements, 3 ranks
    assert b.supports({"bytes": 12}, "fp32", "cpu", None) is None


# ---------------------------------------------------------------- inputs and references, simulated ranks

def _simulate(op_name, n, dtype, nbytes=4096, seed=7):
    """Each rank's inputs and reference, and what the collective would leave on each rank."""
    op = get_op(op_name)
    ranks = []
    for r in range(n):
        collectives_world = (r, n)
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(collectives, "world", lambda w=collectives_world: w)
            x = op.make_inputs({"bytes": nbytes}, dtype, torch.device("cpu"), torch.Generator().manual_seed(seed))
            ranks.append((x, op.reference(x)))
    xs = [x["x"] for x, _ in ranks]
    chunk = ranks[0][0]["chunk"]
    if op_name == "all_reduce":
        want = [sum(xs)] * n
    elif op_name == "all_gather":
        want = [torch.cat(xs)] * n
    elif op_name == "reduce_scatter":
        want = [sum(x[r * chunk:(r + 1) * chunk] for x in xs) for r in range(n)]
    elif op_name == "all_to_all":
        want = [torch.cat([x[r * chunk:(r + 1) * chunk] for x in xs]) for r in range(n)]
    else:
        want = [xs[0]] * n
    return ranks, want


@pytest.mark.parametrize("op_name", OPS)
@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_reference_is_what_the_collective_must_produce(op_name, dtype):
    ranks, want = _simulate(op_name, 4, dtype)
    xs = [x["x"] for x, _ in ranks]
    assert not torch.equal(xs[0], xs[1])                  # ranks hold different data
    assert all(bool((x >= 1).all()) for x in xs)          # positive integers: in-place sums never NaN
    op = get_op(op_name)
    for (x, ref), w in zip(ranks, want):
        assert torch.equal(ref, w.to(ref.dtype))
        assert op.compare(w.to(ref.dtype), ref, dtype).passed
        if "out" in x:                                    # unwritten output is visible
            assert bool((x["out"] == -1).all())


@pytest.mark.parametrize("op_name", ["all_reduce", "reduce_scatter"])
def test_reduction_check_is_bitwise(op_name):
    # bf16's tolerance (1.6e-2 relative L2) would pass one wrong element in thousands; this does not.
    ranks, _ = _simulate(op_name, 8, "bf16", nbytes=1 << 16)
    x, ref = ranks[3]
    bad = ref.clone()
    bad[17] += 1
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(collectives, "world", lambda: (3, 8))
        c = get_op(op_name).compare(bad, ref, "bf16")
        assert not c.passed and c.tolerance == 0.0
        assert get_op(op_name).compare(ref.clone(), ref, "bf16").passed


def test_outside_torchrun_the_suite_is_skipped_with_the_launch_line(tmp_path):
    out = tmp_path / "solo.jsonl"
    rc = cli.main(["run", "--suite", "collectives", "--device", "cpu", "--dtypes", "fp32",
                   "--ops", "all_reduce,broadcast", "--isolation", "none", "--out", str(out),
                   "--no-history", "--quiet"])
    assert rc == 0
    recs = results.load(str(out)).records
    assert len(recs) == 12 and all(r["status"] == "skipped" for r in recs)
    assert all("torchrun --nproc-per-node" in r["reason"] for r in recs)


# ---------------------------------------------------------------- lockstep rules

class _FakeComm:
    """A rank whose peer reports ``peer(values)``; max_floats is the element-wise max of both."""
    world, rank = 2, 0

    def __init__(self, peer):
        self.peer, self.calls = peer, 0
        self.target = type("T", (), {"is_gpu": False})()

    def barrier(self):
        pass

    def max_floats(self, values):
        self.calls += 1
        return [max(a, b) for a, b in zip(values, self.peer(values))]

    def gather(self, obj):
        return [obj, obj]


def test_stopping_follows_the_shared_numbers_not_the_local_clock():
    # The peer has spent its budget already: this rank must stop after the same first batch,
    # although its own clock says it has most of a 60 s budget left.
    comm = _FakeComm(lambda v: v[:-1] + [1e9])
    cfg = timing.TimingConfig(budget_s=60.0, target_ci_rel=1e-12, min_samples=10)
    t, mine = distributed.time_lockstep(lambda: None, comm, cfg)
    assert t.summary.n == len(mine) == distributed.FIRST_BATCH
    assert comm.calls == 2 and not t.converged          # the estimate, then one batch


def test_samples_are_the_slowest_rank_and_inner_is_shared():
    comm = _FakeComm(lambda v: [x + 5000.0 for x in v])   # the peer is 5 ms slower on everything
    cfg = timing.TimingConfig(budget_s=0.01, target_ci_rel=0.5, min_samples=5)
    t, mine = distributed.time_lockstep(lambda: None, comm, cfg)
    assert t.inner == 1                    # from the peer's 5 ms estimate, not this rank's microseconds
    assert t.summary.min_us >= 5000.0 > max(mine)
    assert t.method == "cpu_perf_counter_max_over_ranks"


def test_agreement_names_the_rank_only_when_ranks_differ():
    same = {"status": "skipped", "reason": "why"}

    class C:
        def __init__(self, outs):
            self.outs = outs

        def gather(self, _):
            return self.outs
    assert distributed._agreed(C([None, None]), None) is None
    assert distributed._agreed(C([same, same]), same) == same
    got = distributed._agreed(C([None, {"status": "error", "reason": "boom"}, None]), None)
    assert got == {"status": "error", "reason": "rank 1: boom"}


def test_link_peaks():
    h100 = "NVIDIA H100 80GB HBM3"
    assert collectives.link_peak([h100] * 8, ["n1"] * 8, "cuda")["gbps"] == 450
    assert collectives.link_peak([h100, "NVIDIA A100-SXM4-80GB"], ["n1"] * 2, "cuda")["gbps"] == 300
    for names, hosts, kind in (([h100] * 2, ["n1", "n2"], "cuda"), (["NVIDIA H100 PCIe"] * 2, ["n"] * 2, "cuda"),
                               (["NVIDIA GH200 480GB"] * 2, ["n"] * 2, "cuda"), (["cpu"] * 2, ["n"] * 2, "cpu")):
        got = collectives.link_peak(names, hosts, kind)
        assert got["gbps"] is None and got["name"] == "unknown" and got["why"]
    assert all(src for *_, src in collectives.LINK_PEAKS)


def test_device_under_torchrun():
    assert distributed.resolve_target("cpu", 1).kind == "cpu"
    with pytest.raises(cli.UsageError, match="LOCAL_RANK"):
        distributed.resolve_target("cuda:3", 0)


def test_all_gpus_under_torchrun_is_a_usage_error(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    rc = cli.main(["run", "--all-gpus", "--suite", "collectives"])
    assert rc == cli.USAGE_ERROR


# ---------------------------------------------------------------- end to end under torchrun

@pytest.fixture(scope="module")
def torchrun_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist") / "coll.jsonl"
    p = _torchrun("--suite", "collectives", "--device", "cpu", "--dtypes", "fp32", "--budget", "0.02",
                  "--timeout", "60", "--out", str(out))
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return p, out


def test_torchrun_rank0_writes_one_run_file_with_every_rank(torchrun_run):
    p, out = torchrun_run
    assert [f.name for f in out.parent.iterdir()] == ["coll.jsonl"]
    assert p.stdout.count("collectives on 2 ranks (gloo)") == 1          # rank 1 prints nothing
    run = results.load(str(out))
    assert run.complete
    h = run.header
    assert [r["rank"] for r in h["ranks"]] == [0, 1]
    assert all(r["host"] and r["device"]["kind"] == "cpu" for r in h["ranks"])
    assert h["distributed"]["world_size"] == 2 and h["distributed"]["backend"] == "gloo"
    assert h["distributed"]["link"]["name"] == "unknown"
    assert h["isolation"].startswith("none")


def test_torchrun_records_are_checked_and_carry_busbw(torchrun_run):
    _, out = torchrun_run
    recs = results.load(str(out)).records
    assert {r["op"] for r in recs} == set(OPS) and len(recs) == 30
    for r in recs:
        assert r["status"] == "ok", (r["op"], r.get("reason"))
        assert r["check"]["passed"] and r["check"]["tolerance"] == 0.0      # bitwise
        med = r["timing"]["median_us"]
        assert r["gbps"] == pytest.approx(r["bytes"] / (med * 1e-6) / 1e9) == r["algbw_gbps"]
        assert r["busbw_gbps"] == pytest.approx(r["gbps"] * collectives.bus_factor(r["op"], 2))
        assert r["pct_of_link_peak"] == "unknown" and r["tflops"] is None
        # The stored sample is each sample's max over ranks: its median is at least every rank's own.
        assert len(r["rank_median_us"]) == 2 and med >= max(r["rank_median_us"]) - 1e-3
        assert r["timing"]["method"] == "cpu_perf_counter_max_over_ranks"


_CHAOS = '''
import torch
from kernelmark.ops import collectives as c
from kernelmark.ops.base import Backend, Op

def _corrupt(x):
    out = c._run_all_reduce(x)
    if c.world()[0] == 1:           # rank 1 alone gets a wrong element
        out[3] += 1
    return out

def _inputs_fail_on_rank1(shape, dtype, device, gen):
    if c.world()[0] == 1:
        raise RuntimeError("rank 1 cannot make inputs")
    return c._inputs("all_reduce")(shape, dtype, device, gen)

def _op(name, make, run):
    return Op(name=name, description="test", params=("bytes",), dtypes=("fp32", "bf16"), make_inputs=make,
              reference=c._reference("all_reduce"), flops=c.flops, nbytes=c.nbytes, check=c._check,
              memory_peak="link", backends=(Backend("torch", run, available=c._available),))

OPS = [_op("chaos_wrong_on_rank1", c._inputs("all_reduce"), _corrupt),
       _op("chaos_inputs_fail_on_rank1", _inputs_fail_on_rank1, c._run_all_reduce)]
'''

_SUITE = '''
name = "chaos"
[defaults]
budget_s = 0.02
[[case]]
op = "chaos_wrong_on_rank1"
shapes = [{bytes = 4096}]
[[case]]
op = "chaos_inputs_fail_on_rank1"
shapes = [{bytes = 4096}]
[[case]]
op = "gemm"
backends = ["torch"]
shapes = [{m = 8, n = 8, k = 8}]
''' + "".join(f'[[case]]\nop = "{op}"\ndtypes = ["bf16"]\nshapes = [{{bytes = 4096}}]\n' for op in OPS)


def test_torchrun_failures_on_one_rank_are_agreed_not_deadlocked(tmp_path):
    (tmp_path / "chaos_collectives.py").write_text(textwrap.dedent(_CHAOS))
    suite = tmp_path / "chaos.toml"
    suite.write_text(_SUITE)
    out = tmp_path / "chaos.jsonl"
    p = _torchrun("--suite", str(suite), "--device", "cpu", "--timeout", "60", "--out", str(out), "--quiet",
                  env_extra={"KERNELMARK_OP_MODULES": "chaos_collectives",
                             "PYTHONPATH": f"{ROOT}{os.pathsep}{tmp_path}"})
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    recs = {r["op"]: r for r in results.load(str(out)).records}
    wrong = recs["chaos_wrong_on_rank1"]
    assert wrong["status"] == "failed_check" and wrong["reason"].startswith("rank 1:") and "timing" not in wrong
    assert not wrong["check"]["passed"]
    failed = recs["chaos_inputs_fail_on_rank1"]
    assert failed["status"] == "error" and "rank 1" in failed["reason"] and "cannot make inputs" in failed["reason"]
    gemm = recs["gemm"]
    assert gemm["status"] == "skipped" and gemm["reason"].startswith("not a collective")
    for op in OPS:                          # bf16, after the failures: the ranks are still in step
        assert recs[op]["status"] == "ok" and recs[op]["check"]["tolerance"] == 0.0, recs[op].get("reason")


def test_torchrun_usage_error_on_one_rank_stops_every_rank(tmp_path):
    bad = tmp_path / "dir-not-file"
    bad.mkdir()
    p = _torchrun("--suite", "collectives", "--device", "cpu", "--out", str(bad), "--timeout", "60")
    assert p.returncode != 0
    assert "is a directory" in p.stderr
