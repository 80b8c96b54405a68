"""kernelmark/ops/fp8_blockwise.py: the quantiser's check (bit for bit but for rounding ties),
the block GEMM's inputs, reference and bf16-tight check, work counts, and the library
backends' refusals on this machine."""
import pytest
import torch

from kernelmark.ops.registry import get_op

CPU = torch.device("cpu")


def _case(name, shape, dtype, seed=0):
    op = get_op(name)
    shape = op.full_shape(shape)
    op.check_shape(shape, dtype)
    x = op.make_inputs(shape, dtype, CPU, torch.Generator().manual_seed(seed))
    return op, shape, x, op.reference(op.make_inputs(shape, dtype, CPU, torch.Generator().manual_seed(seed)))


def _step_down(codes, where):
    """The e4m3 code one step toward zero at ``where`` (a truncating quantiser's answer)."""
    bits = codes.view(torch.uint8).clone()
    mag = bits & 0x7F
    bits[where] = torch.where(mag[where] > 0, bits[where] - 1, bits[where])
    return bits.view(torch.float8_e4m3fn)


def test_quant_check_passes_honest_codes_and_fails_truncated_or_shifted_ones():
    op, shape, x, ref = _case("fp8_group_quant", {"tokens": 6, "hidden": 256}, "bf16")
    codes, scale = op.backend("triton").run(x)
    assert op.compare((codes, scale), ref, "bf16").passed
    # Truncation toward zero (the interpreter's own conversion does about that): about half
    # the codes differ by one step, and none of them at a tie.
    y = ref[2]
    rounded_up = codes.float().abs() > y.abs()
    res = op.compare((_step_down(codes, rounded_up), scale), ref, "bf16")
    assert not res.passed and res.bad_elements == int(rounded_up.sum()) > 100
    assert "differ from the reference's (and x/scale is no rounding tie)" in res.detail
    # One scale off by a relative 1e-6 (4 ulps): caught too.
    bad_scale = scale.clone()
    bad_scale[3, 1] *= 1 + 1e-6
    res = op.compare((codes, bad_scale), ref, "bf16")
    assert not res.passed and "scales: 1 of 12 elements" in res.detail and "[3, 1]" in res.detail


def test_quant_check_accepts_the_other_neighbour_only_at_a_rounding_tie():
    op, shape, x, ref = _case("fp8_group_quant", {"tokens": 1, "hidden": 128}, "fp32")
    xx = x["x"]
    xx[0, 0] = 448.0                     # scale 1: x/scale is x
    xx[0, 1] = 1.0625 * (1 + 2 ** -22)   # a hair above the 1.0 | 1.125 midpoint: 1.125 is right
    xx[0, 2] = 1.0625 * (1 + 2 ** -12)   # well above it: only 1.125 is right
    ref = op.reference(x)
    codes, scale = op.backend("torch").run(x)
    assert codes[0, 1].float() == 1.125 and codes[0, 2].float() == 1.125
    other = codes.clone()
    other[0, 1] = 1.0                    # what an approximate division may give: passes, and is counted
    res = op.compare((other, scale), ref, "fp32")
    assert res.passed and "1 of 128 codes at a rounding tie went to the other neighbour" in res.detail
    other[0, 2] = 1.0
    assert not op.compare((other, scale), ref, "fp32").passed


def test_quant_work_counts_and_bad_shapes():
    op = get_op("fp8_group_quant")
    shape = op.full_shape({"tokens": 4, "hidden": 7168})
    assert shape["group"] == 128
    assert op.nbytes(shape, "bf16") == 4 * 7168 * 2 + 4 * 7168 + 4 * 4 * 56
    with pytest.raises(ValueError, match="hidden must be a multiple of group"):
        op.check_shape(op.full_shape({"tokens": 4, "hidden": 100}), "bf16")
    assert "powers of two" in op.backend("triton").supports(op.full_shape({"tokens": 4, "hidden": 96 * 3,
                                                                          "group": 96}), "bf16", "cpu", None)


def test_gemm_inputs_reference_and_a_check_that_holds_fp8_to_bf16_bounds():
    op, shape, x, ref = _case("gemm_fp8_blockwise", {"m": 40, "n": 200, "k": 300}, "fp8_e4m3")
    assert x["a"].dtype == torch.float8_e4m3fn and x["a_scale"].shape == (40, 3) and x["b_scale"].shape == (2, 3)
    assert x["b_scale"].max() / x["b_scale"].min() > 2          # block scales differ, so they matter
    out = op.backend("torch").run(x)
    assert ref.dtype == torch.bfloat16 and op.compare(out, ref, "fp8_e4m3").passed
    # An error of 5% on one row passes fp8's own bounds (12.5%) but not this op's (bf16's).
    out[7] = (out[7].float() * 1.05).to(torch.bfloat16)
    res = op.compare(out, ref, "fp8_e4m3")
    assert not res.passed and "first at [7, " in res.detail
    assert op.flops(shape) == 2 * 40 * 200 * 300
    assert op.nbytes(shape, "fp8_e4m3") == 40 * 300 + 200 * 300 + 4 * (40 * 3 + 2 * 3) + 2 * 40 * 200


def test_library_backends_name_what_they_need():
    gemm, quant = get_op("gemm_fp8_blockwise"), get_op("fp8_group_quant")
    shape = gemm.full_shape({"m": 6, "n": 576, "k": 7168})
    for name in ("deepgemm", "vllm-cutlass", "vllm-triton", "torch-scaled-mm-blockwise"):
        b = gemm.backend(name)
        assert b.devices == ("cuda",)
        why = b.available()
        assert why is None or "not installed" in why or "torch" in why
    assert "compute capability 9.0" in gemm.backend("deepgemm").supports(shape, "fp8_e4m3", "cuda", (8, 9))
    assert "multiple of 4" in gemm.backend("vllm-cutlass").supports(shape, "fp8_e4m3", "cuda", (9, 0))
    assert "n a multiple of 128" in gemm.backend("torch-scaled-mm-blockwise").supports(
        shape, "fp8_e4m3", "cuda", (9, 0))
    assert "8.9 or newer" in gemm.backend("triton").supports(shape, "fp8_e4m3", "cuda", (8, 0))
    for name in ("vllm", "sgl-kernel"):
        why = quant.backend(name).available()
        assert why is None or "not installed" in why
