"""kernelmark/kernels/autotune_prune.py: a real Triton autotuner (run by the interpreter, on
CPU tensors) whose configs over a target's limit are left out before tuning, with what was
left out written to the autotune log for every launch, also those that reuse a tuning
result; and how a live GPU's limits are found (its properties faked: no GPU here)."""
import types

import pytest
import torch
import triton
import triton.language as tl

from kernelmark import gpu_limits
from kernelmark.kernels import autotune_log, autotune_prune

H100 = gpu_limits.TARGETS["cuda:90"]


def _need(cfg, named_args):
    """A made-up estimate: BLOCK x n bytes, so that which config fits depends on the case."""
    return cfg.kwargs["BLOCK"] * named_args["n"]


def _shape_prune(configs, named_args, **kwargs):
    """The kernel's own prune by shape: blocks wider than n are no use."""
    return [c for c in configs if c.kwargs["BLOCK"] <= max(named_args["n"], 32)]


def run_once(kernel_call, quantiles):
    """A stand-in for Triton's benchmarker (which needs a GPU): runs the config once, in the
    interpreter, and gives every config the same time. triton 3.6 benchmarks even a single
    config left after pruning (3.9 does not), so the tests tune through this."""
    kernel_call()
    return [1.0, 1.0, 1.0]


def _kernel(target_of):
    @autotune_prune.autotune(configs=[triton.Config({"BLOCK": 32}, num_warps=1),
                                      triton.Config({"BLOCK": 64}, num_warps=1)],
                             key=["n"], shared_bytes=_need, early_config_prune=_shape_prune, do_bench=run_once)
    @triton.jit
    def _copy_kernel(x_ptr, y_ptr, n, BLOCK: tl.constexpr):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        tl.store(y_ptr + offs, tl.load(x_ptr + offs, mask=offs < n), mask=offs < n)

    _copy_kernel.limit_prune.target_of = target_of
    return _copy_kernel


def _launch(kernel, n):
    x = torch.arange(n, dtype=torch.float32)
    y = torch.empty_like(x)
    kernel[lambda meta: (triton.cdiv(n, meta["BLOCK"]),)](x, y, n)
    assert torch.equal(x, y)


def test_a_config_over_the_limit_is_left_out_and_every_launch_of_that_key_says_so():
    # "A GPU" whose blocks may use 3000 B: at n=64 BLOCK=64 needs 4096 B, BLOCK=32 2048 B.
    small = gpu_limits.Target("cuda:1", "cuda", 1, 32, "test GPU", 3000, 255, None, "test")
    kernel = _kernel(lambda named_args: small)
    m = autotune_log.mark()
    _launch(kernel, 64)                          # tuned: BLOCK=64 left out, BLOCK=32 alone is kept
    assert kernel.best_config.kwargs["BLOCK"] == 32
    (left,) = autotune_log.since(m)
    assert left["kernel"] == "_copy_kernel" and left["config"] == "BLOCK=64 w1 s3"
    assert "shared memory 4096 B > 3000 B per block on cuda:1" in left["why"]
    m = autotune_log.mark()
    _launch(kernel, 40)                          # another key: the shape prune keeps BLOCK=32 only
    assert autotune_log.since(m) == [] and autotune_log.launched_since(m)
    m = autotune_log.mark()
    _launch(kernel, 64)                          # the first key again: Triton reuses its result
    assert [x["config"] for x in autotune_log.since(m)] == ["BLOCK=64 w1 s3"]


def test_off_a_gpu_nothing_is_left_out():
    hook = autotune_prune.LimitPrune("k", _need)
    configs = [triton.Config({"BLOCK": b}) for b in (32, 64, 1 << 20)]
    assert hook(configs, {"x_ptr": torch.empty(1), "n": 1 << 20}) == configs      # CPU tensor
    assert hook(configs, {"x_ptr": torch.empty(1, device="meta"), "n": 1 << 20}) == configs
    assert autotune_prune.split(configs, None, H100) == (configs, [])           # no estimate


def test_the_log_names_the_last_launch_of_each_kernel_after_a_mark():
    m = autotune_log.mark()
    assert not autotune_log.launched_since(m) and autotune_log.since(m) == []
    autotune_log.note("k1", [("A w4 s3", "too big")])
    autotune_log.note("k2", None)                # a key never pruned (a single config)
    assert autotune_log.since(m) == [{"kernel": "k1", "config": "A w4 s3", "why": "too big"}]
    autotune_log.note("k1", [])
    assert autotune_log.since(m) == [] and autotune_log.launched_since(m)


def _props(major, minor, optin, name="GPU"):
    return types.SimpleNamespace(major=major, minor=minor, shared_memory_per_block_optin=optin, name=name)


@pytest.fixture
def fake_gpu(monkeypatch):
    props = {}
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index: props[index])
    monkeypatch.setattr(torch.version, "hip", None)
    autotune_prune._gpu_target.cache_clear()
    yield props
    autotune_prune._gpu_target.cache_clear()


def test_a_live_gpu_is_its_table_entry_with_the_limit_it_reports(fake_gpu):
    fake_gpu[0] = _props(9, 0, 232448, "NVIDIA H100 80GB HBM3")
    fake_gpu[1] = _props(8, 6, 101376, "NVIDIA A10")             # not in the table
    fake_gpu[2] = _props(8, 0, 0)                                  # reports nothing: the table's
    t = autotune_prune.device_target({"n": 3, "b": _on("cuda", 0)})
    assert t.name == "cuda:90" and t.max_shared_bytes == 232448 and t.source == H100.source
    a10 = autotune_prune.device_target({"b": _on("cuda", 1)})
    assert a10.name == "cuda:86" and a10.max_shared_bytes == 101376 and "reported by the device" in a10.source
    assert autotune_prune.device_target({"b": _on("cuda", 2)}) == gpu_limits.TARGETS["cuda:80"]


def test_an_amd_gpu_is_found_by_its_gfx_name(fake_gpu, monkeypatch):
    monkeypatch.setattr(torch.version, "hip", "6.2")
    fake_gpu[0] = types.SimpleNamespace(gcnArchName="gfx942:sramecc+:xnack-", name="AMD Instinct MI300X",
                                        shared_memory_per_block_optin=65536)
    t = autotune_prune.device_target({"b": _on("cuda", 0)})
    assert t.name == "hip:gfx942" and t.max_shared_bytes == 64 << 10


def _on(kind, index):
    return types.SimpleNamespace(device=torch.device(kind, index), data_ptr=lambda: 0)


def test_configs_triton_could_not_run_while_tuning_are_named_too():
    ok, bad = triton.Config({"BLOCK": 32}, num_warps=4), triton.Config({"BLOCK": 256}, num_warps=8, num_stages=4)
    inf = float("inf")
    assert autotune_prune.failed_while_tuning({ok: [1.5, 1.4, 1.6], bad: [inf, inf, inf]}) == \
        [("BLOCK=256 w8 s4", autotune_prune.FAILED_WHILE_TUNING)]
    assert autotune_prune.failed_while_tuning({ok: 2.0, bad: inf}) == [("BLOCK=256 w8 s4", autotune_prune.FAILED_WHILE_TUNING)]
    assert autotune_prune.failed_while_tuning(None) == []


def test_a_tuning_that_timed_a_config_as_inf_puts_it_in_the_log(monkeypatch):
    # What Autotuner.run does on a GPU, in short: prune, time each config kept (a config that
    # cannot run is timed as inf), keep the fastest. Timing needs a GPU, so it is stood in for.
    from triton.runtime import autotuner
    inf = float("inf")

    def tune(self, *args, **kwargs):
        self.nargs = dict(zip(self.arg_names, args))
        kept = self.prune_configs(kwargs)
        self.configs_timings = {c: [inf if c.kwargs["BLOCK"] == 64 else 1.0] for c in kept}

    monkeypatch.setattr(autotuner.Autotuner, "run", tune)
    big = gpu_limits.Target("cuda:1", "cuda", 1, 32, "test GPU", 1 << 20, 255, None, "test")
    kernel = _kernel(lambda named_args: big)
    m = autotune_log.mark()
    kernel[(1,)](torch.empty(64), torch.empty(64), 64)
    assert autotune_log.since(m) == [{"kernel": "_copy_kernel", "config": "BLOCK=64 w1 s3",
                                      "why": autotune_prune.FAILED_WHILE_TUNING}]
    m = autotune_log.mark()
    monkeypatch.setattr(autotuner.Autotuner, "run", lambda self, *a, **k: None)     # a cached key: no tuning
    kernel[(1,)](torch.empty(64), torch.empty(64), 64)
    assert [x["config"] for x in autotune_log.since(m)] == ["BLOCK=64 w1 s3"]


def test_a_tuning_result_from_tritons_disk_cache_is_not_read_as_failures():
    # Triton's check_disk_cache sets configs_timings to the JSON it read: a list of pairs.
    assert autotune_prune.failed_while_tuning([[{"kwargs": {"BLOCK": 32}}, [1.0]]]) == []
