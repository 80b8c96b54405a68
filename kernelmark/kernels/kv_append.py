"""kv_append: write new tokens' K and V into the paged cache through a slot mapping
(vLLM's reshape_and_cache_flash), for both cache layouts of kernels/paged.py.

Tiling: the work is a list of *rows*, one per (token, kv head), each ``head_dim``
contiguous elements in the source and in the cache (NHD and HND alike; only the strides
between rows differ). A program copies ``BLOCK_R`` rows of K and of V: heads vary
fastest, so in NHD the rows of one token land side by side. A row's destination is
``block * stride_block + offset * stride_page + head * stride_head`` with
``block, offset = divmod(slot, page_size)``; a slot of -1 (padding) masks the row out.
Addresses are int64: a cache of a few GB has more than 2**31 elements.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernelmark.kernels import kv_validate as kv
from kernelmark.kernels.tl_utils import token_head_rows
from kernelmark.kernels import paged


@triton.jit
def _kv_append_kernel(
    key_ptr, value_ptr, k_cache_ptr, v_cache_ptr, slot_ptr,
    rows,
    stride_kt, stride_kh, stride_vt, stride_vh,
    stride_block, stride_page, stride_head,
    KV_HEADS: tl.constexpr, PAGE_SIZE: tl.constexpr, HEAD_DIM: tl.constexpr,
    BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr,
):
    in_range, t, h = token_head_rows(rows, KV_HEADS, BLOCK_R)
    slot = tl.load(slot_ptr + t, mask=in_range, other=-1).to(tl.int64)
    row_ok = in_range & (slot >= 0)
    block = slot // PAGE_SIZE
    offset = slot % PAGE_SIZE
    d = tl.arange(0, BLOCK_D)
    mask = row_ok[:, None] & (d < HEAD_DIM)[None, :]
    dst = (block * stride_block + offset * stride_page + h * stride_head)[:, None] + d[None, :]
    k = tl.load(key_ptr + (t * stride_kt + h * stride_kh)[:, None] + d[None, :], mask=mask)
    v = tl.load(value_ptr + (t * stride_vt + h * stride_vh)[:, None] + d[None, :], mask=mask)
    tl.store(k_cache_ptr + dst, k, mask=mask)
    tl.store(v_cache_ptr + dst, v, mask=mask)


def check_append_args(key, value, k_cache, v_cache, slot_mapping, layout, check_indices) -> tuple:
    """Validate a cache write; returns (num_blocks, page_size, kv_heads, head_dim)."""
    nb, ps, h, d = kv.check_cache_pair(k_cache, v_cache, layout)
    kv.check_tokens("key", key, None, h, d, k_cache.dtype, k_cache.device)
    kv.check_tokens("value", value, key.shape[0], h, d, k_cache.dtype, k_cache.device)
    kv.check_index_tensor("slot_mapping", slot_mapping, 1, k_cache.device)
    if slot_mapping.shape[0] != key.shape[0]:
        raise ValueError(f"slot_mapping has {slot_mapping.shape[0]} entries for {key.shape[0]} tokens")
    if check_indices:
        paged.check_slot_mapping(slot_mapping, nb, ps)
        kv.check_unique_slots(slot_mapping)
    return nb, ps, h, d


def cache_strides(cache: torch.Tensor, layout: str) -> tuple:
    """(stride_block, stride_page, stride_head) of a cache tensor in ``layout``."""
    if layout == "NHD":
        return cache.stride(0), cache.stride(1), cache.stride(2)
    return cache.stride(0), cache.stride(2), cache.stride(1)


def kv_append(key: torch.Tensor, value: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
              slot_mapping: torch.Tensor, layout: str = "NHD", *, check_indices: bool = True) -> None:
    """Write ``key``/``value`` [tokens, kv_heads, head_dim] into ``k_cache``/``v_cache``
    (``layout`` "NHD" or "HND", see kernels/paged.py) at ``slot_mapping`` [tokens]
    (int32/int64, -1 = padding, skipped). In place.

    ``check_indices``: also check the slot values (in the cache, no slot written twice);
    this copies slot_mapping to the host, a device synchronisation.
    """
    _, ps, h, d = check_append_args(key, value, k_cache, v_cache, slot_mapping, layout, check_indices)
    rows = key.shape[0] * h
    if rows == 0:
        return
    block_d = kv.next_pow2(d)
    block_r = kv.rows_per_program(rows, block_d, k_cache.device)
    sb, sp, sh = cache_strides(k_cache, layout)
    grid = (triton.cdiv(rows, block_r),)
    _kv_append_kernel[grid](
        key, value, k_cache, v_cache, slot_mapping, rows,
        key.stride(0), key.stride(1), value.stride(0), value.stride(1),
        sb, sp, sh,
        KV_HEADS=h, PAGE_SIZE=ps, HEAD_DIM=d, BLOCK_R=block_r, BLOCK_D=block_d,
        num_warps=kv.warps_for(block_r * block_d, k_cache.element_size()),
    )
