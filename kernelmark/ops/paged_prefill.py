"""Paged prefill attention: a chunk of ``q_len`` new query tokens per sequence attending to
that sequence's ``context`` tokens in a paged KV cache, the chunk's own tokens last (FlashInfer's
BatchPrefillWithPagedKVCacheWrapper, SGLang's and vLLM's chunked prefill and prefix caching).

Layout: q [batch · q_len, q_heads, d] packed (``qo_indptr`` [batch + 1], int32), k and v caches
NHD [num_blocks, page_size, kv_heads, d] with a shuffled block table, as paged_decode_attention's.
Causal masking is bottom-right: query j of a sequence sees keys 0 .. context − q_len + j (the
cached prefix and the chunk up to itself). Uniform q_len and context: FLOPs and bytes are
functions of the shape, as for every kernelmark op.

FLOPs (the two matmuls over unmasked pairs): 4 · batch · q_heads · d · pairs, with pairs =
q_len · context (not causal) or q_len · (context − q_len) + q_len (q_len + 1) / 2 (causal).
Bytes: context · kv_heads · d · 2 · itemsize a sequence (K and V read once) + q and o + the
block-table entries used (4 bytes a page) + qo_indptr and context_lens (int32).

Backends: ``torch-gather-sdpa`` (gather the pages, then SDPA with the bottom-right mask). No
Triton kernel of ours yet, and the library backends (FlashInfer's paged prefill) are not
wired: FlashInfer-Trace's gqa_paged prefill definitions map here so their workloads are
timed and checked at all, with the library backends to come.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from kernelmark import dtypes
from kernelmark.kernels import paged
from kernelmark.ops.attention import _attend_fp, _check_flag, _check_heads, _host_generator, _randn
from kernelmark.ops.base import Backend, Op, positive_ints, shape_str

PARAMS = ("batch", "q_len", "context", "q_heads", "kv_heads", "head_dim", "page_size", "causal")


def validate(shape, dtype):
    positive_ints(shape, ("batch", "q_len", "context", "q_heads", "kv_heads", "head_dim", "page_size"))
    _check_flag(shape, "causal")
    _check_heads(shape)
    if shape["q_len"] > shape["context"]:
        raise ValueError(f"shape {shape_str(shape)}: q_len {shape['q_len']} exceeds context {shape['context']} "
                         "(the chunk's tokens are part of the context)")
    if shape["page_size"] & (shape["page_size"] - 1):
        raise ValueError(f"shape {shape_str(shape)}: page_size must be a power of two")


def _pairs(shape) -> int:
    q, n = shape["q_len"], shape["context"]
    return q * (n - q) + q * (q + 1) // 2 if shape["causal"] else q * n


def flops(shape) -> int:
    return 4 * shape["batch"] * shape["q_heads"] * shape["head_dim"] * _pairs(shape)


def nbytes(shape, dtype) -> int:
    b, s = shape["batch"], dtypes.itemsize(dtype)
    kv = b * shape["context"] * shape["kv_heads"] * shape["head_dim"] * 2 * s
    qo = 2 * b * shape["q_len"] * shape["q_heads"] * shape["head_dim"] * s
    pages = b * paged.blocks_needed(shape["context"], shape["page_size"])
    return kv + qo + 4 * pages + 4 * (b + 1) + 4 * b


def make_inputs(shape, dtype, device, gen):
    b, ql, n, hq, hk, d, ps = (shape[k] for k in PARAMS[:7])
    lens = [n] * b
    pages = b * paged.blocks_needed(n, ps)
    num_blocks = pages + max(pages // 8, 4)
    table = paged.random_block_table(lens, ps, num_blocks, _host_generator(gen))
    return {"dtype": dtype, "scale": 1.0 / math.sqrt(d), "causal": bool(shape["causal"]), "q_len": ql,
            "q": _randn((b * ql, hq, d), dtype, device, gen),
            "k_cache": _randn(paged.cache_shape("NHD", num_blocks, ps, hk, d), dtype, device, gen),
            "v_cache": _randn(paged.cache_shape("NHD", num_blocks, ps, hk, d), dtype, device, gen),
            "block_table": table.to(device), "context_lens": torch.tensor(lens, dtype=torch.int32, device=device),
            "qo_indptr": torch.arange(0, b * ql + 1, ql, dtype=torch.int32, device=device),
            "context_lens_host": lens, "page_size": ps}


def reference(x):
    ct = torch.float64 if x["dtype"] == "fp32" else torch.float32
    ql, out = x["q_len"], []
    for i, n in enumerate(x["context_lens_host"]):
        k = paged.gather_pages(x["k_cache"], x["block_table"][i], n)
        v = paged.gather_pages(x["v_cache"], x["block_table"][i], n)
        out.append(_attend_fp(x["q"][i * ql:(i + 1) * ql], k, v, x["causal"], x["scale"], ct, offset=n - ql))
    return torch.cat(out)


def _torch(x):
    """Gather every sequence's pages into contiguous K/V, then SDPA (GQA by enable_gqa) with
    the bottom-right causal mask as a boolean mask."""
    q, kc, ql = x["q"], x["k_cache"], x["q_len"]
    b, n = len(x["context_lens_host"]), x["context_lens_host"][0]
    hq, d = q.shape[1], q.shape[2]
    pages = paged.blocks_needed(n, x["page_size"])
    idx = x["block_table"][:, :pages]
    k = kc[idx].flatten(1, 2)[:, :n].transpose(1, 2)                # [b, hk, n, d]
    v = x["v_cache"][idx].flatten(1, 2)[:, :n].transpose(1, 2)
    mask = None
    if x["causal"]:
        mask = (torch.arange(n, device=q.device)[None, :]
                <= torch.arange(ql, device=q.device)[:, None] + (n - ql))
    o = F.scaled_dot_product_attention(q.view(b, ql, hq, d).transpose(1, 2), k, v, attn_mask=mask,
                                       scale=x["scale"], enable_gqa=True)
    return o.transpose(1, 2).reshape(b * ql, hq, d)


OPS = [
    Op(
        name="paged_prefill_attention",
        description="a chunk of q_len queries per sequence against its paged KV cache (NHD), causal "
                    "bottom-right, GQA: chunked prefill / prefix caching",
        params=PARAMS,
        defaults={"page_size": 16, "causal": 1},
        dtypes=("fp16", "bf16", "fp32"),
        elementwise=dtypes.ATTENTION_ELEMENTWISE,
        make_inputs=make_inputs, reference=reference, flops=flops, nbytes=nbytes, validate=validate,
        backends=(
            Backend("torch-gather-sdpa", _torch,
                    description="gathers the pages into contiguous K/V (timed), then "
                                "F.scaled_dot_product_attention with the bottom-right causal mask"),
        ),
    ),
]
