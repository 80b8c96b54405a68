import pytest
import torch

from kernelmark.ops.registry import get_op


def test_flops_and_bytes_closed_forms():
    op = get_op("gemm")
    s = {"m": 3, "n": 5, "k": 7, "layout": "nn"}
    assert op.flops(s) == 2 * 3 * 5 * 7
    assert op.nbytes(s, "fp32") == (3 * 7 + 7 * 5 + 3 * 5) * 4
    assert op.nbytes(s, "bf16") == (3 * 7 + 7 * 5 + 3 * 5) * 2
    # fp8 inputs, bf16 output
    assert op.nbytes(s, "fp8_e4m3") == (3 * 7 + 7 * 5) * 1 + 3 * 5 * 2


def test_projection_shapes_of_llama3():
    from kernelmark.suites.models import gemm_shapes
    got = {label: (s["n"], s["k"]) for label, s in gemm_shapes("llama3-8b", m=[1])}
    assert got == {"llama3-8b.qkv": (6144, 4096), "llama3-8b.o": (4096, 4096),
                   "llama3-8b.gate_up": (28672, 4096), "llama3-8b.down": (4096, 14336)}
    got70 = {label: (s["n"], s["k"]) for label, s in gemm_shapes("llama3-70b", m=[1])}
    assert got70 == {"llama3-70b.qkv": (10240, 8192), "llama3-70b.o": (8192, 8192),
                     "llama3-70b.gate_up": (57344, 8192), "llama3-70b.down": (8192, 28672)}


@pytest.mark.parametrize("shape, match", [
    ({"m": 0, "n": 4, "k": 4, "layout": "nn"}, "m must be a positive integer"),
    ({"m": 4, "n": -1, "k": 4, "layout": "nn"}, "n must be a positive integer"),
    ({"m": 4, "n": 4, "k": 4, "layout": "tt"}, "layout must be one of"),
])
def test_invalid_shapes(shape, match):
    with pytest.raises(ValueError, match=match):
        get_op("gemm").check_shape(shape, "fp32")


@pytest.mark.parametrize("dtype", ["fp32", "fp16", "bf16"])
@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_backends_pass_the_op_check_on_fresh_inputs(dtype, backend):
    op = get_op("gemm")
    shape = op.full_shape({"m": 24, "n": 40, "k": 56, "layout": "nt"})
    x = op.make_inputs(shape, dtype, torch.device("cpu"), torch.Generator().manual_seed(3))
    ref = op.reference(x)
    out = op.backend(backend).run(op.make_inputs(shape, dtype, torch.device("cpu"),
                                                 torch.Generator().manual_seed(3)))
    res = op.compare(out, ref, dtype)
    assert res.passed, res.detail
    # A wrong answer fails the same check.
    assert not op.compare(out * 1.05, ref, dtype).passed
    bad = out.clone()
    bad[0, 0] = float("nan")
    assert not op.compare(bad, ref, dtype).passed
