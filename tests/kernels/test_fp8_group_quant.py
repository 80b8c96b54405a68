"""kernelmark/kernels/fp8_group_quant.py in the Triton interpreter: codes and scales bit for bit
against the format's definition in torch, rounding ties to even (the interpreter's own fp32 ->
e4m3 conversion does not), zero groups, strided rows, and refusals."""
import pytest
import torch

from kernelmark.kernels.fp8_group_quant import per_token_group_quant
from kernelmark.ops.fp8_blockwise import group_quant_torch


def _bits(t):
    return t.view(torch.uint8)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_codes_and_scales_are_bit_exact_with_a_token_tail(dtype):
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(7, 384, generator=g) * torch.exp2(torch.randint(-6, 6, (7, 384), generator=g))).to(dtype)
    q, s = per_token_group_quant(x, 128)
    rq, rs = group_quant_torch(x, 128)
    assert q.shape == (7, 384) and s.shape == (7, 3) and s.dtype == torch.float32
    assert torch.equal(s, rs)
    assert torch.equal(_bits(q), _bits(rq))


def test_ties_round_to_even_zero_groups_and_subnormals():
    x = torch.zeros(3, 256)
    # Group 0 of row 0: absmax 448 gives scale 1, so x/scale is x: midpoints between e4m3 values.
    ties = torch.tensor([448.0, 1.0625, 1.1875, -1.0625, 3.125, 2.0 ** -7 + 2.0 ** -10, 2.0 ** -10, 0.1])
    x[0, :8] = ties
    x[0, 128:] = torch.linspace(-3, 3, 128)
    x[1, 128:130] = torch.tensor([1e-30, -1e-30])          # a group of tiny values; group 0 stays zero
    x[2] = torch.randn(256, generator=torch.Generator().manual_seed(1))
    q, s = per_token_group_quant(x, 128)
    rq, rs = group_quant_torch(x, 128)
    assert torch.equal(s, rs) and torch.equal(_bits(q), _bits(rq))
    # 1.0625 lies between 1.0 and 1.125 and goes to the even one; 3.125 between 3.0 and 3.25.
    assert q[0, :5].float().tolist() == [448.0, 1.0, 1.25, -1.0, 3.0]
    assert s[1, 0] == 0 and bool((q[1, :128].float() == 0).all())


def test_a_strided_token_dimension_and_given_buffers():
    x = torch.randn(6, 512, generator=torch.Generator().manual_seed(2)).to(torch.bfloat16)[:, :256]
    out = torch.empty(6, 256, dtype=torch.float8_e4m3fn)
    scale = torch.empty(6, 2)
    q, s = per_token_group_quant(x, 128, out=out, scale_out=scale)
    rq, rs = group_quant_torch(x.contiguous(), 128)
    assert q is out and s is scale and torch.equal(s, rs) and torch.equal(_bits(q), _bits(rq))
    q64, s64 = per_token_group_quant(x, 64)
    assert s64.shape == (6, 4) and torch.equal(_bits(q64), _bits(group_quant_torch(x.contiguous(), 64)[0]))


@pytest.mark.parametrize("x, group, match", [
    (torch.zeros(4, 200), 128, "hidden 200 is not a multiple of the group size 128"),
    (torch.zeros(4, 384), 96, "group 96 is not supported"),
    (torch.zeros(4, 256, dtype=torch.int8), 128, "dtype torch.int8 is not supported"),
    (torch.zeros(256), 128, "2-D tensor"),
    (torch.zeros(256, 4).t(), 128, "must be contiguous"),
])
def test_rejects_what_it_does_not_support(x, group, match):
    with pytest.raises(ValueError, match=match):
        per_token_group_quant(x, group)
    with pytest.raises(ValueError, match="scale_out must be torch.float32"):
        per_token_group_quant(torch.zeros(2, 128), 128, scale_out=torch.empty(2, 2))
