"""RoPE: rotary position embedding applied in place to q [tokens, q_heads, head_dim] and
k [tokens, kv_heads, head_dim] from a cos/sin cache indexed by each token's position,
as every serving stack does it between the QKV projection and attention (vLLM's
``rotary_embedding``, FlashInfer's ``apply_rope_with_cos_sin_cache_inplace``).

Shape parameters:

* ``rotary_dim``: how many leading elements of a head rotate (partial rotary when less
  than head_dim; the rest pass through untouched);
* ``style``: ``neox`` (rotate-half: pairs (i, i + rotary_dim/2); Llama, Qwen) or ``gptj``
  (interleaved: pairs (2i, 2i+1); DeepSeek-V3's rope part, GPT-J);
* ``theta``: the base of the frequencies, inv_freq[i] = theta**(-2i/rotary_dim);
* ``scaling``: ``none`` or ``llama3`` — Llama 3.1's frequency scaling (factor 8, low/high
  frequency factors 1 and 4, original context 8192: wavelengths above 8192 divided by 8,
  below 2048 kept, smoothly blended between). It changes the cache's values only;
* ``max_position``: the cache's rows; positions are drawn uniformly below it.

The cache is vLLM's and FlashInfer's layout: fp32 [max_position, rotary_dim], cos of the
rotary_dim/2 angles position·inv_freq (fp32, as Hugging Face and vLLM compute them) in
the first half, sin in the second. vLLM's kernel reads the cache in q's dtype; its
backend gets a copy so converted (not timed, as vLLM converts it once).

Outputs (q, k), both checked whole against an fp64 rotation by the same fp32 cache
(the pass-through part must come back unchanged). Work, with s the dtype's size, T
tokens, H = q_heads + kv_heads, R = rotary_dim (what must be read and written once):
bytes ``2·T·H·R·s + 4·T·R + 8·T`` (the rotated elements read and written in place, one
fp32 cos/sin row and one int64 position per token); FLOPs ``3·T·H·R`` (a pair is four
products and two sums). Memory bound: judged in % of copy bandwidth.
"""

from __future__ import annotations

import math

import torch

from kernelmark import dtypes
from kernelmark.ops import compiled, lib_backends as libs
from kernelmark.ops.base import Backend, Op, given_like, positive_ints, shape_str

DTYPES = ("bf16", "fp16", "fp32")
STYLES = ("neox", "gptj")
SCALINGS = ("none", "llama3")
PARAMS = ("tokens", "q_heads", "kv_heads", "head_dim", "rotary_dim", "style", "theta", "scaling", "max_position")
DEFAULTS = {"style": "neox", "theta": 10000, "scaling": "none", "max_position": 8192}

# Llama 3.1's rope_scaling (config.json of Llama-3.1-8B/70B/405B).
LLAMA3_SCALING = {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                  "original_max_position_embeddings": 8192}


def inv_freq(rotary_dim: int, theta: float, scaling: str = "none") -> torch.Tensor:
    """fp32 [rotary_dim/2]: theta**(-2i/rotary_dim), with Llama 3.1's scaling if asked."""
    freq = 1.0 / (theta ** (torch.arange(0, rotary_dim, 2, dtype=torch.int64).float() / rotary_dim))
    if scaling == "none":
        return freq
    if scaling != "llama3":
        raise ValueError(f"unknown rope scaling {scaling!r}; known: {', '.join(SCALINGS)}")
    sc = LLAMA3_SCALING
    old = sc["original_max_position_embeddings"]
    low_wavelen, high_wavelen = old / sc["low_freq_factor"], old / sc["high_freq_factor"]
    wavelen = 2 * math.pi / freq
    smooth = (old / wavelen - sc["low_freq_factor"]) / (sc["high_freq_factor"] - sc["low_freq_factor"])
    blended = (1 - smooth) * freq / sc["factor"] + smooth * freq
    return torch.where(wavelen < high_wavelen, freq, torch.where(wavelen > low_wavelen, freq / sc["factor"], blended))


def cos_sin_cache(max_position: int, rotary_dim: int, theta: float, scaling: str, device) -> torch.Tensor:
    """fp32 [max_position, rotary_dim]: cos of the angles, then sin (vLLM's cos_sin_cache)."""
    angles = (torch.arange(max_position, dtype=torch.float32, device=device)[:, None]
              * inv_freq(rotary_dim, theta, scaling).to(device)[None, :])
    return torch.cat([angles.cos(), angles.sin()], dim=-1)


def validate(shape, dtype):
    positive_ints(shape, ("tokens", "q_heads", "kv_heads", "head_dim", "rotary_dim", "theta", "max_position"))
    if shape["rotary_dim"] % 2 or shape["rotary_dim"] > shape["head_dim"]:
        raise ValueError(f"shape {shape_str(shape)}: rotary_dim {shape['rotary_dim']} must be even and at most "
                         f"head_dim {shape['head_dim']}")
    if shape["style"] not in STYLES:
        raise ValueError(f"shape {shape_str(shape)}: style {shape['style']!r} must be one of {', '.join(STYLES)}")
    if shape["scaling"] not in SCALINGS:
        raise ValueError(f"shape {shape_str(shape)}: scaling {shape['scaling']!r} must be one of "
                         f"{', '.join(SCALINGS)}")


def make_inputs(shape, dtype, device, gen):
    t, d = shape["tokens"], shape["head_dim"]
    dt = dtypes.torch_dtype(dtype)
    cache = cos_sin_cache(shape["max_position"], shape["rotary_dim"], shape["theta"], shape["scaling"], device)
    return {
        "q": torch.randn(t, shape["q_heads"], d, device=device, generator=gen).to(dt),
        "k": torch.randn(t, shape["kv_heads"], d, device=device, generator=gen).to(dt),
        "positions": torch.randint(0, shape["max_position"], (t,), device=device, generator=gen),
        "cos_sin_cache": cache,
        "cos_sin_cache_act": cache.to(dt),         # for vLLM, which reads it in q's dtype
        "neox": shape["style"] == "neox",
        "rotary_dim": shape["rotary_dim"],
    }


def take_given(x, given):
    """Given q, k, positions; a position outside the cos/sin cache is refused by name (an
    index out of range would fail inside a kernel, or read past the cache)."""
    for name, t in given.items():
        x[name] = given_like(x[name], t, name)
    pos, n = x["positions"], x["cos_sin_cache"].shape[0]
    if pos.numel() and (int(pos.min()) < 0 or int(pos.max()) >= n):
        raise ValueError(f"given positions span {int(pos.min())}..{int(pos.max())}; the cos/sin cache has "
                         f"max_position {n}")
    return x


def _rotate64(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, rotary_dim: int, neox: bool):
    out = x.double().clone()
    rot = out[..., :rotary_dim]
    if neox:
        a, b = rot[..., : rotary_dim // 2].clone(), rot[..., rotary_dim // 2:].clone()
        rot[..., : rotary_dim // 2], rot[..., rotary_dim // 2:] = a * cos - b * sin, b * cos + a * sin
    else:
        a, b = rot[..., 0::2].clone(), rot[..., 1::2].clone()
        rot[..., 0::2], rot[..., 1::2] = a * cos - b * sin, b * cos + a * sin
    return out.float()


def reference(x):
    cs = x["cos_sin_cache"].double()[x["positions"]]
    half = x["rotary_dim"] // 2
    cos, sin = cs[:, None, :half], cs[:, None, half:]
    return tuple(_rotate64(x[n], cos, sin, x["rotary_dim"], x["neox"]) for n in ("q", "k"))


def nbytes(shape, dtype):
    t, r = shape["tokens"], shape["rotary_dim"]
    return 2 * t * (shape["q_heads"] + shape["kv_heads"]) * r * dtypes.itemsize(dtype) + 4 * t * r + 8 * t


def flops(shape):
    return 3 * shape["tokens"] * (shape["q_heads"] + shape["kv_heads"]) * shape["rotary_dim"]


# ---------------------------------------------------------------------------------------
# backends

def rope_eager(q, k, positions, cache, rotary_dim: int, neox: bool):
    """vLLM's native RoPE, in place: the rotation in fp32, rounded once into q and k."""
    cs = cache.index_select(0, positions)
    cos, sin = cs.chunk(2, dim=-1)
    cos, sin = cos[:, None, :], sin[:, None, :]
    for t in (q, k):
        rot = t[..., :rotary_dim]
        if neox:
            a, b = rot.float().chunk(2, dim=-1)
            out = torch.cat((a * cos - b * sin, b * cos + a * sin), dim=-1)
        else:
            a, b = rot[..., 0::2].float(), rot[..., 1::2].float()
            out = torch.stack((a * cos - b * sin, b * cos + a * sin), dim=-1).flatten(-2)
        rot.copy_(out)
    return q, k


def _torch(x):
    return rope_eager(x["q"], x["k"], x["positions"], x["cos_sin_cache"], x["rotary_dim"], x["neox"])


def _triton(x):
    from kernelmark.kernels.rope import rope
    return rope(x["q"], x["k"], x["positions"], x["cos_sin_cache"], x["neox"], check_positions=False)


def _triton_config():
    from kernelmark.kernels import chosen_config
    from kernelmark.kernels.rope import _rope
    return chosen_config(_rope)


def _flat(x) -> tuple:
    q, k = x["q"], x["k"]
    return q.view(q.shape[0], -1), k.view(k.shape[0], -1), q.shape[-1]


def _flashinfer(x):
    # flashinfer.rope.apply_rope_with_cos_sin_cache_inplace(positions, query [nnz, Hq·D], key [nnz, Hk·D],
    #     head_size, cos_sin_cache fp32 [max_pos, rotary_dim], is_neox=True)
    q, k, d = _flat(x)
    libs.module_function("flashinfer.rope", "apply_rope_with_cos_sin_cache_inplace")(
        x["positions"], q, k, d, x["cos_sin_cache"], is_neox=x["neox"])
    return x["q"], x["k"]


def _sgl(x):
    # sgl_kernel.apply_rope_with_cos_sin_cache_inplace: FlashInfer's signature
    q, k, d = _flat(x)
    libs.module_function("sgl_kernel", "apply_rope_with_cos_sin_cache_inplace")(
        x["positions"], q, k, d, x["cos_sin_cache"], is_neox=x["neox"])
    return x["q"], x["k"]


def _vllm(x):
    # vllm._custom_ops.rotary_embedding(positions, query, key, head_size, cos_sin_cache, is_neox);
    # the cache in the query's dtype
    q, k, d = _flat(x)
    libs.vllm_op("rotary_embedding")(x["positions"], q, k, d, x["cos_sin_cache_act"], x["neox"])
    return x["q"], x["k"]


def _flashinfer_supports(shape, dtype, device_kind, capability):
    if shape["head_dim"] not in (64, 128, 256, 512):
        return "flashinfer's RoPE kernels are built for head_dim 64, 128, 256 and 512"
    return libs.half_precision_only("flashinfer")(shape, dtype, device_kind, capability)


_KEY = compiled.tensor_key("q", "k", "cos_sin_cache", scalars=("rotary_dim", "neox"))

OPS = [
    Op(
        name="rope",
        description="rotary embedding in place on q and k from a cos/sin cache by position "
                    "(NeoX or GPT-J layout, partial rotary, Llama 3.1 scaling as data); outputs (q, k)",
        params=PARAMS, defaults=DEFAULTS, dtypes=DTYPES,
        make_inputs=make_inputs, reference=reference, flops=flops, nbytes=nbytes, validate=validate,
        given=("q", "k", "positions"), take_given=take_given,
        backends=(
            Backend("triton", _triton, triton=True, detail=_triton_config,
                    description="kernelmark's Triton RoPE (kernels/rope.py): a program per token and head "
                                "block, cos/sin loaded once per token"),
            Backend("torch", _torch, description="eager torch: index_select of cos/sin, the rotation in fp32, "
                                                 "copy_ back into q and k (vLLM's native form)"),
            Backend("torch-compile", compiled.Compiled(_torch, _KEY), devices=compiled.GPU,
                    description=compiled.DESCRIPTION),
            Backend("flashinfer", _flashinfer, devices=("cuda",), supports=_flashinfer_supports,
                    available=libs.function_available("flashinfer.rope", "apply_rope_with_cos_sin_cache_inplace",
                                                      "flashinfer"),
                    description="flashinfer.rope.apply_rope_with_cos_sin_cache_inplace"),
            Backend("vllm", _vllm, devices=libs.GPU, available=libs.vllm_available("rotary_embedding"),
                    description="vllm._custom_ops.rotary_embedding (cos/sin cache in q's dtype)"),
            Backend("sgl-kernel", _sgl, devices=libs.GPU, supports=libs.half_precision_only("sgl-kernel"),
                    available=libs.function_available("sgl_kernel", "apply_rope_with_cos_sin_cache_inplace",
                                                      "sgl-kernel"),
                    description="sgl_kernel.apply_rope_with_cos_sin_cache_inplace"),
        ),
    ),
]
