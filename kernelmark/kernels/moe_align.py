"""MoE block alignment in Triton: the layout a grouped GEMM consumes.

Given top-k expert ids [T, k], the flat (token, slot) pairs ``p = t·k + slot`` are sorted
by expert and each expert's run is padded to a multiple of the GEMM block size B, so
that every BLOCK_M = B rows of the sorted list belong to one expert:

* ``sorted_ids`` [T·k + E·(B−1)] int32: the pairs, expert by expert, in increasing p within
  an expert (stable, so the layout is exact); padding and the unused tail hold T·k;
* ``expert_ids`` [len(sorted_ids) / B] int32: the expert of each block, −1 past the end;
* ``num_post_padded`` [1] int32: how many entries of sorted_ids are in use;
* ``counts`` [E] int32: pairs per expert.

Three launches, none with a data-dependent loop bound: (1) per chunk of BLOCK_N pairs, a
histogram over experts; (2) one program turns the histograms into each expert's padded
start and each chunk's offset within it; (3) per chunk, each pair's rank among the
chunk's pairs of its expert (a BLOCK_N×BLOCK_N comparison) gives its position. Block
expert ids are filled in (2) by a pass over the blocks. Decode sizes (T·k ≤ 512) are one
or a few chunks: this is a latency-bound op, a few microseconds on a GPU.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernelmark.kernels import tl_utils  # noqa: F401  (the triton 3.6 interpreter work-around)

from kernelmark.kernels import interpreting


@triton.jit
def _count_kernel(ids_ptr, hist_ptr, N, E, E_P: tl.constexpr, BLOCK_N: tl.constexpr):
    c = tl.program_id(0)
    offs = c * BLOCK_N + tl.arange(0, BLOCK_N)
    ids = tl.load(ids_ptr + offs, mask=offs < N, other=-1)
    ex = tl.arange(0, E_P)
    hist = tl.sum((ids[:, None] == ex[None, :]).to(tl.int32), axis=0)
    tl.store(hist_ptr + c * E + ex, hist, mask=ex < E)


@triton.jit
def _offsets_kernel(hist_ptr, off_ptr, counts_ptr, npp_ptr, expert_ids_ptr, n_chunks, n_blocks, E,
                    E_P: tl.constexpr, B: tl.constexpr, BLOCK_B: tl.constexpr):
    ex = tl.arange(0, E_P)
    emask = ex < E
    total = tl.zeros((E_P,), dtype=tl.int32)
    for c in range(0, n_chunks):
        total += tl.load(hist_ptr + c * E + ex, mask=emask, other=0)
    padded = (total + B - 1) // B * B
    end = tl.cumsum(padded, axis=0)
    start = end - padded
    tl.store(counts_ptr + ex, total, mask=emask)
    tl.store(npp_ptr, tl.sum(padded, axis=0))
    running = start
    for c in range(0, n_chunks):
        h = tl.load(hist_ptr + c * E + ex, mask=emask, other=0)
        tl.store(off_ptr + c * E + ex, running, mask=emask)
        running += h
    # Block b belongs to the first expert whose run ends after b·B: the number of runs
    # ending at or before it (empty runs end where they start and are counted too).
    npp = tl.sum(padded, axis=0)
    end = tl.where(emask, end, 2147483647)
    for b0 in range(0, n_blocks, BLOCK_B):
        bl = b0 + tl.arange(0, BLOCK_B)
        pos = bl * B
        owner = tl.sum((end[None, :] <= pos[:, None]).to(tl.int32), axis=1)
        tl.store(expert_ids_ptr + bl, tl.where(pos < npp, owner, -1), mask=bl < n_blocks)


@triton.jit
def _scatter_kernel(ids_ptr, off_ptr, sorted_ptr, N, E, BLOCK_N: tl.constexpr):
    c = tl.program_id(0)
    r = tl.arange(0, BLOCK_N)
    offs = c * BLOCK_N + r
    ok = offs < N
    ids = tl.load(ids_ptr + offs, mask=ok, other=-1)
    # Rank of each pair among the earlier pairs of this chunk with the same expert.
    earlier = (ids[None, :] == ids[:, None]) & (r[None, :] < r[:, None])
    rank = tl.sum(earlier.to(tl.int32), axis=1)
    base = tl.load(off_ptr + c * E + ids, mask=ok, other=0)
    tl.store(sorted_ptr + base + rank, offs, mask=ok)


def padded_size(n_pairs: int, experts: int, block: int) -> int:
    """Length of sorted_ids: the worst case of every expert's run padded by block − 1."""
    return n_pairs + experts * (block - 1)


def moe_align(topk_ids: torch.Tensor, experts: int, block: int) -> tuple:
    """(sorted_ids, expert_ids, num_post_padded, counts) for ``topk_ids`` [T, k] (int32)."""
    if topk_ids.dim() != 2 or topk_ids.dtype != torch.int32:
        raise ValueError(f"topk_ids must be int32 [tokens, topk], got {topk_ids.dtype} {tuple(topk_ids.shape)}")
    if block <= 0 or block & (block - 1):
        raise ValueError(f"block size {block} must be a power of two")
    if topk_ids.device.type == "cpu" and not interpreting():
        raise ValueError("CPU tensors need the Triton interpreter (TRITON_INTERPRET=1 before importing triton)")
    ids = topk_ids.contiguous().view(-1)
    n = ids.numel()
    dev = ids.device
    size = padded_size(n, experts, block)
    n_blocks = triton.cdiv(size, block)
    sorted_ids = torch.full((size,), n, dtype=torch.int32, device=dev)
    expert_ids = torch.empty((n_blocks,), dtype=torch.int32, device=dev)
    npp = torch.empty((1,), dtype=torch.int32, device=dev)
    counts = torch.empty((experts,), dtype=torch.int32, device=dev)
    block_n = 128 if n > 64 else 64
    n_chunks = max(1, triton.cdiv(n, block_n))
    hist = torch.empty((n_chunks, experts), dtype=torch.int32, device=dev)
    offs = torch.empty_like(hist)
    e_p = triton.next_power_of_2(experts)
    _count_kernel[(n_chunks,)](ids, hist, n, experts, E_P=e_p, BLOCK_N=block_n)
    _offsets_kernel[(1,)](hist, offs, counts, npp, expert_ids, n_chunks, n_blocks, experts,
                          E_P=e_p, B=block, BLOCK_B=64)
    _scatter_kernel[(n_chunks,)](ids, offs, sorted_ids, n, experts, BLOCK_N=block_n)
    return sorted_ids, expert_ids, npp, counts
