"""Rotary position embedding applied in place to q [tokens, q_heads, head_dim] and
k [tokens, kv_heads, head_dim] from a cos/sin cache indexed by positions (vLLM's and
FlashInfer's ``cos_sin_cache`` layout: fp32 [max_position, rotary_dim], cos of the
rotary_dim/2 frequencies in the first half, sin in the second).

Only the first ``rotary_dim`` elements of a head rotate (partial rotary); the rest are
neither read nor written. Pairs, with c, s the cos and sin of pair i:

* NeoX (rotate-half, ``neox=True``): elements (i, i + rotary_dim/2);
* GPT-J (interleaved, ``neox=False``): elements (2i, 2i + 1);

    out_a = a·c − b·s,   out_b = b·c + a·s,

in fp32, rounded once. Frequency scaling (Llama 3.1, YaRN) lives in the cache's values
and does not concern the kernel.

Tiling: grid (tokens, head blocks of q then of k). A program loads its token's position
and cos/sin row once and rotates ``BLOCK_H`` heads with it: a [BLOCK_H, rotary_dim] tile
read and written in place, the cos/sin row reused across heads (and across the q and k
programs of the token, from L1/L2). In the interleaved layout the tile is loaded
contiguously and split into its even and odd elements in registers (reshape + split), so
loads stay full-width. Autotuning picks BLOCK_H and warps per shape; it writes q and k,
so the tuner restores them after each trial.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernelmark.kernels import tl_utils  # noqa: F401  (the triton 3.6 interpreter work-around)

from kernelmark.kernels import interpreting
from kernelmark.kernels.autotune_prune import autotune
from kernelmark.kernels.kv_validate import next_pow2

DTYPES = (torch.float32, torch.float16, torch.bfloat16)
MAX_HEAD_DIM = 1024


def _configs():
    if interpreting():
        # BLOCK_H = 2: a head tail for odd head counts.
        return [triton.Config({"BLOCK_H": 2}, num_warps=4)]
    return [triton.Config({"BLOCK_H": h}, num_warps=w) for h in (1, 2, 4, 8, 16, 32) for w in (1, 2, 4, 8)]


def prune(configs, named_args, **kwargs):
    """Keep tiles of at most 8192 elements that give every thread a 16-byte vector and have
    no more heads than the larger of q_heads, kv_heads (rounded up to a power of two)."""
    args = {**named_args, **kwargs}
    rot, heads = args["ROT_BLOCK"], max(1, next_pow2(max(args["HQ"], args["HK"])))
    itemsize = args["q_ptr"].element_size()
    keep = [c for c in configs
            if c.kwargs["BLOCK_H"] <= heads and c.kwargs["BLOCK_H"] * rot <= 8192
            and c.kwargs["BLOCK_H"] * rot * itemsize >= 16 * 32 * c.num_warps]
    return keep or [min(configs, key=lambda c: (c.kwargs["BLOCK_H"], c.num_warps))]


@triton.jit
def _rotate_heads(ptr, t, h0, H, stride_t, stride_h, cos, sin,
                  HALF: tl.constexpr, BLOCK_H: tl.constexpr, HALF_BLOCK: tl.constexpr, NEOX: tl.constexpr):
    h = h0 + tl.arange(0, BLOCK_H)
    base = ptr + t * stride_t + (h.to(tl.int64) * stride_h)[:, None]
    head_ok = (h < H)[:, None]
    if NEOX:
        d = tl.arange(0, HALF_BLOCK)[None, :]
        mask = head_ok & (d < HALF)
        a = tl.load(base + d, mask=mask, other=0.0).to(tl.float32)
        b = tl.load(base + HALF + d, mask=mask, other=0.0).to(tl.float32)
        tl.store(base + d, (a * cos - b * sin).to(ptr.dtype.element_ty), mask=mask)
        tl.store(base + HALF + d, (b * cos + a * sin).to(ptr.dtype.element_ty), mask=mask)
    else:
        e = tl.arange(0, 2 * HALF_BLOCK)[None, :]
        mask = head_ok & (e < 2 * HALF)
        x = tl.load(base + e, mask=mask, other=0.0).to(tl.float32)
        a, b = tl.split(tl.reshape(x, (BLOCK_H, HALF_BLOCK, 2)))
        out = tl.join(a * cos - b * sin, b * cos + a * sin)
        tl.store(base + e, tl.reshape(out, (BLOCK_H, 2 * HALF_BLOCK)).to(ptr.dtype.element_ty), mask=mask)


@triton.jit
def _rope_kernel(q_ptr, k_ptr, pos_ptr, cache_ptr, T, HQ, HK,
                 stride_qt, stride_qh, stride_kt, stride_kh, stride_cache,
                 HALF: tl.constexpr, HALF_BLOCK: tl.constexpr, ROT_BLOCK: tl.constexpr, NEOX: tl.constexpr,
                 BLOCK_H: tl.constexpr):
    # T (the token count) is only the tuner's key: the grid has one program row per token.
    t = tl.program_id(0).to(tl.int64)
    hb = tl.program_id(1)
    pos = tl.load(pos_ptr + t).to(tl.int64)
    d = tl.arange(0, HALF_BLOCK)
    row = cache_ptr + pos * stride_cache
    cos = tl.load(row + d, mask=d < HALF, other=1.0)[None, :]
    sin = tl.load(row + HALF + d, mask=d < HALF, other=0.0)[None, :]
    q_blocks = tl.cdiv(HQ, BLOCK_H)
    if hb < q_blocks:
        _rotate_heads(q_ptr, t, hb * BLOCK_H, HQ, stride_qt, stride_qh, cos, sin, HALF, BLOCK_H, HALF_BLOCK, NEOX)
    else:
        _rotate_heads(k_ptr, t, (hb - q_blocks) * BLOCK_H, HK, stride_kt, stride_kh, cos, sin,
                      HALF, BLOCK_H, HALF_BLOCK, NEOX)


_rope = autotune(configs=_configs(), key=["T", "HQ", "HK", "ROT_BLOCK", "NEOX"], early_config_prune=prune,
                 restore_value=["q_ptr", "k_ptr"])(_rope_kernel)


def _check_heads(name: str, t: torch.Tensor, tokens, head_dim, dtype, device) -> None:
    if t.dim() != 3:
        raise ValueError(f"{name} must be 3-D [tokens, heads, head_dim], got shape {tuple(t.shape)}")
    if tokens is not None and t.shape[0] != tokens:
        raise ValueError(f"{name} has {t.shape[0]} tokens, q has {tokens}")
    if head_dim is not None and t.shape[2] != head_dim:
        raise ValueError(f"{name} has head_dim {t.shape[2]}, q has {head_dim}")
    if t.dtype not in DTYPES:
        raise ValueError(f"{name} has dtype {t.dtype}; supported: float32, float16, bfloat16")
    if dtype is not None and t.dtype != dtype:
        raise ValueError(f"{name} is {t.dtype} but q is {dtype}")
    if device is not None and t.device != device:
        raise ValueError(f"{name} is on {t.device} but q on {device}")
    if t.numel() and t.stride(2) != 1:
        raise ValueError(f"{name}'s head_dim must be contiguous (stride 1), got strides {t.stride()}")


def check_cos_sin_cache(cos_sin_cache: torch.Tensor, positions: torch.Tensor, other: str,
                        device: torch.device, check_positions: bool) -> None:
    """The cos/sin table's dtype, device and strides, and (when asked: it reads the positions
    on the host, a device sync) that every position has a row in it. ``other`` names the
    tensor whose device it must share."""
    if cos_sin_cache.dtype != torch.float32:
        raise ValueError(f"cos_sin_cache must be float32, got {cos_sin_cache.dtype}")
    if cos_sin_cache.device != device:
        raise ValueError(f"cos_sin_cache is on {cos_sin_cache.device} but {other} on {device}")
    if cos_sin_cache.stride(1) != 1:
        raise ValueError(f"cos_sin_cache's last dimension must be contiguous, got strides {cos_sin_cache.stride()}")
    if check_positions and positions.numel():
        pos = positions.detach().to("cpu", torch.int64)
        bad = (pos < 0) | (pos >= cos_sin_cache.shape[0])
        if bool(bad.any()):
            i = int(bad.nonzero()[0, 0])
            raise ValueError(f"positions[{i}] = {int(pos[i])} is outside cos_sin_cache "
                             f"(max_position = {cos_sin_cache.shape[0]})")


def check_rope_args(q, k, positions, cos_sin_cache, check_positions: bool) -> int:
    """Validate a rope call before any launch; returns rotary_dim."""
    _check_heads("q", q, None, None, None, None)
    tokens, _, head_dim = q.shape
    _check_heads("k", k, tokens, head_dim, q.dtype, q.device)
    if head_dim < 2 or head_dim > MAX_HEAD_DIM:
        raise ValueError(f"head_dim {head_dim} is not supported: 2..{MAX_HEAD_DIM}")
    if positions.dim() != 1 or positions.shape[0] != tokens:
        raise ValueError(f"positions must be [tokens={tokens}], got shape {tuple(positions.shape)}")
    if positions.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"positions must be int32 or int64, got {positions.dtype}")
    if positions.device != q.device:
        raise ValueError(f"positions is on {positions.device} but q on {q.device}")
    if cos_sin_cache.dim() != 2:
        raise ValueError(f"cos_sin_cache must be 2-D [max_position, rotary_dim], got {tuple(cos_sin_cache.shape)}")
    rotary_dim = cos_sin_cache.shape[1]
    if rotary_dim < 2 or rotary_dim % 2 or rotary_dim > head_dim:
        raise ValueError(f"rotary_dim {rotary_dim} (cos_sin_cache's width) is not supported: "
                         f"an even number in 2..head_dim={head_dim}")
    check_cos_sin_cache(cos_sin_cache, positions, "q", q.device, check_positions)
    if q.device.type == "cpu" and not interpreting():
        raise ValueError("CPU tensors need the Triton interpreter (TRITON_INTERPRET=1 before importing triton)")
    return rotary_dim


def rope(q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor, cos_sin_cache: torch.Tensor,
         neox: bool = True, *, check_positions: bool = True) -> tuple:
    """Rotate the first rotary_dim (= cos_sin_cache.shape[1]) elements of every head of
    ``q`` and ``k`` by their token's position, in place; returns (q, k).

    ``check_positions``: also check every position is inside the cache (copies positions
    to the host: a device synchronisation)."""
    rotary_dim = check_rope_args(q, k, positions, cos_sin_cache, check_positions)
    tokens, hq, _ = q.shape
    hk = k.shape[1]
    if tokens == 0 or hq + hk == 0:
        return q, k
    half = rotary_dim // 2
    half_block = next_pow2(half)
    grid = lambda meta: (tokens, triton.cdiv(hq, meta["BLOCK_H"]) + triton.cdiv(hk, meta["BLOCK_H"]))  # noqa: E731
    _rope[grid](q, k, positions, cos_sin_cache, tokens, hq, hk,
                q.stride(0), q.stride(1), k.stride(0), k.stride(1), cos_sin_cache.stride(0),
                HALF=half, HALF_BLOCK=half_block, ROT_BLOCK=2 * half_block, NEOX=bool(neox))
    return q, k
