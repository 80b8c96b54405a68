import pytest
import torch

from kernelmark.kernels.kv_quant import GRANULARITIES, QFORMATS, kv_dequantize, kv_quantize
from kernelmark.ops import kv_inputs
from kernelmark.ops.kv_quant import calibrate, dequantize_torch, quantize_torch, scale_view

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def _x(dt, t=6, h=3, d=40, seed=0, spread=True):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(t, h, d, generator=g)
    if spread:   # rows of very different magnitude, so per-row scales matter and fp8 hits subnormals
        x = x * torch.logspace(-3, 2, t)[:, None, None]
    return x.to(dt)


def _quantize(x, qformat, granularity):
    scale = None if granularity == "token_head" else calibrate(x, qformat, granularity)
    return kv_quantize(x, qformat, granularity, scale)


def _round_trip_bound(x, s, qformat):
    """The documented per-element bound (ops/kv_quant.py), with 2**-23·|x| for the fp32
    division's rounding."""
    ax = x.double().abs()
    slack = 2.0 ** -23 * ax
    if qformat == "int8":
        return s / 2 + slack
    return torch.maximum(2.0 ** -4 * ax, 2.0 ** -10 * s) + slack


@pytest.mark.parametrize("name", list(DTYPES))
@pytest.mark.parametrize("granularity", GRANULARITIES)
@pytest.mark.parametrize("qformat", QFORMATS)
def test_codes_and_scales_match_the_reference_bit_for_bit(qformat, granularity, name):
    x = _x(DTYPES[name])
    q, s = _quantize(x, qformat, granularity)
    rq, rs = quantize_torch(x, qformat, granularity, None if granularity == "token_head" else s)
    assert not kv_inputs.bitwise_equal(q, rq, "codes"), kv_inputs.bitwise_equal(q, rq, "codes")
    assert not kv_inputs.bitwise_equal(s, rs, "scale")
    assert s.shape == {"tensor": (1,), "head": (3,), "token_head": (6, 3)}[granularity]


@pytest.mark.parametrize("granularity", GRANULARITIES)
@pytest.mark.parametrize("qformat", QFORMATS)
def test_round_trip_error_is_within_the_formats_bound(qformat, granularity):
    x = _x(torch.bfloat16)
    q, s = _quantize(x, qformat, granularity)
    sv = scale_view(s).double()
    err = (x.double() - q.double() * sv).abs()
    bound = _round_trip_bound(x, sv.expand_as(err), qformat)
    assert bool((err <= bound).all()), float((err - bound).max())
    # And the bound is not vacuous: the error does reach a good share of it.
    assert float((err / bound).max()) > 0.5
    # Through the Triton dequantizer to fp32 (exact product): the same bound.
    back = kv_dequantize(q, s, granularity, torch.float32)
    assert bool(((x.double() - back.double()).abs() <= bound).all())


def test_ties_round_to_even_and_values_clip_at_qmax():
    one = torch.ones(1)
    x = torch.tensor([2.5, 3.5, -2.5, 0.5, 126.5, 300.0, -1000.0, 0.0]).view(1, 1, 8)
    q, _ = kv_quantize(x, "int8", "tensor", one)
    assert q.view(-1).tolist() == [2, 4, -2, 0, 126, 127, -127, 0]
    # e4m3: 2.625 lies halfway between 2.5 (even mantissa) and 2.75; -7.84375 rounds up to -8;
    # 3e-3 is subnormal (quantum 2**-9); 500 clips to 448; -0.0 keeps its sign; 2**-10 is
    # half a subnormal quantum, a tie that goes to the even code 0.
    x = torch.tensor([2.625, -7.84375, 3e-3, 500.0, -0.0, 2.0 ** -10, 448.0, -2.0 ** -11]).view(1, 1, 8)
    q, _ = kv_quantize(x, "fp8_e4m3", "tensor", one)
    assert q.float().view(-1).tolist() == [2.5, -8.0, 2.0 ** -8, 448.0, -0.0, 0.0, 448.0, -0.0]
    assert torch.signbit(q.float().view(-1)).tolist() == [False, True, False, False, True, False, False, True]


@pytest.mark.parametrize("qformat", QFORMATS)
def test_an_all_zero_row_has_scale_zero_and_zero_codes(qformat):
    x = _x(torch.float16)
    x[2, 1] = 0
    q, s = kv_quantize(x, qformat, "token_head")
    assert float(s[2, 1]) == 0.0 and not q[2, 1].float().abs().any()
    assert torch.isfinite(s).all()
    assert not kv_dequantize(q, s, "token_head", torch.float16)[2, 1].any()


@pytest.mark.parametrize("name", ["fp16", "bf16"])
@pytest.mark.parametrize("qformat", QFORMATS)
def test_dequantize_is_within_one_ulp_of_the_fp32_product(qformat, name):
    dt = DTYPES[name]
    x = _x(dt)
    q, s = _quantize(x, qformat, "head")
    out = kv_dequantize(q, s, "head", dt)
    ok, detail, *_ = kv_inputs.within_ulps(out, dequantize_torch(q, s, dt), "dequantized", 1.0)
    assert ok, detail


@pytest.mark.parametrize("call, message", [
    (lambda x: kv_quantize(x, "int4", "tensor", torch.ones(1)), "unknown qformat 'int4'"),
    (lambda x: kv_quantize(x, "int8", "channel", torch.ones(1)), "unknown granularity 'channel'"),
    (lambda x: kv_quantize(x, "int8", "head", torch.ones(1)), r"a 'head' scale must have shape \(3,\), got \(1,\)"),
    (lambda x: kv_quantize(x, "int8", "tensor", torch.ones(1, dtype=torch.float16)), "scale must be float32"),
    (lambda x: kv_quantize(x, "int8", "tensor"), "static: pass the calibrated scale"),
    (lambda x: kv_quantize(x, "int8", "token_head", torch.ones(6, 3)), "pass scale=None"),
    (lambda x: kv_quantize(x[0], "int8", "tensor", torch.ones(1)), "x must be 3-D"),
    (lambda x: kv_quantize(x.transpose(1, 2).contiguous().transpose(1, 2), "int8", "tensor", torch.ones(1)),
     "head_dim must be contiguous"),
    (lambda x: kv_quantize(x.int(), "int8", "tensor", torch.ones(1)), "x must be fp16, bf16 or fp32"),
    (lambda x: kv_dequantize(x, torch.ones(1), "tensor"), "codes must be int8 or float8_e4m3fn"),
    (lambda x: kv_dequantize(x.to(torch.int8), torch.ones(6, 2), "token_head"),
     r"a 'token_head' scale must have shape \(6, 3\)"),
    (lambda x: kv_dequantize(x.to(torch.int8), torch.ones(1), "tensor", torch.int32), "out_dtype must be"),
])
def test_bad_input_is_a_value_error_naming_it(call, message):
    with pytest.raises(ValueError, match=message):
        call(_x(torch.float16))
