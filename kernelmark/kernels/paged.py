"""The paged KV-cache layout shared by paged decode attention and the KV-cache ops.

One definition, so that the attention kernels and the cache-writing kernels agree on
what a page is:

* ``NHD``: a cache tensor of shape ``[num_blocks, page_size, kv_heads, head_dim]``
  (vLLM's "flash" layout, FlashInfer's NHD). K and V are separate tensors.
* ``HND``: ``[num_blocks, kv_heads, page_size, head_dim]`` (FlashInfer's HND).
* A *block table* ``[batch, max_blocks_per_seq]`` (int32) maps a sequence's logical
  page ``j`` to a physical block of the cache. Entries past a sequence's last page are
  never read and may hold anything (we fill them with -1).
* *Context lengths* ``[batch]`` (int32): tokens held by each sequence; token ``t`` of a
  sequence lives in block ``block_table[s, t // page_size]`` at offset ``t % page_size``.
* A *slot mapping* ``[tokens]`` (int64) for writes: ``slot = block * page_size + offset``;
  ``-1`` marks a padding token that is skipped.

The validators run on the host before any launch, so a bad table is an error with a
message, never an out-of-bounds read on the device.
"""

from __future__ import annotations

import torch

LAYOUTS = ("NHD", "HND")


def cache_shape(layout: str, num_blocks: int, page_size: int, kv_heads: int, head_dim: int) -> tuple:
    if layout == "NHD":
        return (num_blocks, page_size, kv_heads, head_dim)
    if layout == "HND":
        return (num_blocks, kv_heads, page_size, head_dim)
    raise ValueError(f"unknown KV-cache layout {layout!r}; known: {', '.join(LAYOUTS)}")


def cache_dims(cache: torch.Tensor, layout: str) -> tuple[int, int, int, int]:
    """(num_blocks, page_size, kv_heads, head_dim) of a cache tensor in ``layout``."""
    if cache.dim() != 4:
        raise ValueError(f"KV cache must be 4-D ({layout}), got shape {tuple(cache.shape)}")
    if layout == "NHD":
        nb, ps, h, d = cache.shape
    elif layout == "HND":
        nb, h, ps, d = cache.shape
    else:
        raise ValueError(f"unknown KV-cache layout {layout!r}; known: {', '.join(LAYOUTS)}")
    return nb, ps, h, d


def blocks_needed(context_len: int, page_size: int) -> int:
    return (context_len + page_size - 1) // page_size


def check_q_and_cache(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, q_rows: str,
                      dtypes, head_dims) -> tuple[int, int, int, int]:
    """The launch-time checks of a paged attention launcher's q [``q_rows``, q_heads, d] against
    its NHD caches: ranks, dtypes (``dtypes``: those it takes), devices, unit head_dim stride,
    head_dim (one of ``head_dims``) and whole GQA groups. (num_blocks, page_size, kv_heads, d)."""
    if q.dim() != 3:
        raise ValueError(f"q must be 3-D [{q_rows}, q_heads, head_dim], got shape {tuple(q.shape)}")
    if q.dtype not in dtypes:
        raise ValueError(f"q is {q.dtype}; supported: fp16, bf16, fp32")
    if k_cache.shape != v_cache.shape:
        raise ValueError(f"k_cache and v_cache must have one shape, got {tuple(k_cache.shape)} "
                         f"and {tuple(v_cache.shape)}")
    num_blocks, page_size, kv_heads, head_dim = cache_dims(k_cache, "NHD")
    for name, t in (("k_cache", k_cache), ("v_cache", v_cache)):
        if t.dtype != q.dtype:
            raise ValueError(f"{name} is {t.dtype} but q is {q.dtype}; they must match")
        if t.device != q.device:
            raise ValueError(f"{name} is on {t.device} but q is on {q.device}")
    for name, t in (("k_cache", k_cache), ("v_cache", v_cache), ("q", q)):
        if t.stride(-1) != 1:
            raise ValueError(f"{name} must be contiguous in head_dim, got strides {t.stride()}")
    q_heads = q.shape[1]
    if q.shape[2] != head_dim:
        raise ValueError(f"q has head_dim {q.shape[2]} but the cache has {head_dim}")
    if head_dim not in head_dims:
        raise ValueError(f"head_dim {head_dim} (q shape {tuple(q.shape)}) is not supported; "
                         f"supported: {', '.join(map(str, head_dims))}")
    if q_heads % kv_heads:
        raise ValueError(f"q_heads = {q_heads} is not a multiple of kv_heads = {kv_heads} (GQA needs "
                         f"whole groups of q heads per kv head)")
    return num_blocks, page_size, kv_heads, head_dim


def check_table_args(q: torch.Tensor, block_table: torch.Tensor, context_lens: torch.Tensor,
                     batch: int, page_size: int) -> None:
    """The launch-time checks of a paged attention launcher's table arguments (shapes,
    dtypes, devices, strides; not their contents: ``check_block_table`` reads those)."""
    if page_size <= 0 or page_size & (page_size - 1):
        raise ValueError(f"page_size {page_size} must be a power of two")
    for name, t in (("block_table", block_table), ("context_lens", context_lens)):
        if t.device != q.device:
            raise ValueError(f"{name} is on {t.device} but q is on {q.device}")
        if t.dtype not in (torch.int32, torch.int64):
            raise ValueError(f"{name} must be int32 or int64, got {t.dtype}")
    if block_table.dim() != 2 or block_table.shape[0] != batch:
        raise ValueError(f"block_table must be [batch={batch}, max_blocks], got {tuple(block_table.shape)}")
    if block_table.stride(1) != 1:
        raise ValueError(f"block_table must be contiguous along its rows, got strides {block_table.stride()}")
    if context_lens.dim() != 1 or context_lens.shape[0] != batch:
        raise ValueError(f"context_lens must be [batch={batch}], got {tuple(context_lens.shape)}")


def check_block_table(block_table: torch.Tensor, context_lens: torch.Tensor,
                      num_blocks: int, page_size: int) -> None:
    """Raise ValueError unless every page a sequence uses points inside the cache."""
    if block_table.dim() != 2:
        raise ValueError(f"block_table must be 2-D [batch, max_blocks], got {tuple(block_table.shape)}")
    if context_lens.dim() != 1 or context_lens.shape[0] != block_table.shape[0]:
        raise ValueError(f"context_lens must be [batch={block_table.shape[0]}], got {tuple(context_lens.shape)}")
    if block_table.dtype not in (torch.int32, torch.int64) or context_lens.dtype not in (torch.int32, torch.int64):
        raise ValueError("block_table and context_lens must be int32 or int64 tensors")
    lens = context_lens.detach().to("cpu", torch.int64)
    if lens.numel() and int(lens.min()) < 0:
        raise ValueError(f"context length {int(lens.min())} is negative")
    max_blocks = block_table.shape[1]
    need = (lens + page_size - 1) // page_size
    if need.numel() and int(need.max()) > max_blocks:
        s = int(need.argmax())
        raise ValueError(
            f"sequence {s} has context length {int(lens[s])}, which needs {int(need[s])} pages of "
            f"{page_size} tokens, but its block table holds only {max_blocks}")
    table = block_table.detach().to("cpu", torch.int64)
    used = torch.arange(max_blocks)[None, :] < need[:, None]
    bad = used & ((table < 0) | (table >= num_blocks))
    if bool(bad.any()):
        s, j = (int(v) for v in bad.nonzero()[0])
        raise ValueError(
            f"block_table[{s}, {j}] = {int(table[s, j])} is outside the cache (num_blocks = {num_blocks})")


def check_slot_mapping(slot_mapping: torch.Tensor, num_blocks: int, page_size: int) -> None:
    """Raise ValueError unless every slot is -1 (padding) or inside the cache."""
    if slot_mapping.dim() != 1:
        raise ValueError(f"slot_mapping must be 1-D [tokens], got {tuple(slot_mapping.shape)}")
    if slot_mapping.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"slot_mapping must be int32 or int64, got {slot_mapping.dtype}")
    slots = slot_mapping.detach().to("cpu", torch.int64)
    bad = (slots < -1) | (slots >= num_blocks * page_size)
    if bool(bad.any()):
        i = int(bad.nonzero()[0, 0])
        raise ValueError(
            f"slot_mapping[{i}] = {int(slots[i])} is outside the cache "
            f"(num_blocks * page_size = {num_blocks * page_size}; -1 means padding)")


def random_block_table(context_lens: list[int], page_size: int, num_blocks: int,
                       generator: torch.Generator) -> torch.Tensor:
    """A block table giving each sequence distinct, shuffled physical blocks (as a real
    allocator's free list would after some churn), padded with -1."""
    need = [blocks_needed(n, page_size) for n in context_lens]
    total = sum(need)
    if total > num_blocks:
        raise ValueError(f"{total} pages needed but the cache has only {num_blocks} blocks")
    perm = torch.randperm(num_blocks, generator=generator)[:total]
    width = max(need) if need else 0
    table = torch.full((len(context_lens), max(width, 1)), -1, dtype=torch.int32)
    at = 0
    for s, n in enumerate(need):
        table[s, :n] = perm[at:at + n].to(torch.int32)
        at += n
    return table


def gather_pages(cache: torch.Tensor, block_table_row: torch.Tensor, context_len: int,
                 layout: str = "NHD") -> torch.Tensor:
    """Reference gather of one sequence: [context_len, kv_heads, head_dim] (plain torch)."""
    _, page_size, _, _ = cache_dims(cache, layout)
    n = blocks_needed(context_len, page_size)
    blocks = cache[block_table_row[:n].long()]
    if layout == "HND":
        blocks = blocks.transpose(1, 2)
    return blocks.reshape(-1, blocks.shape[2], blocks.shape[3])[:context_len]
