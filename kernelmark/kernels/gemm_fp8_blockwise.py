"""Block-scaled fp8 GEMM, DeepSeek-V3's linear layers: C = (A·sA)(B·sB)ᵀ in Triton.

A [M, K] float8_e4m3fn activations with fp32 scales sA [M, ⌈K/128⌉] (one per token and
128-column group: kernels/fp8_group_quant.py makes them), B [N, K] float8_e4m3fn weights
as linear layers store them, with fp32 scales sB [⌈N/128⌉, ⌈K/128⌉] (one per 128x128
block), C [M, N] bf16 (fp16/fp32 on request).

Each program owns a BLOCK_M x BLOCK_N tile of C and walks K in steps of 128, the scale
group: per step, one fp8 x fp8 tl.dot on the tensor cores into a fresh fp32 partial, which
is scaled by A's per-row scale and B's per-column-block scale and added to the fp32
accumulator (DeepGEMM's "promotion" of each 128-deep partial into fp32 does the same).
The scales are vectors ([BLOCK_M] and [BLOCK_N], the latter from ⌈n/128⌉), so BLOCK_N is
free and N need not be a multiple of 128 (DeepSeek-V3's kv_a projection has N = 576).
Grouped tile ordering (GROUP_M tile-rows at a time) keeps B tiles in L2; skinny configs
(BLOCK_M = 16) stream the weights at decode sizes.

Under the Triton interpreter fp8 tl.dot is not available: the launcher sets UPCAST_DOT and
the fp8 tiles are converted to fp32 before an IEEE fp32 dot (exact: every fp8 value is an
fp32 value and the products of two fit), so the scales, masks and indexing are checked
on a CPU exactly as the GPU runs them; only the tensor-core product is not.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernelmark.kernels.tl_utils import swizzled_tile  # also applies the triton 3.6 interpreter work-around

from kernelmark.kernels import interpreting
from kernelmark.kernels.autotune_prune import autotune

GROUP_K = 128        # scale group along K (A and B) and along N (B)
OUT_DTYPES = (torch.bfloat16, torch.float16, torch.float32)


def _configs():
    if interpreting():
        return [triton.Config({"BLOCK_M": 32, "BLOCK_N": 32, "GROUP_M": 4}, num_warps=4, num_stages=1)]
    tiles = [
        # (BLOCK_M, BLOCK_N, GROUP_M, num_warps, num_stages); BLOCK_K is the 128 of the scales.
        # Each fp8 dot writes a fresh partial beside the accumulator, two register tiles:
        # 128x256 and 256x128 tiles (and 128x128 on 4 warps) spill on sm_90 (ptxas, triton
        # 3.9), so they are not here.
        (128, 128, 8, 8, 3),
        (128, 128, 8, 8, 4),
        (256, 64, 8, 8, 3),
        (64, 256, 4, 8, 3),
        (128, 64, 8, 4, 4),
        (128, 64, 8, 4, 5),
        (64, 128, 8, 4, 4),
        (64, 128, 8, 4, 5),
        (64, 64, 8, 4, 4),
        # decode: few rows, the weights streamed by many programs (N / BLOCK_N of them)
        (16, 32, 1, 4, 4),
        (16, 64, 1, 4, 4),
        (16, 128, 1, 4, 4),
        (16, 256, 1, 4, 4),
        (32, 64, 1, 4, 5),
        (32, 128, 1, 4, 4),
    ]
    return [triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "GROUP_M": g}, num_warps=w, num_stages=s)
            for bm, bn, g, w, s in tiles]


@autotune(configs=_configs(), key=["M", "N", "K"])
@triton.jit
def _block_fp8_gemm_kernel(a_ptr, b_ptr, c_ptr, as_ptr, bs_ptr, M, N, K,
                           stride_am, stride_ak, stride_bn, stride_bk, stride_cm, stride_cn,
                           stride_asm, stride_ask, stride_bsn, stride_bsk,
                           BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GROUP_M: tl.constexpr,
                           UPCAST_DOT: tl.constexpr):
    BLOCK_K: tl.constexpr = 128
    pid_m, pid_n = swizzled_tile(tl.program_id(0), M, N, BLOCK_M, BLOCK_N, GROUP_M)

    offs_m = (pid_m * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
    offs_n = (pid_n * BLOCK_N + tl.arange(0, BLOCK_N)).to(tl.int64)
    offs_k = tl.arange(0, BLOCK_K)
    mask_m = offs_m < M
    mask_n = offs_n < N
    a_ptrs = a_ptr + offs_m[:, None] * stride_am + offs_k[None, :] * stride_ak
    b_ptrs = b_ptr + offs_k[:, None] * stride_bk + offs_n[None, :] * stride_bn     # Bᵀ tile [K, N]
    as_ptrs = as_ptr + offs_m * stride_asm
    bs_ptrs = bs_ptr + (offs_n // 128) * stride_bsn

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for kb in range(0, tl.cdiv(K, BLOCK_K)):
        k_left = K - kb * BLOCK_K
        a = tl.load(a_ptrs, mask=mask_m[:, None] & (offs_k[None, :] < k_left), other=0.0)
        b = tl.load(b_ptrs, mask=(offs_k[:, None] < k_left) & mask_n[None, :], other=0.0)
        sa = tl.load(as_ptrs + kb * stride_ask, mask=mask_m, other=0.0)
        sb = tl.load(bs_ptrs + kb * stride_bsk, mask=mask_n, other=0.0)
        if UPCAST_DOT:
            part = tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
        else:
            part = tl.dot(a, b)
        acc += part * sa[:, None] * sb[None, :]
        a_ptrs += BLOCK_K * stride_ak
        b_ptrs += BLOCK_K * stride_bk

    c_ptrs = c_ptr + offs_m[:, None] * stride_cm + offs_n[None, :] * stride_cn
    tl.store(c_ptrs, acc.to(c_ptr.dtype.element_ty), mask=mask_m[:, None] & mask_n[None, :])


def _check_2d(name: str, t, dtype=None) -> None:
    if not isinstance(t, torch.Tensor) or t.dim() != 2:
        raise ValueError(f"{name} must be a 2-D tensor, got "
                         f"{tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__}")
    if dtype is not None and t.dtype != dtype:
        raise ValueError(f"{name} must be {dtype}, got {t.dtype}")


def block_fp8_matmul(a: torch.Tensor, b: torch.Tensor, a_scale: torch.Tensor, b_scale: torch.Tensor,
                     out_dtype: torch.dtype = torch.bfloat16, *, out: torch.Tensor | None = None) -> torch.Tensor:
    """C [M, N] = (A·sA)(B·sB)ᵀ for fp8 e4m3 A [M, K], B [N, K] and fp32 scales sA [M, ⌈K/128⌉],
    sB [⌈N/128⌉, ⌈K/128⌉] (any strides: a column-major sA is fine). See the module docstring."""
    fp8 = getattr(torch, "float8_e4m3fn", None)
    if fp8 is None:
        raise ValueError(f"torch {torch.__version__} has no float8_e4m3fn")
    _check_2d("a", a, fp8)
    _check_2d("b", b, fp8)
    _check_2d("a_scale", a_scale, torch.float32)
    _check_2d("b_scale", b_scale, torch.float32)
    (m, k), (n, k2) = a.shape, b.shape
    if k != k2:
        raise ValueError(f"a is {m}x{k} but b is {n}x{k2}: both must have K columns (b is [N, K])")
    if min(m, n, k) <= 0:
        raise ValueError(f"empty GEMM {m}x{n}x{k}: every dimension must be positive")
    kb, nb = triton.cdiv(k, GROUP_K), triton.cdiv(n, GROUP_K)
    if tuple(a_scale.shape) != (m, kb):
        raise ValueError(f"a_scale must be [M, ceil(K/128)] = [{m}, {kb}], got {list(a_scale.shape)}")
    if tuple(b_scale.shape) != (nb, kb):
        raise ValueError(f"b_scale must be [ceil(N/128), ceil(K/128)] = [{nb}, {kb}], got {list(b_scale.shape)}")
    for name, t in (("b", b), ("a_scale", a_scale), ("b_scale", b_scale)):
        if t.device != a.device:
            raise ValueError(f"{name} is on {t.device} but a on {a.device}")
    if out_dtype not in OUT_DTYPES:
        raise ValueError(f"out_dtype {out_dtype} is not supported; supported: bf16, fp16, fp32")
    if a.device.type == "cpu" and not interpreting():
        raise ValueError("CPU tensors need the Triton interpreter (TRITON_INTERPRET=1 before importing triton)")
    if a.device.type == "cuda" and torch.cuda.get_device_capability(a.device) < (8, 9):
        raise ValueError("fp8 tl.dot needs compute capability 8.9 or newer")
    if out is None:
        out = torch.empty((m, n), dtype=out_dtype, device=a.device)
    elif tuple(out.shape) != (m, n) or out.dtype != out_dtype or out.device != a.device:
        raise ValueError(f"out must be {out_dtype} ({m}, {n}) on {a.device}, got "
                         f"{out.dtype} {tuple(out.shape)} on {out.device}")
    grid = lambda meta: (triton.cdiv(m, meta["BLOCK_M"]) * triton.cdiv(n, meta["BLOCK_N"]),)  # noqa: E731
    _block_fp8_gemm_kernel[grid](a, b, out, a_scale, b_scale, m, n, k,
                                 a.stride(0), a.stride(1), b.stride(0), b.stride(1), out.stride(0), out.stride(1),
                                 a_scale.stride(0), a_scale.stride(1), b_scale.stride(0), b_scale.stride(1),
                                 UPCAST_DOT=interpreting())
    return out
