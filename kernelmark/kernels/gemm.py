"""Tiled GEMM in Triton: C[M, N] = A[M, K] · B[K, N], fp32 accumulation.

Tiling: each program owns a BLOCK_M x BLOCK_N tile of C and walks K in BLOCK_K steps,
loading an A tile and a B tile per step (software-pipelined num_stages deep by the
compiler) and accumulating with tl.dot on the tensor cores. Programs are ordered in
groups of GROUP_M tile-rows so that consecutive programs share B tiles in L2 (the
"grouped ordering" of Triton's matmul tutorial). Strides are passed through, so B can be
a transposed view (the A·Wᵀ of linear layers) with no copy.

Small M (decode: M = 1..16) is memory bound: the weights must stream through once at
full bandwidth, so the autotune list has short-and-wide tiles (BLOCK_M = 16, small
BLOCK_N) that put enough programs on the SMs.

fp32 inputs use IEEE fp32 products (input_precision="ieee"), not TF32, to match what
torch.matmul computes by default; fp16/bf16/fp8 use the tensor cores natively.
"""

from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from kernelmark.kernels import interpreting
from kernelmark.kernels.autotune_prune import autotune
from kernelmark.kernels.tl_utils import dot, swizzled_tile

_SUPPORTED = (torch.float32, torch.float16, torch.bfloat16)
_FP8 = tuple(getattr(torch, n) for n in ("float8_e4m3fn", "float8_e5m2") if hasattr(torch, n))


# (BLOCK_M, BLOCK_N, BLOCK_K, GROUP_M, num_warps, num_stages)
TILES = (
    # compute bound, Hopper-sized tiles
    (128, 256, 64, 8, 8, 3),
    (256, 128, 64, 8, 8, 3),
    (128, 128, 64, 8, 8, 4),
    (128, 128, 64, 8, 4, 4),
    (128, 128, 32, 8, 4, 4),
    (128, 64, 64, 8, 4, 4),
    (64, 128, 64, 8, 4, 4),
    (64, 64, 64, 8, 4, 4),
    # skinny M (decode): stream the weights, many programs along N
    (16, 32, 256, 1, 4, 4),
    (16, 64, 256, 1, 4, 4),
    (16, 64, 128, 1, 4, 5),
    (16, 128, 128, 1, 4, 4),
    (32, 64, 128, 1, 4, 4),
    (32, 128, 128, 4, 4, 4),
    (64, 64, 128, 4, 4, 3),
)


def tile_configs(tiles=TILES) -> list:
    return [triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": g}, num_warps=w, num_stages=s)
            for bm, bn, bk, g, w, s in tiles]


def autotune_configs():
    """The autotune list of the tiled GEMMs (this one and kernels/bmm.py, which tiles each
    batch the same way)."""
    if interpreting():
        # One small config: the interpreter runs every program in Python, and
        # autotuning there would only multiply the time.
        return [triton.Config({"BLOCK_M": 32, "BLOCK_N": 32, "BLOCK_K": 32, "GROUP_M": 4},
                              num_warps=4, num_stages=1)]
    return tile_configs()


def shared_memory_bytes(cfg, element_size: int) -> int:
    """Shared memory a config's main loop needs: the software pipeliner keeps
    num_stages - 1 A and B tiles in flight. (That is what Triton asks for: the two fp32
    configs (16, 64, 256, s4) and (32, 128, 128, s4) need exactly 3 x 20480 x 4 bytes =
    240 KiB, over the 227 KiB a Hopper block may use.) The epilogue may need a little
    more; a config this estimate lets through but that still cannot launch is caught by
    the autotuner (OutOfResources), so erring low costs a compile, erring high a config."""
    k = cfg.kwargs
    tile = k["BLOCK_M"] * k["BLOCK_K"] + k["BLOCK_K"] * k["BLOCK_N"]
    return max(cfg.num_stages - 1, 1) * tile * element_size


def needs_shared_bytes(cfg, named_args) -> Optional[int]:
    """The autotuner's estimate of what `cfg` needs for these arguments (their A's dtype):
    configs over the GPU's per-block limit are left out before compiling, on that GPU only
    (kernelmark/kernels/autotune_prune.py)."""
    a = named_args.get("a_ptr")
    return None if a is None else shared_memory_bytes(cfg, a.element_size())


@autotune(configs=autotune_configs(), key=["M", "N", "K", "stride_am", "stride_bk"], shared_bytes=needs_shared_bytes)
@triton.jit
def _gemm_kernel(a_ptr, b_ptr, c_ptr, M, N, K,
                 stride_am, stride_ak, stride_bk, stride_bn, stride_cm, stride_cn,
                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
                 IEEE_FP32: tl.constexpr, UPCAST_DOT: tl.constexpr):
    pid_m, pid_n = swizzled_tile(tl.program_id(0), M, N, BLOCK_M, BLOCK_N, GROUP_M)
    acc, offs_m, offs_n = tile_product(a_ptr, b_ptr, M, N, K, pid_m, pid_n, stride_am, stride_ak, stride_bk,
                                       stride_bn, BLOCK_M, BLOCK_N, BLOCK_K, IEEE_FP32, UPCAST_DOT)
    c_ptrs = c_ptr + offs_m[:, None] * stride_cm + offs_n[None, :] * stride_cn
    tl.store(c_ptrs, acc.to(c_ptr.dtype.element_ty), mask=(offs_m[:, None] < M) & (offs_n[None, :] < N))


@triton.jit
def tile_product(a_ptr, b_ptr, M, N, K, pid_m, pid_n, stride_am, stride_ak, stride_bk, stride_bn,
                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                 IEEE_FP32: tl.constexpr, UPCAST_DOT: tl.constexpr):
    """(fp32 accumulator of the BLOCK_M x BLOCK_N tile (pid_m, pid_n) of A·B, its row and
    column offsets as int64): the K loop of gemm and bmm (bmm passes A and B already
    offset to its batch element)."""
    offs_m = (pid_m * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
    offs_n = (pid_n * BLOCK_N + tl.arange(0, BLOCK_N)).to(tl.int64)
    offs_k = tl.arange(0, BLOCK_K)
    a_ptrs = a_ptr + offs_m[:, None] * stride_am + offs_k[None, :] * stride_ak
    b_ptrs = b_ptr + offs_k[:, None] * stride_bk + offs_n[None, :] * stride_bn
    mask_m = offs_m[:, None] < M
    mask_n = offs_n[None, :] < N
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k in range(0, tl.cdiv(K, BLOCK_K)):
        # the K tail: elements past K load as zero and add nothing
        k_left = K - k * BLOCK_K
        a = tl.load(a_ptrs, mask=mask_m & (offs_k[None, :] < k_left), other=0.0)
        b = tl.load(b_ptrs, mask=(offs_k[:, None] < k_left) & mask_n, other=0.0)
        acc = dot(a, b, acc, UPCAST_DOT, IEEE_FP32)
        a_ptrs += BLOCK_K * stride_ak
        b_ptrs += BLOCK_K * stride_bk
    return acc, offs_m, offs_n


def matmul(a: torch.Tensor, b: torch.Tensor, out_dtype: torch.dtype | None = None) -> torch.Tensor:
    """C = A·B for 2-D A [M, K] and B [K, N] (any strides; B may be Wᵀ of a [N, K] weight).

    fp32, fp16 and bf16 inputs give an output of the same dtype by default; fp8 inputs
    (e4m3/e5m2, on devices that have fp8 tensor cores) give bf16 unless told otherwise.
    """
    if a.dim() != 2 or b.dim() != 2:
        raise ValueError(f"matmul needs 2-D A and B, got A {tuple(a.shape)} and B {tuple(b.shape)}")
    M, K = a.shape
    K2, N = b.shape
    if K != K2:
        raise ValueError(f"inner dimensions differ: A is {M}x{K}, B is {K2}x{N}")
    if min(M, N, K) <= 0:
        raise ValueError(f"empty GEMM {M}x{N}x{K}: every dimension must be positive")
    if a.dtype != b.dtype:
        raise ValueError(f"A is {a.dtype} but B is {b.dtype}; both must have one dtype")
    if a.dtype not in _SUPPORTED + _FP8:
        raise ValueError(f"dtype {a.dtype} is not supported; supported: fp32, fp16, bf16, fp8")
    if a.device != b.device:
        raise ValueError(f"A is on {a.device} but B is on {b.device}")
    if a.device.type == "cpu" and not interpreting():
        raise ValueError("CPU tensors need the Triton interpreter (TRITON_INTERPRET=1 before importing triton)")
    if out_dtype is None:
        out_dtype = torch.bfloat16 if a.dtype in _FP8 else a.dtype
    c = torch.empty((M, N), device=a.device, dtype=out_dtype)
    grid = lambda meta: (triton.cdiv(M, meta["BLOCK_M"]) * triton.cdiv(N, meta["BLOCK_N"]),)  # noqa: E731
    _gemm_kernel[grid](a, b, c, M, N, K,
                       a.stride(0), a.stride(1), b.stride(0), b.stride(1), c.stride(0), c.stride(1),
                       IEEE_FP32=a.dtype == torch.float32,
                       UPCAST_DOT=interpreting() and a.dtype == torch.bfloat16)
    return c
