"""Prefill attention in Triton: a flash-attention forward pass, batched or varlen.

O = softmax(Q·Kᵀ · scale [+ causal mask]) · V, for self-attention where a sequence's
queries and keys are the same tokens (seq_q = seq_k).

Tiling: each program owns BLOCK_M query rows of one (sequence, q head) and walks the
keys in BLOCK_N steps with an online softmax (running max ``m``, running sum ``l``,
fp32 accumulator rescaled whenever the max grows), so the [seq, seq] score matrix is
never stored. The softmax runs in base 2: the scale is pre-multiplied by log2(e) and
``exp2`` replaces ``exp`` (one multiply per score saved, and exp2 is the native
instruction).

The key range is split in two loops: key tiles that no mask touches (every key below
the tile's first query row under causal masking, and inside the sequence) run with no
mask arithmetic at all; only the tiles on the causal diagonal or across the sequence
end are masked. Causal programs never visit key tiles above the diagonal: those
fully-masked tiles are skipped, not loaded and masked.

GQA: a q head reads kv head ``q_head // (q_heads // kv_heads)`` through its stride, so
K and V are never materialised repeated.

Layouts: ``bshd`` for the batched form (q [batch, seq, q_heads, d], k/v [batch, seq,
kv_heads, d], as flash-attn and serving engines hold them), and packed tokens with
cumulative sequence lengths for the varlen form (q [total, q_heads, d], k/v [total,
kv_heads, d], ``cu_seqlens`` [batch + 1] int32). One kernel does both: the batched
form is the varlen form with a fixed length and a batch stride.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from kernelmark.kernels import interpreting
from kernelmark.kernels.autotune_prune import autotune
from kernelmark.kernels.tl_utils import dot

HEAD_DIMS = (16, 32, 64, 128)
_DTYPES = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32"}
_LOG2E = 1.4426950408889634
_MAX_GRID_Y = 65535


def _configs():
    if interpreting():
        # One small config: autotuning under the interpreter would only multiply the
        # time. BLOCK_M = 2 * BLOCK_N so that a 64-token test runs both the unmasked
        # and the masked loop, with several key tiles each.
        return [triton.Config({"BLOCK_M": 32, "BLOCK_N": 16}, num_warps=4, num_stages=1)]
    tiles = [
        # (BLOCK_M, BLOCK_N, num_warps, num_stages), picked for Hopper (228 KB smem/SM):
        # 128 query rows on 8 warps is the usual FA2-in-Triton sweet spot; a 128x128
        # tile at d=128 needs ~160 KB at 2 stages and fails to compile at 3 (the
        # autotuner skips configs that run out of shared memory).
        (128, 64, 8, 3),
        (128, 128, 8, 2),
        (128, 64, 4, 3),
        (128, 32, 4, 4),
        (64, 64, 4, 3),
        (64, 32, 4, 4),
        (128, 128, 8, 3),
        (64, 128, 4, 2),
    ]
    return [triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w, num_stages=s) for bm, bn, w, s in tiles]


@triton.jit
def _attend_tiles(acc, l_i, m_i, q, k_base, v_base, stride_ks, stride_vs, offs_m, lo, hi, seq_len, qk_scale,
                  MASKED: tl.constexpr, CAUSAL: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr,
                  BLOCK_N: tl.constexpr, UPCAST_DOT: tl.constexpr, IEEE_FP32: tl.constexpr):
    """Online softmax over the key tiles [lo, hi); masks only when MASKED."""
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    for start_n in range(lo, hi, BLOCK_N):
        cols = start_n + offs_n
        k_ptrs = k_base + cols[:, None] * stride_ks + offs_d[None, :]
        v_ptrs = v_base + cols[:, None] * stride_vs + offs_d[None, :]
        if MASKED:
            in_seq = cols < seq_len
            k = tl.load(k_ptrs, mask=in_seq[:, None], other=0.0)
        else:
            k = tl.load(k_ptrs)
        qk = dot(q, tl.trans(k), tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32), UPCAST_DOT, IEEE_FP32)
        qk = qk * qk_scale
        if MASKED:
            keep = in_seq[None, :]
            if CAUSAL:
                keep = keep & (offs_m[:, None] >= cols[None, :])
            qk = tl.where(keep, qk, float("-inf"))
        # Every row has seen at least key 0 by now (the first tile always holds it and
        # key 0 is visible to every row), so m_new is finite and no inf - inf occurs.
        m_new = tl.maximum(m_i, tl.max(qk, 1))
        alpha = tl.math.exp2(m_i - m_new)
        p = tl.math.exp2(qk - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        if MASKED:
            v = tl.load(v_ptrs, mask=in_seq[:, None], other=0.0)
        else:
            v = tl.load(v_ptrs)
        acc = dot(p.to(v.dtype), v, acc * alpha[:, None], UPCAST_DOT, IEEE_FP32)
        m_i = m_new
    return acc, l_i, m_i


@autotune(configs=_configs(), key=["MAX_SEQLEN", "HEAD_DIM", "CAUSAL", "VARLEN", "GROUP"])
@triton.jit(do_not_specialize=["MAX_SEQLEN"])
def _prefill_attention_kernel(
        Q, K, V, O, cu_seqlens, qk_scale,
        stride_qb, stride_qs, stride_qh, stride_kb, stride_ks, stride_kh,
        stride_vb, stride_vs, stride_vh, stride_ob, stride_os, stride_oh,
        q_heads, MAX_SEQLEN,
        GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, CAUSAL: tl.constexpr, VARLEN: tl.constexpr,
        UPCAST_DOT: tl.constexpr, IEEE_FP32: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    # Query tiles are visited last-first so that, under causal masking, the longest
    # programs start first and the short ones fill in behind them.
    start_m = tl.num_programs(0) - 1 - tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // q_heads
    h = bh % q_heads
    kvh = h // GROUP
    if VARLEN:
        seq_start = tl.load(cu_seqlens + b).to(tl.int64)
        seq_len = (tl.load(cu_seqlens + b + 1) - tl.load(cu_seqlens + b)).to(tl.int32)
    else:
        seq_start = 0
        seq_len = MAX_SEQLEN
    if start_m * BLOCK_M >= seq_len:
        return

    b64 = b.to(tl.int64)
    q_base = Q + b64 * stride_qb + seq_start * stride_qs + h * stride_qh
    k_base = K + b64 * stride_kb + seq_start * stride_ks + kvh * stride_kh
    v_base = V + b64 * stride_vb + seq_start * stride_vs + kvh * stride_vh
    o_base = O + b64 * stride_ob + seq_start * stride_os + h * stride_oh

    offs_m = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    row_ok = offs_m < seq_len
    q = tl.load(q_base + offs_m[:, None] * stride_qs + offs_d[None, :], mask=row_ok[:, None], other=0.0)

    m_i = tl.full((BLOCK_M,), float("-inf"), dtype=tl.float32)
    l_i = tl.zeros((BLOCK_M,), dtype=tl.float32)
    acc = tl.zeros((BLOCK_M, HEAD_DIM), dtype=tl.float32)

    # Key tiles [0, hi_full) need no mask: inside the sequence and, under causal
    # masking, wholly below the tile's first row. [hi_full, hi) is masked; keys at or
    # past hi are never visited (fully masked under causal masking, or outside).
    if CAUSAL:
        hi = tl.minimum((start_m + 1) * BLOCK_M, seq_len)
        hi_full = tl.minimum(start_m * BLOCK_M, seq_len)
    else:
        hi = seq_len
        hi_full = seq_len
    hi_full = (hi_full // BLOCK_N) * BLOCK_N
    acc, l_i, m_i = _attend_tiles(acc, l_i, m_i, q, k_base, v_base, stride_ks, stride_vs, offs_m,
                                  0, hi_full, seq_len, qk_scale, False, CAUSAL, HEAD_DIM, BLOCK_M, BLOCK_N,
                                  UPCAST_DOT, IEEE_FP32)
    acc, l_i, m_i = _attend_tiles(acc, l_i, m_i, q, k_base, v_base, stride_ks, stride_vs, offs_m,
                                  hi_full, hi, seq_len, qk_scale, True, CAUSAL, HEAD_DIM, BLOCK_M, BLOCK_N,
                                  UPCAST_DOT, IEEE_FP32)

    out = acc / l_i[:, None]
    tl.store(o_base + offs_m[:, None] * stride_os + offs_d[None, :], out.to(O.dtype.element_ty),
             mask=row_ok[:, None])


def _check_qkv(q, k, v, token_dims: int) -> tuple[int, int, int]:
    """Shared checks; returns (q_heads, kv_heads, head_dim)."""
    want = 2 + token_dims
    layout = "[batch, seq, heads, head_dim]" if token_dims == 2 else "[total_tokens, heads, head_dim]"
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.dim() != want:
            raise ValueError(f"{name} must be {want}-D {layout}, got shape {tuple(t.shape)}")
        if t.dtype not in _DTYPES:
            raise ValueError(f"{name} is {t.dtype}; supported: fp16, bf16, fp32")
        if t.stride(-1) != 1:
            raise ValueError(f"{name} must be contiguous in head_dim (stride(-1) == 1), got strides {t.stride()}")
        if t.device != q.device:
            raise ValueError(f"{name} is on {t.device} but q is on {q.device}")
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"q, k, v must share one dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if k.shape != v.shape:
        raise ValueError(f"k and v must have one shape, got {tuple(k.shape)} and {tuple(v.shape)}")
    if q.shape[:token_dims] != k.shape[:token_dims]:
        what = "batch and seq" if token_dims == 2 else "total_tokens"
        raise ValueError(f"q and k differ in {what}: q {tuple(q.shape)}, k {tuple(k.shape)} "
                         f"(prefill is self-attention: seq_q = seq_k)")
    q_heads, head_dim = q.shape[-2], q.shape[-1]
    kv_heads = k.shape[-2]
    if k.shape[-1] != head_dim:
        raise ValueError(f"q has head_dim {head_dim} but k has {k.shape[-1]}")
    if head_dim not in HEAD_DIMS:
        raise ValueError(f"head_dim {head_dim} (q shape {tuple(q.shape)}) is not supported; "
                         f"supported: {', '.join(map(str, HEAD_DIMS))}")
    if kv_heads <= 0 or q_heads % kv_heads:
        raise ValueError(f"q_heads = {q_heads} is not a multiple of kv_heads = {kv_heads} (GQA needs "
                         f"whole groups of q heads per kv head)")
    if q.device.type == "cpu" and not interpreting():
        raise ValueError("CPU tensors need the Triton interpreter (TRITON_INTERPRET=1 before importing triton)")
    return q_heads, kv_heads, head_dim


def _launch(q, k, v, o, cu_seqlens, batch, max_seqlen, causal, sm_scale, varlen, strides):
    q_heads, kv_heads, head_dim = q.shape[-2], k.shape[-2], q.shape[-1]
    if batch * q_heads > _MAX_GRID_Y:
        raise ValueError(f"batch * q_heads = {batch * q_heads} exceeds the grid limit {_MAX_GRID_Y}")
    if sm_scale is None:
        sm_scale = 1.0 / math.sqrt(head_dim)
    grid = lambda meta: (triton.cdiv(max_seqlen, meta["BLOCK_M"]), batch * q_heads)  # noqa: E731
    _prefill_attention_kernel[grid](
        q, k, v, o, cu_seqlens, sm_scale * _LOG2E, *strides, q_heads, max_seqlen,
        GROUP=q_heads // kv_heads, HEAD_DIM=head_dim, CAUSAL=bool(causal), VARLEN=varlen,
        UPCAST_DOT=interpreting() and q.dtype == torch.bfloat16, IEEE_FP32=q.dtype == torch.float32)
    return o


def prefill_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool = True,
                      sm_scale: float | None = None) -> torch.Tensor:
    """Attention over a batch of equal-length sequences, bshd layout.

    q [batch, seq, q_heads, d], k and v [batch, seq, kv_heads, d]; returns o shaped like
    q. ``sm_scale`` defaults to 1/sqrt(d). Causal masking is top-left aligned (query i
    sees keys 0..i).
    """
    _check_qkv(q, k, v, token_dims=2)
    batch, seq = q.shape[0], q.shape[1]
    if batch == 0 or seq == 0:
        raise ValueError(f"empty input: q shape {tuple(q.shape)}")
    o = torch.empty_like(q, memory_format=torch.contiguous_format)
    strides = (q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
               v.stride(0), v.stride(1), v.stride(2), o.stride(0), o.stride(1), o.stride(2))
    return _launch(q, k, v, o, q, batch, seq, causal, sm_scale, False, strides)


def check_cu_seqlens(cu_seqlens: torch.Tensor, total_tokens: int, max_seqlen: int) -> None:
    """Raise ValueError unless cu_seqlens starts at 0, never decreases, ends at
    total_tokens, and no sequence is longer than max_seqlen. Copies to the host."""
    if cu_seqlens.dim() != 1 or cu_seqlens.shape[0] < 2:
        raise ValueError(f"cu_seqlens must be 1-D [batch + 1] with batch >= 1, got {tuple(cu_seqlens.shape)}")
    if cu_seqlens.dtype != torch.int32:
        raise ValueError(f"cu_seqlens must be int32, got {cu_seqlens.dtype}")
    cu = cu_seqlens.detach().to("cpu", torch.int64)
    if int(cu[0]) != 0:
        raise ValueError(f"cu_seqlens[0] must be 0, got {int(cu[0])}")
    lens = cu[1:] - cu[:-1]
    if bool((lens < 0).any()):
        i = int((lens < 0).nonzero()[0, 0])
        raise ValueError(f"cu_seqlens decreases at index {i + 1}: {int(cu[i])} -> {int(cu[i + 1])}")
    if int(cu[-1]) != total_tokens:
        raise ValueError(f"cu_seqlens ends at {int(cu[-1])} but q holds {total_tokens} tokens")
    if int(lens.max()) > max_seqlen:
        i = int(lens.argmax())
        raise ValueError(f"sequence {i} has {int(lens[i])} tokens, more than max_seqlen = {max_seqlen}")


def prefill_attention_varlen(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor,
                             max_seqlen: int, *, causal: bool = True, sm_scale: float | None = None,
                             check_seqlens: bool = True) -> torch.Tensor:
    """Attention over packed sequences of different lengths.

    q [total_tokens, q_heads, d], k and v [total_tokens, kv_heads, d]; sequence i holds
    tokens cu_seqlens[i]:cu_seqlens[i + 1] (int32, [batch + 1], on q's device).
    ``max_seqlen`` (a host int, as serving engines keep it) sizes the grid.
    ``check_seqlens`` validates cu_seqlens against q and max_seqlen first; that copies
    cu_seqlens to the host (a device sync), so a caller that has already checked these
    very tensors may skip it.
    """
    _check_qkv(q, k, v, token_dims=1)
    if cu_seqlens.device != q.device:
        raise ValueError(f"cu_seqlens is on {cu_seqlens.device} but q is on {q.device}")
    if not isinstance(max_seqlen, int) or max_seqlen <= 0:
        raise ValueError(f"max_seqlen must be a positive int, got {max_seqlen!r}")
    if check_seqlens:
        check_cu_seqlens(cu_seqlens, q.shape[0], max_seqlen)
    elif cu_seqlens.dim() != 1 or cu_seqlens.shape[0] < 2 or cu_seqlens.dtype != torch.int32:
        raise ValueError(f"cu_seqlens must be 1-D int32 [batch + 1], got {cu_seqlens.dtype} "
                         f"{tuple(cu_seqlens.shape)}")
    batch = cu_seqlens.shape[0] - 1
    o = torch.empty_like(q, memory_format=torch.contiguous_format)
    strides = (0, q.stride(0), q.stride(1), 0, k.stride(0), k.stride(1),
               0, v.stride(0), v.stride(1), 0, o.stride(0), o.stride(1))
    return _launch(q, k, v, o, cu_seqlens, batch, max_seqlen, causal, sm_scale, True, strides)
