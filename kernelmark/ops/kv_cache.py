"""Paged KV-cache copies: kv_append (new tokens into the cache through a slot mapping),
kv_gather (sequences' pages out to contiguous varlen K/V) and kv_copy_blocks
(copy-on-write block copies). All exact copies: FLOPs 0, checked bit for bit; the cache
layout is kernels/paged.py's.

Bytes, with s the dtype's size, H kv_heads, D head_dim (each formula's terms: what must
be read, what must be written):

* kv_append: ``4·(T−P)·H·D·s + 8·T`` — the K and V rows of the T−P real tokens read and
  written (P = padding tokens, whose slot is −1, need neither), the int64 slot mapping read.
* kv_gather: ``4·N·H·D·s + 4·Σ⌈len/page_size⌉ + 4·(B+1)`` — N = Σ len tokens of K and V
  read from the pages and written out, the block-table entries used and cu_seqlens (int32).
* kv_copy_blocks: ``4·pairs·page_size·H·D·s + 16·pairs`` — each pair's K and V block read
  and written, the int64 (src, dst) pair read. The layout does not change a block's size,
  so this op has none.
"""

from __future__ import annotations

import importlib.util

import torch

from kernelmark import dtypes
from kernelmark.kernels import paged
from kernelmark.ops import kv_inputs as kvi
from kernelmark.ops.base import Backend, Op, positive_ints, shape_str

COPY_DTYPES = ("fp32", "fp16", "bf16")
GPU = ("cuda", "rocm")


def vllm_ops(name: str):
    """vLLM's compiled op ``name``, or None; importing is left to the first call."""
    import vllm._custom_ops as ops
    return getattr(ops, name, None)


def vllm_available(name: str):
    def available():
        if importlib.util.find_spec("vllm") is None:
            return "vllm is not installed"
        try:
            fn = vllm_ops(name)
        except Exception as e:  # a broken install: say so rather than fail the run
            return f"vllm._custom_ops does not import: {e}"
        return None if fn is not None else f"this vllm has no _custom_ops.{name}"
    return available


def _flashinfer_available():
    if importlib.util.find_spec("flashinfer") is None:
        return "flashinfer is not installed"
    return None


def cache_rows(blocks: torch.Tensor, offsets: torch.Tensor, kv_heads: int, head_dim: int,
               page_size: int, layout: str) -> tuple:
    """(row indices, view shape) that make a contiguous cache's slots rows, for
    index_select / index_copy_ (advanced indexing is ~50x slower on a CPU). NHD: rows of
    [num_blocks·page_size, H, D], one per token. HND: rows of [num_blocks·H·page_size, D],
    one per (token, head), heads fastest."""
    if layout == "NHD":
        return blocks * page_size + offsets, (-1, kv_heads, head_dim)
    heads = torch.arange(kv_heads, device=blocks.device)
    rows = (blocks[:, None] * kv_heads + heads[None, :]) * page_size + offsets[:, None]
    return rows.view(-1), (-1, head_dim)


# ---------------------------------------------------------------------------------------
# kv_append

def append_make_inputs(shape, dtype, device, gen):
    k_cache, v_cache = kvi.random_cache(shape, dtype, device, gen, shape["layout"])
    t, h, d = shape["tokens"], shape["kv_heads"], shape["head_dim"]
    batch = {k: v.to(device) for k, v in kvi.append_batch(shape, gen).items()}
    return {
        "key": kvi.random_tensor((t, h, d), dtype, device, gen),
        "value": kvi.random_tensor((t, h, d), dtype, device, gen),
        "k_cache": k_cache, "v_cache": v_cache,
        "layout": shape["layout"], "page_size": shape["page_size"], "padding": shape["padding"],
        "unit_scale": torch.ones((), dtype=torch.float32, device=device),  # vLLM's k/v scale
        **batch,
    }


def append_reference(x):
    k, v = x["k_cache"].clone(), x["v_cache"].clone()
    kvi.write_rows(k, v, x["key"], x["value"], x["slot_mapping"], x["page_size"], x["layout"])
    return k, v


def append_nbytes(shape, dtype):
    real = shape["tokens"] - shape["padding"]
    return 4 * real * shape["kv_heads"] * shape["head_dim"] * dtypes.itemsize(dtype) + 8 * shape["tokens"]


def _append_triton(x):
    from kernelmark.kernels.kv_append import kv_append
    kv_append(x["key"], x["value"], x["k_cache"], x["v_cache"], x["slot_mapping"], x["layout"],
              check_indices=False)
    return x["k_cache"], x["v_cache"]


def _append_torch(x):
    slots, key, value = x["slot_mapping"], x["key"], x["value"]
    if x["padding"]:
        # Drop padding tokens: a boolean mask, hence a device sync, only when there are any.
        keep = slots >= 0
        slots, key, value = slots[keep], key[keep], value[keep]
    ps = x["page_size"]
    _, h, d = key.shape
    rows, view = cache_rows(slots // ps, slots % ps, h, d, ps, x["layout"])
    x["k_cache"].view(view).index_copy_(0, rows, key.reshape(view))
    x["v_cache"].view(view).index_copy_(0, rows, value.reshape(view))
    return x["k_cache"], x["v_cache"]


def _append_vllm(x):
    vllm_ops("reshape_and_cache_flash")(x["key"], x["value"], x["k_cache"], x["v_cache"], x["slot_mapping"],
                                        "auto", x["unit_scale"], x["unit_scale"])
    return x["k_cache"], x["v_cache"]


def _append_vllm_supports(shape, dtype, device_kind, capability):
    if shape["layout"] != "NHD":
        return "vllm's reshape_and_cache_flash is measured in the NHD layout only"
    return None


def _append_flashinfer(x):
    import flashinfer
    flashinfer.append_paged_kv_cache(
        x["key"], x["value"], x["batch_indices"], x["page_positions"], (x["k_cache"], x["v_cache"]),
        x["kv_indices"], x["kv_indptr"], x["kv_last_page_len"], kv_layout=x["layout"])
    return x["k_cache"], x["v_cache"]


def _append_flashinfer_supports(shape, dtype, device_kind, capability):
    if shape["padding"]:
        return "flashinfer's append_paged_kv_cache has no padding tokens"
    if dtype == "fp32":
        return "flashinfer's append_paged_kv_cache is built for fp16/bf16 caches"
    return None


# ---------------------------------------------------------------------------------------
# kv_gather

def gather_lengths(shape) -> list:
    """Sequence lengths: ``seq_len`` for the first, then evenly fewer down to about
    seq_len/2 for the last (varlen, deterministic from the shape)."""
    b, n = shape["batch"], shape["seq_len"]
    return [max(1, n - (i * n) // (2 * b)) for i in range(b)]


def gather_validate(shape, dtype):
    kvi.validate_cache_shape(shape)
    positive_ints(shape, ("batch", "seq_len"))
    need = sum(paged.blocks_needed(n, shape["page_size"]) for n in gather_lengths(shape))
    if need > shape["num_blocks"]:
        raise ValueError(f"shape {shape_str(shape)}: the sequences need {need} pages, "
                         f"more than num_blocks = {shape['num_blocks']}")


def gather_make_inputs(shape, dtype, device, gen):
    k_cache, v_cache = kvi.random_cache(shape, dtype, device, gen, shape["layout"])
    lens = gather_lengths(shape)
    table = paged.random_block_table(lens, shape["page_size"], shape["num_blocks"], kvi.host_generator(gen))
    cu = torch.zeros(len(lens) + 1, dtype=torch.int32)
    cu[1:] = torch.tensor(lens).cumsum(0)
    total, h, d = sum(lens), shape["kv_heads"], shape["head_dim"]
    return {
        "k_cache": k_cache, "v_cache": v_cache, "layout": shape["layout"], "page_size": shape["page_size"],
        "block_table": table.to(device), "cu_seqlens": cu.to(device), "lens": lens, "max_seq_len": max(lens),
        # Outputs, preallocated (not timed) and random so that a row left unwritten shows.
        "out_k": kvi.random_tensor((total, h, d), dtype, device, gen),
        "out_v": kvi.random_tensor((total, h, d), dtype, device, gen),
    }


def gather_reference(x):
    table = x["block_table"]
    ks = [paged.gather_pages(x["k_cache"], table[s], n, x["layout"]) for s, n in enumerate(x["lens"])]
    vs = [paged.gather_pages(x["v_cache"], table[s], n, x["layout"]) for s, n in enumerate(x["lens"])]
    return torch.cat(ks), torch.cat(vs)


def gather_nbytes(shape, dtype):
    lens = gather_lengths(shape)
    rows = sum(lens) * shape["kv_heads"] * shape["head_dim"] * dtypes.itemsize(dtype)
    pages = sum(paged.blocks_needed(n, shape["page_size"]) for n in lens)
    return 4 * rows + 4 * pages + 4 * (shape["batch"] + 1)


def _gather_triton(x):
    from kernelmark.kernels.kv_gather import kv_gather
    return kv_gather(x["k_cache"], x["v_cache"], x["block_table"], x["cu_seqlens"], x["max_seq_len"],
                     x["layout"], out=(x["out_k"], x["out_v"]), check_indices=False)


def _gather_torch(x):
    # Token -> (sequence, index in it) on the device, sync-free: a token's sequence is how
    # many sequences end at or before it (searchsorted; repeat_interleave is far slower on
    # a CPU).
    cu, ps, out_k = x["cu_seqlens"].long(), x["page_size"], x["out_k"]
    tok = torch.arange(out_k.shape[0], device=cu.device)
    seq = torch.searchsorted(cu[1:], tok, right=True)
    t = tok - cu[seq]
    _, h, d = out_k.shape
    rows, view = cache_rows(x["block_table"].long()[seq, t // ps], t % ps, h, d, ps, x["layout"])
    torch.index_select(x["k_cache"].view(view), 0, rows, out=out_k.view(view))
    torch.index_select(x["v_cache"].view(view), 0, rows, out=x["out_v"].view(view))
    return out_k, x["out_v"]


# ---------------------------------------------------------------------------------------
# kv_copy_blocks

def copy_validate(shape, dtype):
    kvi.validate_cache_shape(shape)
    positive_ints(shape, ("pairs",))
    if 2 * shape["pairs"] > shape["num_blocks"]:
        raise ValueError(f"shape {shape_str(shape)}: {shape['pairs']} pairs need 2·pairs distinct blocks, "
                         f"more than num_blocks = {shape['num_blocks']}")


def copy_make_inputs(shape, dtype, device, gen):
    k_cache, v_cache = kvi.random_cache(shape, dtype, device, gen)
    ids = torch.randperm(shape["num_blocks"], generator=kvi.host_generator(gen))[: 2 * shape["pairs"]]
    mapping = ids.view(2, -1).t().contiguous()        # distinct sources and destinations
    return {"k_cache": k_cache, "v_cache": v_cache, "block_mapping": mapping.to(device)}


def copy_reference(x):
    k, v = x["k_cache"].clone(), x["v_cache"].clone()
    src, dst = x["block_mapping"][:, 0], x["block_mapping"][:, 1]
    k[dst] = x["k_cache"][src]
    v[dst] = x["v_cache"][src]
    return k, v


def copy_nbytes(shape, dtype):
    return 4 * shape["pairs"] * kvi.cache_block_bytes(shape, dtype) + 16 * shape["pairs"]


def _copy_triton(x):
    from kernelmark.kernels.kv_copy_blocks import kv_copy_blocks
    kv_copy_blocks(x["k_cache"], x["v_cache"], x["block_mapping"], check_indices=False)
    return x["k_cache"], x["v_cache"]


def _copy_torch(x):
    src, dst = x["block_mapping"][:, 0], x["block_mapping"][:, 1]
    for c in (x["k_cache"], x["v_cache"]):
        c.index_copy_(0, dst, c.index_select(0, src))
    return x["k_cache"], x["v_cache"]


def _copy_vllm(x):
    vllm_ops("copy_blocks")([x["k_cache"]], [x["v_cache"]], x["block_mapping"])
    return x["k_cache"], x["v_cache"]


_CACHE_PARAMS = ("kv_heads", "head_dim", "page_size", "num_blocks")

OPS = [
    Op(
        name="kv_append",
        description="new tokens' K and V written into the paged cache through a slot mapping "
                    "(reshape_and_cache_flash)",
        params=("tokens", "seq_tokens", "kv_heads", "head_dim", "page_size", "num_blocks", "layout", "padding"),
        defaults={"seq_tokens": 1, "layout": "NHD", "padding": 0},
        dtypes=COPY_DTYPES,
        make_inputs=append_make_inputs,
        reference=append_reference,
        flops=lambda shape: 0,
        nbytes=append_nbytes,
        validate=kvi.validate_append_shape,
        exact=True,
        backends=(
            Backend("triton", _append_triton, triton=True,
                    description="kernelmark's Triton cache write, rows of (token, head) (kernels/kv_append.py)"),
            Backend("torch", _append_torch,
                    description="index_copy_ of token rows into the cache (padding tokens dropped "
                                "with a boolean mask: a device sync)"),
            Backend("vllm", _append_vllm, devices=GPU, available=vllm_available("reshape_and_cache_flash"),
                    supports=_append_vllm_supports, description="vllm._custom_ops.reshape_and_cache_flash"),
            Backend("flashinfer", _append_flashinfer, devices=GPU, available=_flashinfer_available,
                    supports=_append_flashinfer_supports, description="flashinfer.append_paged_kv_cache"),
        ),
    ),
    Op(
        name="kv_gather",
        description="sequences' cached pages copied out to contiguous varlen-packed K and V",
        params=("batch", "seq_len", "kv_heads", "head_dim", "page_size", "num_blocks", "layout"),
        defaults={"layout": "NHD"},
        dtypes=COPY_DTYPES,
        make_inputs=gather_make_inputs,
        reference=gather_reference,
        flops=lambda shape: 0,
        nbytes=gather_nbytes,
        validate=gather_validate,
        exact=True,
        backends=(
            Backend("triton", _gather_triton, triton=True,
                    description="kernelmark's Triton paged gather (kernels/kv_gather.py)"),
            Backend("torch", _gather_torch,
                    description="per-token cache rows built on the device (searchsorted), "
                                "then index_select into the outputs"),
        ),
    ),
    Op(
        name="kv_copy_blocks",
        description="copy-on-write copies of (src, dst) cache blocks, K and V",
        params=("pairs",) + _CACHE_PARAMS,
        dtypes=COPY_DTYPES,
        make_inputs=copy_make_inputs,
        reference=copy_reference,
        flops=lambda shape: 0,
        nbytes=copy_nbytes,
        validate=copy_validate,
        exact=True,
        backends=(
            Backend("triton", _copy_triton, triton=True,
                    description="kernelmark's Triton block copy (kernels/kv_copy_blocks.py)"),
            Backend("torch", _copy_torch, description="index_select then index_copy_, per cache tensor"),
            Backend("vllm", _copy_vllm, devices=GPU, available=vllm_available("copy_blocks"),
                    description="vllm._custom_ops.copy_blocks (one layer)"),
        ),
    ),
]
