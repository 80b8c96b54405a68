"""Multi-head latent attention (DeepSeek-V2/V3/R1), paged decode with absorbed weights.

``mla_decode_attention``: one query token per sequence, ``heads`` query heads of
kv_lora_rank + rope dim = 512 + 64 = 576 each, against a compressed paged cache
[num_blocks, page_size, 576] that all heads share (the key is the whole row, the value
its first 512 dims). Output [batch, heads, 512] in the input dtype and the log-sum-exp
[batch, heads] (fp32, natural log) of the scaled scores. The softmax scale is
DeepSeek-V3's constant 1/sqrt(192) (qk_nope_head_dim 128 + qk_rope_head_dim 64), the
same for every shape.

Shape parameters: batch, context (tokens per sequence; with ragged = 1 the lengths
spread over context/2..3·context/2, as paged_decode_attention's), heads (128 for a
whole DeepSeek-V3 layer, 16 or 8 for its TP8/TP16 slices), page_size (64 as FlashMLA
uses, 1 and 16 as vLLM's Triton MLA does).

Minimum work: the latent cache of every sequence read once (context x 576 elements),
q read, out and LSE written, the used block table entries and the lengths read;
2·heads·context·(576 + 512) FLOPs per sequence (scores, then the weighted sum).
"""

from __future__ import annotations

import torch

from kernelmark import dtypes
from kernelmark.kernels import paged
from kernelmark.ops.attention import _host_generator, context_lengths
from kernelmark.ops.base import Backend, Op, positive_ints, shape_str
from kernelmark.ops.mla_libs import flash_mla_backend, flashinfer_mla_backend, vllm_triton_mla_backend

KV_LORA_RANK = 512
ROPE_DIM = 64
QK_DIM = KV_LORA_RANK + ROPE_DIM
# DeepSeek-V3's base softmax scale, (qk_nope_head_dim + qk_rope_head_dim) ** -0.5. The released
# checkpoint's YaRN rope scaling multiplies it by mscale^2 (about 1.87): that changes how peaked
# the softmax is, not one byte or FLOP, so a fixed constant keeps rows comparable.
SCALE = 192 ** -0.5


# ---------------------------------------------------------------- shapes and work

def validate(shape, dtype):
    positive_ints(shape, ("batch", "context", "heads", "page_size"))
    if shape["page_size"] & (shape["page_size"] - 1):
        raise ValueError(f"shape {shape_str(shape)}: page_size must be a power of two")
    if isinstance(shape["ragged"], bool) or shape["ragged"] not in (0, 1):
        raise ValueError(f"shape {shape_str(shape)}: ragged must be 0 or 1, got {shape['ragged']!r}")


def mla_flops(shape) -> int:
    return 2 * shape["heads"] * (QK_DIM + KV_LORA_RANK) * sum(context_lengths(shape))


def mla_bytes(shape, dtype) -> int:
    lens = context_lengths(shape)
    size = dtypes.itemsize(dtype)
    cache = sum(lens) * QK_DIM * size
    q_out = shape["batch"] * shape["heads"] * ((QK_DIM + KV_LORA_RANK) * size + 4)   # q, out, fp32 lse
    ints = 4 * sum(paged.blocks_needed(n, shape["page_size"]) for n in lens) + 4 * shape["batch"]
    return cache + q_out + ints


# ---------------------------------------------------------------- inputs

def make_inputs(shape, dtype, device, gen):
    b, h, ps = shape["batch"], shape["heads"], shape["page_size"]
    lens = context_lengths(shape)
    pages = sum(paged.blocks_needed(n, ps) for n in lens)
    num_blocks = pages + max(pages // 8, 4)       # spare blocks the table must not point at
    table = paged.random_block_table(lens, ps, num_blocks, _host_generator(gen))
    dt = dtypes.torch_dtype(dtype)
    return {"dtype": dtype, "scale": SCALE, "heads": h, "page_size": ps, "ragged": bool(shape["ragged"]),
            "q": torch.randn((b, h, QK_DIM), device=device, generator=gen).to(dt),
            "kv_cache": torch.randn((num_blocks, ps, QK_DIM), device=device, generator=gen).to(dt),
            "block_table": table.to(device), "context_lens": torch.tensor(lens, dtype=torch.int32, device=device),
            "context_lens_host": lens, "max_context_len": max(lens)}


# ---------------------------------------------------------------- reference

def latent_rows(kv_cache, block_table_row, context_len) -> torch.Tensor:
    """One sequence's expanded latent cache: [context_len, 576], through its block table."""
    return paged.gather_pages(kv_cache[:, :, None], block_table_row, context_len)[:, 0]


def attend_reference(q, kv_cache, block_table, lens, scale, ct):
    """(o [batch, heads, 512], lse [batch, heads]) in ``ct``: every head of a sequence
    over its expanded latent cache, K = rows[:, :576], V = rows[:, :512]."""
    batch, heads, _ = q.shape
    o = torch.empty((batch, heads, KV_LORA_RANK), dtype=ct, device=q.device)
    lse = torch.empty((batch, heads), dtype=ct, device=q.device)
    for s, n in enumerate(lens):
        rows = latent_rows(kv_cache, block_table[s], n).to(ct)
        scores = (q[s].to(ct) @ rows.T) * scale                       # [heads, n]
        lse[s] = torch.logsumexp(scores, -1)
        o[s] = torch.softmax(scores, -1) @ rows[:, :KV_LORA_RANK]
    return o, lse


def reference(x):
    ct = torch.float64 if x["dtype"] == "fp32" else torch.float32
    return attend_reference(x["q"], x["kv_cache"], x["block_table"], x["context_lens_host"], x["scale"], ct)


# ---------------------------------------------------------------- backends

def _triton(x):
    from kernelmark.kernels.mla_decode_attention import mla_decode_attention
    return mla_decode_attention(x["q"], x["kv_cache"], x["block_table"], x["context_lens"],
                                max_context_len=x["max_context_len"], sm_scale=x["scale"], check_tables=False)


def _triton_config():
    from kernelmark.kernels import chosen_config
    from kernelmark.kernels.mla_decode_attention import LAST_SPLIT, _mla_decode_split_kernel
    cfg = chosen_config(_mla_decode_split_kernel)
    if not LAST_SPLIT:
        return cfg
    split = f"num_splits: {LAST_SPLIT['num_splits']}, split_tokens: {LAST_SPLIT['split_tokens']}"
    return split if cfg is None else f"{cfg}; {split}"


# 16-bit inputs: the wider attention bound (kernelmark/dtypes.py says why, with MLA's figures).
ELEMENTWISE = dtypes.ATTENTION_ELEMENTWISE


def _torch_eager(x):
    """What a plain torch implementation does: gather every sequence's pages into one
    padded [batch, n, 576] tensor (timed), scores by a batched matmul in the input dtype,
    softmax and LSE in fp32, the weighted sum of the first 512 dims."""
    q, kv = x["q"], x["kv_cache"]
    n = x["max_context_len"]
    pages = paged.blocks_needed(n, x["page_size"])
    idx = x["block_table"][:, :pages].clamp_min(0)               # -1 padding -> any block (masked below)
    rows = kv[idx].flatten(1, 2)[:, :n]                           # [batch, n, 576]
    scores = torch.matmul(q, rows.transpose(1, 2)).float() * x["scale"]   # [batch, heads, n]
    if x["ragged"]:
        past = torch.arange(n, device=q.device)[None, :] >= x["context_lens"][:, None]
        scores = scores.masked_fill(past[:, None, :], float("-inf"))
    lse = torch.logsumexp(scores, -1)
    p = torch.exp(scores - lse[..., None]).to(q.dtype)
    return torch.matmul(p, rows[..., :KV_LORA_RANK]), lse


OPS = [
    Op(
        name="mla_decode_attention",
        description="DeepSeek-V3 MLA paged decode, absorbed weights: q [b, heads, 512+64] over a shared latent "
                    "cache [pages, page_size, 576] -> out [b, heads, 512] and LSE",
        params=("batch", "context", "heads", "page_size", "ragged"),
        defaults={"heads": 128, "page_size": 64, "ragged": 0},
        dtypes=("bf16", "fp16", "fp32"),
        elementwise=ELEMENTWISE,
        make_inputs=make_inputs, reference=reference, flops=mla_flops, nbytes=mla_bytes, validate=validate,
        backends=(
            Backend("triton", _triton, triton=True, detail=_triton_config,
                    description="kernelmark's split-KV MLA decode kernel, heads blocked into the tl.dot M "
                                "dimension (kernels/mla_decode_attention.py)"),
            Backend("torch-eager", _torch_eager,
                    description="gathers the pages into a padded [b, n, 576] tensor (timed), batched matmuls in "
                                "the input dtype, softmax and LSE in fp32"),
            flash_mla_backend(),
            flashinfer_mla_backend(),
            vllm_triton_mla_backend(),
        ),
    ),
]
