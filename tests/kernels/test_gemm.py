import pytest
import torch

from kernelmark.kernels import gemm
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

def _a(element_size):
    # What the hook reads of A: its device and element size (no GPU needed).
    import types
    return types.SimpleNamespace(device=torch.device("cuda", 0), element_size=lambda: element_size)


def _tiles(configs):
    return {(c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.kwargs["BLOCK_K"], c.num_stages) for c in configs}


HOPPER_OPTIN = 232448      # 227 KiB: what an H100 block may opt in to


def test_the_fp32_configs_that_cannot_launch_on_hopper_are_pruned_before_compiling(monkeypatch):
    monkeypatch.setattr(gemm, "shared_memory_limit", lambda index: HOPPER_OPTIN)
    configs = gemm.tile_configs()
    kept = gemm.prune_by_shared_memory(configs, {"a_ptr": _a(4)})
    # The two fp32 configs that need 240 KiB, and only they.
    assert _tiles(configs) - _tiles(kept) == {(16, 64, 256, 4), (32, 128, 128, 4)}
    big = [c for c in configs if _tiles([c]) <= {(16, 64, 256, 4), (32, 128, 128, 4)}]
    assert all(gemm.shared_memory_bytes(c, 4) == 240 << 10 for c in big)
    # Half-precision tiles are half the size: all fit.
    assert gemm.prune_by_shared_memory(configs, {"a_ptr": _a(2)}) == configs


def test_pruning_keeps_one_config_and_leaves_cpu_runs_alone(monkeypatch):
    monkeypatch.setattr(gemm, "shared_memory_limit", lambda index: 16 << 10)
    configs = gemm.tile_configs()
    kept = gemm.prune_by_shared_memory(configs, {"a_ptr": _a(4)})
    assert len(kept) == 1 and gemm.shared_memory_bytes(kept[0], 4) == \
        min(gemm.shared_memory_bytes(c, 4) for c in configs)
    assert gemm.prune_by_shared_memory(configs, {"a_ptr": torch.empty(1)}) == configs
    monkeypatch.setattr(gemm, "shared_memory_limit", lambda index: None)     # unknown limit
    assert gemm.prune_by_shared_memory(configs, {"a_ptr": _a(4)}) == configs


def test_the_autotuner_uses_the_pruning_hook():
    assert gemm._gemm_kernel.early_config_prune is gemm.prune_by_shared_memory
