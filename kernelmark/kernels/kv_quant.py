"""kv_quantize / kv_dequantize: a KV cache tensor [tokens, kv_heads, head_dim] (an NHD
cache's pages seen as tokens) to fp8 e4m3 or int8 codes with fp32 scales, and back.

Scales, by ``granularity``:

* ``"tensor"``: one scale, shape [1]; ``"head"``: one per kv head, shape [kv_heads].
  Static (calibrated) scales: an input, as vLLM's k_scale/v_scale.
* ``"token_head"``: one per (token, kv head), shape [tokens, kv_heads], computed here
  (dynamic): ``scale = absmax(row) / QMAX`` (0 for an all-zero row, whose codes are 0).

Code = round_to_nearest_even(clamp(x / scale, ±QMAX)) onto the format's grid, QMAX =
448 (e4m3) or 127 (int8, symmetric: -128 is never produced). Dequantize: code · scale
in fp32, rounded once to the output dtype.

Bit-exactness with a plain-torch reference is by construction: the division is IEEE
(``div_rn``, not the fast approximate one Triton uses for ``/`` on GPUs), absmax is
exact, and rounding is done here in fp32 arithmetic — int8 by the 1.5·2**23 trick,
e4m3 by the same trick at the value's own quantum — so the final conversion to the
code type is always exact. (The Triton 3.9 interpreter's own fp32->e4m3 conversion
does not round to nearest even: it turned -7.84 into -4.)
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernelmark.kernels import kv_validate as kv
from kernelmark.kernels.tl_utils import round_to_e4m3_grid, token_head_rows

QFORMATS = ("fp8_e4m3", "int8")
GRANULARITIES = ("tensor", "head", "token_head")
QMAX = {"fp8_e4m3": 448.0, "int8": 127.0}


def code_dtype(qformat: str) -> torch.dtype:
    if qformat == "int8":
        return torch.int8
    if qformat == "fp8_e4m3":
        dt = getattr(torch, "float8_e4m3fn", None)
        if dt is None:
            raise ValueError(f"fp8 e4m3 is not available in torch {torch.__version__}")
        return dt
    raise ValueError(f"unknown qformat {qformat!r}; known: {', '.join(QFORMATS)}")


def scale_shape(granularity: str, tokens: int, kv_heads: int) -> tuple:
    if granularity == "tensor":
        return (1,)
    if granularity == "head":
        return (kv_heads,)
    if granularity == "token_head":
        return (tokens, kv_heads)
    raise ValueError(f"unknown granularity {granularity!r}; known: {', '.join(GRANULARITIES)}")


def _scale_strides(granularity: str, kv_heads: int) -> tuple:
    """(stride per token, stride per head) into the scale tensor; 0 broadcasts."""
    return {"tensor": (0, 0), "head": (0, 1), "token_head": (kv_heads, 1)}[granularity]


@triton.jit
def _round_half_even(y):
    # Adding 1.5 * 2**23 leaves no fraction bits, so the fp32 add rounds y to an integer
    # (nearest, ties to even); exact for |y| < 2**22.
    return (y + 12582912.0) - 12582912.0


@triton.jit
def _quantize_kernel(
    x_ptr, q_ptr, scale_ptr, rows,
    stride_xt, stride_xh, stride_qt, stride_qh, stride_st, stride_sh,
    KV_HEADS: tl.constexpr, HEAD_DIM: tl.constexpr, QMAX: tl.constexpr,
    IS_INT8: tl.constexpr, DYNAMIC: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr,
):
    row_ok, t, h = token_head_rows(rows, KV_HEADS, BLOCK_R)
    d = tl.arange(0, BLOCK_D)
    mask = row_ok[:, None] & (d < HEAD_DIM)[None, :]
    x = tl.load(x_ptr + (t * stride_xt + h * stride_xh)[:, None] + d[None, :], mask=mask, other=0.0)
    x = x.to(tl.float32)
    s_off = t * stride_st + h * stride_sh
    if DYNAMIC:
        absmax = tl.max(tl.abs(x), axis=1)
        scale = tl.math.div_rn(absmax, tl.full(absmax.shape, QMAX, tl.float32))
        tl.store(scale_ptr + s_off, scale, mask=row_ok)
    else:
        scale = tl.load(scale_ptr + s_off, mask=row_ok, other=1.0)
    safe = tl.where(scale > 0.0, scale, 1.0)
    y = tl.math.div_rn(x, tl.broadcast_to(safe[:, None], x.shape))
    y = tl.minimum(tl.maximum(y, -QMAX), QMAX)
    if IS_INT8:
        code = _round_half_even(y).to(tl.int8)
    else:
        code = round_to_e4m3_grid(y).to(tl.float8e4nv)
    tl.store(q_ptr + (t * stride_qt + h * stride_qh)[:, None] + d[None, :], code, mask=mask)


@triton.jit
def _dequantize_kernel(
    q_ptr, scale_ptr, out_ptr, rows,
    stride_qt, stride_qh, stride_ot, stride_oh, stride_st, stride_sh,
    KV_HEADS: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr,
):
    row_ok, t, h = token_head_rows(rows, KV_HEADS, BLOCK_R)
    d = tl.arange(0, BLOCK_D)
    mask = row_ok[:, None] & (d < HEAD_DIM)[None, :]
    q = tl.load(q_ptr + (t * stride_qt + h * stride_qh)[:, None] + d[None, :], mask=mask)
    scale = tl.load(scale_ptr + t * stride_st + h * stride_sh, mask=row_ok, other=0.0)
    out = q.to(tl.float32) * scale[:, None]
    tl.store(out_ptr + (t * stride_ot + h * stride_oh)[:, None] + d[None, :],
             out.to(out_ptr.dtype.element_ty), mask=mask)


def _check_rows(name: str, x: torch.Tensor) -> None:
    if x.dim() != 3:
        raise ValueError(f"{name} must be 3-D [tokens, kv_heads, head_dim], got shape {tuple(x.shape)}")
    if x.numel() and x.stride(2) != 1:
        raise ValueError(f"{name}'s head_dim must be contiguous (stride 1), got strides {x.stride()}")


def _check_scale(scale: torch.Tensor, granularity: str, tokens: int, kv_heads: int, device) -> None:
    want = scale_shape(granularity, tokens, kv_heads)
    if tuple(scale.shape) != want:
        raise ValueError(f"a {granularity!r} scale must have shape {want}, got {tuple(scale.shape)}")
    if scale.dtype != torch.float32:
        raise ValueError(f"scale must be float32, got {scale.dtype}")
    if scale.device != device:
        raise ValueError(f"scale is on {scale.device} but the data on {device}")
    if scale.numel() and not scale.is_contiguous():
        raise ValueError("scale must be contiguous")


def _launch_shape(x: torch.Tensor) -> tuple:
    t, h, d = x.shape
    block_d = kv.next_pow2(d)
    block_r = kv.rows_per_program(t * h, block_d, x.device)
    return t * h, block_d, block_r, (triton.cdiv(t * h, block_r),)


def _output(out, shape: tuple, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The output buffer: a new one, or the caller's after checking it fits."""
    if out is None:
        return torch.empty(shape, dtype=dtype, device=device)
    _check_rows("out", out)
    if tuple(out.shape) != shape or out.dtype != dtype or out.device != device:
        raise ValueError(f"out must be {dtype} {shape} on {device}, "
                         f"got {out.dtype} {tuple(out.shape)} on {out.device}")
    return out


def kv_quantize(x: torch.Tensor, qformat: str, granularity: str, scale: torch.Tensor | None = None, *,
                out: torch.Tensor | None = None) -> tuple:
    """Quantize ``x`` [tokens, kv_heads, head_dim] (fp16/bf16/fp32) to ``qformat`` codes.

    ``granularity`` "tensor"/"head": ``scale`` (fp32, [1] / [kv_heads]) is given and
    returned as is. "token_head": ``scale`` must be None; it is computed and returned,
    [tokens, kv_heads]. Returns (codes [tokens, kv_heads, head_dim], scale).
    """
    cdt = code_dtype(qformat)
    _check_rows("x", x)
    if x.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise ValueError(f"x must be fp16, bf16 or fp32, got {x.dtype}")
    t, h, d = x.shape
    scale_shape(granularity, t, h)
    dynamic = granularity == "token_head"
    if dynamic:
        if scale is not None:
            raise ValueError("a 'token_head' scale is computed from the data; pass scale=None")
        scale = torch.empty((t, h), dtype=torch.float32, device=x.device)
    elif scale is None:
        raise ValueError(f"a {granularity!r} scale is static: pass the calibrated scale")
    _check_scale(scale, granularity, t, h, x.device)
    out = _output(out, (t, h, d), cdt, x.device)
    rows, block_d, block_r, grid = _launch_shape(x)
    if rows == 0:
        return out, scale
    sst, ssh = _scale_strides(granularity, h)
    _quantize_kernel[grid](
        x, out, scale, rows,
        x.stride(0), x.stride(1), out.stride(0), out.stride(1), sst, ssh,
        KV_HEADS=h, HEAD_DIM=d, QMAX=QMAX[qformat], IS_INT8=qformat == "int8", DYNAMIC=dynamic,
        BLOCK_R=block_r, BLOCK_D=block_d, num_warps=kv.warps_for(block_r * block_d, x.element_size()),
    )
    return out, scale


def kv_dequantize(codes: torch.Tensor, scale: torch.Tensor, granularity: str,
                  out_dtype: torch.dtype = torch.bfloat16, *, out: torch.Tensor | None = None) -> torch.Tensor:
    """``codes`` [tokens, kv_heads, head_dim] (int8 or float8_e4m3fn) times ``scale``
    (fp32, shaped by ``granularity`` as in kv_quantize) -> ``out_dtype``."""
    _check_rows("codes", codes)
    if codes.dtype not in (torch.int8, getattr(torch, "float8_e4m3fn", torch.int8)):
        raise ValueError(f"codes must be int8 or float8_e4m3fn, got {codes.dtype}")
    if out_dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise ValueError(f"out_dtype must be fp16, bf16 or fp32, got {out_dtype}")
    t, h, d = codes.shape
    _check_scale(scale, granularity, t, h, codes.device)
    out = _output(out, (t, h, d), out_dtype, codes.device)
    rows, block_d, block_r, grid = _launch_shape(codes)
    if rows == 0:
        return out
    sst, ssh = _scale_strides(granularity, h)
    _dequantize_kernel[grid](
        codes, scale, out, rows,
        codes.stride(0), codes.stride(1), out.stride(0), out.stride(1), sst, ssh,
        KV_HEADS=h, HEAD_DIM=d, BLOCK_R=block_r, BLOCK_D=block_d,
        num_warps=kv.warps_for(block_r * block_d, out.element_size()),
    )
    return out
