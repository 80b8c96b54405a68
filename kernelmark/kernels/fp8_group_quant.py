"""Per-token, per-group dynamic fp8 e4m3 quantisation of activations, the step before a
block-scaled GEMM (DeepSeek-V3's linear layers): x [tokens, hidden] (fp32/fp16/bf16) to
codes float8_e4m3fn [tokens, hidden] and fp32 scales [tokens, hidden / group].

The format (ops/fp8_blockwise.py's reference computes the same, bit for bit):

    scale[t, g] = absmax(x[t, g·G : (g+1)·G]) / 448          IEEE fp32 division
    code[t, j]  = RNE_e4m3(clamp(x[t, j] / scale[t, j // G], -448, 448))

A group of zeros gets scale 0 and codes 0. (vLLM and sgl-kernel clamp absmax at eps = 1e-10
first, so theirs is 2.2e-13; both dequantise to 0.) Division is div_rn, not the approximate
division Triton emits for ``/`` on GPUs, and the rounding to e4m3 is done in fp32
arithmetic (tl_utils.round_to_e4m3_grid) so that the final conversion is exact: the
interpreter's own conversion does not round to nearest.

Tiling: with the groups of a row contiguous, [tokens, hidden] is [tokens·hidden/G, G]
group-rows. A program loads BLOCK_R group-rows (G contiguous elements each: 16-byte vectors,
coalesced), takes each row's absmax, stores BLOCK_R scales and BLOCK_R·G codes. Memory
bound: read 2 bytes, write 1 + 4/G per element; the autotune list trades tile size against
having enough programs for every SM at decode sizes (a few tokens).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernelmark.kernels import interpreting
from kernelmark.kernels.autotune_prune import autotune
from kernelmark.kernels.tl_utils import round_to_e4m3_grid

FP8_MAX = 448.0
_FP8_MAX = tl.constexpr(FP8_MAX)   # what the kernel reads: kernels may read constexpr globals only
INPUT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _configs():
    if interpreting():
        return [triton.Config({"BLOCK_R": 16}, num_warps=1)]
    # (group-rows per program, warps): 1 KiB .. 16 KiB of bf16 input per program.
    return [triton.Config({"BLOCK_R": r}, num_warps=w)
            for r, w in ((4, 1), (8, 2), (16, 4), (32, 4), (32, 8), (64, 8))]


@autotune(configs=_configs(), key=["rows", "GROUP"])
@triton.jit
def _group_quant_kernel(x_ptr, q_ptr, s_ptr, rows, groups, stride_xt, stride_qt, stride_st,
                        GROUP: tl.constexpr, BLOCK_R: tl.constexpr):
    r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    row_ok = r < rows
    t = (r // groups).to(tl.int64)
    g = (r % groups).to(tl.int64)
    c = tl.arange(0, GROUP)
    mask = row_ok[:, None] & (c < GROUP)[None, :]
    x = tl.load(x_ptr + (t * stride_xt + g * GROUP)[:, None] + c[None, :], mask=mask, other=0.0).to(tl.float32)
    absmax = tl.max(tl.abs(x), axis=1)
    scale = tl.math.div_rn(absmax, tl.full(absmax.shape, _FP8_MAX, tl.float32))
    tl.store(s_ptr + t * stride_st + g, scale, mask=row_ok)
    safe = tl.where(scale > 0.0, scale, 1.0)
    y = tl.math.div_rn(x, tl.broadcast_to(safe[:, None], x.shape))
    y = tl.minimum(tl.maximum(y, -_FP8_MAX), _FP8_MAX)
    code = round_to_e4m3_grid(y).to(tl.float8e4nv)
    tl.store(q_ptr + (t * stride_qt + g * GROUP)[:, None] + c[None, :], code, mask=mask)


def fp8_dtype() -> torch.dtype:
    dt = getattr(torch, "float8_e4m3fn", None)
    if dt is None:
        raise ValueError(f"torch {torch.__version__} has no float8_e4m3fn")
    return dt


def _check_out(name: str, t, shape: tuple, dtype: torch.dtype, device) -> None:
    if not isinstance(t, torch.Tensor) or tuple(t.shape) != shape or t.dtype != dtype or t.device != device:
        got = f"{t.dtype} {tuple(t.shape)} on {t.device}" if isinstance(t, torch.Tensor) else type(t).__name__
        raise ValueError(f"{name} must be {dtype} {shape} on {device}, got {got}")
    if t.stride(-1) != 1:
        raise ValueError(f"{name}'s last dimension must be contiguous, got strides {t.stride()}")


def per_token_group_quant(x: torch.Tensor, group: int = 128, *, out: torch.Tensor | None = None,
                          scale_out: torch.Tensor | None = None) -> tuple:
    """(codes float8_e4m3fn [T, H], scales fp32 [T, H/group]) of ``x`` [T, H] (fp32/fp16/bf16,
    last dimension contiguous; any token stride). ``group`` must be a power of two from 16 to
    1024 dividing H. ``out``/``scale_out``: buffers to write into (row strides are free)."""
    if not isinstance(x, torch.Tensor) or x.dim() != 2:
        raise ValueError(f"x must be a 2-D tensor [tokens, hidden], got "
                         f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
    if x.dtype not in INPUT_DTYPES:
        raise ValueError(f"x dtype {x.dtype} is not supported; supported: fp32, fp16, bf16")
    if isinstance(group, bool) or not isinstance(group, int) or group < 16 or group > 1024 or group & (group - 1):
        raise ValueError(f"group {group!r} is not supported: a power of two from 16 to 1024")
    t, h = x.shape
    if h % group:
        raise ValueError(f"hidden {h} is not a multiple of the group size {group}")
    if x.numel() and x.stride(1) != 1:
        raise ValueError(f"x's hidden dimension must be contiguous (stride 1), got strides {x.stride()}")
    if x.device.type == "cpu" and not interpreting():
        raise ValueError("CPU tensors need the Triton interpreter (TRITON_INTERPRET=1 before importing triton)")
    if x.device.type == "cuda" and torch.cuda.get_device_capability(x.device) < (8, 9):
        raise ValueError("Triton's fp8 e4m3 conversion needs compute capability 8.9 or newer")
    cdt = fp8_dtype()
    groups = h // group
    if out is None:
        out = torch.empty((t, h), dtype=cdt, device=x.device)
    _check_out("out", out, (t, h), cdt, x.device)
    if scale_out is None:
        scale_out = torch.empty((t, groups), dtype=torch.float32, device=x.device)
    _check_out("scale_out", scale_out, (t, groups), torch.float32, x.device)
    rows = t * groups
    if rows == 0:
        return out, scale_out
    grid = lambda meta: (triton.cdiv(rows, meta["BLOCK_R"]),)  # noqa: E731
    _group_quant_kernel[grid](x, out, scale_out, rows, groups, x.stride(0), out.stride(0), scale_out.stride(0),
                              GROUP=group)
    return out, scale_out
