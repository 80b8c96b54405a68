import pytest
import torch

from kernelmark import gpu_limits
from kernelmark.kernels import autotune_prune, gemm
from kernelmark.ops.base import compare
from kernelmark.dtypes import TOLERANCE

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def _check(c, a, b, name):
    ref = a.double() @ b.double()
    return compare(c, ref, TOLERANCE[name])


@pytest.mark.parametrize("name", list(DTYPES))
@pytest.mark.parametrize("m, n, k", [(32, 48, 64), (5, 70, 33), (1, 40, 96)])
@pytest.mark.parametrize("layout", ["nn", "nt"])
def test_triton_gemm_matches_fp64_reference(name, m, n, k, layout):
    dt = DTYPES[name]
    g = torch.Generator().manual_seed(m * 1000 + n + k)
    a = torch.randn(m, k, generator=g).to(dt)
    b = (torch.randn(n, k, generator=g).to(dt).t() if layout == "nt"
         else torch.randn(k, n, generator=g).to(dt))
    c = gemm.matmul(a, b)
    assert c.dtype == dt and c.shape == (m, n)
    res = _check(c, a, b, name)
    assert res.passed, res.detail


def test_interpreter_bf16_trap_is_caught_by_the_check():
    # Without the upcast, the interpreter's tl.dot on bf16 is wrong (triton 3.9): the
    # correctness check must reject it rather than let it pass.
    import triton
    a = torch.randn(32, 32).bfloat16()
    b = torch.randn(32, 32).bfloat16()
    c = torch.empty(32, 32, dtype=torch.bfloat16)
    grid = (triton.cdiv(32, 32) ** 2,)
    gemm._gemm_kernel[grid](a, b, c, 32, 32, 32, a.stride(0), a.stride(1), b.stride(0), b.stride(1),
                            c.stride(0), c.stride(1), IEEE_FP32=False, UPCAST_DOT=False)
    if not _check(c, a, b, "bf16").passed:
        return  # the trap is present and the check caught it
    # Triton fixed the interpreter: then the upcast is merely redundant.
    pytest.skip("this triton's interpreter computes bf16 tl.dot correctly")


def test_output_is_fully_written():
    a = torch.randn(37, 29)
    b = torch.randn(29, 53)
    c = gemm.matmul(a, b)
    assert torch.isfinite(c).all()
    assert _check(c, a, b, "fp32").passed


@pytest.mark.parametrize("a_shape, b_shape, dt_b, match", [
    ((4, 8), (9, 4), torch.float32, "inner dimensions differ"),
    ((4, 8), (8, 4), torch.float16, "both must have one dtype"),
    ((0, 8), (8, 4), torch.float32, "every dimension must be positive"),
    ((4, 8, 1), (8, 4), torch.float32, "2-D"),
])
def test_bad_input_is_rejected_before_launch(a_shape, b_shape, dt_b, match):
    a = torch.randn(*a_shape)
    b = torch.randn(*b_shape).to(dt_b)
    with pytest.raises(ValueError, match=match):
        gemm.matmul(a, b)


def test_unsupported_dtype_is_named():
    a = torch.ones(4, 4, dtype=torch.int32)
    with pytest.raises(ValueError, match="not supported"):
        gemm.matmul(a, a)


# ---------------------------------------------------------------- config pruning
# The target-limits table decides (kernelmark/gpu_limits.py), per target only; the hook
# itself is tested in tests/kernels/test_autotune_prune.py.


def _a(element_size):
    # What the estimate reads of A: its element size (no GPU needed).
    import types
    return types.SimpleNamespace(device=torch.device("cuda", 0), element_size=lambda: element_size)


def _tiles(configs):
    return {(c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.kwargs["BLOCK_K"], c.num_stages) for c in configs}


def _split(target, element_size):
    return autotune_prune.split(gemm.tile_configs(), gemm.needs_shared_bytes, gpu_limits.TARGETS[target],
                                {"a_ptr": _a(element_size)})


def test_on_sm90_the_two_fp32_configs_needing_240_kib_are_left_out_and_the_rest_kept():
    configs = gemm.tile_configs()
    kept, left_out = _split("cuda:90", 4)
    assert _tiles(configs) - _tiles(kept) == {(16, 64, 256, 4), (32, 128, 128, 4)}
    assert len(kept) == len(configs) - 2
    big = [c for c in configs if _tiles([c]) <= {(16, 64, 256, 4), (32, 128, 128, 4)}]
    assert all(gemm.shared_memory_bytes(c, 4) == 240 << 10 for c in big)
    assert [c for c, _ in left_out] == ["BLOCK_M=16 BLOCK_N=64 BLOCK_K=256 GROUP_M=1 w4 s4",
                                        "BLOCK_M=32 BLOCK_N=128 BLOCK_K=128 GROUP_M=4 w4 s4"]
    assert all("shared memory 245760 B > 232448 B per block on cuda:90" in why for _, why in left_out)
    # Half-precision tiles are half the size: all fit on sm_90.
    assert _split("cuda:90", 2) == (configs, [])


def test_the_same_configs_are_judged_per_target():
    # B200 has Hopper's per-block limit; A100 (163 KiB) and MI300X (64 KiB LDS) have less.
    assert [c for c, _ in _split("cuda:100", 4)[1]] == [c for c, _ in _split("cuda:90", 4)[1]]
    a100 = _split("cuda:80", 4)[1]
    assert len(a100) > 2 and all("on cuda:80" in why for _, why in a100)
    mi300_kept, mi300_out = _split("hip:gfx942", 2)
    assert mi300_out and all("LDS" in why and "per workgroup on hip:gfx942" in why for _, why in mi300_out)
    assert all(gemm.shared_memory_bytes(c, 2) <= 64 << 10 for c in mi300_kept)


def test_pruning_keeps_one_config_when_none_fits():
    tiny = gpu_limits.Target("cuda:1", "cuda", 1, 32, "test", 16 << 10, 255, None, "test")
    configs = gemm.tile_configs()
    kept, left_out = autotune_prune.split(configs, gemm.needs_shared_bytes, tiny, {"a_ptr": _a(4)})
    assert len(kept) == 1 and gemm.shared_memory_bytes(kept[0], 4) == \
        min(gemm.shared_memory_bytes(c, 4) for c in configs)
    assert len(left_out) == len(configs) - 1


def test_the_autotuner_uses_the_limit_hook_with_the_gemm_estimate():
    hook = gemm._gemm_kernel.early_config_prune
    assert hook is gemm._gemm_kernel.limit_prune and hook.shared_bytes is gemm.needs_shared_bytes
    # CPU tensors: no GPU limit, nothing left out.
    assert hook(gemm.tile_configs(), {"a_ptr": torch.empty(1)}) == gemm.tile_configs()
