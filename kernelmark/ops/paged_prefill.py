"""Paged prefill attention: chunked prefill over a paged KV cache.

``paged_prefill_attention``: each of ``batch`` sequences brings a chunk of ``q_tokens``
new query tokens; its keys and values, the cached prefix and the chunk's own (already
appended to the cache), are ``context`` tokens in a paged cache, so its prefix is
``context - q_tokens``. As vLLM / SGLang chunked prefill and FlashInfer's
BatchPrefillWithPagedKVCacheWrapper compute it: with ``causal = 1`` (the default) chunk
token i attends to keys 0..prefix + i (the mask aligned bottom-right); with 0, to the
whole context.

Inputs (make_inputs): q [total_q, q_heads, d] packed with ``cu_seqlens_q`` [batch + 1]
(int32; FlashInfer's qo_indptr), k and v caches [num_blocks, page_size, kv_heads, d]
(NHD, kernelmark.kernels.paged), a shuffled block table [batch, max_pages] and
``context_lens`` [batch] (int32). The cache holds the pages needed plus 1/8 spare blocks
(at least 4), at random places: a kernel that assumes contiguous pages fails the check.

Lengths are a function of the shape alone, so flops, nbytes and make_inputs agree
exactly: with ``ragged = 0`` every sequence has q_tokens and context; with 1 the chunk
lengths are spread over [q_tokens/2, 3·q_tokens/2] and the prefixes over
[(context - q_tokens)/2, 3·(context - q_tokens)/2] (attention.spread_lengths, each in
its own shuffled order), context = prefix + chunk; the means stay q_tokens and context.
q_tokens == context is a chunk with no prefix (plain prefill), q_tokens = 1 a decode.

FLOPs count Q·Kᵀ and P·V over the (query, key) pairs not masked:
  4 · q_heads · d · Σ (m · (n - m) + m(m + 1)/2)  causal, per sequence of chunk m, context n
  4 · q_heads · d · Σ m · n                       not causal
Bytes are q and o once each, every sequence's K and V once, the block-table entries used
(4 bytes a page), context_lens and cu_seqlens_q (4 bytes an entry).

The reference gathers each sequence's pages and runs attention.py's masked softmax in
fp64 for fp32 inputs, fp32 for fp16/bf16 (one dtype above the inputs, as the other
attention ops). Inputs carry the host-side lengths (q_lens, context_lens_host,
max_q_len, max_context_len) as a serving engine keeps them, so no backend syncs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kernelmark import dtypes
from kernelmark.kernels import paged
# TRITON_HEAD_DIMS is re-exported: a test holds it to the kernel's HEAD_DIMS
from kernelmark.ops.attention import (
    TRITON_HEAD_DIMS, _attend_fp, _check_flag, _check_heads, _common, _ct, _host_generator, _randn, _triton_supports,
    spread_lengths)
from kernelmark.ops.attention_libs import _flashinfer_run, _gpu_half_only, _import_error, _plan_flashinfer
from kernelmark.ops.base import Backend, Op, positive_ints, shape_str


# ---------------------------------------------------------------- shapes and work

def chunk_lengths(shape) -> tuple[list, list]:
    """(chunk lengths, context lengths) of the batch, each sequence's context >= its chunk."""
    b, m, n = shape["batch"], shape["q_tokens"], shape["context"]
    if not shape["ragged"]:
        return [m] * b, [n] * b
    q_lens = spread_lengths(b, m, salt=3)
    prefixes = spread_lengths(b, n - m, salt=4) if n > m else [0] * b
    return q_lens, [p + q for p, q in zip(prefixes, q_lens)]


def _pairs(m: int, n: int, causal: int) -> int:
    return m * (n - m) + m * (m + 1) // 2 if causal else m * n


def flops(shape) -> int:
    pairs = sum(_pairs(m, n, shape["causal"]) for m, n in zip(*chunk_lengths(shape)))
    return 4 * shape["q_heads"] * shape["head_dim"] * pairs


def nbytes(shape, dtype) -> int:
    q_lens, ctx = chunk_lengths(shape)
    size = dtypes.itemsize(dtype)
    qo = 2 * sum(q_lens) * shape["q_heads"] * shape["head_dim"] * size
    kv = 2 * sum(ctx) * shape["kv_heads"] * shape["head_dim"] * size
    pages = sum(paged.blocks_needed(n, shape["page_size"]) for n in ctx)
    return qo + kv + 4 * pages + 4 * shape["batch"] + 4 * (shape["batch"] + 1)


def validate(shape, dtype):
    positive_ints(shape, ("batch", "q_tokens", "context", "q_heads", "kv_heads", "head_dim", "page_size"))
    _check_flag(shape, "ragged")
    _check_flag(shape, "causal")
    _check_heads(shape)
    if shape["page_size"] & (shape["page_size"] - 1):
        raise ValueError(f"shape {shape_str(shape)}: page_size must be a power of two")
    if shape["q_tokens"] > shape["context"]:
        raise ValueError(f"shape {shape_str(shape)}: q_tokens must be at most context (the context holds the "
                         f"prefix and the chunk's own tokens), got q_tokens={shape['q_tokens']} > "
                         f"context={shape['context']}")


# ---------------------------------------------------------------- inputs and reference

def make_inputs(shape, dtype, device, gen):
    hq, hk, d, ps = (shape[k] for k in ("q_heads", "kv_heads", "head_dim", "page_size"))
    q_lens, ctx = chunk_lengths(shape)
    pages = sum(paged.blocks_needed(n, ps) for n in ctx)
    num_blocks = pages + max(pages // 8, 4)
    table = paged.random_block_table(ctx, ps, num_blocks, _host_generator(gen))
    cu = [0]
    for m in q_lens:
        cu.append(cu[-1] + m)
    x = {**_common(shape, dtype), "causal": bool(shape["causal"]),
         "q": _randn((cu[-1], hq, d), dtype, device, gen),
         "k_cache": _randn(paged.cache_shape("NHD", num_blocks, ps, hk, d), dtype, device, gen),
         "v_cache": _randn(paged.cache_shape("NHD", num_blocks, ps, hk, d), dtype, device, gen),
         "block_table": table.to(device), "cu_seqlens_q": torch.tensor(cu, dtype=torch.int32, device=device),
         "context_lens": torch.tensor(ctx, dtype=torch.int32, device=device),
         "q_lens": q_lens, "context_lens_host": ctx, "max_q_len": max(q_lens), "max_context_len": max(ctx),
         "page_size": ps}
    if device.type == "cuda":
        _plan_flashinfer(x, prefill=True)
    return x


def reference(x):
    out, at = [], 0
    for i, (m, n) in enumerate(zip(x["q_lens"], x["context_lens_host"])):
        k = paged.gather_pages(x["k_cache"], x["block_table"][i], n)
        v = paged.gather_pages(x["v_cache"], x["block_table"][i], n)
        out.append(_attend_fp(x["q"][at:at + m], k, v, x["causal"], x["scale"], _ct(x), offset=n - m))
        at += m
    return torch.cat(out)


# ---------------------------------------------------------------- backends

def _torch_gather_sdpa(x):
    """Per sequence: gather its pages into contiguous K/V, fold the GQA group's q heads into
    query rows of their kv head (no K/V repeat), and SDPA with an explicit bottom-right
    causal mask (SDPA's is_causal aligns top-left). Eager; the loop and masks are timed."""
    q, kc, vc, ps = x["q"], x["k_cache"], x["v_cache"], x["page_size"]
    hq, d = q.shape[1], q.shape[2]
    hk = kc.shape[2]
    g = hq // hk
    outs, at = [], 0
    for i, (m, n) in enumerate(zip(x["q_lens"], x["context_lens_host"])):
        idx = x["block_table"][i, :paged.blocks_needed(n, ps)]
        k = kc[idx].flatten(0, 1)[:n].transpose(0, 1)                   # [hk, n, d]
        v = vc[idx].flatten(0, 1)[:n].transpose(0, 1)
        qi = q[at:at + m].view(m, hk, g, d).permute(1, 2, 0, 3).reshape(hk, g * m, d)
        mask = None
        if x["causal"]:
            keys = torch.arange(n, device=q.device)
            keep = keys[None, :] <= torch.arange(n - m, n, device=q.device)[:, None]   # [m, n]
            mask = keep.repeat(g, 1)                                    # rows: (group member, token)
        o = F.scaled_dot_product_attention(qi, k, v, attn_mask=mask, scale=x["scale"])
        outs.append(o.view(hk, g, m, d).permute(2, 0, 1, 3).reshape(m, hq, d))
        at += m
    return torch.cat(outs)


def _triton(x):
    from kernelmark.kernels.paged_prefill_attention import paged_prefill_attention
    return paged_prefill_attention(x["q"], x["k_cache"], x["v_cache"], x["block_table"], x["cu_seqlens_q"],
                                   x["context_lens"], max_q_len=x["max_q_len"], max_context_len=x["max_context_len"],
                                   causal=x["causal"], sm_scale=x["scale"], check_tables=False)


def _triton_config():
    from kernelmark.kernels import chosen_config
    from kernelmark.kernels.paged_prefill_attention import _paged_prefill_kernel
    return chosen_config(_paged_prefill_kernel)


OPS = [
    Op(
        name="paged_prefill_attention",
        description="chunked prefill: each sequence's new query tokens attend (causally after its cached prefix) "
                    "to its whole paged KV cache (NHD), GQA, uniform or ragged lengths",
        params=("batch", "q_tokens", "context", "q_heads", "kv_heads", "head_dim", "page_size", "ragged", "causal"),
        defaults={"page_size": 16, "ragged": 0, "causal": 1},
        dtypes=("fp16", "bf16", "fp32"),
        elementwise=dtypes.ATTENTION_ELEMENTWISE,
        make_inputs=make_inputs, reference=reference, flops=flops, nbytes=nbytes, validate=validate,
        backends=(
            Backend("triton", _triton, triton=True, supports=_triton_supports, detail=_triton_config,
                    description="kernelmark's flash-attention kernel over the block table "
                                "(kernels/paged_prefill_attention.py)"),
            Backend("torch-gather-sdpa", _torch_gather_sdpa,
                    description="per sequence, gathers the pages into contiguous K/V (timed: what a naive user "
                                "pays), then F.scaled_dot_product_attention with a bottom-right causal mask"),
            Backend("flashinfer", _flashinfer_run, dtypes=("fp16", "bf16"),
                    available=lambda: _import_error("flashinfer"), supports=_gpu_half_only("flashinfer"),
                    description="flashinfer BatchPrefillWithPagedKVCacheWrapper (NHD), planned outside the "
                                "timed call"),
        ),
    ),
]
