"""Host-side checks and launch sizing shared by the KV-cache launchers.

Every check runs before a launch, so a bad argument is a ValueError that names it,
never an out-of-bounds access on the device. Checks of tensor *contents* (slot ids,
block ids, positions) copy the tensor to the host, which synchronises the device: the
launchers run them only when asked (``check_indices=True``, their default). The
benchmark ops build valid indices by construction and pass ``check_indices=False`` so
the timed call stays asynchronous (and capturable in a CUDA graph).

This module imports no Triton, so the op modules and tests may use it freely.
"""

from __future__ import annotations

from functools import lru_cache

import torch

from kernelmark.kernels import paged

# Elements one program moves per tensor in the row-tiled copy kernels: 2048 bf16 values
# (4 KiB) keeps 16-byte vectors per thread with 4 warps and few registers.
TILE_ELEMENTS = 2048
# Smallest tile we shrink to when spreading few rows over many SMs (4 rows of 128).
MIN_TILE_ELEMENTS = 512


def next_pow2(n: int) -> int:
    return 1 if n <= 1 else 1 << (n - 1).bit_length()


@lru_cache(maxsize=None)
def _sm_count(device_type: str, index) -> int:
    if device_type == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_properties(index if index is not None else 0).multi_processor_count
    return 1


def sm_count(device: torch.device) -> int:
    """Streaming multiprocessors (CUs on ROCm) of ``device``; 1 on a CPU, where the
    interpreter runs programs one after another and fewer, larger programs are faster."""
    return _sm_count(device.type, device.index)


def rows_per_program(rows: int, block_d: int, device: torch.device) -> int:
    """Rows of ``block_d`` elements per program: a full tile, halved while the grid would
    leave SMs idle (fewer than two programs per SM), down to MIN_TILE_ELEMENTS. On a CPU
    (the interpreter) always the full tile: fewer programs run faster there."""
    r = max(1, TILE_ELEMENTS // block_d)
    floor = max(1, MIN_TILE_ELEMENTS // block_d)
    sms = sm_count(device)
    if sms <= 1:
        return r
    target = 2 * sms
    while r > floor and -(-rows // r) < target:
        r //= 2
    return r


def warps_for(tile_elements: int, itemsize: int) -> int:
    """1-4 warps so each thread moves at least one 16-byte vector of the tile."""
    return max(1, min(4, tile_elements * itemsize // (32 * 16)))


def check_layout(layout: str) -> None:
    if layout not in paged.LAYOUTS:
        raise ValueError(f"unknown KV-cache layout {layout!r}; known: {', '.join(paged.LAYOUTS)}")


def check_cache_pair(k_cache: torch.Tensor, v_cache: torch.Tensor, layout: str) -> tuple:
    """(num_blocks, page_size, kv_heads, head_dim) of a K/V cache pair that the kernels
    can address with one set of strides."""
    check_layout(layout)
    dims = paged.cache_dims(k_cache, layout)
    if tuple(v_cache.shape) != tuple(k_cache.shape):
        raise ValueError(f"v_cache has shape {tuple(v_cache.shape)} but k_cache {tuple(k_cache.shape)}")
    if v_cache.dtype != k_cache.dtype:
        raise ValueError(f"k_cache is {k_cache.dtype} but v_cache {v_cache.dtype}")
    if v_cache.device != k_cache.device:
        raise ValueError(f"k_cache is on {k_cache.device} but v_cache on {v_cache.device}")
    if k_cache.stride() != v_cache.stride():
        raise ValueError(f"k_cache strides {k_cache.stride()} differ from v_cache strides {v_cache.stride()}")
    if k_cache.stride(3) != 1:
        raise ValueError(f"the cache's head_dim must be contiguous (stride 1), got strides {k_cache.stride()}")
    return dims


def check_tokens(name: str, x: torch.Tensor, tokens, kv_heads: int, head_dim: int,
                 dtype: torch.dtype, device: torch.device) -> None:
    """``x`` must be [tokens, kv_heads, head_dim] of ``dtype`` on ``device`` with a
    contiguous last dimension (token and head strides are free: a slice of a fused QKV
    projection is fine). ``tokens=None`` accepts any count."""
    if x.dim() != 3:
        raise ValueError(f"{name} must be 3-D [tokens, kv_heads, head_dim], got shape {tuple(x.shape)}")
    want = (x.shape[0] if tokens is None else tokens, kv_heads, head_dim)
    if tuple(x.shape) != want:
        raise ValueError(f"{name} has shape {tuple(x.shape)}, expected {want} to match the cache")
    if x.dtype != dtype:
        raise ValueError(f"{name} is {x.dtype} but the cache is {dtype}")
    if x.device != device:
        raise ValueError(f"{name} is on {x.device} but the cache on {device}")
    if x.numel() and x.stride(2) != 1:
        raise ValueError(f"{name}'s head_dim must be contiguous (stride 1), got strides {x.stride()}")


def check_index_tensor(name: str, x: torch.Tensor, dim: int, device: torch.device) -> None:
    if x.dim() != dim:
        raise ValueError(f"{name} must be {dim}-D, got shape {tuple(x.shape)}")
    if x.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"{name} must be int32 or int64, got {x.dtype}")
    if x.device != device:
        raise ValueError(f"{name} is on {x.device} but the cache on {device}")


def check_unique_slots(slot_mapping: torch.Tensor) -> None:
    """Two tokens writing one slot would leave a result that depends on program order."""
    slots = slot_mapping.detach().to("cpu", torch.int64)
    real = slots[slots >= 0]
    uniq, counts = torch.unique(real, return_counts=True)
    if bool((counts > 1).any()):
        s = int(uniq[counts > 1][0])
        who = (slots == s).nonzero()[:, 0].tolist()
        raise ValueError(f"slot {s} is written by more than one token (tokens {who[:4]})")


def check_block_ids(name: str, ids: torch.Tensor, num_blocks: int) -> None:
    host = ids.detach().to("cpu", torch.int64)
    bad = (host < 0) | (host >= num_blocks)
    if bool(bad.any()):
        where = tuple(int(v) for v in bad.nonzero()[0])
        raise ValueError(f"{name}{list(where)} = {int(host[where])} is outside the cache "
                         f"(num_blocks = {num_blocks})")
