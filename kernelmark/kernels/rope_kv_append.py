"""rope_kv_append: rotary position embedding applied to the new tokens' K, fused with the
paged-cache write of K and V (V is written as is).

Convention: rotate-half (GPT-NeoX style, as Hugging Face's Llama): with ``x1, x2`` the
first and second halves of a head's ``head_dim``,

    out1 = x1·cos − x2·sin,   out2 = x2·cos + x1·sin,

where cos/sin are read from ``cos_sin_cache[position]`` (fp32 [max_position, head_dim],
cos in the first half, sin in the second, vLLM's layout). The rotation is done in fp32
and rounded once to the cache dtype.

Tiling as in kernels/kv_append.py (rows of (token, kv head)), except a row is handled
as its two halves, each ``head_dim / 2`` contiguous elements.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernelmark.kernels import kv_validate as kv
from kernelmark.kernels.tl_utils import token_head_rows
from kernelmark.kernels.kv_append import cache_strides, check_append_args
from kernelmark.kernels.rope import check_cos_sin_cache


@triton.jit
def _rope_kv_append_kernel(
    key_ptr, value_ptr, k_cache_ptr, v_cache_ptr, slot_ptr, pos_ptr, cos_sin_ptr,
    rows,
    stride_kt, stride_kh, stride_vt, stride_vh,
    stride_block, stride_page, stride_head, stride_cos_sin,
    KV_HEADS: tl.constexpr, PAGE_SIZE: tl.constexpr, HALF: tl.constexpr,
    BLOCK_R: tl.constexpr, BLOCK_HALF: tl.constexpr,
):
    in_range, t, h = token_head_rows(rows, KV_HEADS, BLOCK_R)
    slot = tl.load(slot_ptr + t, mask=in_range, other=-1).to(tl.int64)
    row_ok = in_range & (slot >= 0)
    pos = tl.load(pos_ptr + t, mask=row_ok, other=0).to(tl.int64)
    block = slot // PAGE_SIZE
    offset = slot % PAGE_SIZE
    d = tl.arange(0, BLOCK_HALF)
    mask = row_ok[:, None] & (d < HALF)[None, :]

    cs = cos_sin_ptr + (pos * stride_cos_sin)[:, None] + d[None, :]
    cos = tl.load(cs, mask=mask, other=0.0)
    sin = tl.load(cs + HALF, mask=mask, other=0.0)
    k_src = key_ptr + (t * stride_kt + h * stride_kh)[:, None] + d[None, :]
    k1 = tl.load(k_src, mask=mask, other=0.0).to(tl.float32)
    k2 = tl.load(k_src + HALF, mask=mask, other=0.0).to(tl.float32)
    v_src = value_ptr + (t * stride_vt + h * stride_vh)[:, None] + d[None, :]
    v1 = tl.load(v_src, mask=mask)
    v2 = tl.load(v_src + HALF, mask=mask)

    dst = (block * stride_block + offset * stride_page + h * stride_head)[:, None] + d[None, :]
    out_ty = k_cache_ptr.dtype.element_ty
    tl.store(k_cache_ptr + dst, (k1 * cos - k2 * sin).to(out_ty), mask=mask)
    tl.store(k_cache_ptr + dst + HALF, (k2 * cos + k1 * sin).to(out_ty), mask=mask)
    tl.store(v_cache_ptr + dst, v1, mask=mask)
    tl.store(v_cache_ptr + dst + HALF, v2, mask=mask)


def rope_kv_append(key: torch.Tensor, value: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                   slot_mapping: torch.Tensor, positions: torch.Tensor, cos_sin_cache: torch.Tensor,
                   layout: str = "NHD", *, check_indices: bool = True) -> None:
    """Rotate ``key`` [tokens, kv_heads, head_dim] by RoPE at ``positions`` [tokens]
    (int32/int64) and write it and ``value`` into the paged cache at ``slot_mapping``
    (-1 = padding, skipped). ``cos_sin_cache``: fp32 [max_position, head_dim], cos then
    sin. In place.

    ``check_indices``: also check slot and position values (copies them to the host).
    """
    _, ps, h, d = check_append_args(key, value, k_cache, v_cache, slot_mapping, layout, check_indices)
    if d % 2:
        raise ValueError(f"rotate-half RoPE needs an even head_dim, got {d}")
    kv.check_index_tensor("positions", positions, 1, k_cache.device)
    if positions.shape[0] != key.shape[0]:
        raise ValueError(f"positions has {positions.shape[0]} entries for {key.shape[0]} tokens")
    if cos_sin_cache.dim() != 2 or cos_sin_cache.shape[1] != d:
        raise ValueError(f"cos_sin_cache must be [max_position, head_dim={d}], got {tuple(cos_sin_cache.shape)}")
    check_cos_sin_cache(cos_sin_cache, positions, "the cache", k_cache.device, check_indices)
    rows = key.shape[0] * h
    if rows == 0:
        return
    half = d // 2
    block_half = kv.next_pow2(half)
    block_r = kv.rows_per_program(rows, 2 * block_half, k_cache.device)
    sb, sp, sh = cache_strides(k_cache, layout)
    _rope_kv_append_kernel[(triton.cdiv(rows, block_r),)](
        key, value, k_cache, v_cache, slot_mapping, positions, cos_sin_cache, rows,
        key.stride(0), key.stride(1), value.stride(0), value.stride(1),
        sb, sp, sh, cos_sin_cache.stride(0),
        KV_HEADS=h, PAGE_SIZE=ps, HALF=half, BLOCK_R=block_r, BLOCK_HALF=block_half,
        num_warps=kv.warps_for(block_r * 2 * block_half, k_cache.element_size()),
    )
