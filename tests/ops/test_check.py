"""kernelmark/ops/check.py: the check every backend passes before it is timed.

It must fail a wrong kernel whose error hides in the L2 norm (one row or one element
wrong in a large output), say where the output is wrong, and still pass honest
low-precision kernels at long reductions."""
import math

import pytest
import torch

from kernelmark import dtypes
from kernelmark.ops.check import compare, index_text
from kernelmark.ops.registry import all_ops, get_op
from kernelmark.suites import loader

CPU = torch.device("cpu")


def _inputs(op, shape, dtype, seed=0):
    return op.make_inputs(shape, dtype, CPU, torch.Generator().manual_seed(seed))


def test_masked_tail_row_fails_though_its_l2_error_is_within_tolerance():
    # The bug the L2-only check let through: a GEMM whose last row is never written.
    op = get_op("gemm")
    shape = op.full_shape({"m": 4096, "n": 64, "k": 64, "layout": "nt"})
    x = _inputs(op, shape, "bf16")
    ref = op.reference(x)
    out = op.backend("torch").run(_inputs(op, shape, "bf16"))
    assert op.compare(out, ref, "bf16").passed
    out[4095] = 0
    res = op.compare(out, ref, "bf16")
    assert res.rel_l2 <= dtypes.tolerance("bf16"), "the L2 bound alone would pass this"
    assert not res.passed
    assert "first at [4095, " in res.detail and "elements outside" in res.detail
    assert 55 <= res.bad_elements <= 64        # nearly every element of the row is out of bound
    assert res.as_dict()["elementwise"] == {"rtol": 3.2e-2, "atol_rms": 3.2e-2}


def test_a_failed_check_names_the_first_bad_index_the_count_and_the_values():
    ref = torch.arange(24, dtype=torch.float32).reshape(2, 3, 4) + 1
    out = ref.clone()
    out[1, 2, 1] = 0
    out[1, 2, 3] = -5
    res = compare(out, ref, 1.0, dtype="fp32")      # L2 tolerance 1.0: only the elementwise bound can fail
    assert not res.passed and res.bad_elements == 2
    assert "2 of 24 elements" in res.detail and "first at [1, 2, 1]: out 0 vs ref 22" in res.detail
    assert index_text(23, (2, 3, 4)) == "[1, 2, 3]"


def test_exact_and_nan_failures_say_where():
    ref = torch.zeros(3, 5, dtype=torch.int32)
    out = ref.clone()
    out[2, 4] = 7
    res = compare(out, ref, 0.0, exact=True)
    assert not res.passed and "1 of 15 elements differ" in res.detail and "[2, 4]" in res.detail
    ref = torch.ones(4, 4)
    out = ref.clone()
    out[3, 1] = math.nan
    res = compare(out, ref, 1.0, dtype="fp32")
    assert not res.passed and "NaN or inf" in res.detail and "[3, 1]" in res.detail


@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
def test_honest_half_precision_gemm_passes_at_k_16384(dtype):
    op = get_op("gemm")
    shape = op.full_shape({"m": 8, "n": 96, "k": 16384, "layout": "nt"})
    ref = op.reference(_inputs(op, shape, dtype, 5))
    res = op.compare(op.backend("torch").run(_inputs(op, shape, dtype, 5)), ref, dtype)
    assert res.passed, res.detail


def test_honest_fp8_gemm_passes_at_k_16384():
    op = get_op("gemm")
    shape = op.full_shape({"m": 8, "n": 96, "k": 16384, "layout": "nt"})
    x = _inputs(op, shape, "fp8_e4m3", 5)
    try:
        out = op.backend("torch").run(_inputs(op, shape, "fp8_e4m3", 5))
    except RuntimeError as e:        # torch builds without fp8 matmul on this device
        pytest.skip(f"torch._scaled_mm on the CPU: {e}")
    res = op.compare(out, op.reference(x), "fp8_e4m3")
    assert res.passed, res.detail


def test_honest_triton_gemm_passes_at_k_16384():
    op = get_op("gemm")
    shape = op.full_shape({"m": 16, "n": 32, "k": 16384, "layout": "nn"})
    ref = op.reference(_inputs(op, shape, "bf16", 9))
    res = op.compare(op.backend("triton").run(_inputs(op, shape, "bf16", 9)), ref, "bf16")
    assert res.passed, res.detail


# ---------------------------------------------------------------- every op

def _smoke_cases() -> dict:
    """The first CPU case of each op in the smoke suite: (shape, dtype)."""
    first = {}
    for c in loader.load("smoke").cases:
        if c.runs_on("cpu") and c.op not in first:
            first[c.op] = (c.shape, c.dtype)
    return first


SMOKE = _smoke_cases()
OPS = sorted(name for name, op in all_ops().items() if op.memory_peak == "copy" and name in SMOKE
             and not name.startswith(("all_", "reduce_", "broadcast")))


def _torch_backend(op, shape, dtype):
    for b in op.backends:
        if b.triton or (b.devices and "cpu" not in b.devices) or b.available() is not None:
            continue
        if b.dtypes and dtype not in b.dtypes:
            continue
        if b.supports is not None and b.supports(shape, dtype, "cpu", None) is not None:
            continue
        return b
    return None


def _spoil(out, ref, how: str):
    """A copy of the output with one element (the reference's largest) or the last row zeroed;
    for tuple outputs, in the first tensor where that changes anything."""
    outs = list(out) if isinstance(out, (tuple, list)) else [out]
    refs = list(ref) if isinstance(ref, (tuple, list)) else [ref]
    for i, (o, r) in enumerate(zip(outs, refs)):
        spoiled = o.clone(memory_format=torch.contiguous_format)
        if how == "element":
            # Where the reference is largest; a sampler's reference is the distribution it
            # draws from, not an output of the same shape: its first draw, then.
            same = tuple(r.shape) == tuple(o.shape)
            flat = int(torch.argmax(r.detach().double().abs().reshape(-1))) if same else 0
            spoiled.view(-1)[flat] = 0
        else:
            spoiled[-1] = 0
        if not torch.equal(spoiled, o):
            outs[i] = spoiled
            return tuple(outs) if isinstance(out, (tuple, list)) else outs[0]
    raise AssertionError("zeroing changed no output")


def test_every_op_with_a_cpu_backend_is_covered():
    assert {"gemm", "prefill_attention", "prefill_attention_varlen", "paged_decode_attention", "kv_append",
            "kv_gather", "kv_copy_blocks", "kv_quantize", "kv_dequantize", "rope_kv_append",
            "rmsnorm", "fused_add_rmsnorm", "silu_and_mul", "gelu_tanh_and_mul", "rope", "embedding",
            "argmax_sampling", "top_k_top_p_sampling", "fp8_group_quant", "gemm_fp8_blockwise",
            "mla_decode_attention", "moe_route", "moe_align", "fused_moe"} <= set(OPS)


@pytest.mark.parametrize("how", ["element", "row"])
@pytest.mark.parametrize("name", OPS)
def test_a_spoiled_torch_backend_fails_every_ops_check(name, how):
    op = get_op(name)
    shape, dtype = SMOKE[name]
    shape = op.full_shape(shape)
    b = _torch_backend(op, shape, dtype)
    if b is None:
        pytest.skip(f"{name}: no torch backend runs on this CPU")
    ref = op.reference(_inputs(op, shape, dtype, 11))
    out = b.run(_inputs(op, shape, dtype, 11))
    honest = op.compare(out, ref, dtype)
    assert honest.passed, honest.detail
    spoiled = _spoil(out, ref, how)
    res = op.compare(spoiled, ref, dtype)
    assert not res.passed, f"{name}: a zeroed {how} passed the check"
    assert res.detail
    if op.check is None and not op.exact:
        # With the L2 bound switched off, the elementwise bound alone still catches it.
        alone = compare(spoiled, ref, math.inf, dtype=dtype)
        assert not alone.passed and "elements outside" in alone.detail
