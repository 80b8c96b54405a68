import math

import pytest
import torch

from kernelmark.dtypes import ATTENTION_ELEMENTWISE, TOLERANCE
from kernelmark.kernels import paged
from kernelmark.kernels import paged_prefill_attention as ppa
from kernelmark.ops.base import compare

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def _case(q_lens, ctx_lens, hq, hk, d, ps, dt, seed=0, spare=3):
    """Random cache whose unmapped blocks and unused page tails are NaN: a read of anything
    the block table does not map poisons the output."""
    g = torch.Generator().manual_seed(seed)
    nb = sum(paged.blocks_needed(n, ps) for n in ctx_lens) + spare
    kc = torch.randn(nb, ps, hk, d, generator=g).to(dt)
    vc = torch.randn(nb, ps, hk, d, generator=g).to(dt)
    table = paged.random_block_table(ctx_lens, ps, nb, g)
    for blk in set(range(nb)) - set(table[table >= 0].tolist()):
        kc[blk] = vc[blk] = float("nan")
    for s, n in enumerate(ctx_lens):
        if n % ps:
            kc[table[s, n // ps], n % ps:] = vc[table[s, n // ps], n % ps:] = float("nan")
    q = torch.randn(sum(q_lens), hq, d, generator=g).to(dt)
    cu = torch.tensor([0] + torch.tensor(q_lens).cumsum(0).tolist(), dtype=torch.int32)
    return q, kc, vc, table, cu, torch.tensor(ctx_lens, dtype=torch.int32)


def _ref(q, kc, vc, table, cu, ctx, causal=True, scale=None):
    """float64, written independently of the op's reference: explicit scores and mask."""
    hq, d = q.shape[1:]
    group = hq // kc.shape[2]
    out = torch.zeros(q.shape, dtype=torch.float64)
    for s, n in enumerate(ctx.tolist()):
        a, b = int(cu[s]), int(cu[s + 1])
        k = paged.gather_pages(kc, table[s], n).double().repeat_interleave(group, 1)
        v = paged.gather_pages(vc, table[s], n).double().repeat_interleave(group, 1)
        scores = torch.einsum("qhd,khd->hqk", q[a:b].double(), k) * (scale or 1 / math.sqrt(d))
        if causal:
            pos = torch.arange(b - a) + (n - (b - a))
            scores = scores.masked_fill(torch.arange(n)[None, :] > pos[:, None], float("-inf"))
        out[a:b] = torch.einsum("hqk,khd->qhd", scores.softmax(-1), v)
    return out


def _compare(o, ref, name):
    return compare(o, ref, TOLERANCE[name], dtype=name, elementwise=ATTENTION_ELEMENTWISE.get(name))


@pytest.mark.parametrize("q_lens, ctx_lens, hq, hk, ps, name", [
    ([21, 21], [53, 53], 4, 1, 16, "fp32"),        # q tail (21 = 16 + 5), context tail, GQA 4
    ([5, 19, 1], [40, 19, 30], 2, 1, 8, "bf16"),   # ragged, no prefix, decode-like, tiles span pages
    ([17], [70], 2, 2, 32, "fp16"),                # MHA, a tile is half a page
    ([4, 3], [9, 3], 2, 1, 1, "fp32"),             # pages of one token (FlashInfer-Trace's 3-D caches)
])
def test_matches_reference(name, q_lens, ctx_lens, hq, hk, ps):
    q, kc, vc, table, cu, ctx = _case(q_lens, ctx_lens, hq, hk, 16, ps, DTYPES[name], seed=len(q_lens) + ps)
    o = ppa.paged_prefill_attention(q, kc, vc, table, cu, ctx)
    assert o.shape == q.shape and o.dtype == q.dtype
    res = _compare(o, _ref(q, kc, vc, table, cu, ctx), name)
    assert res.passed, res.detail


def test_not_causal_int64_tables_custom_scale():
    q, kc, vc, table, cu, ctx = _case([9, 20], [33, 20], 4, 2, 16, 16, torch.float16, seed=5)
    o = ppa.paged_prefill_attention(q, kc, vc, table.long(), cu, ctx.long(), causal=False, sm_scale=0.1)
    assert _compare(o, _ref(q, kc, vc, table, cu, ctx, causal=False, scale=0.1), "fp16").passed
    assert not _compare(o, _ref(q, kc, vc, table, cu, ctx, causal=True, scale=0.1), "fp16").passed


def test_an_empty_chunk_is_skipped():
    q, kc, vc, table, cu, ctx = _case([0, 7], [12, 30], 2, 1, 16, 16, torch.float32, seed=6)
    o = ppa.paged_prefill_attention(q, kc, vc, table, cu, ctx)
    assert _compare(o, _ref(q, kc, vc, table, cu, ctx), "fp32").passed


def _args():
    q, kc, vc, table, cu, ctx = _case([5, 6], [20, 40], 4, 2, 16, 16, torch.float16, seed=1)
    return {"q": q, "k_cache": kc, "v_cache": vc, "block_table": table, "cu_seqlens_q": cu, "context_lens": ctx}


def _with(**kw):
    a = _args()
    for key, f in kw.items():
        a[key] = f(a[key])
    return a


def _set(t, idx, value):
    t = t.clone()
    t[idx] = value
    return t


@pytest.mark.parametrize("args, match", [
    (_with(q=lambda q: q[:, :3].contiguous()), "q_heads = 3 is not a multiple of kv_heads = 2"),
    (_with(k_cache=lambda c: c[:, :12].contiguous(), v_cache=lambda c: c[:, :12].contiguous()), "power of two"),
    (_with(context_lens=lambda c: _set(c, 0, 4)), "sequence 0 has 5 new tokens but a context of only 4"),
    (_with(cu_seqlens_q=lambda c: _set(c, 2, 10)), "cu_seqlens_q ends at 10 but q holds 11 tokens"),
    (_with(cu_seqlens_q=lambda c: _set(c, 1, 12)), "cu_seqlens_q decreases at index 2"),
    (_with(cu_seqlens_q=lambda c: c.long()), "cu_seqlens_q must be 1-D int32"),
    (_with(block_table=lambda t: _set(t, (1, 2), 99)), r"block_table\[1, 2\] = 99 is outside the cache"),
    (_with(v_cache=lambda c: c.float()), "v_cache is torch.float32 but q is torch.float16"),
    (_with(q=lambda q: q[:, :, :8].contiguous()), "q has head_dim 8 but the cache has 16"),
    (_with(block_table=lambda t: t[:1]), r"block_table must be \[batch=2, max_blocks\]"),
])
def test_bad_inputs_raise_clear_errors(args, match):
    with pytest.raises(ValueError, match=match):
        ppa.paged_prefill_attention(**args)


def test_host_maxima_below_the_tables_are_refused():
    with pytest.raises(ValueError, match="max_q_len = 5 but a sequence has 6"):
        ppa.paged_prefill_attention(**_args(), max_q_len=5)
    with pytest.raises(ValueError, match="max_context_len = 39 but a sequence has 40"):
        ppa.paged_prefill_attention(**_args(), max_context_len=39)


def test_every_gpu_autotune_config_computes_the_same_answer(monkeypatch):
    # The GPU tiles (BLOCK_M 64-128, BLOCK_N 32-128), launched directly (the interpreter's
    # autotuner holds one config), over a chunk with a prefix and tails at every size; a
    # group of 2 q heads per kv head packs 260 rows.
    monkeypatch.setattr(ppa, "interpreting", lambda: False)
    configs = ppa._configs()
    monkeypatch.undo()
    q, kc, vc, table, cu, ctx = _case([130, 3], [250, 3], 2, 1, 16, 16, torch.float16, seed=12)
    ref = _ref(q, kc, vc, table, cu, ctx)
    for cfg in configs:
        o = torch.full_like(q, float("nan"))
        grid = (-(-130 * 2 // cfg.kwargs["BLOCK_M"]), 2 * 1)      # (token, head) rows; (sequence, kv head)
        ppa._paged_prefill_kernel.fn[grid](
            q, kc, vc, table, cu, ctx, o, ppa._LOG2E / 4, q.stride(0), q.stride(1), kc.stride(0), kc.stride(1),
            kc.stride(2), vc.stride(0), vc.stride(1), vc.stride(2), table.stride(0), o.stride(0), o.stride(1),
            1, 130, 250, GROUP=2, HEAD_DIM=16, PAGE_SIZE=16, CAUSAL=True, UPCAST_DOT=False, IEEE_FP32=False,
            **cfg.kwargs)
        res = _compare(o, ref, "fp16")
        assert res.passed, f"{cfg.kwargs}: {res.detail}"
