"""Gated activations of a transformer MLP in Triton: x [tokens, 2·I] → y [tokens, I],

    silu_and_mul:       y = silu(a) · b                       (Llama, Qwen, DeepSeek)
    gelu_tanh_and_mul:  y = gelu_tanh(a) · b                  (Gemma)

with ``a = x[:, :I]`` (the gate) and ``b = x[:, I:]`` (the up projection), as the fused
gate_up projection writes them. silu(a) = a·σ(a); gelu_tanh(a) = ½·a·(1 + tanh(u)) with
u = √(2/π)·(a + 0.044715·a³), computed as a·σ(2u) — the same value, since
½(1 + tanh(u)) = σ(2u), with no tanh (which Triton's core language lacks) and no
cancellation near u = 0. Math in fp32, one rounding of y.

Tiling: a 2-D grid of [ROWS, BLOCK_N] tiles of y; each reads the matching tiles of a and
b (two contiguous, 16-byte-aligned streams when I·itemsize is a multiple of 16) and
writes one. Pure streaming: 3·I·itemsize bytes a row, nothing reused, so the only goal
is full-width loads with enough bytes in flight; autotuning picks the tile and warps per
(rows, I).
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
ACTIVATIONS = {"silu": 0, "gelu_tanh": 1}


def _configs():
    if interpreting():
        return [triton.Config({"ROWS": 2, "BLOCK_N": 64}, num_warps=4)]
    return [triton.Config({"ROWS": r, "BLOCK_N": n}, num_warps=w)
            for r in (1, 2, 4, 8) for n in (256, 512, 1024, 2048, 4096) for w in (2, 4, 8)
            if r * n <= 8192]


def prune(configs, named_args, **kwargs):
    """Drop tiles wider than the row (rounded up to a power of two, at least 256), taller
    than the tensor, or that leave a thread without one 16-byte vector per stream."""
    args = {**named_args, **kwargs}
    width, m = max(256, next_pow2(args["I"])), max(1, next_pow2(args["M"]))
    itemsize = args["x_ptr"].element_size()
    keep = [c for c in configs
            if c.kwargs["BLOCK_N"] <= width and c.kwargs["ROWS"] <= m
            and c.kwargs["ROWS"] * c.kwargs["BLOCK_N"] * itemsize >= 16 * 32 * c.num_warps]
    return keep or [min(configs, key=lambda c: (c.kwargs["ROWS"] * c.kwargs["BLOCK_N"], c.num_warps))]


@triton.jit
def _act_and_mul_kernel(x_ptr, out_ptr, M, I, stride_x, stride_o,
                        ACT: tl.constexpr, ROWS: tl.constexpr, BLOCK_N: tl.constexpr):
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    mask = (rows < M)[:, None] & (cols < I)[None, :]
    rows = rows.to(tl.int64)[:, None]
    gate_ptrs = x_ptr + rows * stride_x + cols[None, :]
    a = tl.load(gate_ptrs, mask=mask, other=0.0).to(tl.float32)
    b = tl.load(gate_ptrs + I, mask=mask, other=0.0).to(tl.float32)
    if ACT == 0:
        act = a * tl.sigmoid(a)
    else:
        # 1.5957691216057308 = 2·sqrt(2/π), a literal: compiled kernels may read no global
        # that is not a tl.constexpr, and the interpreter mishandles a constexpr times a tensor.
        act = a * tl.sigmoid(1.5957691216057308 * (a + 0.044715 * a * a * a))
    tl.store(out_ptr + rows * stride_o + cols[None, :], (act * b).to(out_ptr.dtype.element_ty), mask=mask)


_act_and_mul = autotune(configs=_configs(), key=["M", "I"], early_config_prune=prune)(_act_and_mul_kernel)


def act_and_mul(x: torch.Tensor, activation: str = "silu", out: torch.Tensor | None = None) -> torch.Tensor:
    """``activation``(x[:, :I]) · x[:, I:] for ``x`` [tokens, 2·I] (fp32, fp16, bf16, last
    dimension contiguous); ``activation`` is "silu" or "gelu_tanh". Returns ``out`` [tokens, I]."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; known: {', '.join(ACTIVATIONS)}")
    if x.dim() != 2:
        raise ValueError(f"x must be 2-D [tokens, 2·intermediate], got shape {tuple(x.shape)}")
    if x.dtype not in DTYPES:
        raise ValueError(f"x has dtype {x.dtype}; supported: float32, float16, bfloat16")
    m, two_i = x.shape
    if two_i == 0 or two_i % 2:
        raise ValueError(f"x's last dimension must be 2·intermediate (even, positive), got {two_i}")
    if x.numel() and x.stride(1) != 1:
        raise ValueError(f"x's last dimension must be contiguous, got strides {x.stride()}")
    i = two_i // 2
    if out is None:
        out = torch.empty((m, i), device=x.device, dtype=x.dtype)
    elif tuple(out.shape) != (m, i) or out.dtype != x.dtype or out.device != x.device or out.stride(1) != 1:
        raise ValueError(f"out must be a {x.dtype} [{m}, {i}] tensor on {x.device} with a contiguous last "
                         f"dimension, got {out.dtype} {tuple(out.shape)} on {out.device}")
    if x.device.type == "cpu" and not interpreting():
        raise ValueError("CPU tensors need the Triton interpreter (TRITON_INTERPRET=1 before importing triton)")
    if m == 0:
        return out
    grid = lambda meta: (triton.cdiv(m, meta["ROWS"]), triton.cdiv(i, meta["BLOCK_N"]))  # noqa: E731
    _act_and_mul[grid](x, out, m, i, x.stride(0), out.stride(0), ACT=ACTIVATIONS[activation])
    return out
