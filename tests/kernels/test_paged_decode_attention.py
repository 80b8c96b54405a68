import math

import pytest
import torch

from kernelmark.dtypes import TOLERANCE
from kernelmark.kernels import paged
from kernelmark.kernels import paged_decode_attention as pda
from kernelmark.ops.base import compare

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def _case(lens, hq, hk, d, ps, dt, seed=0, spare=3):
    """Random cache whose unused blocks and unused page tails are NaN: reading anything
    the block table does not map poisons the output."""
    g = torch.Generator().manual_seed(seed)
    nb = sum(paged.blocks_needed(n, ps) for n in lens) + spare
    kc = torch.randn(nb, ps, hk, d, generator=g).to(dt)
    vc = torch.randn(nb, ps, hk, d, generator=g).to(dt)
    table = paged.random_block_table(lens, ps, nb, g)
    used = set(table[table >= 0].tolist())
    for blk in set(range(nb)) - used:
        kc[blk] = vc[blk] = float("nan")
    for s, n in enumerate(lens):
        if n % ps:
            kc[table[s, n // ps], n % ps:] = float("nan")
            vc[table[s, n // ps], n % ps:] = float("nan")
    q = torch.randn(len(lens), hq, d, generator=g).to(dt)
    return q, kc, vc, table, torch.tensor(lens, dtype=torch.int32)


def _ref(q, kc, vc, table, lens, scale=None):
    b, hq, d = q.shape
    group = hq // kc.shape[2]
    out = torch.zeros(b, hq, d, dtype=torch.float64)
    for s, n in enumerate(lens.tolist()):
        if n == 0:
            continue
        k = paged.gather_pages(kc, table[s], n).double().repeat_interleave(group, 1)
        v = paged.gather_pages(vc, table[s], n).double().repeat_interleave(group, 1)
        scores = torch.einsum("hd,thd->ht", q[s].double(), k) * (scale or 1 / math.sqrt(d))
        out[s] = torch.einsum("ht,thd->hd", scores.softmax(-1), v)
    return out


@pytest.mark.parametrize("name", ["fp16", "bf16"])
@pytest.mark.parametrize("lens, hq, hk, ps, splits", [
    ([40, 100], 4, 2, 16, None),          # heuristic splits (2 under the interpreter)
    ([40, 100, 3], 8, 2, 16, 4),          # ragged: the short sequences get empty splits
    ([37, 70], 4, 4, 32, 3),              # page 32 (a tile is half a page), MHA
    ([37, 90], 8, 1, 8, 1),               # page 8 (a tile spans pages), one split: no combine
])
def test_matches_reference(name, lens, hq, hk, ps, splits):
    q, kc, vc, table, cl = _case(lens, hq, hk, 64, ps, DTYPES[name], seed=len(lens) + ps)
    o = pda.paged_decode_attention(q, kc, vc, table, cl, num_splits=splits)
    assert o.shape == q.shape and o.dtype == q.dtype
    res = compare(o, _ref(q, kc, vc, table, cl), TOLERANCE[name])
    assert res.passed, res.detail


def test_every_split_empty_for_some_sequences_and_context_zero():
    # 6 splits of 16 tokens: the 3-token sequence fills one, the empty one none.
    q, kc, vc, table, cl = _case([90, 3, 0], 4, 2, 64, 16, torch.float32, seed=4)
    for splits in (6, 1):
        o = pda.paged_decode_attention(q, kc, vc, table, cl, num_splits=splits)
        assert torch.equal(o[2], torch.zeros_like(o[2]))
        assert compare(o, _ref(q, kc, vc, table, cl), TOLERANCE["fp32"]).passed


def test_int64_tables_custom_scale_and_head_dim_128():
    q, kc, vc, table, cl = _case([20, 33], 32, 8, 128, 16, torch.float16, seed=8)
    o = pda.paged_decode_attention(q, kc, vc, table.long(), cl.long(), sm_scale=0.05, max_context_len=40)
    assert compare(o, _ref(q, kc, vc, table, cl, scale=0.05), TOLERANCE["fp16"]).passed
    assert not compare(o, _ref(q, kc, vc, table, cl), TOLERANCE["fp16"]).passed


def test_split_heuristic_on_a_gpu(monkeypatch):
    monkeypatch.setattr(pda, "interpreting", lambda: False)
    monkeypatch.setattr(pda, "_sm_count", lambda index: 132)
    gpu = torch.device("cuda", 0)
    assert pda.choose_num_splits(1, 8, 32768, gpu) == 33        # 2 waves of 132 SMs over 8 programs
    assert pda.choose_num_splits(1, 1, 32768, gpu) == 64        # capped
    assert pda.choose_num_splits(1, 8, 512, gpu) == 2           # no split under 256 tokens
    assert pda.choose_num_splits(128, 8, 8192, gpu) == 1        # the grid is already full


def _args():
    q, kc, vc, table, cl = _case([40, 20], 4, 2, 64, 16, torch.float16, seed=1)
    return {"q": q, "k_cache": kc, "v_cache": vc, "block_table": table, "context_lens": cl}


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
    (_with(q=lambda q: torch.zeros(2, 4, 96, dtype=q.dtype), k_cache=lambda c: torch.zeros(8, 16, 2, 96).half(),
           v_cache=lambda c: torch.zeros(8, 16, 2, 96).half()), r"head_dim 96 .*supported: 16, 32, 64, 128"),
    (_with(q=lambda q: torch.zeros(2, 3, 64, dtype=q.dtype)), "q_heads = 3 is not a multiple of kv_heads = 2"),
    (_with(block_table=lambda t: _set(t, (0, 1), 1000)), r"block_table\[0, 1\] = 1000 is outside the cache"),
    (_with(block_table=lambda t: _set(t, (1, 0), -1)), r"block_table\[1, 0\] = -1 is outside the cache"),
    (_with(context_lens=lambda c: _set(c, 1, 60)), "context length 60, which needs 4 pages of 16 tokens, "
                                                   "but its block table holds only 3"),
    (_with(context_lens=lambda c: _set(c, 0, -1)), "negative"),
    (_with(v_cache=lambda c: c.float()), "v_cache is torch.float32 but q is torch.float16"),
    (_with(k_cache=lambda c: c[:, :12].contiguous(), v_cache=lambda c: c[:, :12].contiguous()), "power of two"),
    (_with(block_table=lambda t: t[:1]), r"block_table must be \[batch=2, max_blocks\]"),
    (_with(context_lens=lambda c: c.float()), "context_lens must be int32 or int64"),
    (_with(q=lambda q: q[:, :, None]), "q must be 3-D"),
])
def test_bad_inputs_raise_clear_errors(args, match):
    with pytest.raises(ValueError, match=match):
        pda.paged_decode_attention(**args)


def test_bad_split_and_length_arguments():
    with pytest.raises(ValueError, match="max_context_len = 30 but a sequence has context 40"):
        pda.paged_decode_attention(**_args(), max_context_len=30)
    with pytest.raises(ValueError, match="num_splits must be an int in 1..64"):
        pda.paged_decode_attention(**_args(), num_splits=0)


def test_every_gpu_autotune_config_computes_the_same_answer(monkeypatch):
    # GPU tiles (BLOCK_N 32-128) with GPU-style 128-token split boundaries, called
    # directly (the interpreter's autotuner holds one config).
    monkeypatch.setattr(pda, "interpreting", lambda: False)
    configs = pda._configs()
    monkeypatch.undo()
    q, kc, vc, table, cl = _case([300, 520, 5], 8, 2, 64, 16, torch.float16, seed=12)
    ref = _ref(q, kc, vc, table, cl)
    for cfg in configs:
        for splits in (1, 4):
            o = torch.full_like(q, float("nan"))
            part = [torch.full((3, 8, splits, 64), float("nan")), torch.empty(3, 8, splits), torch.empty(3, 8, splits)]
            split_tokens = 128 * -(-520 // (128 * splits))
            pda._paged_decode_split_kernel.fn[(3, 2, splits)](
                q, kc, vc, table, cl, o, *part, pda._LOG2E / 8, q.stride(0), q.stride(1),
                kc.stride(0), kc.stride(1), kc.stride(2), vc.stride(0), vc.stride(1), vc.stride(2),
                table.stride(0), o.stride(0), o.stride(1), 8, splits, split_tokens, GROUP=4, GROUP_PAD=16,
                HEAD_DIM=64, PAGE_SIZE=16, SPLIT=splits > 1, UPCAST_DOT=False, IEEE_FP32=False, **cfg.kwargs)
            if splits > 1:
                pda._paged_decode_combine_kernel[(3, 8)](*part, o, o.stride(0), o.stride(1), 8, splits,
                                                         HEAD_DIM=64, SPLITS_PAD=4)
            res = compare(o, ref, TOLERANCE["fp16"])
            assert res.passed, f"{cfg.kwargs}, {splits} splits: {res.detail}"
