"""RMSNorm and the fused residual-add RMSNorm in Triton.

    rmsnorm:            y = x / sqrt(mean(x²) + eps) · w
    fused_add_rmsnorm:  r ← x + r (stored in r's dtype), y = rmsnorm(r)

Tiling: a program owns ``ROWS`` whole rows (a [ROWS, BLOCK_N] tile). The sum of squares
is a reduction along the row, so a row never spans programs. Where the row fits one
tile (hidden ≤ MAX_BLOCK_N: every model's hidden size) it is read once and kept in
registers: the kernel moves exactly the minimum bytes (x once, y once; for the fused form
x and r once each, r and y once each). Longer rows are walked in ``CHUNKS`` static chunks
twice: once for the sum of squares, once to scale (the second read comes from L2).
``w`` is loaded once per program and reused across its rows; math is fp32, rounded once
per output. Loop bounds are constexprs (no runtime ``range`` bound: Triton 3.6's
interpreter cannot convert one under numpy ≥ 2.4).

The fused form stores the new residual rounded to its dtype and normalises that stored
value, as vLLM's kernel does (the next layer reads the rounded residual). ``out`` may be
``x`` itself (FlashInfer's and vLLM's in-place form): each program reads its rows of x
before it writes them.

Autotuning picks ROWS and num_warps per (rows, hidden); configs whose tile would not
fit registers, or would leave threads without a 16-byte vector, are pruned. The fused
kernel's tuner restores x and r after each trial, since it writes them.
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
# Largest row held in registers in one tile (fp32 values: 16384 over 16 warps is 32 a thread).
MAX_BLOCK_N = 16384
# Longest row accepted: CHUNKS static chunks of MAX_BLOCK_N (the loop is unrolled).
MAX_HIDDEN = 8 * MAX_BLOCK_N
# Largest tile (elements) of one program.
MAX_TILE = 16384


def _configs():
    if interpreting():
        # One config (the interpreter runs programs one by one; tuning would only cost).
        # ROWS = 4 keeps a row tail in play for any row count not a multiple of 4.
        return [triton.Config({"ROWS": 4}, num_warps=4)]
    return [triton.Config({"ROWS": r}, num_warps=w) for r in (1, 2, 4, 8, 16) for w in (1, 2, 4, 8, 16)]


def prune(configs, named_args, **kwargs):
    """Keep configs whose tile fits (≤ MAX_TILE elements), gives every thread at least one
    16-byte vector and no more than 16 of them, and has no more rows than the tensor."""
    args = {**named_args, **kwargs}
    block_n, m = args["BLOCK_N"], args["M"]
    itemsize = args["x_ptr"].element_size()
    keep = []
    for c in configs:
        rows, threads = c.kwargs["ROWS"], 32 * c.num_warps
        tile_bytes = rows * block_n * itemsize
        if rows * block_n > MAX_TILE or rows > max(1, next_pow2(m)):
            continue
        if tile_bytes < 16 * threads or tile_bytes > 16 * 16 * threads:
            continue
        keep.append(c)
    if keep:
        return keep
    # Nothing fits the rules (a tiny row): the smallest tile with the fewest warps.
    return [min(configs, key=lambda c: (c.kwargs["ROWS"], c.num_warps))]


@triton.jit
def _rmsnorm_kernel(x_ptr, res_ptr, w_ptr, out_ptr, M, N, eps,
                    stride_x, stride_r, stride_o,
                    HAS_RESIDUAL: tl.constexpr, ROWS: tl.constexpr, BLOCK_N: tl.constexpr,
                    CHUNKS: tl.constexpr):
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    row_ok = (rows < M)[:, None]
    rows = rows.to(tl.int64)[:, None]
    cols = tl.arange(0, BLOCK_N)[None, :]
    x_row = x_ptr + rows * stride_x
    r_row = res_ptr + rows * stride_r
    o_row = out_ptr + rows * stride_o
    if CHUNKS == 1:
        col_ok = cols < N
        mask = row_ok & col_ok
        x = tl.load(x_row + cols, mask=mask, other=0.0).to(tl.float32)
        if HAS_RESIDUAL:
            r = tl.load(r_row + cols, mask=mask, other=0.0).to(tl.float32)
            s = (x + r).to(res_ptr.dtype.element_ty)
            tl.store(r_row + cols, s, mask=mask)
            x = s.to(tl.float32)
        rstd = tl.rsqrt(tl.sum(x * x, axis=1) / N + eps)
        w = tl.load(w_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
        y = x * rstd[:, None] * w
        tl.store(o_row + cols, y.to(out_ptr.dtype.element_ty), mask=mask)
    else:
        acc = tl.zeros((ROWS, BLOCK_N), dtype=tl.float32)
        for c in tl.static_range(CHUNKS):
            offs = c * BLOCK_N + cols
            mask = row_ok & (offs < N)
            x = tl.load(x_row + offs, mask=mask, other=0.0).to(tl.float32)
            if HAS_RESIDUAL:
                r = tl.load(r_row + offs, mask=mask, other=0.0).to(tl.float32)
                s = (x + r).to(res_ptr.dtype.element_ty)
                tl.store(r_row + offs, s, mask=mask)
                x = s.to(tl.float32)
            acc += x * x
        rstd = tl.rsqrt(tl.sum(acc, axis=1) / N + eps)[:, None]
        for c in tl.static_range(CHUNKS):
            offs = c * BLOCK_N + cols
            col_ok = offs < N
            mask = row_ok & col_ok
            if HAS_RESIDUAL:
                x = tl.load(r_row + offs, mask=mask, other=0.0).to(tl.float32)
            else:
                x = tl.load(x_row + offs, mask=mask, other=0.0).to(tl.float32)
            w = tl.load(w_ptr + offs, mask=col_ok, other=0.0).to(tl.float32)
            tl.store(o_row + offs, (x * rstd * w).to(out_ptr.dtype.element_ty), mask=mask)


_rmsnorm = autotune(configs=_configs(), key=["M", "N"], early_config_prune=prune)(_rmsnorm_kernel)
# Writes x (when out is x) and r: the tuner must put them back after every trial.
_fused_add_rmsnorm = autotune(configs=_configs(), key=["M", "N"], early_config_prune=prune,
                              restore_value=["x_ptr", "res_ptr"])(_rmsnorm_kernel)


def _check_rows(name: str, t: torch.Tensor, like: torch.Tensor | None = None) -> None:
    if t.dim() != 2:
        raise ValueError(f"{name} must be 2-D [tokens, hidden], got shape {tuple(t.shape)}")
    if t.dtype not in DTYPES:
        raise ValueError(f"{name} has dtype {t.dtype}; supported: float32, float16, bfloat16")
    if t.numel() and t.stride(1) != 1:
        raise ValueError(f"{name}'s hidden dimension must be contiguous, got strides {t.stride()}")
    if like is not None:
        if tuple(t.shape) != tuple(like.shape):
            raise ValueError(f"{name} has shape {tuple(t.shape)}, expected {tuple(like.shape)}")
        if t.dtype != like.dtype:
            raise ValueError(f"{name} is {t.dtype} but x is {like.dtype}")
        if t.device != like.device:
            raise ValueError(f"{name} is on {t.device} but x on {like.device}")


def _check_args(x, weight, eps, out, residual) -> None:
    _check_rows("x", x)
    hidden = x.shape[1]
    if hidden < 1 or hidden > MAX_HIDDEN:
        raise ValueError(f"hidden size {hidden} is not supported: 1..{MAX_HIDDEN}")
    if weight.dim() != 1 or weight.shape[0] != hidden:
        raise ValueError(f"weight must be [hidden={hidden}], got shape {tuple(weight.shape)}")
    if weight.dtype not in DTYPES:
        raise ValueError(f"weight has dtype {weight.dtype}; supported: float32, float16, bfloat16")
    if weight.device != x.device:
        raise ValueError(f"weight is on {weight.device} but x on {x.device}")
    if weight.stride(0) != 1:
        raise ValueError(f"weight must be contiguous, got stride {weight.stride(0)}")
    if not isinstance(eps, (int, float)) or isinstance(eps, bool) or not eps >= 0:
        raise ValueError(f"eps must be a non-negative number, got {eps!r}")
    if residual is not None:
        _check_rows("residual", residual, x)
    if out is not None:
        _check_rows("out", out, x)
    if x.device.type == "cpu" and not interpreting():
        raise ValueError("CPU tensors need the Triton interpreter (TRITON_INTERPRET=1 before importing triton)")


def _launch(kernel, x, residual, weight, eps, out, max_block_n):
    m, n = x.shape
    if m == 0:
        return
    block_n = min(next_pow2(n), max_block_n)
    chunks = triton.cdiv(n, block_n)
    r = residual if residual is not None else x
    grid = lambda meta: (triton.cdiv(m, meta["ROWS"]),)  # noqa: E731
    kernel[grid](x, r, weight, out, m, n, float(eps), x.stride(0), r.stride(0), out.stride(0),
                 HAS_RESIDUAL=residual is not None, BLOCK_N=block_n, CHUNKS=chunks)


def rmsnorm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6, out: torch.Tensor | None = None, *,
            max_block_n: int = MAX_BLOCK_N) -> torch.Tensor:
    """y = x / rms(x) · weight over the last dimension of ``x`` [tokens, hidden] (fp32,
    fp16 or bf16; weight [hidden] of any of those). Returns ``out`` (new if None).
    ``max_block_n`` (tests): the longest row kept in one tile, to exercise the chunked path."""
    _check_args(x, weight, eps, out, None)
    out = torch.empty_like(x) if out is None else out
    _launch(_rmsnorm, x, None, weight, eps, out, max_block_n)
    return out


def fused_add_rmsnorm(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6,
                      out: torch.Tensor | None = None, *, max_block_n: int = MAX_BLOCK_N) -> tuple:
    """residual ← x + residual (in place, in its dtype), y = rmsnorm(residual) into ``out``
    (new if None; may be ``x`` itself). Returns (y, residual)."""
    _check_args(x, weight, eps, out, residual)
    out = torch.empty_like(x) if out is None else out
    _launch(_fused_add_rmsnorm, x, residual, weight, eps, out, max_block_n)
    return out, residual
