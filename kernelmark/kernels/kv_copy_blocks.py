"""kv_copy_blocks: copy-on-write copies of whole cache blocks within the device cache,
K and V, for a list of (src, dst) block pairs (vLLM's copy_blocks, used when a forked
sequence writes into a shared last page).

A block is ``page_size * kv_heads * head_dim`` contiguous elements in both layouts
(dimension 0 is the block), so the copy needs no layout: program ``i`` copies chunk
``i % CHUNKS`` (``BLOCK`` elements) of pair ``i // CHUNKS``, for K and for V.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernelmark.kernels import tl_utils  # noqa: F401  (the triton 3.6 interpreter work-around)

from kernelmark.kernels import kv_validate as kv

# Elements per program: 4096 (8 KiB of bf16 per tensor) is a quarter of a
# 16 x 8 x 128 page, so even a few pairs spread over several SMs.
CHUNK_ELEMENTS = 4096


@triton.jit
def _kv_copy_blocks_kernel(
    k_cache_ptr, v_cache_ptr, mapping_ptr, stride_block,
    BLOCK_NUMEL: tl.constexpr, CHUNKS: tl.constexpr, BLOCK: tl.constexpr,
):
    pid = tl.program_id(0)
    pair = pid // CHUNKS
    chunk = pid % CHUNKS
    src = tl.load(mapping_ptr + 2 * pair).to(tl.int64)
    dst = tl.load(mapping_ptr + 2 * pair + 1).to(tl.int64)
    e = chunk * BLOCK + tl.arange(0, BLOCK)
    mask = e < BLOCK_NUMEL
    k = tl.load(k_cache_ptr + src * stride_block + e, mask=mask)
    v = tl.load(v_cache_ptr + src * stride_block + e, mask=mask)
    tl.store(k_cache_ptr + dst * stride_block + e, k, mask=mask)
    tl.store(v_cache_ptr + dst * stride_block + e, v, mask=mask)


def check_block_mapping(block_mapping: torch.Tensor, num_blocks: int) -> None:
    """Pairs (src, dst) inside the cache; destinations distinct and never a source (else
    the result would depend on the order the copies run in)."""
    kv.check_block_ids("block_mapping", block_mapping, num_blocks)
    m = block_mapping.detach().to("cpu", torch.int64)
    dst, counts = torch.unique(m[:, 1], return_counts=True)
    if bool((counts > 1).any()):
        raise ValueError(f"block {int(dst[counts > 1][0])} is the destination of more than one pair")
    both = set(m[:, 0].tolist()) & set(m[:, 1].tolist())
    if both:
        raise ValueError(f"block {min(both)} is both a source and a destination")


def kv_copy_blocks(k_cache: torch.Tensor, v_cache: torch.Tensor, block_mapping: torch.Tensor, *,
                   check_indices: bool = True) -> None:
    """For each row (src, dst) of ``block_mapping`` [pairs, 2] (int32/int64, on the
    cache's device), copy block ``src`` of ``k_cache`` and ``v_cache`` over block ``dst``.
    In place; either layout. ``check_indices``: check the ids on the host (a sync)."""
    if k_cache.dim() != 4:
        raise ValueError(f"KV cache must be 4-D [num_blocks, ...], got shape {tuple(k_cache.shape)}")
    # The layout does not matter for whole blocks; NHD names the dimensions for the checks.
    nb, ps, h, d = kv.check_cache_pair(k_cache, v_cache, "NHD")
    block_numel = ps * h * d
    if k_cache.stride()[1:] != (h * d, d, 1):
        raise ValueError(f"each cache block must be contiguous, got strides {k_cache.stride()}")
    kv.check_index_tensor("block_mapping", block_mapping, 2, k_cache.device)
    if block_mapping.shape[1] != 2:
        raise ValueError(f"block_mapping must be [pairs, 2] (src, dst), got {tuple(block_mapping.shape)}")
    if block_mapping.shape[0] and not block_mapping.is_contiguous():
        raise ValueError("block_mapping must be contiguous")
    if check_indices:
        check_block_mapping(block_mapping, nb)
    pairs = block_mapping.shape[0]
    if pairs == 0 or block_numel == 0:
        return
    block = min(CHUNK_ELEMENTS, kv.next_pow2(block_numel))
    chunks = triton.cdiv(block_numel, block)
    _kv_copy_blocks_kernel[(pairs * chunks,)](
        k_cache, v_cache, block_mapping, k_cache.stride(0),
        BLOCK_NUMEL=block_numel, CHUNKS=chunks, BLOCK=block,
        num_warps=kv.warps_for(block, k_cache.element_size()),
    )
