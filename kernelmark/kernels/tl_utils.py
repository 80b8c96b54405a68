"""Triton helpers shared by the kernels."""

import triton
import triton.language as tl

from kernelmark.kernels import interpreter_compat

# Every kernel with a loop imports this module, so the interpreter work-around for
# runtime loop bounds (Triton 3.6 with numpy >= 2.4) is in place before its first launch.
interpreter_compat.apply()


@triton.jit
def dot(a, b, acc, UPCAST_DOT: tl.constexpr, IEEE_FP32: tl.constexpr):
    """acc + a·b on the tensor cores, with two switches decided by the launcher:

    UPCAST_DOT: the Triton interpreter's tl.dot returns wrong values for bf16 operands
    (seen with triton 3.9); bf16 -> fp32 is exact, so upcasting leaves the product unchanged.
    IEEE_FP32: fp32 operands in IEEE precision rather than TF32, as torch computes by default.
    """
    if UPCAST_DOT:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision="ieee")
    elif IEEE_FP32:
        return tl.dot(a, b, acc, input_precision="ieee")
    else:
        return tl.dot(a, b, acc)


@triton.jit
def token_head_rows(rows, KV_HEADS: tl.constexpr, BLOCK_R: tl.constexpr):
    """This program's BLOCK_R rows of a [tokens x kv_heads] row space, as
    (row in range, token index, head index); the indices are int64 so that row offsets
    into a large cache cannot overflow."""
    r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    return r < rows, (r // KV_HEADS).to(tl.int64), (r % KV_HEADS).to(tl.int64)
