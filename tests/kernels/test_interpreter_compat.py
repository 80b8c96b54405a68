"""Loops with runtime bounds in the Triton interpreter, the three forms the kernels use:
a bound computed from scalar arguments (the GEMM's K loop), one read from memory (a
sequence's length, as in varlen prefill and paged decode) and a mix of the two (a
split's end). Under Triton 3.6 with numpy >= 2.4 each of these raised TypeError until
kernelmark.kernels.interpreter_compat was installed; `make test` runs this file under
3.6 as well as the newest Triton."""

import pytest
import torch
import triton
import triton.language as tl

from kernelmark.kernels import interpreter_compat
# Imported as every looping kernel imports it: its import installs the work-around.
from kernelmark.kernels import tl_utils  # noqa: F401


@triton.jit
def _sum_runs(x_ptr, lens_ptr, starts_ptr, out_ptr, n, split, BLOCK: tl.constexpr):
    """out[s, 0]: sum of x[0:n] in BLOCK steps; out[s, 1]: sum of row s's first lens[s]
    elements; out[s, 2]: sum over [starts[s], min(starts[s] + split, lens[s]))."""
    s = tl.program_id(0)
    offs = tl.arange(0, BLOCK)
    total = tl.zeros((BLOCK,), dtype=tl.float32)
    for i in range(0, tl.cdiv(n, BLOCK)):
        total += tl.load(x_ptr + i * BLOCK + offs, mask=i * BLOCK + offs < n, other=0.0)
    tl.store(out_ptr + s * 3, tl.sum(total, 0))

    length = tl.load(lens_ptr + s)
    row = x_ptr + s * n
    total = tl.zeros((BLOCK,), dtype=tl.float32)
    for start in range(0, length, BLOCK):
        total += tl.load(row + start + offs, mask=start + offs < length, other=0.0)
    tl.store(out_ptr + s * 3 + 1, tl.sum(total, 0))

    lo = tl.load(starts_ptr + s)
    hi = tl.minimum(lo + split, length)
    total = tl.zeros((BLOCK,), dtype=tl.float32)
    for start in range(lo, hi, BLOCK):
        total += tl.load(row + start + offs, mask=start + offs < hi, other=0.0)
    tl.store(out_ptr + s * 3 + 2, tl.sum(total, 0))


@triton.jit
def _loop_to_block(x_ptr, BLOCK: tl.constexpr):
    bounds = tl.load(x_ptr + tl.arange(0, BLOCK))
    for i in range(0, bounds):
        tl.store(x_ptr + i, 0)


def test_runtime_loop_bounds_from_arguments_and_memory():
    n, split, block = 37, 12, 8
    x = torch.arange(3 * n, dtype=torch.float32).reshape(3, n) / 7
    lens = torch.tensor([37, 5, 0], dtype=torch.int32)
    starts = torch.tensor([8, 0, 0], dtype=torch.int32)
    out = torch.full((3, 3), float("nan"))
    _sum_runs[(3,)](x, lens, starts, out, n, split, BLOCK=block)
    for s in range(3):
        length, lo = int(lens[s]), int(starts[s])
        want = [x[0, :n].sum(), x[s, :length].sum(), x[s, lo:min(lo + split, length)].sum()]
        assert torch.allclose(out[s], torch.stack(want), rtol=1e-5, atol=1e-5), (s, out[s], want)


def test_the_work_around_is_installed_where_needed_and_restored_after_a_launch():
    # After tl_utils' import, the interpreter converts a runtime scalar to an int
    # whatever the Triton/numpy pair (before it, 3.6 with numpy 2.4 fails this).
    assert not interpreter_compat.scalar_bound_fails()
    # The interpreter patches tl.tensor for a launch only: nothing leaks out of it.
    before = tl.tensor.__dict__.get("__index__")
    out = torch.zeros(3, 3)
    _sum_runs[(1,)](torch.ones(4), torch.tensor([4], dtype=torch.int32), torch.tensor([0], dtype=torch.int32),
                    out, 4, 4, BLOCK=4)
    assert float(out[0, 1]) == 4.0
    assert tl.tensor.__dict__.get("__index__") is before


def test_a_block_is_still_refused_as_a_loop_bound():
    # As in a compiled kernel: only a scalar can bound a loop; the work-around must not
    # quietly take the first element of a block.
    x = torch.ones(4, dtype=torch.int32)
    with pytest.raises(Exception):
        _loop_to_block[(1,)](x, BLOCK=4)
    assert x.tolist() == [1, 1, 1, 1]
