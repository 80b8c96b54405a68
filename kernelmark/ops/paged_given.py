"""Given inputs of paged_decode_attention (a FlashInfer-Trace workload's safetensors blobs):
q, the K/V caches, and the page table in FlashInfer's CSR form (kv_indptr [batch + 1],
kv_indices), which becomes our block table.

The case's contexts come from its shape (FLOPs and bytes are functions of it), so a given
table must hold exactly the pages those contexts need, sequence by sequence; the mapper only
feeds a table whose contexts agree with the shape. A table reaching past the op's own
random cache repeats that cache's pages up to the highest index: deterministic, so the
reference and every backend read the same cache.
"""

from __future__ import annotations

import math

import torch

from kernelmark.kernels import paged
from kernelmark.ops.attention_libs import _plan_flashinfer
from kernelmark.ops.base import given_like


def _cache(x, name: str, t: torch.Tensor) -> torch.Tensor:
    ours = x[name]
    if tuple(t.shape[1:]) != tuple(ours.shape[1:]):
        raise ValueError(f"given {name} is {list(t.shape)}; the op's pages are {list(ours.shape[1:])}")
    return t.to(device=ours.device, dtype=ours.dtype, copy=True).contiguous()


def _table(x, indptr: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    lens, ps = x["context_lens_host"], x["page_size"]
    b = len(lens)
    indptr, indices = indptr.to("cpu", torch.int64), indices.to("cpu", torch.int64)
    if tuple(indptr.shape) != (b + 1,) or int(indptr[0]) != 0 or int(indptr[-1]) > indices.numel():
        raise ValueError(f"given kv_indptr {indptr.tolist()[:8]}... is not [0, ..., <= {indices.numel()}] "
                         f"of {b + 1} entries")
    pages = (indptr[1:] - indptr[:-1]).tolist()
    want = [paged.blocks_needed(n, ps) for n in lens]
    if pages != want:
        raise ValueError(f"given kv_indptr gives {pages} pages a sequence; the case's contexts need {want}")
    if indices.numel() and int(indices.min()) < 0:
        raise ValueError("given kv_indices has a negative page index")
    table = torch.full((b, max(max(want), 1)), -1, dtype=torch.int32)
    for i in range(b):
        table[i, :pages[i]] = indices[int(indptr[i]):int(indptr[i + 1])].to(torch.int32)
    return table


def take_decode_given(x, given: dict):
    if "q" in given:
        x["q"] = given_like(x["q"], given["q"], "q")
    for name in ("k_cache", "v_cache"):
        if name in given:
            x[name] = _cache(x, name, given[name])
    if ("kv_indptr" in given) != ("kv_indices" in given):
        raise ValueError("kv_indptr and kv_indices are given together or not at all")
    if "kv_indptr" in given:
        table = _table(x, given["kv_indptr"], given["kv_indices"])
        top = int(table.max()) + 1
        for name in ("k_cache", "v_cache"):
            n = x[name].shape[0]
            if n < top:
                if name in given:
                    raise ValueError(f"given kv_indices reach page {top - 1}; the given {name} has {n} pages")
                x[name] = torch.cat([x[name]] * math.ceil(top / n))[:top].contiguous()
        x["block_table"] = table.to(x["q"].device)
    if x["q"].device.type == "cuda":
        _plan_flashinfer(x)        # FlashInfer's plan reads the table: made again for the given one
    return x
