import math

import pytest
import torch

from kernelmark.dtypes import TOLERANCE
from kernelmark.kernels import prefill_attention as pa
from kernelmark.ops.base import compare

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def _ref(q, k, v, causal, scale=None):
    """fp64 attention of one sequence: q [s, hq, d], k/v [s, hk, d]."""
    s, hq, d = q.shape
    group = hq // k.shape[1]
    qd, kd, vd = (t.double().transpose(0, 1) for t in (q, k, v))
    kd, vd = kd.repeat_interleave(group, 0), vd.repeat_interleave(group, 0)
    scores = qd @ kd.transpose(1, 2) * (scale if scale is not None else 1 / math.sqrt(d))
    if causal:
        scores = scores.masked_fill(torch.ones(s, s, dtype=torch.bool).triu(1), float("-inf"))
    return (scores.softmax(-1) @ vd).transpose(0, 1)


def _inputs(b, s, hq, hk, d, dt, seed):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=g).to(dt) for shape in ((b, s, hq, d), (b, s, hk, d), (b, s, hk, d))]


@pytest.mark.parametrize("name", ["fp16", "bf16"])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("seq, hq, hk", [(64, 4, 2), (50, 4, 1), (17, 2, 2)])
def test_matches_reference(name, causal, seq, hq, hk):
    q, k, v = _inputs(2, seq, hq, hk, 64, DTYPES[name], seed=seq + hq)
    o = pa.prefill_attention(q, k, v, causal=causal)
    assert o.shape == q.shape and o.dtype == q.dtype
    ref = torch.stack([_ref(q[i], k[i], v[i], causal) for i in range(2)])
    res = compare(o, ref, TOLERANCE[name])
    assert res.passed, res.detail


def test_fp32_small_head_dim_custom_scale_and_one_token():
    q, k, v = _inputs(1, 33, 2, 1, 16, torch.float32, seed=5)
    o = pa.prefill_attention(q, k, v, causal=True, sm_scale=0.3)
    assert compare(o, _ref(q[0], k[0], v[0], True, 0.3)[None], TOLERANCE["fp32"]).passed
    # The scale is used: the default one gives a different answer.
    assert not compare(o, _ref(q[0], k[0], v[0], True)[None], TOLERANCE["fp32"]).passed
    q1, k1, v1 = (t[:, :1] for t in (q, k, v))
    assert torch.allclose(pa.prefill_attention(q1, k1, v1).float(), v1.repeat_interleave(2, 2).float())


@pytest.mark.filterwarnings("ignore:All-NaN slice:RuntimeWarning")
def test_causal_programs_never_read_keys_above_the_diagonal():
    # The first query tile (BLOCK_M rows under the interpreter) must skip every key
    # tile past it: poison those keys and values with NaN and its rows stay exact.
    bm = pa._configs()[0].kwargs["BLOCK_M"]
    q, k, v = _inputs(1, 2 * bm, 2, 2, 64, torch.float16, seed=9)
    k[:, bm:] = float("nan")
    v[:, bm:] = float("nan")
    o = pa.prefill_attention(q, k, v, causal=True)
    ref = _ref(q[0, :bm], k[0, :bm], v[0, :bm], True)
    assert compare(o[0, :bm], ref, TOLERANCE["fp16"]).passed
    # Without causal masking the same poison reaches every row: the test can fail.
    assert torch.isnan(pa.prefill_attention(q, k, v, causal=False)[0, :bm]).all()


@pytest.mark.parametrize("name", ["fp16", "bf16"])
@pytest.mark.parametrize("causal", [False, True])
def test_varlen_matches_per_sequence_reference(name, causal):
    lens = [5, 64, 33, 1]
    cu = torch.tensor([0, 5, 69, 102, 103], dtype=torch.int32)
    g = torch.Generator().manual_seed(11)
    dt = DTYPES[name]
    q, k, v = (torch.randn(103, h, 64, generator=g).to(dt) for h in (4, 2, 2))
    o = pa.prefill_attention_varlen(q, k, v, cu, max(lens), causal=causal)
    ref = torch.cat([_ref(q[a:b], k[a:b], v[a:b], causal) for a, b in zip(cu[:-1].tolist(), cu[1:].tolist())])
    res = compare(o, ref, TOLERANCE[name])
    assert res.passed, res.detail
    # Attending across sequence boundaries would be a different answer.
    whole = _ref(q, k, v, causal)
    assert not compare(o, whole, TOLERANCE[name]).passed


def test_interpreter_bf16_trap_is_caught_by_the_check():
    # Without the upcast, the interpreter's tl.dot on bf16 is wrong (triton 3.9); the
    # correctness check must reject that rather than let it pass.
    q, k, v = _inputs(1, 32, 2, 2, 64, torch.bfloat16, seed=2)
    o = torch.empty_like(q)
    strides = (q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
               v.stride(0), v.stride(1), v.stride(2), o.stride(0), o.stride(1), o.stride(2))
    grid = lambda meta: (1, 2)  # noqa: E731
    pa._prefill_attention_kernel[grid](q, k, v, o, q, 0.125 * pa._LOG2E, *strides, 2, 32, GROUP=1, HEAD_DIM=64,
                                       CAUSAL=False, VARLEN=False, UPCAST_DOT=False, IEEE_FP32=False)
    if not compare(o, _ref(q[0], k[0], v[0], False)[None], TOLERANCE["bf16"]).passed:
        return
    pytest.skip("this triton's interpreter computes bf16 tl.dot correctly")


def _bad(kw):
    q, k, v = _inputs(1, 8, 4, 2, 64, torch.float16, seed=0)
    args = {"q": q, "k": k, "v": v, **kw}
    return pa.prefill_attention(args["q"], args["k"], args["v"])


@pytest.mark.parametrize("kw, match", [
    ({"q": torch.zeros(1, 8, 4, 96, dtype=torch.float16), "k": torch.zeros(1, 8, 2, 96, dtype=torch.float16),
      "v": torch.zeros(1, 8, 2, 96, dtype=torch.float16)}, r"head_dim 96 .*not supported; supported: 16, 32, 64, 128"),
    ({"q": torch.zeros(1, 8, 3, 64, dtype=torch.float16)}, "q_heads = 3 is not a multiple of kv_heads = 2"),
    ({"k": torch.zeros(1, 8, 2, 64, dtype=torch.bfloat16)}, "share one dtype"),
    ({"k": torch.zeros(1, 9, 2, 64, dtype=torch.float16), "v": torch.zeros(1, 9, 2, 64, dtype=torch.float16)},
     "seq_q = seq_k"),
    ({"v": torch.zeros(1, 8, 1, 64, dtype=torch.float16)}, "k and v must have one shape"),
    ({"q": torch.zeros(8, 4, 64, dtype=torch.float16)}, "must be 4-D"),
    ({"q": torch.zeros(1, 8, 4, 64, dtype=torch.int32)}, "supported: fp16, bf16, fp32"),
    ({"q": torch.zeros(1, 8, 4, 128, dtype=torch.float16)[..., ::2]}, "contiguous in head_dim"),
])
def test_bad_inputs_raise_clear_errors(kw, match):
    with pytest.raises(ValueError, match=match):
        _bad(kw)


@pytest.mark.parametrize("cu, max_seqlen, match", [
    ([0, 4, 10], 8, "ends at 10 but q holds 12 tokens"),
    ([1, 4, 12], 8, r"cu_seqlens\[0\] must be 0"),
    ([0, 6, 5, 12], 8, "decreases at index 2"),
    ([0, 2, 12], 8, "sequence 1 has 10 tokens, more than max_seqlen = 8"),
])
def test_bad_cu_seqlens_raise(cu, max_seqlen, match):
    q, k, v = (torch.zeros(12, h, 64, dtype=torch.float16) for h in (4, 2, 2))
    with pytest.raises(ValueError, match=match):
        pa.prefill_attention_varlen(q, k, v, torch.tensor(cu, dtype=torch.int32), max_seqlen)
    with pytest.raises(ValueError, match="int32"):
        pa.prefill_attention_varlen(q, k, v, torch.tensor([0, 12]), 12)


def test_every_gpu_autotune_config_computes_the_same_answer(monkeypatch):
    # The interpreter runs one config; the GPU list is checked here by calling the
    # kernel with each tile shape directly (num_warps/num_stages do not change results).
    monkeypatch.setattr(pa, "interpreting", lambda: False)
    configs = pa._configs()
    monkeypatch.undo()
    lens = [160, 77]
    cu = torch.tensor([0, 160, 237], dtype=torch.int32)
    g = torch.Generator().manual_seed(12)
    q, k, v = (torch.randn(237, h, 64, generator=g).half() for h in (4, 2, 2))
    ref = torch.cat([_ref(q[a:b], k[a:b], v[a:b], True) for a, b in ((0, 160), (160, 237))])
    for cfg in configs:
        o = torch.full_like(q, float("nan"))
        strides = (0, q.stride(0), q.stride(1), 0, k.stride(0), k.stride(1),
                   0, v.stride(0), v.stride(1), 0, o.stride(0), o.stride(1))
        grid = (-(-max(lens) // cfg.kwargs["BLOCK_M"]), 2 * 4)
        pa._prefill_attention_kernel.fn[grid](q, k, v, o, cu, pa._LOG2E / 8, *strides, 4, max(lens), GROUP=2,
                                              HEAD_DIM=64, CAUSAL=True, VARLEN=True, UPCAST_DOT=False,
                                              IEEE_FP32=False, **cfg.kwargs)
        res = compare(o, ref, TOLERANCE["fp16"])
        assert res.passed, f"{cfg.kwargs}: {res.detail}"
