"""kernels/activation.py in the Triton interpreter against fp64 SiLU·mul and GELU(tanh)·mul,
at sizes that are not multiples of its tile (2 rows x 64 columns there); a kernel that
leaves the last row out, or mixes up gate and up, fails the check; bad input is a
ValueError naming it before any launch."""
import math

import pytest
import torch
import triton

from kernelmark import dtypes
from kernelmark.kernels import activation as k
from kernelmark.ops.check import compare

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def _x(m, i, dt, seed=0):
    return (2 * torch.randn(m, 2 * i, generator=torch.Generator().manual_seed(seed))).to(dt)


def _ref(x, activation):
    i = x.shape[1] // 2
    a, b = x[:, :i].double(), x[:, i:].double()
    if activation == "silu":
        return a / (1 + torch.exp(-a)) * b
    return 0.5 * a * (1 + torch.tanh(math.sqrt(2 / math.pi) * (a + 0.044715 * a ** 3))) * b


def _check(out, ref, name):
    return compare(out, ref, dtypes.tolerance(name), dtype=name)


@pytest.mark.parametrize("name", list(DTYPES))
@pytest.mark.parametrize("activation", list(k.ACTIVATIONS))
@pytest.mark.parametrize("m, i", [(5, 100), (1, 7), (4, 128)])
def test_gated_activation_matches_fp64(name, activation, m, i):
    x = _x(m, i, DTYPES[name], m * i)
    y = k.act_and_mul(x, activation)
    assert y.shape == (m, i) and y.dtype == x.dtype
    res = _check(y, _ref(x, activation), name)
    assert res.passed, res.detail


def test_gelu_tanh_is_torchs_tanh_gelu_in_fp32():
    x = _x(3, 300, torch.float32, 1)
    a, b = x[:, :300], x[:, 300:]
    assert torch.allclose(k.act_and_mul(x, "gelu_tanh"), torch.nn.functional.gelu(a, approximate="tanh") * b,
                          rtol=1e-5, atol=1e-6)


def test_a_row_slice_of_a_wider_buffer():
    base = _x(6, 80, torch.bfloat16, 2)
    x = base[::2]                              # every other row: the row stride is passed through
    assert _check(k.act_and_mul(x, "silu"), _ref(x, "silu"), "bf16").passed


def test_a_kernel_that_skips_the_last_row_fails_the_check():
    x = _x(5, 100, torch.bfloat16, 3)
    out = torch.randn(5, 100).bfloat16()
    k._act_and_mul[lambda meta: (triton.cdiv(4, meta["ROWS"]), triton.cdiv(100, meta["BLOCK_N"]))](
        x, out, 4, 100, x.stride(0), out.stride(0), ACT=0)
    res = _check(out, _ref(x, "silu"), "bf16")
    assert not res.passed and "first at [4, " in res.detail


def test_gate_and_up_swapped_fails_the_check():
    x = _x(4, 64, torch.bfloat16, 4)
    swapped = torch.cat([x[:, 64:], x[:, :64]], dim=1)
    assert not _check(k.act_and_mul(swapped, "silu"), _ref(x, "silu"), "bf16").passed


class _NoLaunch:
    def __getitem__(self, grid):
        raise AssertionError("the kernel was launched")


@pytest.mark.parametrize("x, kw, message", [
    (torch.randn(4, 7), {}, "must be 2·intermediate .even, positive., got 7"),
    (torch.randn(4, 8, dtype=torch.float64), {}, r"x has dtype torch\.float64"),
    (torch.randn(8), {}, "x must be 2-D"),
    (torch.randn(8, 4).t(), {}, "last dimension must be contiguous"),
    (torch.randn(4, 8), {"activation": "relu"}, "unknown activation 'relu'"),
    (torch.randn(4, 8), {"out": torch.empty(4, 3)}, r"out must be a torch.float32 \[4, 4\] tensor"),
])
def test_bad_input_is_refused_before_any_launch(monkeypatch, x, kw, message):
    monkeypatch.setattr(k, "_act_and_mul", _NoLaunch())
    with pytest.raises(ValueError, match=message):
        k.act_and_mul(x, **kw)


def test_prune_keeps_tiles_that_fit_the_row_the_rows_and_the_threads():
    cfgs = [triton.Config({"ROWS": r, "BLOCK_N": n}, num_warps=w)
            for r in (1, 2, 4, 8) for n in (256, 512, 1024, 2048, 4096) for w in (2, 4, 8)]
    x = torch.empty(1, 2 * 14336, dtype=torch.bfloat16)
    decode = k.prune(cfgs, {"x_ptr": x, "M": 1, "I": 14336})
    assert decode and {c.kwargs["ROWS"] for c in decode} == {1}
    assert all(c.kwargs["BLOCK_N"] * 2 >= 16 * 32 * c.num_warps for c in decode)
    narrow = k.prune(cfgs, {"x_ptr": x, "M": 4096, "I": 64})
    assert narrow and {c.kwargs["BLOCK_N"] for c in narrow} == {256}
