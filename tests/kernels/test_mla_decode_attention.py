"""kernels/mla_decode_attention.py: MLA paged decode (absorbed weights) against a reference
that expands each sequence's latent cache, at every page size engines use, with masked
head blocks, ragged contexts, empty splits and the single-split path."""
import math

import pytest
import torch

from kernelmark import dtypes
from kernelmark.kernels import mla_decode_attention as mla
from kernelmark.kernels import paged
from kernelmark.ops.base import compare
from kernelmark.ops.mla import attend_reference

DT = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
D = mla.KV_LORA_RANK + mla.ROPE_DIM


def _case(lens, heads, ps, dt, seed=0, spare=3):
    """Random cache whose unused blocks and page tails are NaN: a read the block table
    does not map poisons the output."""
    g = torch.Generator().manual_seed(seed)
    nb = sum(paged.blocks_needed(n, ps) for n in lens) + spare
    kv = torch.randn(nb, ps, D, generator=g).to(dt)
    table = paged.random_block_table(lens, ps, nb, g)
    for blk in set(range(nb)) - set(table[table >= 0].tolist()):
        kv[blk] = float("nan")
    for s, n in enumerate(lens):
        if n % ps:
            kv[table[s, n // ps], n % ps:] = float("nan")
    q = torch.randn(len(lens), heads, D, generator=g).to(dt)
    return q, kv, table, torch.tensor(lens, dtype=torch.int32)


def _ref(q, kv, table, lens):
    nonempty = [s for s, n in enumerate(lens.tolist()) if n]
    o = torch.zeros(q.shape[0], q.shape[1], mla.KV_LORA_RANK, dtype=torch.float64)
    lse = torch.full(q.shape[:2], -math.inf, dtype=torch.float64)
    ro, rl = attend_reference(q[nonempty], kv, table[nonempty], [int(lens[s]) for s in nonempty],
                              mla.DEEPSEEK_V3_SCALE, torch.float64)
    o[nonempty], lse[nonempty] = ro, rl
    return o, lse


@pytest.mark.parametrize("lens, heads, ps, splits, name", [
    ([24, 50], 20, 16, None, "bf16"),      # heuristic splits; 20 heads: a full and a masked head block
    ([37, 5, 70], 8, 1, 3, "fp32"),       # page 1 (a table entry per token); the short sequence's splits empty
    ([130], 16, 64, 1, "fp16"),           # page 64 (tiles inside a page), one split: no combine
    ([20], 128, 64, 2, "fp16"),           # a whole DeepSeek-V3 layer's heads
])
def test_matches_reference(lens, heads, ps, splits, name):
    q, kv, table, cl = _case(lens, heads, ps, DT[name], seed=len(lens) + ps)
    o, lse = mla.mla_decode_attention(q, kv, table, cl, num_splits=splits)
    assert o.shape == (len(lens), heads, mla.KV_LORA_RANK) and o.dtype == q.dtype
    assert lse.shape == (len(lens), heads) and lse.dtype == torch.float32
    res = compare((o, lse), _ref(q, kv, table, cl), dtypes.tolerance(name), dtype=name)
    assert res.passed, res.detail


def test_an_empty_sequence_gets_zeros_and_minus_infinite_lse():
    q, kv, table, cl = _case([0, 50], 8, 16, torch.float32, seed=3)
    for splits in (1, 3):
        o, lse = mla.mla_decode_attention(q, kv, table, cl, num_splits=splits)
        assert torch.equal(o[0], torch.zeros_like(o[0])) and bool((lse[0] == -math.inf).all())
        ro, rl = _ref(q, kv, table, cl)
        assert compare((o[1], lse[1]), (ro[1], rl[1]), 1e-5, dtype="fp32").passed


def test_the_split_count_changes_nothing_but_rounding():
    q, kv, table, cl = _case([120, 64], 8, 16, torch.float32, seed=4)
    o1, l1 = mla.mla_decode_attention(q, kv, table, cl, num_splits=1)
    o4, l4 = mla.mla_decode_attention(q, kv, table, cl, num_splits=4)
    assert torch.allclose(o1, o4, rtol=1e-5, atol=1e-6) and torch.allclose(l1, l4, rtol=1e-6, atol=1e-6)


def test_a_wrong_page_in_the_table_is_caught_by_the_check():
    q, kv, table, cl = _case([48, 48], 8, 16, torch.bfloat16, seed=5, spare=0)
    ref = _ref(q, kv, table, cl)
    bad = table.clone()
    bad[0, 1], bad[1, 2] = table[1, 2], table[0, 1]          # two sequences' pages swapped
    res = compare(mla.mla_decode_attention(q, kv, bad, cl), ref, dtypes.tolerance("bf16"), dtype="bf16")
    assert not res.passed and "output 0" in res.detail


@pytest.mark.parametrize("change, match", [
    (lambda a: {**a, "q": a["q"][:, :, :512]}, "q has last dim 512 but the cache rows have 576"),
    (lambda a: {**a, "q": a["q"][0]}, "q must be 3-D"),
    (lambda a: {**a, "kv": a["kv"].float()}, "kv_cache is torch.float32 but q is torch.bfloat16"),
    (lambda a: {**a, "kv": a["kv"][:, :, None]}, "kv_cache must be 3-D"),
    (lambda a: {**a, "table": a["table"].masked_fill(a["table"] == a["table"][1, 0], 99)},
     r"block_table\[1, 0\] = 99 is outside the cache"),
    (lambda a: {**a, "cl": a["cl"][:1]}, r"context_lens must be \[batch=2\]"),
    (lambda a: {**a, "rank": 500}, "kv_lora_rank 500 and rope dim 76"),
])
def test_bad_inputs_are_named(change, match):
    q, kv, table, cl = _case([20, 30], 4, 16, torch.bfloat16, seed=6)
    a = change({"q": q, "kv": kv, "table": table, "cl": cl, "rank": 512})
    with pytest.raises(ValueError, match=match):
        mla.mla_decode_attention(a["q"], a["kv"], a["table"], a["cl"], kv_lora_rank=a["rank"])


def test_max_context_len_below_a_sequence_is_refused():
    q, kv, table, cl = _case([20, 30], 4, 16, torch.bfloat16, seed=7)
    with pytest.raises(ValueError, match="max_context_len = 25 but a sequence has context 30"):
        mla.mla_decode_attention(q, kv, table, cl, max_context_len=25)
