"""Batched GEMM in Triton: C[b] = A[b] · B[b] for b in range(batch), fp32 accumulation.

The tiling is kernels/gemm.py's, per batch: a 2-D grid whose first axis walks the
BLOCK_M x BLOCK_N tiles of one C[b] (in gemm's grouped order) and whose second axis is b.
Each program offsets A, B and C by b times their batch strides and then runs gemm's K
loop unchanged, so every stride layout gemm takes (B a transposed view of per-batch
weights [N, K], A a view of token-major storage) is taken here with no copy.

The autotune list, the shared-memory estimate that prunes it, and the interpreter's
single small config are gemm's (imported, not copied): a batch element is a GEMM of the
same shape, so what fits and what is fast per tile is the same. The batch is in the
autotune key because it changes how many programs fill the GPU: the absorbed MLA decode
products (128 heads of a [1..64, 128] x [128, 512] GEMM) are memory bound and need the
skinny tiles that put enough programs on the SMs only when the batch is small.

Loop bounds are scalars (the K loop runs to tl.cdiv of a scalar argument), never
tensors, so the kernel runs under Triton 3.6's interpreter with numpy >= 2.4 once
tl_utils has applied kernels/interpreter_compat.py.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernelmark.kernels import interpreting
from kernelmark.kernels.autotune_prune import autotune
from kernelmark.kernels.gemm import autotune_configs, needs_shared_bytes, tile_product
from kernelmark.kernels.tl_utils import swizzled_tile

_SUPPORTED = (torch.float32, torch.float16, torch.bfloat16)
# CUDA's limit on the second grid axis, which carries the batch.
MAX_BATCH = 65535


@autotune(configs=autotune_configs(), key=["BATCH", "M", "N", "K", "stride_am", "stride_bk"],
          shared_bytes=needs_shared_bytes)
@triton.jit
def _bmm_kernel(a_ptr, b_ptr, c_ptr, BATCH, M, N, K,
                stride_ab, stride_am, stride_ak, stride_bb, stride_bk, stride_bn, stride_cb, stride_cm, stride_cn,
                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
                IEEE_FP32: tl.constexpr, UPCAST_DOT: tl.constexpr):
    pid_m, pid_n = swizzled_tile(tl.program_id(0), M, N, BLOCK_M, BLOCK_N, GROUP_M)
    # int64 so that b * stride cannot overflow for a large batch of large matrices.
    batch = tl.program_id(1).to(tl.int64)
    acc, offs_m, offs_n = tile_product(a_ptr + batch * stride_ab, b_ptr + batch * stride_bb, M, N, K, pid_m, pid_n,
                                       stride_am, stride_ak, stride_bk, stride_bn, BLOCK_M, BLOCK_N, BLOCK_K,
                                       IEEE_FP32, UPCAST_DOT)
    c_ptrs = c_ptr + batch * stride_cb + offs_m[:, None] * stride_cm + offs_n[None, :] * stride_cn
    tl.store(c_ptrs, acc.to(c_ptr.dtype.element_ty), mask=(offs_m[:, None] < M) & (offs_n[None, :] < N))


def bmm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """C [batch, M, N] = A [batch, M, K] · B [batch, K, N], any strides (B may be the
    transposed view of per-batch weights [batch, N, K]); C is contiguous, in A's dtype."""
    if a.dim() != 3 or b.dim() != 3:
        raise ValueError(f"bmm needs 3-D A and B, got A {tuple(a.shape)} and B {tuple(b.shape)}")
    batch, M, K = a.shape
    batch_b, K2, N = b.shape
    if batch != batch_b:
        raise ValueError(f"batch sizes differ: A has {batch}, B has {batch_b}")
    if K != K2:
        raise ValueError(f"inner dimensions differ: A is {batch}x{M}x{K}, B is {batch_b}x{K2}x{N}")
    if min(batch, M, N, K) <= 0:
        raise ValueError(f"empty bmm {batch}x{M}x{N}x{K}: every dimension must be positive")
    if batch > MAX_BATCH:
        raise ValueError(f"batch {batch} is over {MAX_BATCH}, the most the grid's batch axis can launch")
    if a.dtype != b.dtype:
        raise ValueError(f"A is {a.dtype} but B is {b.dtype}; both must have one dtype")
    if a.dtype not in _SUPPORTED:
        raise ValueError(f"dtype {a.dtype} is not supported; supported: fp32, fp16, bf16")
    if a.device != b.device:
        raise ValueError(f"A is on {a.device} but B is on {b.device}")
    if a.device.type == "cpu" and not interpreting():
        raise ValueError("CPU tensors need the Triton interpreter (TRITON_INTERPRET=1 before importing triton)")
    c = torch.empty((batch, M, N), device=a.device, dtype=a.dtype)
    grid = lambda meta: (triton.cdiv(M, meta["BLOCK_M"]) * triton.cdiv(N, meta["BLOCK_N"]), batch)  # noqa: E731
    _bmm_kernel[grid](a, b, c, batch, M, N, K,
                      a.stride(0), a.stride(1), a.stride(2), b.stride(0), b.stride(1), b.stride(2),
                      c.stride(0), c.stride(1), c.stride(2),
                      IEEE_FP32=a.dtype == torch.float32,
                      UPCAST_DOT=interpreting() and a.dtype == torch.bfloat16)
    return c
