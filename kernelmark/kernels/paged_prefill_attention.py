"""Paged prefill attention in Triton: chunked prefill over a paged KV cache.

Each sequence brings a chunk of ``q_len`` new query tokens; its keys and values, the
cached prefix and the chunk's own (already appended), are ``context`` tokens in the
paged cache (the NHD layout of kernelmark.kernels.paged), so the prefix is
``context - q_len`` tokens. Chunk token i sits at absolute position ``prefix + i`` and,
causally, attends to keys 0..prefix + i (the causal mask is aligned bottom-right, as in
vLLM, SGLang and FlashInfer); not causal, to every key of its sequence. The queries are
packed (q [total_q, q_heads, d]) with ``cu_seqlens_q`` [batch + 1] (FlashInfer's
``qo_indptr``).

Tiling, as in kernels/prefill_attention.py, with the GQA group packed into the rows: a
program owns BLOCK_M query rows of one (sequence, kv head), each row a (chunk token, q
head of the group) pair, token-major, and walks the keys in BLOCK_N steps with an online softmax in base 2
(scale pre-multiplied by log2 e), fp32 accumulation. Each key tile is read through the
block table token by token (token t of a sequence is in block block_table[s, t //
PAGE_SIZE] at offset t % PAGE_SIZE), so a tile may span several pages or part of one,
and any BLOCK_N works with any power-of-two page size.

The keys split into two loops: tiles every row of the program sees whole (below the
first row's position under causal masking, and inside the context) run without mask
arithmetic; only the tiles on the diagonal or across the context's end are masked.
Tiles above the last row's position are never visited.

GQA: q head h belongs to kv head h // (q_heads // kv_heads); packing the group's heads
into one program's rows reads each K/V tile once for the whole group (not once per q
head), and a short chunk (a decode-like single token) still fills GROUP rows of the
tile. K and V are never repeated.

Loop bounds are scalars (sums and minima of loaded scalars), never tensors, so that the
interpreter of triton 3.6 runs the loops with kernels/interpreter_compat.py's patch.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from kernelmark.kernels import interpreting, paged
from kernelmark.kernels.autotune_prune import autotune
from kernelmark.kernels.tl_utils import dot

HEAD_DIMS = (16, 32, 64, 128)
_DTYPES = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32"}
_LOG2E = 1.4426950408889634
_MAX_GRID_Y = 65535


def _configs():
    if interpreting():
        # One config: autotuning in the interpreter would only multiply the time. 16 x 16
        # tiles so that test chunks of ~20 tokens leave a masked query tail, and a key tile
        # spans pages of 8 or is half a page of 32.
        return [triton.Config({"BLOCK_M": 16, "BLOCK_N": 16}, num_warps=4, num_stages=1)]
    tiles = [
        # (BLOCK_M, BLOCK_N, num_warps, num_stages): the dense prefill kernel's Hopper tiles
        # (rows are (token, q head) pairs here). 128 rows on 4 warps spilled 64-384
        # registers for sm_90 at d128 bf16 (`kernelmark compile`, triton 3.9), so 128-row
        # tiles get 8 warps; 128 x 128 spilled 48 even on 8 warps and is left out. None of
        # these spills there; not yet timed on a GPU.
        (128, 64, 8, 3),
        (128, 32, 8, 4),
        (64, 64, 4, 3),
        (64, 32, 4, 4),
    ]
    return [triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w, num_stages=s) for bm, bn, w, s in tiles]


@triton.jit
def _paged_tiles(acc, l_i, m_i, q, K_cache, V_cache, bt_row, kvh, stride_kb, stride_kt, stride_kh,
                 stride_vb, stride_vt, stride_vh, pos, lo, hi, ctx, qk_scale,
                 MASKED: tl.constexpr, CAUSAL: tl.constexpr, HEAD_DIM: tl.constexpr, PAGE_SIZE: tl.constexpr,
                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, UPCAST_DOT: tl.constexpr, IEEE_FP32: tl.constexpr):
    """Online softmax over the key tiles [lo, hi) of one sequence; masks only when MASKED
    (keys at or past ctx, and under causal masking keys after each row's position)."""
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    for start in range(lo, hi, BLOCK_N):
        tok = start + offs_n
        if MASKED:
            ok = tok < ctx
            blk = tl.load(bt_row + tok // PAGE_SIZE, mask=ok, other=0).to(tl.int64)
        else:
            blk = tl.load(bt_row + tok // PAGE_SIZE).to(tl.int64)
        slot = tok % PAGE_SIZE
        k_ptrs = K_cache + (blk * stride_kb + slot * stride_kt + kvh * stride_kh)[:, None] + offs_d[None, :]
        v_ptrs = V_cache + (blk * stride_vb + slot * stride_vt + kvh * stride_vh)[:, None] + offs_d[None, :]
        if MASKED:
            k = tl.load(k_ptrs, mask=ok[:, None], other=0.0)
        else:
            k = tl.load(k_ptrs)
        qk = dot(q, tl.trans(k), tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32), UPCAST_DOT, IEEE_FP32)
        qk = qk * qk_scale
        if MASKED:
            keep = ok[None, :]
            if CAUSAL:
                keep = keep & (tok[None, :] <= pos[:, None])
            qk = tl.where(keep, qk, float("-inf"))
        # Every row sees key 0 (its position is >= 0) and the first tile visited holds it,
        # so m_new is finite from the first tile on and no inf - inf occurs.
        m_new = tl.maximum(m_i, tl.max(qk, 1))
        alpha = tl.math.exp2(m_i - m_new)
        p = tl.math.exp2(qk - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        if MASKED:
            v = tl.load(v_ptrs, mask=ok[:, None], other=0.0)
        else:
            v = tl.load(v_ptrs)
        acc = dot(p.to(v.dtype), v, acc * alpha[:, None], UPCAST_DOT, IEEE_FP32)
        m_i = m_new
    return acc, l_i, m_i


@autotune(configs=_configs(), key=["MAX_Q_LEN", "MAX_CONTEXT", "HEAD_DIM", "GROUP", "PAGE_SIZE", "CAUSAL"])
@triton.jit(do_not_specialize=["MAX_Q_LEN", "MAX_CONTEXT"])
def _paged_prefill_kernel(
        Q, K_cache, V_cache, block_table, cu_seqlens_q, context_lens, O, qk_scale,
        stride_qt, stride_qh, stride_kb, stride_kt, stride_kh, stride_vb, stride_vt, stride_vh,
        stride_btb, stride_ot, stride_oh, kv_heads, MAX_Q_LEN, MAX_CONTEXT,
        GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, PAGE_SIZE: tl.constexpr, CAUSAL: tl.constexpr,
        UPCAST_DOT: tl.constexpr, IEEE_FP32: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    # MAX_Q_LEN sizes the grid and, with MAX_CONTEXT, keys the tuning; the kernel reads
    # each sequence's own lengths. A program's BLOCK_M rows are (token, q head) pairs of
    # one kv head's group, token-major: row r is chunk token r // GROUP, q head
    # kvh * GROUP + r % GROUP, so every K/V tile loaded serves the whole group. Query
    # tiles run last-first: under causal masking the longest programs start first.
    start_m = tl.num_programs(0) - 1 - tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // kv_heads
    kvh = bh % kv_heads
    q_start = tl.load(cu_seqlens_q + b).to(tl.int64)
    q_len = (tl.load(cu_seqlens_q + b + 1) - tl.load(cu_seqlens_q + b)).to(tl.int32)
    if start_m * BLOCK_M >= q_len * GROUP:
        return
    ctx = tl.load(context_lens + b).to(tl.int32)
    prefix = ctx - q_len

    offs_r = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    row_ok = offs_r < q_len * GROUP
    tok = offs_r // GROUP
    heads = kvh * GROUP + offs_r % GROUP
    q_off = (q_start + tok) * stride_qt + heads * stride_qh
    q = tl.load(Q + q_off[:, None] + offs_d[None, :], mask=row_ok[:, None], other=0.0)
    pos = prefix + tok               # each row's position in its sequence

    m_i = tl.full((BLOCK_M,), float("-inf"), dtype=tl.float32)
    l_i = tl.zeros((BLOCK_M,), dtype=tl.float32)
    acc = tl.zeros((BLOCK_M, HEAD_DIM), dtype=tl.float32)

    # Keys [0, hi_full) need no mask: inside the context and, causally, at or below the
    # first row's position. [hi_full, hi) is masked; keys past the last row's position
    # (causal) or the context are never visited.
    if CAUSAL:
        hi = tl.minimum(prefix + ((start_m + 1) * BLOCK_M - 1) // GROUP + 1, ctx)
        hi_full = tl.minimum(prefix + (start_m * BLOCK_M) // GROUP + 1, ctx)
    else:
        hi = ctx
        hi_full = ctx
    hi_full = (hi_full // BLOCK_N) * BLOCK_N
    bt_row = block_table + b.to(tl.int64) * stride_btb
    acc, l_i, m_i = _paged_tiles(acc, l_i, m_i, q, K_cache, V_cache, bt_row, kvh, stride_kb, stride_kt, stride_kh,
                                 stride_vb, stride_vt, stride_vh, pos, 0, hi_full, ctx, qk_scale, False, CAUSAL,
                                 HEAD_DIM, PAGE_SIZE, BLOCK_M, BLOCK_N, UPCAST_DOT, IEEE_FP32)
    acc, l_i, m_i = _paged_tiles(acc, l_i, m_i, q, K_cache, V_cache, bt_row, kvh, stride_kb, stride_kt, stride_kh,
                                 stride_vb, stride_vt, stride_vh, pos, hi_full, hi, ctx, qk_scale, True, CAUSAL,
                                 HEAD_DIM, PAGE_SIZE, BLOCK_M, BLOCK_N, UPCAST_DOT, IEEE_FP32)

    out = acc / l_i[:, None]
    o_off = (q_start + tok) * stride_ot + heads * stride_oh
    tl.store(O + o_off[:, None] + offs_d[None, :], out.to(O.dtype.element_ty), mask=row_ok[:, None])


def _check(q, k_cache, v_cache, block_table, cu_seqlens_q, context_lens):
    """Launch-time checks of shapes, dtypes, devices and strides; (page_size, kv_heads, head_dim)."""
    _, page_size, kv_heads, head_dim = paged.check_q_and_cache(q, k_cache, v_cache, "total_q", _DTYPES, HEAD_DIMS)
    if cu_seqlens_q.device != q.device:
        raise ValueError(f"cu_seqlens_q is on {cu_seqlens_q.device} but q is on {q.device}")
    if cu_seqlens_q.dim() != 1 or cu_seqlens_q.shape[0] < 2 or cu_seqlens_q.dtype != torch.int32:
        raise ValueError(f"cu_seqlens_q must be 1-D int32 [batch + 1] with batch >= 1, got {cu_seqlens_q.dtype} "
                         f"{tuple(cu_seqlens_q.shape)}")
    batch = cu_seqlens_q.shape[0] - 1
    paged.check_table_args(q, block_table, context_lens, batch, page_size)
    if batch * kv_heads > _MAX_GRID_Y:
        raise ValueError(f"batch * kv_heads = {batch * kv_heads} exceeds the grid limit {_MAX_GRID_Y}")
    if q.device.type == "cpu" and not interpreting():
        raise ValueError("CPU tensors need the Triton interpreter (TRITON_INTERPRET=1 before importing triton)")
    return page_size, kv_heads, head_dim


def check_lengths(cu_seqlens_q: torch.Tensor, context_lens: torch.Tensor, total_q: int) -> tuple[int, int]:
    """Raise ValueError unless cu_seqlens_q starts at 0, never decreases and ends at total_q,
    and no sequence has more new tokens than its context holds. Returns (max q length, max
    context). Copies both to the host (a device sync)."""
    cu = cu_seqlens_q.detach().to("cpu", torch.int64)
    if int(cu[0]) != 0:
        raise ValueError(f"cu_seqlens_q[0] must be 0, got {int(cu[0])}")
    q_lens = cu[1:] - cu[:-1]
    if bool((q_lens < 0).any()):
        i = int((q_lens < 0).nonzero()[0, 0])
        raise ValueError(f"cu_seqlens_q decreases at index {i + 1}: {int(cu[i])} -> {int(cu[i + 1])}")
    if int(cu[-1]) != total_q:
        raise ValueError(f"cu_seqlens_q ends at {int(cu[-1])} but q holds {total_q} tokens")
    ctx = context_lens.detach().to("cpu", torch.int64)
    over = q_lens > ctx
    if bool(over.any()):
        i = int(over.nonzero()[0, 0])
        raise ValueError(f"sequence {i} has {int(q_lens[i])} new tokens but a context of only {int(ctx[i])} "
                         f"(the context includes the chunk: q_len <= context)")
    return int(q_lens.max()), int(ctx.max())


def paged_prefill_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                            block_table: torch.Tensor, cu_seqlens_q: torch.Tensor, context_lens: torch.Tensor, *,
                            max_q_len: int | None = None, max_context_len: int | None = None,
                            causal: bool = True, sm_scale: float | None = None,
                            check_tables: bool = True) -> torch.Tensor:
    """Attention of each sequence's new chunk of queries over its whole paged KV.

    q [total_q, q_heads, d], sequence i's queries at rows cu_seqlens_q[i]:cu_seqlens_q[i + 1]
    (int32 [batch + 1]); k_cache and v_cache [num_blocks, page_size, kv_heads, d] (NHD)
    holding every sequence's context_lens[i] tokens (prefix and chunk) through block_table
    [batch, max_blocks] (int32 or int64). Returns o shaped like q, in q's dtype.

    ``max_q_len`` (a host int, as serving engines keep it) sizes the grid and
    ``max_context_len`` keys the tuning; None reads them from the tensors.
    ``check_tables`` validates the block table, cu_seqlens_q and that every chunk fits its
    context, and that the host maxima cover every sequence; it copies the tables to the
    host (a device sync), so a caller that has already checked these very tensors and
    passes both maxima may skip it.
    """
    page_size, kv_heads, head_dim = _check(q, k_cache, v_cache, block_table, cu_seqlens_q, context_lens)
    if check_tables:
        paged.check_block_table(block_table, context_lens, k_cache.shape[0], page_size)
        longest_q, longest_ctx = check_lengths(cu_seqlens_q, context_lens, q.shape[0])
        for name, given, longest in (("max_q_len", max_q_len, longest_q),
                                     ("max_context_len", max_context_len, longest_ctx)):
            if given is not None and isinstance(given, int) and given < longest:
                raise ValueError(f"{name} = {given} but a sequence has {longest}")
        max_q_len = longest_q if max_q_len is None else max_q_len
        max_context_len = longest_ctx if max_context_len is None else max_context_len
    else:
        if max_q_len is None:
            max_q_len = int((cu_seqlens_q[1:] - cu_seqlens_q[:-1]).max())
        if max_context_len is None:
            max_context_len = int(context_lens.max())
    for name, v in (("max_q_len", max_q_len), ("max_context_len", max_context_len)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise ValueError(f"{name} must be a non-negative int, got {v!r}")
    batch, q_heads = cu_seqlens_q.shape[0] - 1, q.shape[1]
    if sm_scale is None:
        sm_scale = 1.0 / math.sqrt(head_dim)
    o = torch.empty_like(q, memory_format=torch.contiguous_format)
    if max_q_len == 0 or q.shape[0] == 0:
        return o
    group = q_heads // kv_heads
    grid = lambda meta: (triton.cdiv(max_q_len * group, meta["BLOCK_M"]), batch * kv_heads)  # noqa: E731
    _paged_prefill_kernel[grid](
        q, k_cache, v_cache, block_table, cu_seqlens_q, context_lens, o, sm_scale * _LOG2E,
        q.stride(0), q.stride(1), k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        v_cache.stride(0), v_cache.stride(1), v_cache.stride(2), block_table.stride(0),
        o.stride(0), o.stride(1), kv_heads, max_q_len, max_context_len,
        GROUP=group, HEAD_DIM=head_dim, PAGE_SIZE=page_size, CAUSAL=bool(causal),
        UPCAST_DOT=interpreting() and q.dtype == torch.bfloat16, IEEE_FP32=q.dtype == torch.float32)
    return o
