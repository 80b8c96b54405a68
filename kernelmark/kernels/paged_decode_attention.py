"""Paged decode attention in Triton: one query token per sequence against a paged KV
cache (the NHD layout of kernelmark.kernels.paged), split-KV ("flash-decoding").

Decode attention is memory bound: every KV byte of every sequence is read once and
used for a handful of FLOPs. What matters is (1) reading each KV page once, and
(2) keeping enough loads in flight to saturate HBM even when batch x kv_heads is far
below the number of SMs.

(1) GQA: a program owns one (sequence, kv head) and *all* the q heads of that group.
Their queries form a [GROUP_PAD, d] tile (padded to 16 rows, the smallest tl.dot
tile), so each K/V tile is loaded once and multiplied by the whole group with
tl.dot, instead of once per q head.

(2) Split-KV: the context is cut into ``num_splits`` partitions of ``split_tokens``
tokens; grid (batch, kv_heads, num_splits). Each program runs an online softmax over
its partition, BLOCK_N tokens at a time (a tile may span several pages: each token's
page is looked up through the block table), and writes an unnormalised partial result
(running max m, sum l, accumulator) to fp32 scratch; a second kernel combines the
partials of each (sequence, q head). With one split the first kernel writes the output
directly and the second is not launched. Partitions past a sequence's end (ragged
batches) run no iterations and write m = -inf, l = 0, which the combine weights by 0.

Softmax in base 2 (scale pre-multiplied by log2 e), fp32 accumulation.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
import triton
import triton.language as tl

from kernelmark.kernels import interpreting, paged
from kernelmark.kernels.autotune_prune import autotune
from kernelmark.kernels.tl_utils import dot

HEAD_DIMS = (16, 32, 64, 128)
_DTYPES = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32"}
_LOG2E = 1.4426950408889634
_MAX_SPLITS = 64
# A split boundary falls on a multiple of this many tokens, so every BLOCK_N of the
# autotune list tiles a split exactly.
_SPLIT_ALIGN = 128
# No split is made shorter than this (the combine costs more than it saves below it).
_MIN_SPLIT_TOKENS = 256
_MAX_GRID_YZ = 65535


def _configs():
    if interpreting():
        # One config (autotuning in the interpreter would only multiply the time);
        # BLOCK_N = 16 so that a tile spans pages of 8 and sub-tiles pages of 32.
        return [triton.Config({"BLOCK_N": 16}, num_warps=4, num_stages=1)]
    tiles = [
        # (BLOCK_N tokens per step, num_warps, num_stages), for Hopper: a K+V tile of
        # 64 tokens at d=128 bf16 is 32 KB, so 3-4 stages keep ~100 KB of loads in
        # flight per SM; the dots are tiny (16 x BLOCK_N x d) and never the limit.
        (64, 4, 3),
        (64, 4, 4),
        (128, 4, 3),
        (128, 8, 3),
        (32, 4, 4),
        (64, 8, 4),
    ]
    return [triton.Config({"BLOCK_N": bn}, num_warps=w, num_stages=s) for bn, w, s in tiles]


@autotune(configs=_configs(), key=["split_tokens", "HEAD_DIM", "GROUP_PAD", "PAGE_SIZE", "SPLIT"])
@triton.jit
def _paged_decode_split_kernel(
        Q, K_cache, V_cache, block_table, context_lens, O, Part_O, Part_M, Part_L, qk_scale,
        stride_qb, stride_qh, stride_kb, stride_kt, stride_kh, stride_vb, stride_vt, stride_vh,
        stride_btb, stride_ob, stride_oh, q_heads, num_splits, split_tokens,
        GROUP: tl.constexpr, GROUP_PAD: tl.constexpr, HEAD_DIM: tl.constexpr, PAGE_SIZE: tl.constexpr,
        SPLIT: tl.constexpr, UPCAST_DOT: tl.constexpr, IEEE_FP32: tl.constexpr, BLOCK_N: tl.constexpr):
    b = tl.program_id(0)
    kvh = tl.program_id(1)
    s = tl.program_id(2)
    b64 = b.to(tl.int64)
    ctx = tl.load(context_lens + b).to(tl.int32)
    lo = s * split_tokens
    hi = tl.minimum(lo + split_tokens, ctx)

    offs_g = tl.arange(0, GROUP_PAD)
    offs_d = tl.arange(0, HEAD_DIM)
    offs_n = tl.arange(0, BLOCK_N)
    g_ok = offs_g < GROUP
    heads = kvh * GROUP + offs_g
    q = tl.load(Q + b64 * stride_qb + heads[:, None] * stride_qh + offs_d[None, :], mask=g_ok[:, None], other=0.0)

    m_i = tl.full((GROUP_PAD,), float("-inf"), dtype=tl.float32)
    l_i = tl.zeros((GROUP_PAD,), dtype=tl.float32)
    acc = tl.zeros((GROUP_PAD, HEAD_DIM), dtype=tl.float32)
    bt_row = block_table + b64 * stride_btb
    for start in range(lo, hi, BLOCK_N):
        tok = start + offs_n
        ok = tok < hi
        # Token t lives in block block_table[b, t // PAGE_SIZE] at offset t % PAGE_SIZE.
        blk = tl.load(bt_row + tok // PAGE_SIZE, mask=ok, other=0).to(tl.int64)
        slot = tok % PAGE_SIZE
        k = tl.load(K_cache + (blk * stride_kb + slot * stride_kt + kvh * stride_kh)[:, None] + offs_d[None, :],
                    mask=ok[:, None], other=0.0)
        qk = dot(q, tl.trans(k), tl.zeros((GROUP_PAD, BLOCK_N), dtype=tl.float32), UPCAST_DOT, IEEE_FP32)
        qk = tl.where(ok[None, :], qk * qk_scale, float("-inf"))
        # The tile holds at least one valid token (start < hi), so m_new is finite.
        m_new = tl.maximum(m_i, tl.max(qk, 1))
        alpha = tl.math.exp2(m_i - m_new)
        p = tl.math.exp2(qk - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        v = tl.load(V_cache + (blk * stride_vb + slot * stride_vt + kvh * stride_vh)[:, None] + offs_d[None, :],
                    mask=ok[:, None], other=0.0)
        acc = dot(p.to(v.dtype), v, acc * alpha[:, None], UPCAST_DOT, IEEE_FP32)
        m_i = m_new

    if SPLIT:
        # Scratch is [batch, q_heads, num_splits(, HEAD_DIM)], fp32, contiguous.
        row = (b64 * q_heads + heads) * num_splits + s
        tl.store(Part_M + row, m_i, mask=g_ok)
        tl.store(Part_L + row, l_i, mask=g_ok)
        tl.store(Part_O + row[:, None] * HEAD_DIM + offs_d[None, :], acc, mask=g_ok[:, None])
    else:
        # An empty sequence (context 0) has l = 0: its output is defined as 0.
        out = acc / tl.where(l_i > 0, l_i, 1.0)[:, None]
        tl.store(O + b64 * stride_ob + heads[:, None] * stride_oh + offs_d[None, :], out.to(O.dtype.element_ty),
                 mask=g_ok[:, None])


@triton.jit
def _paged_decode_combine_kernel(Part_O, Part_M, Part_L, O, stride_ob, stride_oh, q_heads, num_splits,
                                 HEAD_DIM: tl.constexpr, SPLITS_PAD: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    h = tl.program_id(1)
    offs_s = tl.arange(0, SPLITS_PAD)
    offs_d = tl.arange(0, HEAD_DIM)
    s_ok = offs_s < num_splits
    row = (b * q_heads + h) * num_splits + offs_s
    m = tl.load(Part_M + row, mask=s_ok, other=float("-inf"))
    l = tl.load(Part_L + row, mask=s_ok, other=0.0)
    acc = tl.load(Part_O + row[:, None] * HEAD_DIM + offs_d[None, :], mask=s_ok[:, None], other=0.0)
    m_max = tl.max(m, 0)
    # Every split empty (context 0): keep exp2 away from -inf - -inf.
    m_max = tl.where(m_max == float("-inf"), 0.0, m_max)
    w = tl.math.exp2(m - m_max)          # empty splits: exp2(-inf) = 0
    l_sum = tl.sum(w * l, 0)
    out = tl.sum(w[:, None] * acc, 0) / tl.where(l_sum > 0, l_sum, 1.0)
    tl.store(O + b * stride_ob + h * stride_oh + offs_d, out.to(O.dtype.element_ty))


@lru_cache(maxsize=None)
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def choose_num_splits(batch: int, kv_heads: int, max_context_len: int, device: torch.device) -> int:
    """How many partitions to cut the context into: enough programs for about two waves
    of the device's SMs, no split under _MIN_SPLIT_TOKENS, at most _MAX_SPLITS."""
    if interpreting() or device.type != "cuda":
        # Interpreter: a fixed small number, so the combine runs in tests.
        return max(1, min(2, triton.cdiv(max_context_len, 64)))
    programs = batch * kv_heads
    want = triton.cdiv(2 * _sm_count(device.index if device.index is not None else torch.cuda.current_device()),
                       programs)
    return max(1, min(want, _MAX_SPLITS, triton.cdiv(max_context_len, _MIN_SPLIT_TOKENS)))


def _check(q, k_cache, v_cache, block_table, context_lens):
    num_blocks, page_size, kv_heads, head_dim = paged.check_q_and_cache(q, k_cache, v_cache, "batch", _DTYPES,
                                                                        HEAD_DIMS)
    batch, q_heads, _ = q.shape
    paged.check_table_args(q, block_table, context_lens, batch, page_size)
    if batch == 0 or batch > 2 ** 31 - 1 or kv_heads > _MAX_GRID_YZ or q_heads > _MAX_GRID_YZ:
        raise ValueError(f"batch {batch}, q_heads {q_heads}, kv_heads {kv_heads} outside the grid limits")
    if q.device.type == "cpu" and not interpreting():
        raise ValueError("CPU tensors need the Triton interpreter (TRITON_INTERPRET=1 before importing triton)")
    return num_blocks, page_size, kv_heads, head_dim


def paged_decode_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                           block_table: torch.Tensor, context_lens: torch.Tensor, *,
                           max_context_len: int | None = None, sm_scale: float | None = None,
                           num_splits: int | None = None, check_tables: bool = True) -> torch.Tensor:
    """Decode attention of one query token per sequence over a paged KV cache.

    q [batch, q_heads, d]; k_cache and v_cache [num_blocks, page_size, kv_heads, d]
    (NHD); block_table [batch, max_blocks] and context_lens [batch] (int32 or int64)
    on q's device. Returns o [batch, q_heads, d] in q's dtype; a sequence of context 0
    gets zeros.

    ``max_context_len`` (a host int, as serving engines keep it) sizes the splits; if
    None it is read from context_lens. ``check_tables`` validates every used block
    table entry and that max_context_len covers every sequence, before launching.
    Both copy tensors to the host (a device sync): a caller that has already checked
    these very tensors and passes max_context_len may skip them. ``num_splits``
    overrides the split heuristic (choose_num_splits).
    """
    num_blocks, page_size, kv_heads, head_dim = _check(q, k_cache, v_cache, block_table, context_lens)
    if check_tables:
        paged.check_block_table(block_table, context_lens, num_blocks, page_size)
        longest = int(context_lens.max())
        if max_context_len is None:
            max_context_len = longest
        elif max_context_len < longest:
            raise ValueError(f"max_context_len = {max_context_len} but a sequence has context {longest}")
    elif max_context_len is None:
        max_context_len = int(context_lens.max())
    if not isinstance(max_context_len, int) or max_context_len < 0:
        raise ValueError(f"max_context_len must be a non-negative int, got {max_context_len!r}")
    batch, q_heads, _ = q.shape
    group = q_heads // kv_heads
    chosen = num_splits is None
    if chosen:
        num_splits = choose_num_splits(batch, kv_heads, max_context_len, q.device)
    if not isinstance(num_splits, int) or not 1 <= num_splits <= _MAX_SPLITS or num_splits > _MAX_GRID_YZ:
        raise ValueError(f"num_splits must be an int in 1..{_MAX_SPLITS}, got {num_splits!r}")
    if sm_scale is None:
        sm_scale = 1.0 / math.sqrt(head_dim)

    # Split boundaries on _SPLIT_ALIGN tokens (the interpreter's tiny cases use 16 so
    # that tests can produce several splits, empty ones included, at small contexts).
    align = 16 if interpreting() else _SPLIT_ALIGN
    split_tokens = max(align, triton.cdiv(triton.cdiv(max(max_context_len, 1), num_splits), align) * align)
    if chosen:
        # Rounding split_tokens up can leave the last splits empty for every sequence.
        num_splits = max(1, triton.cdiv(max_context_len, split_tokens))
    split = num_splits > 1
    o = torch.empty_like(q, memory_format=torch.contiguous_format)
    if split:
        part_o = torch.empty((batch, q_heads, num_splits, head_dim), device=q.device, dtype=torch.float32)
        part_m = torch.empty((batch, q_heads, num_splits), device=q.device, dtype=torch.float32)
        part_l = torch.empty((batch, q_heads, num_splits), device=q.device, dtype=torch.float32)
    else:
        part_o = part_m = part_l = o   # unused
    _paged_decode_split_kernel[(batch, kv_heads, num_splits)](
        q, k_cache, v_cache, block_table, context_lens, o, part_o, part_m, part_l, sm_scale * _LOG2E,
        q.stride(0), q.stride(1), k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        v_cache.stride(0), v_cache.stride(1), v_cache.stride(2), block_table.stride(0),
        o.stride(0), o.stride(1), q_heads, num_splits, split_tokens,
        GROUP=group, GROUP_PAD=max(16, triton.next_power_of_2(group)), HEAD_DIM=head_dim, PAGE_SIZE=page_size,
        SPLIT=split, UPCAST_DOT=interpreting() and q.dtype == torch.bfloat16, IEEE_FP32=q.dtype == torch.float32)
    if split:
        _paged_decode_combine_kernel[(batch, q_heads)](
            part_o, part_m, part_l, o, o.stride(0), o.stride(1), q_heads, num_splits,
            HEAD_DIM=head_dim, SPLITS_PAD=max(2, triton.next_power_of_2(num_splits)), num_warps=4)
    return o
