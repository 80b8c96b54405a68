"""Inputs and checks shared by the KV-cache op definitions (kv_cache, rope_kv_append,
kv_quant, kv_swap). Defines no ops.

Index structures (slot mappings, block tables, block pairs) are drawn on the host from a
CPU generator seeded by the runner's generator, so they are deterministic whatever the
device, then moved to it. Cache contents are drawn on the device.
"""

from __future__ import annotations

import math

import torch

from kernelmark import dtypes
from kernelmark.kernels import paged
from kernelmark.ops.base import positive_ints, shape_str


def host_generator(gen: torch.Generator) -> torch.Generator:
    """A CPU generator seeded from ``gen`` (which may live on a GPU)."""
    seed = int(torch.randint(0, 2 ** 62, (1,), generator=gen, device=gen.device))
    return torch.Generator().manual_seed(seed)


def random_tensor(shape, dtype: str, device, gen: torch.Generator) -> torch.Tensor:
    """Unit-variance normal values in ``dtype`` (never zeros: unwritten outputs show)."""
    return torch.randn(shape, device=device, generator=gen).to(dtypes.torch_dtype(dtype))


def random_cache(shape: dict, dtype: str, device, gen: torch.Generator, layout: str = "NHD") -> tuple:
    """A (k_cache, v_cache) pair of ``shape``'s num_blocks/page_size/kv_heads/head_dim."""
    dims = paged.cache_shape(layout, shape["num_blocks"], shape["page_size"], shape["kv_heads"], shape["head_dim"])
    return random_tensor(dims, dtype, device, gen), random_tensor(dims, dtype, device, gen)


def cache_block_bytes(shape: dict, dtype: str) -> int:
    """Bytes of one block of one cache tensor (K or V)."""
    return shape["page_size"] * shape["kv_heads"] * shape["head_dim"] * dtypes.itemsize(dtype)


def validate_cache_shape(shape: dict, names=("kv_heads", "head_dim", "page_size", "num_blocks")) -> None:
    positive_ints(shape, names)
    if "layout" in shape and shape["layout"] not in paged.LAYOUTS:
        raise ValueError(f"shape {shape_str(shape)}: layout must be one of {', '.join(paged.LAYOUTS)}")


# ---------------------------------------------------------------------------------------
# A batch of new tokens for a cache write (kv_append, rope_kv_append)

# Llama 3's max_position_embeddings: sequences' positions are drawn below it.
MAX_POSITION = 8192


def pages_upper_bound(shape: dict) -> int:
    """Most pages a batch of ``shape`` can touch (each sequence may start mid-page)."""
    tokens, per_seq, ps = shape["tokens"], shape["seq_tokens"], shape["page_size"]
    n_seq = -(-tokens // per_seq)
    return n_seq * -(-(ps - 1 + min(per_seq, tokens)) // ps)


def validate_append_shape(shape: dict, dtype: str) -> None:
    validate_cache_shape(shape)
    positive_ints(shape, ("tokens", "seq_tokens"))
    pad = shape.get("padding", 0)
    if not isinstance(pad, int) or isinstance(pad, bool) or not 0 <= pad <= shape["tokens"]:
        raise ValueError(f"shape {shape_str(shape)}: padding must be an integer in [0, tokens]")
    need = pages_upper_bound(shape)
    if need > shape["num_blocks"]:
        raise ValueError(f"shape {shape_str(shape)}: the batch may need {need} pages, "
                         f"more than num_blocks = {shape['num_blocks']}")


def append_batch(shape: dict, gen: torch.Generator) -> dict:
    """Where ``tokens`` new tokens go: sequences of ``seq_tokens`` new tokens each (1 is a
    decode batch, = tokens one prefill chunk), each continuing a context of random length
    (so it starts mid-page) in distinct, shuffled blocks; ``padding`` random tokens get
    slot -1. CPU tensors:

    * ``slot_mapping`` [tokens] int64; ``positions`` [tokens] int64 (absolute, for RoPE);
    * FlashInfer's description of the same batch: ``batch_indices``, ``page_positions``
      (position counted from the sequence's first written page), ``kv_indices``,
      ``kv_indptr``, ``kv_last_page_len`` (int32).
    """
    g = host_generator(gen)
    tokens, per_seq, ps = shape["tokens"], shape["seq_tokens"], shape["page_size"]
    n_seq = -(-tokens // per_seq)
    lens = torch.full((n_seq,), per_seq, dtype=torch.int64)
    lens[-1] = tokens - per_seq * (n_seq - 1)
    max_start = max(0, MAX_POSITION - per_seq)
    start = torch.randint(0, max_start + 1, (n_seq,), generator=g)
    first_offset = start % ps
    pages = (first_offset + lens + ps - 1) // ps
    indptr = torch.zeros(n_seq + 1, dtype=torch.int64)
    indptr[1:] = pages.cumsum(0)
    blocks = torch.randperm(shape["num_blocks"], generator=g)[: int(indptr[-1])]

    tok = torch.arange(tokens)
    seq = tok // per_seq
    p = first_offset[seq] + tok % per_seq
    slots = blocks[indptr[seq] + p // ps] * ps + p % ps
    pad = shape.get("padding", 0)
    if pad:
        slots[torch.randperm(tokens, generator=g)[:pad]] = -1
    return {
        "slot_mapping": slots,
        "positions": start[seq] + tok % per_seq,
        "batch_indices": seq.to(torch.int32),
        "page_positions": p.to(torch.int32),
        "kv_indices": blocks.to(torch.int32),
        "kv_indptr": indptr.to(torch.int32),
        "kv_last_page_len": ((first_offset + lens - 1) % ps + 1).to(torch.int32),
    }


def write_rows(k_cache, v_cache, key, value, slot_mapping, page_size: int, layout: str) -> None:
    """Plain-torch cache write of the non-padding tokens (boolean indexing: a sync)."""
    keep = slot_mapping >= 0
    slots = slot_mapping[keep]
    b, o = slots // page_size, slots % page_size
    kv = (k_cache, v_cache) if layout == "NHD" else (k_cache.transpose(1, 2), v_cache.transpose(1, 2))
    kv[0][b, o] = key[keep]
    kv[1][b, o] = value[keep]


# ---------------------------------------------------------------------------------------
# Checks

def ulp(ref: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Spacing of ``dtype``'s values at |ref| (fp64): 2**(exponent - mantissa bits), the
    subnormal spacing below the smallest normal."""
    fi = torch.finfo(dtype)
    mag = ref.abs().clamp_min(fi.tiny)
    return fi.eps * torch.exp2(torch.floor(torch.log2(mag)))


def within_ulps(out: torch.Tensor, ref: torch.Tensor, name: str, ulps: float = 1.0,
                atol: float = 0.0) -> tuple:
    """(ok, detail, rel_l2, max_abs, max_rel): every element of ``out`` within ``ulps``
    units in the last place (of ``ref``'s dtype, at ``ref``) plus ``atol``. One ulp is
    what a single rounding of the same fp32 value can differ by between two rounding
    modes (the Triton interpreter truncates fp32 -> bf16; GPUs round to nearest even).
    Unlike a relative-L2 test it cannot be diluted by a large cache of untouched values.

    Compared on ``out``'s device; only the elements that differ are widened to fp64 on
    the host, so a check of a 512 MiB cache costs no more host memory than its few
    written rows."""
    inf = float("inf")
    if tuple(out.shape) != tuple(ref.shape) or out.dtype != ref.dtype:
        return False, (f"{name}: got {out.dtype} {tuple(out.shape)}, "
                       f"reference {ref.dtype} {tuple(ref.shape)}"), inf, inf, inf
    o, r = out.detach(), ref.detach().to(out.device)
    finite = torch.isfinite(o)
    if not bool(finite.all()):
        return False, f"{name} has {int((~finite).sum())} NaN/inf values", math.nan, math.nan, math.nan
    differ = o != r
    od, rd = o[differ].double().cpu(), r[differ].double().cpu()
    diff = (od - rd).abs()
    norm = float(torch.linalg.vector_norm(r, dtype=torch.float64))
    rel_l2 = float(diff.norm()) / norm if norm > 0 else float(diff.norm())
    max_abs = float(diff.max()) if diff.numel() else 0.0
    max_rel = float((diff / (rd.abs() + 1e-6)).max()) if diff.numel() else 0.0
    bad = diff > ulps * ulp(rd, ref.dtype) + atol
    if bool(bad.any()):
        k = int(bad.nonzero()[0, 0])
        where = [int(v) for v in differ.nonzero()[k]]
        return False, (f"{name}: {int(bad.sum())} of {o.numel()} elements are more than {ulps:g} ulp"
                       f"{f' + {atol:g}' if atol else ''} off (at {where}: {float(od[k]):.6g} vs "
                       f"{float(rd[k]):.6g})"), rel_l2, max_abs, max_rel
    return True, "", rel_l2, max_abs, max_rel


def bitwise_equal(out: torch.Tensor, ref: torch.Tensor, name: str) -> str:
    """'' if ``out`` is bit for bit ``ref`` (any dtype, fp8 too), else why not. Compared
    on ``out``'s device."""
    if tuple(out.shape) != tuple(ref.shape) or out.dtype != ref.dtype:
        return f"{name}: got {out.dtype} {tuple(out.shape)}, reference {ref.dtype} {tuple(ref.shape)}"
    o = out.detach().contiguous().view(-1).view(torch.uint8)
    r = ref.detach().to(out.device).contiguous().view(-1).view(torch.uint8)
    if torch.equal(o, r):
        return ""
    n = int((o != r).sum())
    return f"{name}: {n} of {o.numel()} bytes differ from the reference"
