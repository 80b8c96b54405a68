"""Attention at inference: prefill (batched and varlen) and paged decode.

``prefill_attention``: self-attention over ``batch`` sequences of ``seq`` tokens, bshd
layout (q [batch, seq, q_heads, d], k/v [batch, seq, kv_heads, d]), causal (top-left:
query i sees keys 0..i) or not. GQA: q_heads a multiple of kv_heads.

``prefill_attention_varlen``: the same over packed sequences of different lengths, as
serving engines batch prefill: q [total, q_heads, d], k/v [total, kv_heads, d] and
``cu_seqlens`` [batch + 1] (int32). The lengths are a function of the shape alone, so
``flops``, ``nbytes`` and ``make_inputs`` agree exactly: ``batch`` lengths evenly
spread over [seq/2, 3·seq/2] (mean ``seq``), in an order shuffled by a generator
seeded from (batch, seq). See ``spread_lengths``.

``paged_decode_attention``: one query token per sequence against a paged KV cache in
the NHD layout of kernelmark.kernels.paged (k and v caches [num_blocks, page_size,
kv_heads, d], a shuffled block table, context lengths). Contexts are all ``context``,
or with ``ragged = 1`` spread over [context/2, 3·context/2] as above. The cache holds
the pages needed plus 1/8 spare blocks (at least 4), scattered at random.

FLOPs count the two matmuls (Q·Kᵀ and P·V, 2 FLOPs a multiply-add each) over the
(query, key) pairs that are not masked; softmax arithmetic is not counted:
  prefill, not causal   4 · batch · q_heads · d · seq²
  prefill, causal       4 · batch · q_heads · d · seq(seq + 1)/2   (only unmasked pairs)
  varlen                the same summed over the sequences' own lengths
  decode                4 · q_heads · d · Σ context
Bytes are the minimum traffic, every input read once and the output written once:
  prefill               (q + k + v + o) elements · itemsize
  varlen                the same + cu_seqlens (4 bytes · (batch + 1))
  decode                Σ context · kv_heads · d · 2 (K and V) · itemsize + (q + o) ·
                        itemsize + the block-table entries used (4 bytes a page) +
                        context_lens (4 bytes a sequence)

The reference is attention in fp32 (fp64 for fp32 inputs) on upcast inputs, scale
1/sqrt(d), K/V heads repeated for GQA in the reference only; it is computed in chunks of
query rows so that long sequences never hold a full [heads, seq, seq] score matrix.

Inputs dicts carry host-side metadata next to the tensors (``max_seqlen``,
``seq_lens``, ``max_context_len``, ``context_lens_host``), as a serving engine keeps
them, so that no backend syncs the device to read them. The Triton backends skip the
launchers' host-side table checks (a device sync, impossible inside a CUDA graph): the
tables come from make_inputs, valid by construction; the launchers check by default.
On a CUDA device with FlashInfer installed, make_inputs for decode also plans a
FlashInfer wrapper (host-side scheduling is set-up, not the op) and keeps it, or why
planning failed, under "_flashinfer".
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from kernelmark import dtypes
from kernelmark.kernels import paged
from kernelmark.ops.attention_libs import (
    _import_error, _gpu_half_only, _flash_attn_prefill, _flash_attn_varlen, _flash_attn_decode, _flash_attn_decode_supports, _torch_varlen_attn, _varlen_attn_available, _plan_flashinfer, _flashinfer_run)
from kernelmark.ops.attention_sdpa import sdpa_backends
from kernelmark.ops.base import Backend, Op, positive_ints, shape_str
from kernelmark.ops.paged_given import take_decode_given

# The head dims the Triton kernels compile for (kernels/*_attention.py HEAD_DIMS; a
# test keeps them equal). Op modules must not import Triton, hence the copy.
TRITON_HEAD_DIMS = (16, 32, 64, 128)


# ---------------------------------------------------------------- shapes and work

def spread_lengths(batch: int, mean: int, salt: int = 0) -> list:
    """``batch`` lengths evenly spread over [mean/2, 3·mean/2] (at least 1), in an order
    scrambled by a fixed integer hash of (index, batch, mean, salt): a function of the
    shape alone, the same on every machine and library version."""
    lens = [max(1, mean * (batch + 2 * i + 1) // (2 * batch)) for i in range(batch)]
    seed = (1_000_003 * batch + 7919 * mean + 104_729 * salt) % 2 ** 32
    order = sorted(range(batch), key=lambda i: ((i + 1) * 2_654_435_761 ^ seed) * 40_503 % 2 ** 32)
    return [lens[i] for i in order]


def varlen_lengths(shape) -> list:
    return spread_lengths(shape["batch"], shape["seq"], salt=1)


def context_lengths(shape) -> list:
    if shape["ragged"]:
        return spread_lengths(shape["batch"], shape["context"], salt=2)
    return [shape["context"]] * shape["batch"]


def _pairs(n: int, causal: int) -> int:
    return n * (n + 1) // 2 if causal else n * n


def prefill_flops(shape) -> int:
    return 4 * shape["batch"] * shape["q_heads"] * shape["head_dim"] * _pairs(shape["seq"], shape["causal"])


def varlen_flops(shape) -> int:
    return 4 * shape["q_heads"] * shape["head_dim"] * sum(_pairs(n, shape["causal"]) for n in varlen_lengths(shape))


def prefill_scores(shape) -> int:
    """Elements of the largest score matrix one SDPA call materialises (math backend)."""
    return shape["batch"] * shape["q_heads"] * shape["seq"] ** 2


def varlen_scores(shape) -> int:     # one SDPA call per sequence
    return shape["q_heads"] * max(varlen_lengths(shape)) ** 2


def decode_flops(shape) -> int:
    return 4 * shape["q_heads"] * shape["head_dim"] * sum(context_lengths(shape))


def _qkvo_bytes(tokens, shape, dtype) -> int:
    return tokens * (2 * shape["q_heads"] + 2 * shape["kv_heads"]) * shape["head_dim"] * dtypes.itemsize(dtype)


def prefill_bytes(shape, dtype) -> int:
    return _qkvo_bytes(shape["batch"] * shape["seq"], shape, dtype)


def varlen_bytes(shape, dtype) -> int:
    return _qkvo_bytes(sum(varlen_lengths(shape)), shape, dtype) + 4 * (shape["batch"] + 1)


def decode_bytes(shape, dtype) -> int:
    lens = context_lengths(shape)
    size = dtypes.itemsize(dtype)
    kv = sum(lens) * shape["kv_heads"] * shape["head_dim"] * 2 * size
    qo = 2 * shape["batch"] * shape["q_heads"] * shape["head_dim"] * size
    ints = 4 * sum(paged.blocks_needed(n, shape["page_size"]) for n in lens) + 4 * shape["batch"]
    return kv + qo + ints


def _check_flag(shape, name):
    v = shape[name]
    if isinstance(v, bool) or v not in (0, 1):
        raise ValueError(f"shape {shape_str(shape)}: {name} must be 0 or 1, got {v!r}")


def _check_heads(shape):
    if shape["q_heads"] % shape["kv_heads"]:
        raise ValueError(f"shape {shape_str(shape)}: q_heads must be a multiple of kv_heads (GQA)")


def validate_prefill(shape, dtype):
    positive_ints(shape, ("batch", "seq", "q_heads", "kv_heads", "head_dim"))
    _check_flag(shape, "causal")
    _check_heads(shape)


def validate_decode(shape, dtype):
    positive_ints(shape, ("batch", "context", "q_heads", "kv_heads", "head_dim", "page_size"))
    _check_flag(shape, "ragged")
    _check_heads(shape)
    if shape["page_size"] & (shape["page_size"] - 1):
        raise ValueError(f"shape {shape_str(shape)}: page_size must be a power of two")


# ---------------------------------------------------------------- inputs

def _randn(shape, dtype, device, gen):
    return torch.randn(shape, device=device, generator=gen).to(dtypes.torch_dtype(dtype))


def _common(shape, dtype):
    return {"dtype": dtype, "scale": 1.0 / math.sqrt(shape["head_dim"]),
            "q_heads": shape["q_heads"], "kv_heads": shape["kv_heads"]}


def make_prefill_inputs(shape, dtype, device, gen):
    b, s, hq, hk, d = (shape[k] for k in ("batch", "seq", "q_heads", "kv_heads", "head_dim"))
    q = _randn((b, s, hq, d), dtype, device, gen)
    k = _randn((b, s, hk, d), dtype, device, gen)
    v = _randn((b, s, hk, d), dtype, device, gen)
    # *_t: bhsd views of the same storage, for SDPA (no copy).
    return {**_common(shape, dtype), "q": q, "k": k, "v": v, "causal": bool(shape["causal"]),
            "q_t": q.transpose(1, 2), "k_t": k.transpose(1, 2), "v_t": v.transpose(1, 2)}


def make_varlen_inputs(shape, dtype, device, gen):
    hq, hk, d = shape["q_heads"], shape["kv_heads"], shape["head_dim"]
    lens = varlen_lengths(shape)
    total = sum(lens)
    cu = [0]
    for n in lens:
        cu.append(cu[-1] + n)
    return {**_common(shape, dtype), "causal": bool(shape["causal"]),
            "q": _randn((total, hq, d), dtype, device, gen), "k": _randn((total, hk, d), dtype, device, gen),
            "v": _randn((total, hk, d), dtype, device, gen),
            "cu_seqlens": torch.tensor(cu, dtype=torch.int32, device=device),
            "seq_lens": lens, "max_seqlen": max(lens)}


def _host_generator(gen) -> torch.Generator:
    # The runner's generator lives on the device; the block table is built on the host.
    seed = int(torch.randint(0, 2 ** 62, (1,), generator=gen, device=gen.device))
    return torch.Generator().manual_seed(seed)


def make_decode_inputs(shape, dtype, device, gen):
    b, hq, hk, d, ps = (shape[k] for k in ("batch", "q_heads", "kv_heads", "head_dim", "page_size"))
    lens = context_lengths(shape)
    pages = sum(paged.blocks_needed(n, ps) for n in lens)
    num_blocks = pages + max(pages // 8, 4)
    table = paged.random_block_table(lens, ps, num_blocks, _host_generator(gen))
    x = {**_common(shape, dtype), "ragged": bool(shape["ragged"]),
         "q": _randn((b, hq, d), dtype, device, gen),
         "k_cache": _randn(paged.cache_shape("NHD", num_blocks, ps, hk, d), dtype, device, gen),
         "v_cache": _randn(paged.cache_shape("NHD", num_blocks, ps, hk, d), dtype, device, gen),
         "block_table": table.to(device), "context_lens": torch.tensor(lens, dtype=torch.int32, device=device),
         "context_lens_host": lens, "max_context_len": max(lens), "page_size": ps}
    if device.type == "cuda":
        _plan_flashinfer(x)
    return x


# ---------------------------------------------------------------- reference

def _attend_fp(q, k, v, causal, scale, ct, offset=0):
    """One sequence: q [sq, hq, d], k/v [sk, hk, d] -> [sq, hq, d] in ct, row-chunked.
    Causal masking sees keys 0..offset + i from query i: top-left with offset 0; a chunk
    after a cached prefix of ``offset`` tokens (paged prefill) sees the prefix too."""
    sq, hq, d = q.shape
    sk, hk, _ = k.shape
    group = hq // hk
    out = torch.empty((sq, hq, d), dtype=ct, device=q.device)
    rows = max(1, min(sq, 2 ** 26 // max(1, group * sk)))
    for h in range(hk):
        kh = k[:, h].to(ct)                                       # [sk, d]
        vh = v[:, h].to(ct)
        qh = q[:, h * group:(h + 1) * group].to(ct).transpose(0, 1)  # [group, sq, d]
        for r0 in range(0, sq, rows):
            r1 = min(sq, r0 + rows)
            s = (qh[:, r0:r1] @ kh.T) * scale                     # [group, rows, sk]
            if causal:
                rows_at = torch.arange(r0, r1, device=q.device)[:, None] + offset
                mask = torch.arange(sk, device=q.device)[None, :] > rows_at
                s = s.masked_fill(mask, float("-inf"))
            out[r0:r1, h * group:(h + 1) * group] = (torch.softmax(s, -1) @ vh).transpose(0, 1)
    return out


def _ct(x):
    return torch.float64 if x["dtype"] == "fp32" else torch.float32


def prefill_reference(x):
    return torch.stack([_attend_fp(x["q"][i], x["k"][i], x["v"][i], x["causal"], x["scale"], _ct(x))
                        for i in range(x["q"].shape[0])])


def varlen_reference(x):
    out, at = [], 0
    for n in x["seq_lens"]:
        out.append(_attend_fp(x["q"][at:at + n], x["k"][at:at + n], x["v"][at:at + n], x["causal"],
                              x["scale"], _ct(x)))
        at += n
    return torch.cat(out)


def decode_reference(x):
    outs = []
    for i, n in enumerate(x["context_lens_host"]):
        k = paged.gather_pages(x["k_cache"], x["block_table"][i], n)
        v = paged.gather_pages(x["v_cache"], x["block_table"][i], n)
        outs.append(_attend_fp(x["q"][i:i + 1], k, v, False, x["scale"], _ct(x))[0])
    return torch.stack(outs)


# ---------------------------------------------------------------- Triton backends

def _triton_supports(shape, dtype, device_kind, capability):
    if shape["head_dim"] not in TRITON_HEAD_DIMS:
        return f"the Triton kernel supports head_dim {', '.join(map(str, TRITON_HEAD_DIMS))}"
    return None


def _triton_prefill(x):
    from kernelmark.kernels.prefill_attention import prefill_attention
    return prefill_attention(x["q"], x["k"], x["v"], causal=x["causal"], sm_scale=x["scale"])


def _triton_varlen(x):
    from kernelmark.kernels.prefill_attention import prefill_attention_varlen
    return prefill_attention_varlen(x["q"], x["k"], x["v"], x["cu_seqlens"], x["max_seqlen"], causal=x["causal"],
                                    sm_scale=x["scale"], check_seqlens=False)


def _triton_decode(x):
    from kernelmark.kernels.paged_decode_attention import paged_decode_attention
    return paged_decode_attention(x["q"], x["k_cache"], x["v_cache"], x["block_table"], x["context_lens"],
                                  max_context_len=x["max_context_len"], sm_scale=x["scale"], check_tables=False)


# ---------------------------------------------------------------- torch decode

def _torch_decode(x):
    """Gather every sequence's pages into contiguous K/V (padded to the longest context),
    then SDPA with the GQA group's q heads as query rows of their kv head."""
    q, kc, vc = x["q"], x["k_cache"], x["v_cache"]
    b, hq, d = q.shape
    hk = kc.shape[2]
    n = x["max_context_len"]
    pages = paged.blocks_needed(n, x["page_size"])
    idx = x["block_table"][:, :pages].clamp_min(0)            # -1 padding -> any block (masked below)
    k = kc[idx].flatten(1, 2)[:, :n].transpose(1, 2)           # [b, hk, n, d]
    v = vc[idx].flatten(1, 2)[:, :n].transpose(1, 2)
    mask = None
    if x["ragged"]:
        mask = (torch.arange(n, device=q.device)[None, :] < x["context_lens"][:, None])[:, None, None, :]
    o = F.scaled_dot_product_attention(q.view(b, hk, hq // hk, d), k, v, attn_mask=mask, scale=x["scale"])
    return o.reshape(b, hq, d)


def _prefill_config():
    from kernelmark.kernels import chosen_config
    from kernelmark.kernels.prefill_attention import _prefill_attention_kernel
    return chosen_config(_prefill_attention_kernel)


def _decode_config():
    from kernelmark.kernels import chosen_config
    from kernelmark.kernels.paged_decode_attention import _paged_decode_split_kernel
    return chosen_config(_paged_decode_split_kernel)


# ---------------------------------------------------------------- ops

_HALF = ("fp16", "bf16")

OPS = [
    Op(
        name="prefill_attention",
        description="self-attention over a batch of equal-length sequences (bshd), causal or not, GQA",
        params=("batch", "seq", "q_heads", "kv_heads", "head_dim", "causal"),
        defaults={"causal": 1},
        dtypes=("fp16", "bf16", "fp32"),
        elementwise=dtypes.ATTENTION_ELEMENTWISE,
        make_inputs=make_prefill_inputs, reference=prefill_reference, flops=prefill_flops, nbytes=prefill_bytes,
        validate=validate_prefill,
        backends=(
            Backend("triton", _triton_prefill, triton=True, supports=_triton_supports, detail=_prefill_config,
                    description="kernelmark's flash-attention forward (kernels/prefill_attention.py)"),
            *sdpa_backends("prefill", prefill_scores),
            Backend("flash-attn", _flash_attn_prefill, dtypes=_HALF, available=lambda: _import_error("flash_attn"),
                    supports=_gpu_half_only("flash-attn"), description="flash_attn.flash_attn_func on bshd"),
        ),
    ),
    Op(
        name="prefill_attention_varlen",
        description="self-attention over packed sequences of different lengths (cu_seqlens), causal or not, GQA",
        params=("batch", "seq", "q_heads", "kv_heads", "head_dim", "causal"),
        defaults={"causal": 1},
        dtypes=("fp16", "bf16", "fp32"),
        elementwise=dtypes.ATTENTION_ELEMENTWISE,
        make_inputs=make_varlen_inputs, reference=varlen_reference, flops=varlen_flops, nbytes=varlen_bytes,
        validate=validate_prefill,
        backends=(
            Backend("triton", _triton_varlen, triton=True, supports=_triton_supports, detail=_prefill_config,
                    description="kernelmark's flash-attention forward, varlen form (kernels/prefill_attention.py)"),
            *sdpa_backends("varlen", varlen_scores),
            Backend("torch-varlen-attn", _torch_varlen_attn, dtypes=_HALF, available=_varlen_attn_available,
                    supports=_gpu_half_only("torch varlen_attn"),
                    description="torch.nn.attention.varlen.varlen_attn (torch >= 2.10)"),
            Backend("flash-attn", _flash_attn_varlen, dtypes=_HALF, available=lambda: _import_error("flash_attn"),
                    supports=_gpu_half_only("flash-attn"), description="flash_attn.flash_attn_varlen_func"),
        ),
    ),
    Op(
        name="paged_decode_attention",
        description="one query token per sequence against a paged KV cache (NHD), GQA, uniform or ragged contexts",
        params=("batch", "context", "q_heads", "kv_heads", "head_dim", "page_size", "ragged"),
        defaults={"page_size": 16, "ragged": 0},
        dtypes=("fp16", "bf16", "fp32"),
        elementwise=dtypes.ATTENTION_ELEMENTWISE,
        make_inputs=make_decode_inputs, reference=decode_reference, flops=decode_flops, nbytes=decode_bytes,
        validate=validate_decode,
        given=("q", "k_cache", "v_cache", "kv_indptr", "kv_indices"), take_given=take_decode_given,
        backends=(
            Backend("triton", _triton_decode, triton=True, supports=_triton_supports, detail=_decode_config,
                    description="kernelmark's split-KV paged decode kernel (kernels/paged_decode_attention.py)"),
            Backend("torch-gather-sdpa", _torch_decode,
                    description="gathers the pages into contiguous K/V (timed: what a naive user pays), then "
                                "F.scaled_dot_product_attention with default dispatch, a key mask when ragged"),
            Backend("flash-attn", _flash_attn_decode, dtypes=_HALF, available=lambda: _import_error("flash_attn"),
                    supports=_flash_attn_decode_supports,
                    description="flash_attn.flash_attn_with_kvcache with block_table"),
            Backend("flashinfer", _flashinfer_run, dtypes=_HALF, available=lambda: _import_error("flashinfer"),
                    supports=_gpu_half_only("flashinfer"),
                    description="flashinfer BatchDecodeWithPagedKVCacheWrapper (NHD), planned outside the timed call"),
        ),
    ),
]
