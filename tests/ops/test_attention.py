import warnings

import pytest
import torch

from kernelmark.kernels import paged
from kernelmark.ops import attention_libs as _attention_libs, attention, attention_sdpa
from kernelmark.ops.base import Unsupported
from kernelmark.ops.registry import get_op

CPU = torch.device("cpu")
PREFILL = {"batch": 2, "seq": 40, "q_heads": 4, "kv_heads": 2, "head_dim": 64, "causal": 1}
DECODE = {"batch": 3, "context": 70, "q_heads": 8, "kv_heads": 2, "head_dim": 64, "page_size": 16, "ragged": 0}
SHAPES = {
    "prefill_attention": [PREFILL, {**PREFILL, "causal": 0}],
    "prefill_attention_varlen": [{**PREFILL, "batch": 3, "seq": 32}, {**PREFILL, "batch": 3, "seq": 32, "causal": 0}],
    "paged_decode_attention": [DECODE, {**DECODE, "ragged": 1, "page_size": 32}],
}


def _inputs(op, shape, dtype, seed=3):
    return op.make_inputs(op.full_shape(shape), dtype, CPU, torch.Generator().manual_seed(seed))


def _why_not_on_cpu(b, shape, dtype):
    if b.available():
        return b.available()
    if b.devices is not None and "cpu" not in b.devices:
        return "device"
    if b.dtypes is not None and dtype not in b.dtypes:
        return "dtype"
    return b.supports(shape, dtype, "cpu", None) if b.supports else None


# ---------------------------------------------------------------- work counts

def test_prefill_flops_and_bytes_closed_forms():
    op = get_op("prefill_attention")
    s = op.full_shape({"batch": 2, "seq": 10, "q_heads": 4, "kv_heads": 2, "head_dim": 8, "causal": 0})
    assert op.flops(s) == 4 * 2 * 4 * 10 * 10 * 8
    assert op.flops({**s, "causal": 1}) == 4 * 2 * 4 * 8 * 55          # 10 * 11 / 2 unmasked pairs
    assert op.nbytes(s, "bf16") == 2 * 10 * (4 + 2 + 2 + 4) * 8 * 2
    assert op.nbytes(s, "fp32") == 2 * 10 * (4 + 2 + 2 + 4) * 8 * 4


def test_varlen_work_counts_follow_the_lengths_make_inputs_uses():
    op = get_op("prefill_attention_varlen")
    s = op.full_shape({"batch": 4, "seq": 100, "q_heads": 4, "kv_heads": 1, "head_dim": 8, "causal": 1})
    lens = attention.varlen_lengths(s)
    assert sorted(lens) == [62, 87, 112, 137]                           # spread over [seq/2, 3seq/2]
    assert lens == attention.varlen_lengths(dict(s)) and lens != sorted(lens)  # fixed, shuffled
    assert op.flops(s) == 4 * 4 * 8 * sum(n * (n + 1) // 2 for n in lens)
    assert op.flops({**s, "causal": 0}) == 4 * 4 * 8 * sum(n * n for n in lens)
    assert op.nbytes(s, "fp16") == sum(lens) * (4 + 1 + 1 + 4) * 8 * 2 + 4 * 5
    x = _inputs(op, s, "fp16")
    assert x["cu_seqlens"].tolist() == [0] + torch.tensor(lens).cumsum(0).tolist()
    assert x["q"].shape == (sum(lens), 4, 8) and x["max_seqlen"] == max(lens)


def test_decode_work_counts():
    op = get_op("paged_decode_attention")
    s = op.full_shape({"batch": 3, "context": 40, "q_heads": 8, "kv_heads": 2, "head_dim": 16})
    assert s["page_size"] == 16 and s["ragged"] == 0
    assert op.flops(s) == 4 * 8 * 16 * 120
    kv = 120 * 2 * 16 * 2 * 2
    assert op.nbytes(s, "bf16") == kv + 2 * 3 * 8 * 16 * 2 + 4 * 3 * 3 + 4 * 3   # 3 pages each
    r = {**s, "ragged": 1}
    lens = attention.context_lengths(r)
    assert sorted(lens) == [26, 40, 53] and len(set(lens)) == 3
    assert op.flops(r) == 4 * 8 * 16 * sum(lens)
    pages = sum(paged.blocks_needed(n, 16) for n in lens)
    assert op.nbytes(r, "fp32") == sum(lens) * 2 * 16 * 2 * 4 + 2 * 3 * 8 * 16 * 4 + 4 * pages + 4 * 3
    x = _inputs(op, r, "fp32")
    assert x["context_lens"].tolist() == lens
    paged.check_block_table(x["block_table"], x["context_lens"], x["k_cache"].shape[0], 16)
    assert x["k_cache"].shape[0] >= pages + 4                            # spare blocks


# ---------------------------------------------------------------- shapes and inputs

@pytest.mark.parametrize("op_name, shape, match", [
    ("prefill_attention", {**PREFILL, "causal": 2}, "causal must be 0 or 1"),
    ("prefill_attention", {**PREFILL, "causal": True}, "causal must be 0 or 1"),
    ("prefill_attention", {**PREFILL, "q_heads": 5}, "q_heads must be a multiple of kv_heads"),
    ("prefill_attention_varlen", {**PREFILL, "seq": 0}, "seq must be a positive integer"),
    ("paged_decode_attention", {**DECODE, "page_size": 12}, "page_size must be a power of two"),
    ("paged_decode_attention", {**DECODE, "ragged": 3}, "ragged must be 0 or 1"),
])
def test_invalid_shapes(op_name, shape, match):
    with pytest.raises(ValueError, match=match):
        get_op(op_name).check_shape(shape, "bf16")


@pytest.mark.parametrize("op_name", list(SHAPES))
def test_inputs_are_deterministic_fresh_and_untouched_by_the_reference(op_name):
    op = get_op(op_name)
    shape = SHAPES[op_name][1]
    a, b, c = _inputs(op, shape, "fp16"), _inputs(op, shape, "fp16"), _inputs(op, shape, "fp16", seed=4)
    tensors = [k for k, v in a.items() if isinstance(v, torch.Tensor) and v.is_floating_point()]
    assert tensors
    for k in tensors:
        assert torch.equal(a[k], b[k]) and a[k].data_ptr() != b[k].data_ptr()
        assert not torch.equal(a[k], c[k])
    before = {k: a[k].clone() for k in tensors}
    op.reference(a)
    assert all(torch.equal(a[k], before[k]) for k in tensors)


def test_triton_head_dims_match_the_kernels():
    from kernelmark.kernels import paged_decode_attention, prefill_attention
    assert attention.TRITON_HEAD_DIMS == prefill_attention.HEAD_DIMS == paged_decode_attention.HEAD_DIMS


# ---------------------------------------------------------------- backends

def _cases():
    for op_name, shapes in SHAPES.items():
        for shape in shapes:
            for dtype in ("fp16", "bf16", "fp32"):
                yield op_name, shape, dtype


@pytest.mark.parametrize("op_name, shape, dtype", list(_cases()))
def test_every_backend_available_on_cpu_passes_the_check(op_name, shape, dtype):
    op = get_op(op_name)
    shape = op.full_shape(shape)
    ref = op.reference(_inputs(op, shape, dtype))
    ran = []
    for b in op.backends:
        if _why_not_on_cpu(b, shape, dtype):
            continue
        out = b.run(b.setup(_inputs(op, shape, dtype)))
        res = op.compare(out, ref, dtype)
        assert res.passed, f"{b.name}: {res.detail}"
        ran.append(b.name)
    assert "triton" in ran and any(n.startswith("torch") for n in ran)


@pytest.mark.parametrize("op_name", list(SHAPES))
def test_wrong_outputs_fail_the_check(op_name):
    op = get_op(op_name)
    shape = op.full_shape(SHAPES[op_name][0])
    x = _inputs(op, shape, "bf16")
    ref = op.reference(x)
    out = next(b for b in op.backends if b.name.startswith("torch")).run(x)
    assert op.compare(out, ref, "bf16").passed
    assert not op.compare(out * 1.05, ref, "bf16").passed
    bad = out.clone()
    bad[(0,) * bad.dim()] = float("nan")
    assert not op.compare(bad, ref, "bf16").passed
    assert not op.compare(out[:1], ref, "bf16").passed
    # A plausible bug: a different query's (or sequence's) attention.
    assert not op.compare(out.roll(1, 0), ref, "bf16").passed


def test_causal_flag_reaches_the_backends():
    op = get_op("prefill_attention")
    shape = op.full_shape(PREFILL)
    ref_causal = op.reference(_inputs(op, shape, "fp32"))
    not_causal = op.backend("torch-sdpa-math").run(_inputs(op, {**shape, "causal": 0}, "fp32"))
    assert not op.compare(not_causal, ref_causal, "fp32").passed


def test_unsupported_backends_say_why():
    op = get_op("prefill_attention")
    shape = op.full_shape(PREFILL)
    assert op.backend("torch-sdpa-efficient").devices == ("cuda", "rocm")
    assert op.backend("torch-sdpa-cudnn").devices == ("cuda",)
    assert "fp16 and bf16" in op.backend("torch-sdpa-flash").supports(shape, "fp32", "cuda", (9, 0))
    assert op.backend("torch-sdpa-flash").supports(shape, "bf16", "cuda", (9, 0)) is None
    assert "8.0 or newer" in op.backend("torch-sdpa-cudnn").supports(shape, "bf16", "cuda", (7, 5))
    big = {**shape, "batch": 1, "seq": 16384, "q_heads": 32}
    assert "materialises" in op.backend("torch-sdpa-math").supports(big, "bf16", "cuda", (9, 0))
    assert "head_dim" in op.backend("triton").supports({**shape, "head_dim": 96}, "bf16", "cuda", (9, 0))
    dec = get_op("paged_decode_attention")
    dshape = dec.full_shape(DECODE)
    assert "256" in dec.backend("flash-attn").supports(dshape, "bf16", "cuda", (9, 0))
    for b in (*op.backends, *dec.backends):
        if b.name in ("flash-attn", "flashinfer"):
            reason = b.available()
            assert reason is None or "not installed" in reason


def test_torch_varlen_attn_glue_with_a_stand_in(monkeypatch):
    # varlen_attn needs CUDA; check the argument plumbing (causal spelled as a window,
    # GQA) against a stand-in with torch 2.13's signature that computes per sequence.
    import torch.nn.attention.varlen as varlen
    import torch.nn.functional as F
    seen = {}

    def fake(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, *, return_aux=None, scale=None,
             window_size=(-1, -1), enable_gqa=False, seqused_k=None, block_table=None, num_splits=None):
        seen.update(window_size=window_size, enable_gqa=enable_gqa, scale=scale)
        out = torch.empty_like(query)
        for a, b in zip(cu_seq_q[:-1].tolist(), cu_seq_q[1:].tolist()):
            q, k, v = (t[a:b].transpose(0, 1) for t in (query, key, value))
            out[a:b] = F.scaled_dot_product_attention(q, k, v, is_causal=window_size == (-1, 0), scale=scale,
                                                      enable_gqa=enable_gqa).transpose(0, 1)
        return out

    monkeypatch.setattr(varlen, "varlen_attn", fake)
    _attention_libs._varlen_attn_params.cache_clear()
    try:
        op = get_op("prefill_attention_varlen")
        for causal in (0, 1):
            shape = op.full_shape({**SHAPES["prefill_attention_varlen"][0], "causal": causal})
            x = _inputs(op, shape, "fp32")
            assert op.compare(op.backend("torch-varlen-attn").run(x), op.reference(x), "fp32").passed
            assert seen["window_size"] == ((-1, 0) if causal else (-1, -1)) and seen["enable_gqa"]
    finally:
        _attention_libs._varlen_attn_params.cache_clear()


def test_attention_suite_sizes():
    from kernelmark.harness.runner import INTERPRETER_MAX_BYTES, INTERPRETER_MAX_FLOPS
    from kernelmark.suites import loader
    for name in ("attention", "smoke", "llama3-8b", "llama3-70b"):
        suite = loader.load(name)
        ours = [c for c in suite.cases if c.op in SHAPES]
        assert ours, name
        cpu = [c for c in ours if c.runs_on("cpu")]
        assert cpu, name
        for c in cpu:   # small enough that the interpreter checks the Triton kernels
            op = get_op(c.op)
            assert op.flops(c.shape) <= INTERPRETER_MAX_FLOPS and op.nbytes(c.shape, c.dtype) <= INTERPRETER_MAX_BYTES
    gpu = [c for c in loader.load("attention").cases if c.runs_on("cuda")]
    assert 30 <= len(gpu) <= 60
    for c in gpu:
        op = get_op(c.op)
        if c.op.startswith("prefill"):
            assert c.shape["batch"] * c.shape["seq"] == 16384
        else:
            assert op.nbytes(c.shape, c.dtype) < 5 * 2 ** 30


def _refusing_sdpa(monkeypatch, error, warning=None):
    """SDPA that refuses GQA calls the way torch's dispatcher does: reasons as warnings,
    then a RuntimeError."""
    real = attention_sdpa.F.scaled_dot_product_attention
    calls = []

    def sdpa(*args, **kw):
        calls.append(kw.get("enable_gqa", False))
        if kw.get("enable_gqa"):
            if warning:
                warnings.warn(warning)
            raise RuntimeError(error)
        return real(*args, **kw)

    monkeypatch.setattr(attention_sdpa.F, "scaled_dot_product_attention", sdpa)
    return calls


GQA_REFUSAL = ("For dense input, both fused kernels require query, key and value to have the same num_heads. "
               "Query.sizes(): [2, 4, 40, 64], Key sizes(): [2, 2, 40, 64], Value sizes(): [2, 2, 40, 64] "
               "instead. To broadcast dense inputs, try using unsqueeze and expand_to before passing them")


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_an_sdpa_backend_that_refuses_enable_gqa_is_unsupported_and_never_repeats_kv(monkeypatch):
    calls = _refusing_sdpa(monkeypatch, "No available kernel.  Aborting execution.", GQA_REFUSAL)
    op = get_op("prefill_attention")
    x = _inputs(op, PREFILL, "fp32")
    with pytest.raises(Unsupported, match="refuses enable_gqa=True.*same num_heads.*torch-sdpa-math-repeat-kv"):
        op.backend("torch-sdpa-math").run(x)
    assert all(calls)                 # no call without enable_gqa: nothing repeated K/V to get around it


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("error, warning", [
    ("CUDA error: an illegal memory access was encountered", None),
    ("No available kernel.  Aborting execution.", "Flash attention requires q,k,v to have the same last dimension"),
])
def test_other_sdpa_errors_are_not_taken_for_a_gqa_refusal(monkeypatch, error, warning):
    _refusing_sdpa(monkeypatch, error, warning)
    op = get_op("prefill_attention")
    with pytest.raises(RuntimeError) as info:
        op.backend("torch-sdpa-math").run(_inputs(op, PREFILL, "fp32"))
    assert not isinstance(info.value, Unsupported) and error in str(info.value)


@pytest.mark.parametrize("op_name", ["prefill_attention", "prefill_attention_varlen"])
def test_repeat_kv_backends_repeat_in_set_up_and_not_in_the_timed_call(op_name, monkeypatch):
    op = get_op(op_name)
    shape = op.full_shape(SHAPES[op_name][0])
    x = _inputs(op, shape, "fp32")
    ref = op.reference(x)
    for kind in ("math", "flash"):
        b = op.backend(f"torch-sdpa-{kind}-repeat-kv")
        assert b.devices == ("cuda", "rocm")
        assert "not a GQA shape" in b.supports({**shape, "kv_heads": shape["q_heads"]}, "bf16", "cuda", (9, 0))
        assert b.supports(shape, "bf16", "cuda", (9, 0)) is None
        ready = b.setup(x)
        with monkeypatch.context() as m:
            m.setattr(torch.Tensor, "repeat_interleave", lambda *a, **k: pytest.fail("repeat in the timed call"))
            m.setattr(torch, "repeat_interleave", lambda *a, **k: pytest.fail("repeat in the timed call"))
            out = b.run(ready)
        assert op.compare(out, ref, "fp32").passed, kind
