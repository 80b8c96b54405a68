"""The runner on the CPU with a test-only op whose backends misbehave on purpose."""
import pytest
import torch

from kernelmark.harness import device, runner, timing
from kernelmark.reports import table
from kernelmark.suites.loader import Case
from kernelmark.ops.base import Backend, Op, Unsupported


def _make(shape, dtype, dev, gen):
    return {"x": torch.randn(shape["n"], generator=gen, device=dev)}


def _boom(x):
    raise RuntimeError("kernel exploded")


def _rejects(x):
    raise ValueError("n must be even")


TOY = Op(
    name="toy_scale", description="y = 2x", params=("n",), dtypes=("fp32",),
    make_inputs=_make, reference=lambda x: x["x"].double() * 2, flops=lambda s: s["n"],
    nbytes=lambda s, d: 8 * s["n"],
    backends=(
        Backend("good", lambda x: x["x"] * 2),
        Backend("wrong", lambda x: x["x"] * 2.001),
        Backend("crashes", _boom),
        Backend("rejects", _rejects),
        Backend("absent", lambda x: x, available=lambda: "libfoo is not installed"),
        Backend("gpu_only", lambda x: x, devices=("cuda",)),
    ),
)


@pytest.fixture
def toy_runner(monkeypatch):
    monkeypatch.setattr(runner, "get_op", lambda name: TOY)
    target = device.resolve("cpu")
    prof = {"l2_bytes": 1 << 20, "datasheet": None}
    peaks = {"copy_gbps": 10.0, "tflops": {"fp32": 0.1}}
    cfg = runner.RunConfig(timing=timing.TimingConfig(budget_s=0.05, min_samples=5), seed=1)
    out = []
    return runner.Runner(target, prof, peaks, cfg, out.append), out


def _case(n=256):
    return Case("toy_scale", {"n": n}, "fp32", tuple(b.name for b in TOY.backends), (), "", None, 1, 3)


def test_each_failure_is_recorded_and_the_rest_still_measured(toy_runner):
    r, out = toy_runner
    r.run([_case(), _case(512)])
    assert len(out) == 12
    by = {(rec["shape"]["n"], rec["backend"]): rec for rec in out}
    for n in (256, 512):
        assert by[n, "good"]["status"] == "ok" and by[n, "good"]["timing"]["n"] >= 5
        assert by[n, "wrong"]["status"] == "failed_check" and "timing" not in by[n, "wrong"]
        assert by[n, "crashes"]["status"] == "error" and "kernel exploded" in by[n, "crashes"]["reason"]
        assert by[n, "rejects"]["status"] == "error" and "n must be even" in by[n, "rejects"]["reason"]
        assert by[n, "absent"]["status"] == "skipped" and "libfoo" in by[n, "absent"]["reason"]
        assert by[n, "gpu_only"]["status"] == "unsupported"


def test_rates_follow_from_the_median(toy_runner):
    r, out = toy_runner
    r.run([_case(4096)])
    rec = next(x for x in out if x["backend"] == "good")
    sec = rec["timing"]["median_us"] * 1e-6
    assert rec["tflops"] == pytest.approx(rec["flops"] / sec / 1e12)
    assert rec["gbps"] == pytest.approx(rec["bytes"] / sec / 1e9)
    # intensity 1/8 flop per byte against a ridge of 0.1e12/10e9 = 10: memory bound.
    assert rec["bound"] == "memory"
    assert rec["pct_of_peak"] == pytest.approx(100 * rec["gbps"] / 10.0)


def test_failed_check_shows_as_failed_never_as_a_number(toy_runner):
    r, out = toy_runner
    r.run([_case()])
    header = {"device": {"name": "cpu"}, "suite": {"name": "t"}, "peaks": {"copy_gbps": 10.0}}
    text = table.render(header, out)
    wrong_line = next(line for line in text.splitlines() if " wrong " in line)
    assert "FAILED check" in wrong_line
    assert "±" not in wrong_line


def test_input_set_rotation_count():
    assert runner._n_input_sets(set_bytes=1 << 20, cache=50 << 20, free=1 << 40) == 64   # capped
    assert runner._n_input_sets(set_bytes=30 << 20, cache=50 << 20, free=1 << 40) == 4
    assert runner._n_input_sets(set_bytes=200 << 20, cache=50 << 20, free=1 << 40) == 1
    assert runner._n_input_sets(set_bytes=30 << 20, cache=50 << 20, free=100 << 20) == 1   # memory bound


def test_metrics_compute_bound_case():
    class O:
        memory_peak = "copy"
        flops = staticmethod(lambda s: 2e12)
        nbytes = staticmethod(lambda s, d: 1e9)
    m = runner.metrics(O, {}, "bf16", 1e6, {"copy_gbps": 1000.0, "tflops": {"bf16": 4.0}}, None)
    # 2 TFLOP in 1 s against a 4 TFLOP/s ceiling (intensity 2000 > ridge 4).
    assert m["bound"] == "compute" and m["pct_of_peak"] == pytest.approx(50.0)
    assert m["pct_of_datasheet"] is None


def test_rotation_respects_what_a_set_holds_not_just_what_it_touches():
    # A cache append touches 4 KB but holds 512 MiB: 64 sets would need 32 GiB.
    n = runner._n_input_sets(set_bytes=4096, cache=50 << 20, free=8 << 30, held_bytes=512 << 20)
    assert n == 4       # 25% of 8 GiB / 512 MiB


def test_tensor_bytes_counts_each_storage_once():
    a = torch.zeros(1000)
    assert runner.tensor_bytes({"a": a, "view": a[10:], "list": [torch.zeros(10, dtype=torch.int8)], "n": 3}) \
        == 4000 + 10


def test_gpu_rotation_only_where_enough_sets_are_cheap_else_one_set_and_the_flush():
    gpu = dict(cache=50 << 20, free=1 << 40, gpu=True)
    assert runner._n_input_sets(set_bytes=30 << 20, **gpu) == 4
    assert runner._n_input_sets(set_bytes=2 << 20, **gpu) == 50
    # Under ~1.6 MiB a call, 64 sets cannot cover twice a 50 MiB L2: one set, and the timing
    # flushes the L2 instead (the CPU rotates as many as it may).
    assert runner._n_input_sets(set_bytes=1 << 20, **gpu) == 1
    assert runner._n_input_sets(set_bytes=1 << 20, cache=50 << 20, free=1 << 40) == 64
    # The default suite's kv_append of 64 tokens: 262 KB touched of a 537 MB cache. The old
    # rule made 64 caches (34 GB).
    assert runner._n_input_sets(set_bytes=262 << 10, held_bytes=537 << 20, **gpu) == 1
    # Enough sets, but each holds far more than it touches: not worth the memory.
    assert runner._n_input_sets(set_bytes=4 << 20, held_bytes=64 << 20, **gpu) == 1
    assert runner._n_input_sets(set_bytes=30 << 20, cache=50 << 20, free=100 << 20, gpu=True) == 1
    assert runner._n_input_sets(set_bytes=200 << 20, **gpu) == 1


def _refuses(x):
    raise Unsupported("libfoo refuses this layout here")


PREPARED = []


def _prepare(x):
    PREPARED.append(x["x"].data_ptr())
    return {**x, "y": x["x"] * 2}


SETUP_OP = Op(
    name="toy_setup", description="y = 2x", params=("n",), dtypes=("fp32",),
    make_inputs=_make, reference=lambda x: x["x"].double() * 2, flops=lambda s: s["n"],
    nbytes=lambda s, d: 8 * s["n"],
    backends=(
        Backend("refuses", _refuses),
        Backend("prepared", lambda x: x["y"].clone(), prepare=_prepare),
    ),
)


def test_run_time_refusals_are_unsupported_and_set_up_is_done_for_every_input_set(toy_runner, monkeypatch):
    r, out = toy_runner
    monkeypatch.setattr(runner, "get_op", lambda name: SETUP_OP)
    PREPARED.clear()
    r.run([Case("toy_setup", {"n": 256}, "fp32", ("refuses", "prepared"), (), "", None, 1, 3)])
    by = {rec["backend"]: rec for rec in out}
    assert by["refuses"]["status"] == "unsupported" and "libfoo refuses" in by["refuses"]["reason"]
    assert by["prepared"]["status"] == "ok"
    # Once for the check, once per rotated set after the first (which is the checked one).
    sets = int(by["prepared"]["timing"]["cache"].split()[1])
    assert len(PREPARED) == sets and len(set(PREPARED)) == sets


def _cpu_runner(out):
    cfg = runner.RunConfig(timing=timing.TimingConfig(budget_s=0.05, min_samples=5), seed=1)
    return runner.Runner(device.resolve("cpu"), {"l2_bytes": 1 << 20, "datasheet": None},
                         {"copy_gbps": 10.0, "tflops": {"fp32": 0.1}}, cfg, out.append)


def test_cpu_runs_never_touch_nvml(monkeypatch):
    from kernelmark.harness import nvml_sampler

    def no(*a, **k):
        raise AssertionError("NVML touched on a CPU run")
    monkeypatch.setattr(runner, "get_op", lambda name: TOY)
    monkeypatch.setattr(device, "nvml_reader", no)
    monkeypatch.setattr(device, "nvml_state", no)
    monkeypatch.setattr(nvml_sampler, "Sampler", no)
    out = []
    _cpu_runner(out).run([Case("toy_scale", {"n": 64}, "fp32", ("good",), (), "", None, 1, 3)])
    assert out[0]["status"] == "ok" and "health" not in out[0]


def test_what_the_sampler_saw_during_timing_is_in_the_record(monkeypatch):
    # The wiring of a GPU run, on the CPU: NVML before/after says calm, the sampler that
    # runs while the backend is timed sees a thermal slowdown.
    monkeypatch.setattr(runner, "get_op", lambda name: TOY)
    out, reads = [], []
    r = _cpu_runner(out)
    r.health = lambda: {"throttle_reasons": [], "sm_clock_mhz": 1980, "sm_app_clock_mhz": 1980}

    def read():
        reads.append(1)
        return {"sm_clock_mhz": 1500, "temperature_c": 88, "throttle_reasons": ["sw_thermal_slowdown"]}
    r._nvml_read = read
    r.run([Case("toy_scale", {"n": 64}, "fp32", ("good", "wrong"), (), "", None, 1, 3)])
    by = {rec["backend"]: rec for rec in out}
    h = by["good"]["health"]
    assert h["during"]["samples"] == len(reads) >= 1
    assert h["throttled"] and h["throttle_reasons"] == ["sw_thermal_slowdown"] and h["below_app_clocks"]
    assert "during" not in by["wrong"]["health"]          # never timed: nothing sampled
    assert "THROTTLED" in table.status_text(by["good"])


def _plain_runner():
    target = device.resolve("cpu")
    cfg = runner.RunConfig(timing=timing.TimingConfig(budget_s=0.05, min_samples=5), seed=1)
    return runner.Runner(target, {"l2_bytes": 1 << 20, "datasheet": None}, {"copy_gbps": 10.0, "tflops": {}}, cfg,
                         lambda rec: None)


def test_a_cpu_allocation_failure_making_the_inputs_is_oom_with_the_size(monkeypatch):
    # m = 10^12: torch's CPU allocator refuses the 256 TB input at once (no memory is touched);
    # the free memory read as unbounded, so the allocation itself is what fails
    monkeypatch.setattr(device, "free_bytes", lambda target: 1 << 62)
    case = Case("gemm", {"m": 10 ** 12, "n": 64, "k": 64, "layout": "nn"}, "fp32", ("torch",), (), "", None, 1, 3)
    rec, = _plain_runner().run_case(case)
    assert rec["status"] == "oom", rec["reason"]
    assert rec["reason"].startswith("out of memory while making the inputs: asked for 232.83 TiB; RuntimeError:")


def test_inputs_past_the_free_memory_are_oom_before_anything_is_allocated(monkeypatch):
    # Linux grants such an allocation and its OOM killer ends the worker when the pages are
    # touched: refused first. fused_moe counts every expert's weights, not the hit ones a call reads.
    from kernelmark.ops.registry import get_op
    moe = get_op("fused_moe")
    shape = moe.full_shape({"tokens": 1, "experts": 256, "topk": 8, "hidden": 7168, "inter": 2048, "shared": 1})
    assert moe.alloc_bytes(shape, "bf16") > 257 * 3 * 7168 * 2048 * 2 > 20 * moe.nbytes(shape, "bf16")
    monkeypatch.setattr(device, "free_bytes", lambda target: 16 << 30)
    made = []
    monkeypatch.setattr(runner.Runner, "_inputs", lambda self, *a: made.append(a))
    case = Case("fused_moe", shape, "bf16", ("torch",), (), "", None, 1, 3)
    recs = list(_plain_runner().run_case(case))
    assert [r["status"] for r in recs] == ["oom"] and not made
    assert recs[0]["reason"] == ("out of memory: its inputs need at least 21.88 GiB and this machine has 16.00 GiB "
                                 "available; not allocated (past it the kernel's OOM killer would end the run)")
    # what fits is made and measured as before
    monkeypatch.setattr(device, "free_bytes", lambda target: 64 << 30)
    list(_plain_runner().run_case(case))
    assert made


def test_only_a_failing_reference_is_called_the_reference_failing(toy_runner, monkeypatch):
    r, _ = toy_runner
    bad = Op(**{**TOY.__dict__, "reference": _boom})
    monkeypatch.setattr(runner, "get_op", lambda name: bad)
    rec = next(iter(r.run_case(_case())))
    assert rec["status"] == "error" and rec["reason"] == "the reference failed: RuntimeError: kernel exploded"
    bad = Op(**{**TOY.__dict__, "make_inputs": lambda *a: _boom(None)})
    monkeypatch.setattr(runner, "get_op", lambda name: bad)
    rec = next(iter(r.run_case(_case())))
    assert rec["status"] == "error" and rec["reason"] == "making the inputs failed: RuntimeError: kernel exploded"


def _run_once(kernel_call, quantiles):
    """Triton's benchmarker needs a GPU: run the config once, the same time for every one."""
    kernel_call()
    return [1.0, 1.0, 1.0]


def _tuned_op_runner(monkeypatch, max_shared, left_out=()):
    """A runner on the CPU for an op whose Triton backend launches an autotuned kernel with
    two configs (BLOCK=32 needs 2048 B of shared memory by its estimate, BLOCK=64 4096 B), on
    a made-up GPU target 'cuda:1' whose blocks may use `max_shared` bytes."""
    import triton
    import triton.language as tl

    from kernelmark import gpu_limits
    from kernelmark.kernels import autotune_prune

    @autotune_prune.autotune(configs=[triton.Config({"BLOCK": 32}, num_warps=1),
                                      triton.Config({"BLOCK": 64}, num_warps=1)],
                             key=["n"], shared_bytes=lambda cfg, args: cfg.kwargs["BLOCK"] * 64, do_bench=_run_once)
    @triton.jit
    def _double_kernel(x_ptr, y_ptr, n, BLOCK: tl.constexpr):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        tl.store(y_ptr + offs, 2 * tl.load(x_ptr + offs, mask=offs < n), mask=offs < n)

    small = gpu_limits.Target("cuda:1", "cuda", 1, 32, "test GPU", max_shared, 255, None, "test")
    _double_kernel.limit_prune.target_of = lambda named_args: small

    def _run(x):
        y = torch.empty_like(x["x"])
        _double_kernel[lambda meta: (triton.cdiv(y.numel(), meta["BLOCK"]),)](x["x"], y, y.numel())
        return y

    op = Op(name="toy_scale", description="y = 2x", params=("n",), dtypes=("fp32",), make_inputs=_make,
            reference=lambda x: x["x"].double() * 2, flops=lambda s: s["n"], nbytes=lambda s, d: 8 * s["n"],
            backends=(Backend("triton", _run, triton=True), Backend("triton-plain", lambda x: x["x"] * 2, triton=True)))
    monkeypatch.setattr(runner, "get_op", lambda name: op)
    cfg = runner.RunConfig(timing=timing.TimingConfig(budget_s=0.05, min_samples=5), seed=1, left_out=left_out)
    out = []
    r = runner.Runner(device.resolve("cpu"), {"l2_bytes": 1 << 20, "datasheet": None},
                      {"copy_gbps": 10.0, "tflops": {"fp32": 0.1}}, cfg, out.append)
    return r, out


def _toy_case(n=100):
    return Case("toy_scale", {"n": n}, "fp32", ("triton", "triton-plain"), (), "", None, 1, 3)


def test_a_triton_record_names_the_autotune_configs_left_out(monkeypatch):
    r, out = _tuned_op_runner(monkeypatch, 3000)
    r.run([_toy_case()])
    by = {rec["backend"]: rec for rec in out}
    assert by["triton"]["status"] == "checked", by["triton"]
    assert by["triton"]["pruned"] == [{"kernel": "_double_kernel", "config": "BLOCK=64 w1 s3",
                                       "why": "shared memory 4096 B > 3000 B per block on cuda:1 "
                                              "(estimated from the config's tiles, before compiling)"}]
    assert "pruned" not in by["triton-plain"]       # no autotuned kernel launched: nothing to say


ASKED = {"target": "cuda:1", "op": "toy_scale", "backend": "triton", "case": "n=100 fp32", "kernel": "_double_kernel",
         "config": "BLOCK=64 w1 s3", "why": "compile check c.jsonl: over_limit: 300 registers > 255 per thread on cuda:1"}


def test_what_the_compile_check_found_is_left_out_for_that_case_on_that_target_only(monkeypatch):
    r, out = _tuned_op_runner(monkeypatch, 1 << 20, left_out=(ASKED,))       # both fit by the estimate
    r.run([_toy_case()])
    rec = next(x for x in out if x["backend"] == "triton")
    assert rec["status"] == "checked" and rec["pruned"] == [{"kernel": "_double_kernel", "config": "BLOCK=64 w1 s3",
                                                             "why": ASKED["why"]}]
    # Only the very case (op, backend, shape and dtype) the compile check compiled, per target.
    assert r._asked("toy_scale", "triton", _toy_case()) == {"cuda:1": {"_double_kernel": {"BLOCK=64 w1 s3": ASKED["why"]}}}
    for op, backend, case in (("toy_scale", "triton", _toy_case(200)), ("toy_scale", "triton-plain", _toy_case()),
                              ("other", "triton", _toy_case())):
        assert r._asked(op, backend, case) == {}
