"""rope_kv_append: rotary position embedding on the new tokens' K, fused with the paged
cache write of K and V (V as is).

RoPE as Llama 3 sets it: theta = 500000, rotate-half (GPT-NeoX) convention as Hugging
Face's Llama, inv_freq[i] = theta**(-2i/head_dim), angles and cos/sin in fp32 as HF and
vLLM compute them, kept in a cos/sin table [max_position, head_dim] (vLLM's
cos_sin_cache). Plain RoPE: without Llama 3.1's frequency scaling (which changes only
the table, not the kernel). Positions continue each sequence's context, as in
kv_append's batches (kv_inputs.append_batch).

Reference: the rotation in fp32 from the same table, rounded once to the cache dtype,
then the write. Check: V bit for bit; K within one ulp of the cache dtype (two ways to
round one fp32 value, e.g. the interpreter truncating, or an FMA in the rotation) plus
2**-16 absolute (fp32 cancellation when the two products nearly cancel); per element,
so a wrong row cannot hide in the untouched rest of the cache.

FLOPs ``3·(T−P)·H·D``: each rotated K element is two products and a sum (the op stays
far below the ridge point: memory bound). Bytes ``4·(T−P)·H·D·s + 16·T + 4·(T−P)·D``: K and V rows read and written for the T−P
real tokens, the int64 slot and position of every token, and one fp32 cos/sin row of D
per real token.
"""

from __future__ import annotations

import torch

from kernelmark import dtypes
from kernelmark.ops import kv_cache
from kernelmark.ops import kv_inputs as kvi
from kernelmark.ops.base import Backend, CheckResult, Op

ROPE_THETA = 500000.0
K_ATOL = 2.0 ** -16


def cos_sin_table(max_position: int, head_dim: int, device, theta: float = ROPE_THETA) -> torch.Tensor:
    """fp32 [max_position, head_dim]: cos of the angles in the first half, sin in the second."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    angles = torch.arange(max_position, dtype=torch.float32)[:, None] * inv_freq[None, :]
    return torch.cat([angles.cos(), angles.sin()], dim=-1).to(device)


def rotate(key: torch.Tensor, cos_sin: torch.Tensor) -> torch.Tensor:
    """Rotate-half RoPE of ``key`` [T, H, D] by rows ``cos_sin`` [T, D], in fp32."""
    half = key.shape[-1] // 2
    k = key.float()
    cos, sin = cos_sin[:, None, :half], cos_sin[:, None, half:]
    k1, k2 = k[..., :half], k[..., half:]
    return torch.cat([k1 * cos - k2 * sin, k2 * cos + k1 * sin], dim=-1)


def validate(shape, dtype):
    kvi.validate_append_shape(shape, dtype)
    if shape["head_dim"] % 2:
        raise ValueError(f"rope_kv_append needs an even head_dim, got {shape['head_dim']}")


def make_inputs(shape, dtype, device, gen):
    x = kv_cache.append_make_inputs(shape, dtype, device, gen)
    x["cos_sin_cache"] = cos_sin_table(max(kvi.MAX_POSITION, shape["seq_tokens"]), shape["head_dim"], device)
    return x


def reference(x):
    k, v = x["k_cache"].clone(), x["v_cache"].clone()
    rotated = rotate(x["key"], x["cos_sin_cache"][x["positions"]]).to(k.dtype)
    kvi.write_rows(k, v, rotated, x["value"], x["slot_mapping"], x["page_size"], x["layout"])
    return k, v


def nbytes(shape, dtype):
    real, t, d = shape["tokens"] - shape["padding"], shape["tokens"], shape["head_dim"]
    return 4 * real * shape["kv_heads"] * d * dtypes.itemsize(dtype) + 16 * t + 4 * real * d


def flops(shape):
    return 3 * (shape["tokens"] - shape["padding"]) * shape["kv_heads"] * shape["head_dim"]


def check(out, ref, dtype) -> CheckResult:
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        return CheckResult(False, float("inf"), float("inf"), float("inf"), 0.0,
                           "expected (k_cache, v_cache) from the backend")
    why = kvi.bitwise_equal(out[1], ref[1], "v_cache")
    ok, detail, rel_l2, max_abs, max_rel = kvi.within_ulps(out[0], ref[0], "k_cache", 1.0, K_ATOL)
    tol = torch.finfo(dtypes.torch_dtype(dtype)).eps
    return CheckResult(ok and not why, rel_l2, max_abs, max_rel, tol, "; ".join(s for s in (detail, why) if s))


def _triton(x):
    from kernelmark.kernels.rope_kv_append import rope_kv_append
    rope_kv_append(x["key"], x["value"], x["k_cache"], x["v_cache"], x["slot_mapping"], x["positions"],
                   x["cos_sin_cache"], x["layout"], check_indices=False)
    return x["k_cache"], x["v_cache"]


def _torch(x):
    rotated = rotate(x["key"], x["cos_sin_cache"][x["positions"]]).to(x["k_cache"].dtype)
    return kv_cache._append_torch({**x, "key": rotated})


OPS = [
    Op(
        name="rope_kv_append",
        description="RoPE (Llama 3: theta 500000, rotate-half) on new K, fused with the paged cache write of K and V",
        params=("tokens", "seq_tokens", "kv_heads", "head_dim", "page_size", "num_blocks", "layout", "padding"),
        defaults={"seq_tokens": 1, "layout": "NHD", "padding": 0},
        dtypes=kv_cache.COPY_DTYPES,
        make_inputs=make_inputs,
        reference=reference,
        flops=flops,
        nbytes=nbytes,
        validate=validate,
        check=check,
        backends=(
            Backend("triton", _triton, triton=True,
                    description="kernelmark's fused Triton RoPE + cache write (kernels/rope_kv_append.py)"),
            Backend("torch", _torch, description="unfused: RoPE in fp32 torch ops, then index_copy_ into the cache"),
        ),
    ),
]
