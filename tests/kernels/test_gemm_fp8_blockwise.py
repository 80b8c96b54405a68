"""kernelmark/kernels/gemm_fp8_blockwise.py in the Triton interpreter (fp8 tiles upcast to fp32
before the dot, the rest as on a GPU): against an fp64 dequantise-and-multiply at tails in M,
N and K, with column-major scales, and the refusals."""
import pytest
import torch

from kernelmark.kernels.gemm_fp8_blockwise import block_fp8_matmul
from kernelmark.ops.fp8_blockwise import dequantize, gemm_make_inputs

CPU = torch.device("cpu")


def _inputs(m, n, k, seed=0):
    return gemm_make_inputs({"m": m, "n": n, "k": k}, "fp8_e4m3", CPU, torch.Generator().manual_seed(seed))


def _exact(x):
    return dequantize(x["a"], x["a_scale"], 1) @ dequantize(x["b"], x["b_scale"], 128).t()


@pytest.mark.parametrize("m, n, k", [(40, 200, 300), (3, 576, 256), (1, 130, 129)])
def test_matches_fp64_at_tails_in_fp32_output(m, n, k):
    # fp32 out: no bf16 rounding (which the interpreter truncates), so the scales, masks and
    # the K loop are held to fp32 accuracy.
    x = _inputs(m, n, k)
    c = block_fp8_matmul(x["a"], x["b"], x["a_scale"], x["b_scale"], out_dtype=torch.float32)
    ref = _exact(x)
    err = (c.double() - ref).abs()
    assert float(err.max()) <= 1e-5 * float(ref.abs().max()), float(err.max())


def test_bf16_output_and_column_major_scales_give_the_same_result():
    x = _inputs(17, 256, 384, seed=1)
    c = block_fp8_matmul(x["a"], x["b"], x["a_scale"], x["b_scale"])
    assert c.dtype == torch.bfloat16
    cm = block_fp8_matmul(x["a"], x["b"], x["a_scale_mmajor"], x["b_scale"])
    assert x["a_scale_mmajor"].stride() == (1, 17) and torch.equal(c, cm)
    ref = _exact(x)
    assert float((c.double() - ref).abs().max()) <= 2 ** -7 * float(ref.abs().max())


def test_a_scale_applied_to_the_wrong_block_is_caught():
    # Each block's scale matters: swapping two B block scales moves the result far off.
    x = _inputs(8, 256, 256, seed=2)
    bs = x["b_scale"].clone()
    bs[0, 0], bs[0, 1] = x["b_scale"][0, 1], x["b_scale"][0, 0]
    c = block_fp8_matmul(x["a"], x["b"], x["a_scale"], bs, out_dtype=torch.float32)
    ref = _exact(x)
    assert float((c.double() - ref).abs().max()) > 0.05 * float(ref.abs().max())


def test_rejects_what_it_does_not_support():
    x = _inputs(4, 128, 256)
    a, b, sa, sb = x["a"], x["b"], x["a_scale"], x["b_scale"]
    cases = [
        ((a.float(), b, sa, sb), "a must be torch.float8_e4m3fn"),
        ((a, b[:, :128], sa, sb), "both must have K columns"),
        ((a, b, sa[:, :1], sb), r"a_scale must be \[M, ceil\(K/128\)\] = \[4, 2\]"),
        ((a, b, sa, sb.t()), r"b_scale must be \[ceil\(N/128\), ceil\(K/128\)\] = \[1, 2\]"),
        ((a, b, sa.double(), sb), "a_scale must be torch.float32"),
    ]
    for args, match in cases:
        with pytest.raises(ValueError, match=match):
            block_fp8_matmul(*args)
    with pytest.raises(ValueError, match="out_dtype torch.int32 is not supported"):
        block_fp8_matmul(a, b, sa, sb, out_dtype=torch.int32)
