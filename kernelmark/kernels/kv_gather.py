"""kv_gather: copy the cached pages of a batch of sequences into contiguous, varlen-packed
K and V [total_tokens, kv_heads, head_dim] (what prefill with a cached prefix needs;
vLLM's gather_cache).

Sequence ``s`` holds ``cu_seqlens[s+1] - cu_seqlens[s]`` tokens; its token ``t`` lives in
block ``block_table[s, t // page_size]`` at offset ``t % page_size`` and goes to output
row ``cu_seqlens[s] + t``. Grid: axis 0 walks the rows (token, kv head) of the longest
sequence in tiles of ``BLOCK_R`` rows of ``head_dim`` contiguous elements; axis 1 is the
sequence (programs past a shorter sequence's end do nothing). The long axis is axis 0
because CUDA limits grid axes 1 and 2 to 65535.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernelmark.kernels import tl_utils  # noqa: F401  (the triton 3.6 interpreter work-around)

from kernelmark.kernels import kv_validate as kv
from kernelmark.kernels import paged
from kernelmark.kernels.kv_append import cache_strides

MAX_GRID_Y = 65535


@triton.jit
def _kv_gather_kernel(
    k_cache_ptr, v_cache_ptr, block_table_ptr, cu_seqlens_ptr, out_k_ptr, out_v_ptr,
    stride_block, stride_page, stride_head, stride_bt,
    stride_okt, stride_okh, stride_ovt, stride_ovh,
    KV_HEADS: tl.constexpr, PAGE_SIZE: tl.constexpr, HEAD_DIM: tl.constexpr,
    BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr,
):
    seq = tl.program_id(1)
    start = tl.load(cu_seqlens_ptr + seq).to(tl.int64)
    n = tl.load(cu_seqlens_ptr + seq + 1).to(tl.int64) - start
    r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    t = (r // KV_HEADS).to(tl.int64)
    h = (r % KV_HEADS).to(tl.int64)
    row_ok = t < n
    block = tl.load(block_table_ptr + seq.to(tl.int64) * stride_bt + t // PAGE_SIZE,
                    mask=row_ok, other=0).to(tl.int64)
    offset = t % PAGE_SIZE
    d = tl.arange(0, BLOCK_D)
    mask = row_ok[:, None] & (d < HEAD_DIM)[None, :]
    src = (block * stride_block + offset * stride_page + h * stride_head)[:, None] + d[None, :]
    row = start + t
    k = tl.load(k_cache_ptr + src, mask=mask)
    v = tl.load(v_cache_ptr + src, mask=mask)
    tl.store(out_k_ptr + (row * stride_okt + h * stride_okh)[:, None] + d[None, :], k, mask=mask)
    tl.store(out_v_ptr + (row * stride_ovt + h * stride_ovh)[:, None] + d[None, :], v, mask=mask)


def kv_gather(k_cache: torch.Tensor, v_cache: torch.Tensor, block_table: torch.Tensor,
              cu_seqlens: torch.Tensor, max_seq_len: int, layout: str = "NHD", *,
              out: tuple | None = None, check_indices: bool = True) -> tuple:
    """Gather each sequence's tokens from the paged cache into (k, v), each
    [total_tokens, kv_heads, head_dim], sequences packed one after another.

    ``block_table`` [batch, max_blocks] and ``cu_seqlens`` [batch + 1] (int32/int64,
    ``cu_seqlens[0] = 0``) on the cache's device; ``max_seq_len``: a host int at least
    the longest sequence (as in FlashAttention's varlen API, so the grid is known without
    a device sync). ``out``: preallocated (k, v); without it the total is read from
    ``cu_seqlens[-1]`` (a sync). ``check_indices``: check the block table and lengths on
    the host (a sync).
    """
    nb, ps, h, d = kv.check_cache_pair(k_cache, v_cache, layout)
    dev = k_cache.device
    kv.check_index_tensor("block_table", block_table, 2, dev)
    kv.check_index_tensor("cu_seqlens", cu_seqlens, 1, dev)
    batch = block_table.shape[0]
    if cu_seqlens.shape[0] != batch + 1:
        raise ValueError(f"cu_seqlens must have batch + 1 = {batch + 1} entries, got {cu_seqlens.shape[0]}")
    if batch > MAX_GRID_Y:
        raise ValueError(f"batch {batch} exceeds the {MAX_GRID_Y} sequences one launch can take")
    if not isinstance(max_seq_len, int) or max_seq_len < 0:
        raise ValueError(f"max_seq_len must be a non-negative host int, got {max_seq_len!r}")
    if block_table.numel() and block_table.stride(1) != 1:
        raise ValueError(f"block_table rows must be contiguous, got strides {block_table.stride()}")
    if out is None:
        total = int(cu_seqlens[-1]) if batch else 0
        out = (torch.empty((total, h, d), dtype=k_cache.dtype, device=dev),
               torch.empty((total, h, d), dtype=k_cache.dtype, device=dev))
    out_k, out_v = out
    kv.check_tokens("out k", out_k, None, h, d, k_cache.dtype, dev)
    kv.check_tokens("out v", out_v, out_k.shape[0], h, d, k_cache.dtype, dev)
    if check_indices:
        cu = cu_seqlens.detach().to("cpu", torch.int64)
        lens = cu[1:] - cu[:-1]
        if int(cu[0]) != 0:
            raise ValueError(f"cu_seqlens[0] must be 0, got {int(cu[0])}")
        if lens.numel() and int(lens.min()) < 0:
            raise ValueError(f"cu_seqlens must not decrease (sequence {int(lens.argmin())} has a negative length)")
        if int(cu[-1]) != out_k.shape[0]:
            raise ValueError(f"cu_seqlens[-1] = {int(cu[-1])} tokens but the output holds {out_k.shape[0]}")
        if lens.numel() and int(lens.max()) > max_seq_len:
            raise ValueError(f"sequence {int(lens.argmax())} has {int(lens.max())} tokens, "
                             f"more than max_seq_len = {max_seq_len}")
        paged.check_block_table(block_table, lens, nb, ps)
    rows = max_seq_len * h
    if rows == 0 or batch == 0:
        return out_k, out_v
    block_d = kv.next_pow2(d)
    block_r = kv.rows_per_program(rows * batch, block_d, dev)
    sb, sp, sh = cache_strides(k_cache, layout)
    _kv_gather_kernel[(triton.cdiv(rows, block_r), batch)](
        k_cache, v_cache, block_table, cu_seqlens, out_k, out_v,
        sb, sp, sh, block_table.stride(0),
        out_k.stride(0), out_k.stride(1), out_v.stride(0), out_v.stride(1),
        KV_HEADS=h, PAGE_SIZE=ps, HEAD_DIM=d, BLOCK_R=block_r, BLOCK_D=block_d,
        num_warps=kv.warps_for(block_r * block_d, k_cache.element_size()),
    )
    return out_k, out_v
