"""kernels/bmm.py against an fp64 bmm, at sizes the interpreter runs quickly."""
import pytest
import torch

from kernelmark.dtypes import TOLERANCE
from kernelmark.kernels import bmm, gemm
from kernelmark.ops.base import compare

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def _operands(batch, m, n, k, dt, b_layout, seed):
    g = torch.Generator().manual_seed(seed)
    # A as decode engines pass it: a [batch, m, k] view of token-major [m, batch, k]
    a = torch.randn(m, batch, k, generator=g).to(dt).transpose(0, 1)
    if b_layout == "nt":
        b = torch.randn(batch, n, k, generator=g).to(dt).transpose(1, 2)
    else:
        b = torch.randn(batch, k, n, generator=g).to(dt)
    return a, b


@pytest.mark.parametrize("name", list(DTYPES))
@pytest.mark.parametrize("batch, m, n, k", [
    (1, 32, 32, 32),     # whole tiles, one batch element
    (3, 5, 37, 45),      # tails in m, n and k (the interpreter's tile is 32)
    (4, 2, 40, 16),      # decode-like: few rows, k under one tile
])
@pytest.mark.parametrize("b_layout", ["nn", "nt"])
def test_triton_bmm_matches_fp64_reference(name, batch, m, n, k, b_layout):
    dt = DTYPES[name]
    a, b = _operands(batch, m, n, k, dt, b_layout, seed=batch * 1000 + m * 100 + n + k)
    c = bmm.bmm(a, b)
    assert c.dtype == dt and c.shape == (batch, m, n) and c.is_contiguous()
    res = compare(c, torch.bmm(a.double(), b.double()), TOLERANCE[name], dtype=name)
    assert res.passed, res.detail


def test_each_batch_element_uses_its_own_operands():
    # B differs per batch element only in scale: a kernel that read batch 0's B (or wrote
    # every result to batch 0's C) would give the same C for all of them.
    a = torch.randn(3, 4, 33)
    base = torch.randn(33, 35)
    b = torch.stack([base, 2 * base, -3 * base])
    c = bmm.bmm(a, b)
    for i in range(3):
        assert compare(c[i], a[i].double() @ b[i].double(), TOLERANCE["fp32"], dtype="fp32").passed
    assert not compare(c[1], a[0].double() @ b[0].double(), TOLERANCE["fp32"], dtype="fp32").passed


def test_broadcast_b_with_batch_stride_zero():
    # one weight for every batch element (stride 0): the batch stride is applied, not assumed
    a = torch.randn(5, 3, 20)
    w = torch.randn(20, 24)
    c = bmm.bmm(a, w.expand(5, 20, 24))
    assert compare(c, torch.bmm(a.double(), w.double().expand(5, 20, 24)), TOLERANCE["fp32"], dtype="fp32").passed


@pytest.mark.parametrize("a_shape, b_shape, dt_b, match", [
    ((2, 4, 8), (2, 9, 4), torch.float32, "inner dimensions differ"),
    ((2, 4, 8), (3, 8, 4), torch.float32, "batch sizes differ: A has 2, B has 3"),
    ((2, 4, 8), (2, 8, 4), torch.float16, "both must have one dtype"),
    ((0, 4, 8), (0, 8, 4), torch.float32, "every dimension must be positive"),
    ((4, 8), (8, 4), torch.float32, "3-D"),
])
def test_bad_input_is_rejected_before_launch(a_shape, b_shape, dt_b, match):
    with pytest.raises(ValueError, match=match):
        bmm.bmm(torch.randn(*a_shape), torch.randn(*b_shape).to(dt_b))


def test_unsupported_dtype_is_named():
    a = torch.ones(2, 4, 4, dtype=torch.int32)
    with pytest.raises(ValueError, match="not supported"):
        bmm.bmm(a, a)


def test_batch_over_the_grid_limit_is_refused():
    a = torch.empty(bmm.MAX_BATCH + 1, 1, 1).expand(bmm.MAX_BATCH + 1, 1, 1)
    with pytest.raises(ValueError, match="over 65535"):
        bmm.bmm(a, a)


def test_tuning_is_gemms_own():
    # the same config list and the same shared-memory pruning as kernels/gemm.py
    kernel = bmm._bmm_kernel
    assert [str(c) for c in kernel.configs] == [str(c) for c in gemm._gemm_kernel.configs]
    assert kernel.early_config_prune.shared_bytes is gemm.needs_shared_bytes
    assert "BATCH" in kernel.keys
