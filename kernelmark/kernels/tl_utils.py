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
def swizzled_tile(pid, M, N, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GROUP_M: tl.constexpr):
    """(tile row, tile column) of program ``pid`` over an M x N output in grouped order:
    GROUP_M tile-rows are visited column by column, so the programs running together share
    their A rows and B columns in the L2 (the GEMM kernels' swizzle)."""
    num_m = tl.cdiv(M, BLOCK_M)
    num_n = tl.cdiv(N, BLOCK_N)
    per_group = GROUP_M * num_n
    first_m = (pid // per_group) * GROUP_M
    group_m = min(num_m - first_m, GROUP_M)
    return first_m + (pid % per_group) % group_m, (pid % per_group) // group_m


@triton.jit
def token_head_rows(rows, KV_HEADS: tl.constexpr, BLOCK_R: tl.constexpr):
    """This program's BLOCK_R rows of a [tokens x kv_heads] row space, as
    (row in range, token index, head index); the indices are int64 so that row offsets
    into a large cache cannot overflow."""
    r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    return r < rows, (r // KV_HEADS).to(tl.int64), (r % KV_HEADS).to(tl.int64)


@triton.jit
def round_to_e4m3_grid(y):
    """fp32 ``y`` rounded to nearest even onto the fp8 e4m3 grid, still as fp32, so that the
    conversion to tl.float8e4nv that follows is exact. Done in fp32 arithmetic because the
    Triton interpreter's own fp32 -> e4m3 conversion does not round to nearest (3.9 turned
    -7.84 into -4); on a GPU the result equals the hardware's RN conversion. Shared by the
    KV-cache quantiser and the fp8 per-token-group quantiser."""
    # y in [-448, 448]. e4m3 keeps 3 mantissa bits: the quantum of a normal value with
    # exponent e is 2**(e-3); below 2**-6 (subnormals) it is 2**-9. Rounding |y| with the
    # 1.5 * 2**23 trick scaled by the quantum rounds to nearest even on that grid.
    bits = y.to(tl.int32, bitcast=True)
    exp = ((bits >> 23) & 0xFF) - 127
    q_exp = tl.maximum(exp, -6) - 3
    magic = ((q_exp + 150) << 23).to(tl.float32, bitcast=True) * 1.5
    a = tl.abs(y)
    r = (a + magic) - magic
    # Copy the sign bit (arithmetic shifts: -1 << 31 is the sign mask) so that -0.0 and
    # tiny negatives keep it, as torch's conversion does.
    sign = (bits >> 31) << 31
    return (r.to(tl.int32, bitcast=True) | sign).to(tl.float32, bitcast=True)
