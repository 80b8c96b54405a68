"""kernels/rmsnorm.py in the Triton interpreter against an fp64 RMSNorm, at row counts and
hidden sizes that are not multiples of the tile (ROWS = 4 there), in one tile and in
chunks; a kernel that leaves a row out or drops eps fails the check; bad input is a
ValueError naming it before any launch."""
import pytest
import torch
import triton

from kernelmark import dtypes
from kernelmark.kernels import rmsnorm as k
from kernelmark.ops.check import compare

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def _rows(m, n, dt, seed):
    g = torch.Generator().manual_seed(seed)
    mag = torch.exp2(torch.rand(m, 1, generator=g) * 14 - 10)     # some rows' mean square below eps
    x = (torch.randn(m, n, generator=g) * mag).to(dt)
    r = (torch.randn(m, n, generator=g) * mag).to(dt)
    w = (1 + 0.5 * torch.randn(n, generator=g)).to(dt)
    return x, r, w


def _ref(s, w, eps):
    s = s.double()
    return s * torch.rsqrt(s.pow(2).mean(-1, keepdim=True) + eps) * w.double()


def _ok(out, ref, name):
    res = compare(out, ref, dtypes.tolerance(name), dtype=name)
    assert res.passed, res.detail


# (rows, hidden, max_block_n): one tile with a row tail; chunks with a partial last one; a 1-row odd width
SHAPES = [(7, 100, k.MAX_BLOCK_N), (5, 200, 64), (1, 33, 16)]


@pytest.mark.parametrize("name", list(DTYPES))
@pytest.mark.parametrize("m, n, max_block", SHAPES)
def test_rmsnorm_matches_fp64(name, m, n, max_block):
    x, _, w = _rows(m, n, DTYPES[name], m * n)
    y = k.rmsnorm(x, w, 1e-5, max_block_n=max_block)
    assert y.dtype == x.dtype and y.shape == x.shape
    _ok(y, _ref(x, w, 1e-5), name)


@pytest.mark.parametrize("name", list(DTYPES))
@pytest.mark.parametrize("m, n, max_block", SHAPES)
def test_fused_add_rmsnorm_writes_the_residual_and_normalises_it(name, m, n, max_block):
    x, r, w = _rows(m, n, DTYPES[name], m + n)
    s = x.double() + r.double()
    y, r_out = k.fused_add_rmsnorm(x, r, w, 1e-6, out=x, max_block_n=max_block)
    assert y.data_ptr() == x.data_ptr() and r_out.data_ptr() == r.data_ptr()     # both in place
    _ok((y, r), (_ref(s, w, 1e-6), s), name)


def test_weight_of_another_dtype_and_a_strided_input():
    g = torch.Generator().manual_seed(1)
    base = torch.randn(6, 256, generator=g).bfloat16()
    x = base[:, :200]                       # rows 256 apart: the stride is passed through
    w = torch.randn(200, generator=g)       # fp32 weight with bf16 activations
    _ok(k.rmsnorm(x, w, 1e-6), _ref(x, w, 1e-6), "bf16")


def test_a_kernel_that_skips_the_last_row_fails_the_check():
    x, _, w = _rows(9, 100, torch.bfloat16, 3)
    out = torch.randn(9, 100).bfloat16()                  # random, as the ops' outputs are
    m, n = x.shape
    k._rmsnorm[lambda meta: (triton.cdiv(m - 1, meta["ROWS"]),)](
        x, x, w, out, m - 1, n, 1e-5, x.stride(0), x.stride(0), out.stride(0),
        HAS_RESIDUAL=False, BLOCK_N=128, CHUNKS=1)
    res = compare(out, _ref(x, w, 1e-5), dtypes.tolerance("bf16"), dtype="bf16")
    assert not res.passed and "first at [8, " in res.detail


def test_a_kernel_that_drops_eps_fails_on_rows_near_eps():
    x, _, w = _rows(16, 64, torch.float32, 5)
    assert float(x.pow(2).mean(-1).min()) < 1e-4        # the inputs have such rows
    res = compare(k.rmsnorm(x, w, 0.0), _ref(x, w, 1e-5), dtypes.tolerance("fp32"), dtype="fp32")
    assert not res.passed


def test_prune_keeps_tiles_that_fit():
    cfgs = [triton.Config({"ROWS": r}, num_warps=w) for r in (1, 2, 4, 8, 16) for w in (1, 2, 4, 8, 16)]
    x = torch.empty(4096, 4096, dtype=torch.bfloat16)
    kept = k.prune(cfgs, {"x_ptr": x, "M": 4096}, BLOCK_N=4096)
    assert kept and all(c.kwargs["ROWS"] * 4096 <= k.MAX_TILE for c in kept)
    assert all(c.kwargs["ROWS"] * 4096 * 2 >= 16 * 32 * c.num_warps for c in kept)
    one = k.prune(cfgs, {"x_ptr": x[:1], "M": 1}, BLOCK_N=4096)
    assert {c.kwargs["ROWS"] for c in one} == {1}
    assert k.prune(cfgs, {"x_ptr": x[:1, :2], "M": 1}, BLOCK_N=2)     # nothing fits the rules: one is kept


class _NoLaunch:
    def __getitem__(self, grid):
        raise AssertionError("the kernel was launched")


@pytest.mark.parametrize("make, message", [
    (lambda: (torch.randn(4, 8, dtype=torch.float64), None, torch.randn(8)), r"x has dtype torch\.float64"),
    (lambda: (torch.randn(4, 8), None, torch.randn(7)), r"weight must be \[hidden=8\]"),
    (lambda: (torch.randn(4, 8), torch.randn(4, 8).half(), torch.randn(8)), "residual is torch.float16"),
    (lambda: (torch.randn(4, 8), torch.randn(3, 8), torch.randn(8)), r"residual has shape \(3, 8\)"),
    (lambda: (torch.randn(8), None, torch.randn(8)), "x must be 2-D"),
    (lambda: (torch.randn(8, 4).t(), None, torch.randn(8)), "hidden dimension must be contiguous"),
    (lambda: (torch.randn(1, k.MAX_HIDDEN + 1).half(), None, torch.randn(k.MAX_HIDDEN + 1).half()),
     f"hidden size {k.MAX_HIDDEN + 1} is not supported"),
])
def test_bad_input_is_refused_before_any_launch(monkeypatch, make, message):
    monkeypatch.setattr(k, "_rmsnorm", _NoLaunch())
    monkeypatch.setattr(k, "_fused_add_rmsnorm", _NoLaunch())
    x, r, w = make()
    with pytest.raises(ValueError, match=message):
        if r is None:
            k.rmsnorm(x, w)
        else:
            k.fused_add_rmsnorm(x, r, w)
