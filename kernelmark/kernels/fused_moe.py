"""Fused MoE experts in Triton: grouped GEMM gate_up -> silu·mul -> grouped GEMM down ->
weighted sum over the top-k.

Layout (kernels/moe_align.py): the (token, slot) pairs sorted by expert, each expert's
run padded to BLOCK_M, so every BLOCK_M rows of ``sorted_ids`` share one expert,
``expert_ids[block]``. Both GEMMs are grouped GEMMs over that layout: program (m, n)
reads its BLOCK_M pair ids, gathers their rows of A (x for gate_up — row = pair // topk —
the intermediate for down — row = pair), and multiplies by the [N, K] weight of the
block's expert. Blocks past ``num_post_padded`` return at once, so the grid can be sized
for the worst case without a device-to-host sync.

* gate_up: one program computes the gate and the up tiles of the same BLOCK_N columns
  (w1 rows n and I + n) and writes silu(gate)·up: the [pairs, 2I] product never exists.
* down: the tile is multiplied by the pair's top-k weight and written [pairs, H];
* a last small kernel sums each token's top-k rows (in slot order: deterministic, no
  atomics) and writes the output in the activation dtype.

fp8 (DeepSeek-V3's recipe): weights e4m3 with one fp32 scale per 128×128 block
([E, N/128, K/128]), activations e4m3 with one scale per token and 128 columns. BLOCK_K
divides 128, so within a K step each row has one activation scale and each column one
weight scale: acc += dot(a, b) · a_scale[:, None] · b_scale[None, :]. The interpreter has
no fp8 dot: there (and for bf16, see tl_utils.dot) operands are upcast to fp32, exactly.

Decode (a few pairs per expert) is memory bound: each hit expert's weights must stream
through once, so small batches use BLOCK_M = 16 and many programs along N.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernelmark.kernels import interpreting
from kernelmark.kernels.autotune_prune import autotune
from kernelmark.kernels.tl_utils import round_to_e4m3_grid
from kernelmark.kernels.tl_utils import dot

FP8_GROUP = 128


@triton.jit
def _grouped_tile(a_ptr, b_ptr, a_rows, row_ok, offs_n, n_ok, K, stride_am, stride_bn, acc,
                  as_ptr, bs_ptr, stride_as, stride_bsn,
                  BLOCK_K: tl.constexpr, FP8: tl.constexpr, UPCAST_DOT: tl.constexpr):
    """acc + A[a_rows, :] · B[offs_n, :]ᵀ over K (B is the expert's [N, K] weight, K contiguous)."""
    offs_k = tl.arange(0, BLOCK_K)
    a_ptrs = a_ptr + a_rows[:, None] * stride_am + offs_k[None, :]
    b_ptrs = b_ptr + offs_n[None, :] * stride_bn + offs_k[:, None]
    for k in range(0, tl.cdiv(K, BLOCK_K)):
        k_left = K - k * BLOCK_K
        a = tl.load(a_ptrs, mask=row_ok[:, None] & (offs_k[None, :] < k_left), other=0.0)
        b = tl.load(b_ptrs, mask=(offs_k[:, None] < k_left) & n_ok[None, :], other=0.0)
        if FP8:
            kg = (k * BLOCK_K) // 128
            a_s = tl.load(as_ptr + a_rows * stride_as + kg, mask=row_ok, other=0.0)
            b_s = tl.load(bs_ptr + (offs_n // 128) * stride_bsn + kg, mask=n_ok, other=0.0)
            part = dot(a, b, tl.zeros(acc.shape, dtype=tl.float32), UPCAST_DOT, False)
            acc += part * a_s[:, None] * b_s[None, :]
        else:
            acc = dot(a, b, acc, UPCAST_DOT, False)
        a_ptrs += BLOCK_K
        b_ptrs += BLOCK_K
    return acc


def _configs():
    """BLOCK_N, BLOCK_K, warps and stages to autotune; BLOCK_M is the layout's block and is
    fixed by the launcher (block_m()). Narrow BLOCK_N gives decode, where only the hit
    experts' blocks do work, enough programs to keep every SM streaming weights."""
    if interpreting():
        # Few, wide programs: the interpreter's cost is per program and per step, not per element.
        return [triton.Config({"BLOCK_N": 64, "BLOCK_K": 64}, num_warps=4, num_stages=1)]
    tiles = [(16, 128, 4, 4), (32, 128, 4, 4), (32, 64, 4, 5), (64, 128, 4, 4), (64, 64, 4, 4),
             (128, 64, 4, 3), (128, 64, 8, 3), (128, 128, 8, 3)]
    return [triton.Config({"BLOCK_N": bn, "BLOCK_K": bk}, num_warps=w, num_stages=st) for bn, bk, w, st in tiles]


# Keyed on the pairs (a power-of-two bucket), the GEMM's N and K and the layout's block.
@autotune(configs=_configs(), key=["m_key", "I", "H", "BLOCK_M", "FP8"])
@triton.jit
def _gate_up_kernel(x_ptr, w_ptr, h_ptr, sorted_ptr, expert_ids_ptr, npp_ptr, xs_ptr, ws_ptr,
                    n_pairs, m_key, I, H, topk, stride_xt, stride_we, stride_wn, stride_ht,
                    stride_xst, stride_wse, stride_wsn,
                    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                    FP8: tl.constexpr, UPCAST_DOT: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    if pid_m * BLOCK_M >= tl.load(npp_ptr):
        return
    e = tl.load(expert_ids_ptr + pid_m).to(tl.int64)
    if e < 0:
        return
    pairs = tl.load(sorted_ptr + pid_m * BLOCK_M + tl.arange(0, BLOCK_M))
    row_ok = pairs < n_pairs
    tok = (pairs // topk).to(tl.int64)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_ok = offs_n < I
    w = w_ptr + e * stride_we
    ws = ws_ptr + e * stride_wse
    zero = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    g = _grouped_tile(x_ptr, w, tok, row_ok, offs_n, n_ok, H, stride_xt, stride_wn, zero,
                      xs_ptr, ws, stride_xst, stride_wsn, BLOCK_K, FP8, UPCAST_DOT)
    u = _grouped_tile(x_ptr, w, tok, row_ok, offs_n + I, n_ok, H, stride_xt, stride_wn, zero,
                      xs_ptr, ws, stride_xst, stride_wsn, BLOCK_K, FP8, UPCAST_DOT)
    act = g / (1.0 + tl.exp(-g)) * u
    out = h_ptr + pairs.to(tl.int64)[:, None] * stride_ht + offs_n[None, :]
    tl.store(out, act.to(h_ptr.dtype.element_ty), mask=row_ok[:, None] & n_ok[None, :])


@autotune(configs=_configs(), key=["m_key", "H", "I", "BLOCK_M", "FP8"])
@triton.jit
def _down_kernel(h_ptr, w_ptr, y_ptr, tw_ptr, sorted_ptr, expert_ids_ptr, npp_ptr, hs_ptr, ws_ptr,
                 n_pairs, m_key, H, I, stride_ht, stride_we, stride_wn, stride_yt,
                 stride_hst, stride_wse, stride_wsn,
                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                 FP8: tl.constexpr, UPCAST_DOT: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    if pid_m * BLOCK_M >= tl.load(npp_ptr):
        return
    e = tl.load(expert_ids_ptr + pid_m).to(tl.int64)
    if e < 0:
        return
    pairs = tl.load(sorted_ptr + pid_m * BLOCK_M + tl.arange(0, BLOCK_M))
    row_ok = pairs < n_pairs
    rows = pairs.to(tl.int64)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_ok = offs_n < H
    acc = _grouped_tile(h_ptr, w_ptr + e * stride_we, rows, row_ok, offs_n, n_ok, I, stride_ht, stride_wn,
                        tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32),
                        hs_ptr, ws_ptr + e * stride_wse, stride_hst, stride_wsn, BLOCK_K, FP8, UPCAST_DOT)
    acc *= tl.load(tw_ptr + rows, mask=row_ok, other=0.0)[:, None]
    tl.store(y_ptr + rows[:, None] * stride_yt + offs_n[None, :], acc.to(y_ptr.dtype.element_ty),
             mask=row_ok[:, None] & n_ok[None, :])


@triton.jit
def _sum_topk_kernel(y_ptr, out_ptr, H, topk, BLOCK_H: tl.constexpr):
    t = tl.program_id(0).to(tl.int64)
    offs = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    ok = offs < H
    acc = tl.zeros((BLOCK_H,), dtype=tl.float32)
    for j in range(0, topk):
        acc += tl.load(y_ptr + (t * topk + j) * H + offs, mask=ok, other=0.0).to(tl.float32)
    tl.store(out_ptr + t * H + offs, acc.to(out_ptr.dtype.element_ty), mask=ok)


def block_m(tokens: int, topk: int, experts: int) -> int:
    """The layout's block (BLOCK_M) by the average pairs per expert: 16 for decode, where a
    block is mostly padding anyway, up to 128 for prefill, where tiles should be large."""
    if interpreting():
        return 16
    per_expert = tokens * topk / max(1, experts)
    return 16 if per_expert <= 16 else 64 if per_expert <= 96 else 128


_last_block_m: list = []


def last_config() -> str | None:
    """BLOCK_M and what the autotuner chose for each GEMM on the last call, for the record."""
    if not _last_block_m:
        return None
    cfg = [f"BLOCK_M: {_last_block_m[0]}"]
    for name, k in (("gate_up", _gate_up_kernel), ("down", _down_kernel)):
        best = getattr(k, "best_config", None)
        if best is not None:
            cfg.append(f"{name}: {best}")
    return "; ".join(cfg)


@triton.jit
def _group_quant_kernel(x_ptr, q_ptr, s_ptr, rows, stride_x, stride_q, n_groups,
                        GROUP: tl.constexpr, BLOCK_R: tl.constexpr):
    """One scale per row and GROUP columns, amax / 448, codes rounded to nearest even on the
    e4m3 grid before the conversion (so the interpreter's conversion is exact too): bit for
    bit what ops/moe.quantize_groups computes in torch."""
    r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    g = tl.program_id(1)
    ok = r < rows
    cols = g * GROUP + tl.arange(0, GROUP)
    r64 = r.to(tl.int64)
    x = tl.load(x_ptr + r64[:, None] * stride_x + cols[None, :], mask=ok[:, None], other=0.0).to(tl.float32)
    amax = tl.max(tl.abs(x), axis=1)
    scale = tl.maximum(tl.math.div_rn(amax, tl.full(amax.shape, 448.0, tl.float32)), 1e-12)
    y = tl.math.div_rn(x, tl.broadcast_to(scale[:, None], x.shape))
    y = tl.minimum(tl.maximum(y, -448.0), 448.0)
    tl.store(q_ptr + r64[:, None] * stride_q + cols[None, :], round_to_e4m3_grid(y).to(tl.float8e4nv),
             mask=ok[:, None])
    tl.store(s_ptr + r64 * n_groups + g, scale, mask=ok)


def quantize_groups_triton(x: torch.Tensor, group: int = FP8_GROUP) -> tuple:
    """(e4m3 codes, fp32 scales [rows, cols/group]) in one launch: the op's activation quantization."""
    rows, cols = x.shape
    if cols % group or x.stride(1) != 1:
        raise ValueError(f"activations [{rows}, {cols}] must be contiguous rows of a multiple of {group} columns")
    q = torch.empty((rows, cols), device=x.device, dtype=torch.float8_e4m3fn)
    s = torch.empty((rows, cols // group), device=x.device, dtype=torch.float32)
    block_r = 4
    _group_quant_kernel[(triton.cdiv(rows, block_r), cols // group)](x, q, s, rows, x.stride(0), q.stride(0),
                                                                     cols // group, GROUP=group, BLOCK_R=block_r)
    return q, s


def fused_experts(x, w1, w2, topk_ids, topk_weights, w1_scale=None, w2_scale=None) -> torch.Tensor:
    """out [T, H] = Σ_slot weight · down_e(silu(gate_e(x)) · up_e(x)) for the routed experts.

    x [T, H] (fp16/bf16); w1 [E, 2I, H] (gate rows then up rows), w2 [E, H, I]; topk_ids
    int32 [T, k], topk_weights fp32 [T, k]. fp8: w1/w2 e4m3 with block scales
    w1_scale [E, 2I/128, H/128], w2_scale [E, H/128, I/128]; x is quantized per token group.
    """
    from kernelmark.kernels.moe_align import moe_align
    T, H = x.shape
    E, two_i, H1 = w1.shape
    I = two_i // 2
    if H1 != H or tuple(w2.shape) != (E, H, I) or two_i % 2:
        raise ValueError(f"weights do not fit: x {tuple(x.shape)}, w1 {tuple(w1.shape)} (want [E, 2I, {H}]), "
                         f"w2 {tuple(w2.shape)} (want [E, {H}, I])")
    if topk_ids.shape != topk_weights.shape or topk_ids.shape[0] != T:
        raise ValueError(f"topk_ids {tuple(topk_ids.shape)} and topk_weights {tuple(topk_weights.shape)} "
                         f"must both be [{T}, topk]")
    fp8 = w1.dtype == getattr(torch, "float8_e4m3fn", None)
    if fp8 and (w1_scale is None or w2_scale is None or H % FP8_GROUP or I % FP8_GROUP):
        raise ValueError("fp8 weights need w1_scale and w2_scale, and hidden and inter multiples of 128")
    if x.device.type == "cpu" and not interpreting():
        raise ValueError("CPU tensors need the Triton interpreter (TRITON_INTERPRET=1 before importing triton)")
    for t in (x, w1, w2):
        if t.stride(-1) != 1:
            raise ValueError("x, w1 and w2 must be contiguous along their last dimension")
    topk = topk_ids.shape[1]
    n_pairs = T * topk
    bm = block_m(T, topk, E)
    _last_block_m[:] = [bm]
    m_key = triton.next_power_of_2(n_pairs)
    sorted_ids, expert_ids, npp, _ = moe_align(topk_ids, E, bm)
    m_blocks = expert_ids.numel()
    upcast = interpreting()
    dev = x.device
    act_dtype = x.dtype if not fp8 else torch.bfloat16
    if fp8:
        xa, xs = quantize_groups_triton(x)
        w1s, w2s = w1_scale.contiguous(), w2_scale.contiguous()
    else:
        xa, xs, w1s, w2s = x, x, w1, w2          # scale pointers unused
    h = torch.empty((n_pairs, I), device=dev, dtype=act_dtype)
    _gate_up_kernel[lambda meta: (m_blocks, triton.cdiv(I, meta["BLOCK_N"]))](
        xa, w1, h, sorted_ids, expert_ids, npp, xs, w1s, n_pairs, m_key, I, H, topk,
        xa.stride(0), w1.stride(0), w1.stride(1), h.stride(0),
        xs.stride(0), w1s.stride(0), w1s.stride(1),
        BLOCK_M=bm, FP8=fp8, UPCAST_DOT=upcast)
    if fp8:
        ha, hs = quantize_groups_triton(h)
    else:
        ha, hs = h, h
    # The weighted rows in the activation dtype (half the traffic of fp32; the sum is fp32).
    y = torch.empty((n_pairs, H), device=dev, dtype=act_dtype)
    tw = topk_weights.contiguous().view(-1).float()
    _down_kernel[lambda meta: (m_blocks, triton.cdiv(H, meta["BLOCK_N"]))](
        ha, w2, y, tw, sorted_ids, expert_ids, npp, hs, w2s, n_pairs, m_key, H, I,
        ha.stride(0), w2.stride(0), w2.stride(1), y.stride(0),
        hs.stride(0), w2s.stride(0), w2s.stride(1),
        BLOCK_M=bm, FP8=fp8, UPCAST_DOT=upcast)
    out = torch.empty((T, H), device=dev, dtype=act_dtype)
    block_h = min(1024, triton.next_power_of_2(H))
    _sum_topk_kernel[(T, triton.cdiv(H, block_h))](y, out, H, topk, BLOCK_H=block_h)
    return out
