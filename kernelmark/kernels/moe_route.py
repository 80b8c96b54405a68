"""MoE routing in Triton: router logits [T, E] -> top-k expert ids and weights.

Two rules, one program per BLOCK_T tokens, the whole row of E experts (padded to a power
of two) held in registers:

* ``softmax``: ranks the logits (softmax is monotonic, so ranking the logits ranks the
  probabilities exactly), weights are the softmax probabilities of the chosen experts,
  optionally renormalised to sum to 1 (Mixtral, Qwen3-MoE, gpt-oss).
* ``sigmoid_grouped`` (DeepSeek-V3): scores s = sigmoid(logit); the choice uses s + bias
  (the e_score_correction_bias). Each of n_group groups is scored by the sum of its two
  best choices, the topk_group best groups are kept, the top-k experts are chosen among
  them; weights are s (without the bias) of the chosen, optionally renormalised, times
  routed_scaling_factor.

Ties are broken by the lower index (expert id, group id), so the result is exact and
ordered: slot 0 holds the best expert. Each selection step takes the maximum, then the
lowest index holding it, then masks that index out: k steps of a row-wide reduction,
which for k <= 8 and E <= 256 costs far less than reading the row.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernelmark.kernels import tl_utils  # noqa: F401  (the triton 3.6 interpreter work-around)

from kernelmark.kernels import interpreting


@triton.jit
def _best(x, cols, E_P: tl.constexpr):
    """Per row: the largest value of x and the lowest column holding it."""
    m = tl.max(x, axis=1)
    idx = tl.min(tl.where(x == m[:, None], cols[None, :], E_P), axis=1)
    return m, idx


@triton.jit
def _route_kernel(logits_ptr, bias_ptr, ids_ptr, w_ptr, T, E, stride_t, scale,
                  TOPK: tl.constexpr, K_P: tl.constexpr, E_P: tl.constexpr, BLOCK_T: tl.constexpr,
                  SIGMOID: tl.constexpr, N_GROUP: tl.constexpr, TOPK_GROUP: tl.constexpr,
                  RENORM: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    cols = tl.arange(0, E_P)
    row_ok = rows < T
    col_ok = cols < E
    rows64 = rows.to(tl.int64)
    x = tl.load(logits_ptr + rows64[:, None] * stride_t + cols[None, :],
                mask=row_ok[:, None] & col_ok[None, :], other=0.0).to(tl.float32)
    neg = float("-inf")
    if SIGMOID:
        s = tl.sigmoid(x)
        choice = s + tl.load(bias_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
        choice = tl.where(col_ok[None, :], choice, neg)
        if N_GROUP > 1:
            # Group scores: the sum of the two best choices in each group.
            per = E // N_GROUP
            group = cols // per
            gcols = tl.arange(0, N_GROUP)
            gscore = tl.zeros((BLOCK_T, N_GROUP), dtype=tl.float32)
            for g in tl.static_range(N_GROUP):
                in_g = (group == g)[None, :]
                c = tl.where(in_g, choice, neg)
                m1, i1 = _best(c, cols, E_P)
                m2 = tl.max(tl.where(cols[None, :] == i1[:, None], neg, c), axis=1)
                gscore = tl.where(gcols[None, :] == g, (m1 + m2)[:, None], gscore)
            keep = tl.zeros((BLOCK_T, E_P), dtype=tl.int32)
            for _ in tl.static_range(TOPK_GROUP):
                _, gi = _best(gscore, gcols, N_GROUP)
                keep = tl.where(group[None, :] == gi[:, None], 1, keep)
                gscore = tl.where(gcols[None, :] == gi[:, None], neg, gscore)
            choice = tl.where(keep != 0, choice, neg)
        prob = s
    else:
        choice = tl.where(col_ok[None, :], x, neg)
        e = tl.exp(choice - tl.max(choice, axis=1)[:, None])
        prob = e / tl.sum(e, axis=1)[:, None]
    kcols = tl.arange(0, K_P)
    ids = tl.zeros((BLOCK_T, K_P), dtype=tl.int32)
    ws = tl.zeros((BLOCK_T, K_P), dtype=tl.float32)
    for i in tl.static_range(TOPK):
        _, idx = _best(choice, cols, E_P)
        hit = cols[None, :] == idx[:, None]
        w = tl.sum(tl.where(hit, prob, 0.0), axis=1)
        ids = tl.where(kcols[None, :] == i, idx[:, None], ids)
        ws = tl.where(kcols[None, :] == i, w[:, None], ws)
        choice = tl.where(hit, neg, choice)
    if RENORM:
        ws = ws / tl.sum(ws, axis=1)[:, None]
    ws = ws * scale
    out = rows64[:, None] * TOPK + kcols[None, :]
    mask = row_ok[:, None] & (kcols[None, :] < TOPK)
    tl.store(ids_ptr + out, ids, mask=mask)
    tl.store(w_ptr + out, ws, mask=mask)


def moe_route(logits: torch.Tensor, topk: int, rule: str = "softmax", renormalize: bool = True,
              bias: torch.Tensor | None = None, n_group: int = 1, topk_group: int = 1,
              scale: float = 1.0) -> tuple:
    """(ids int32 [T, topk], weights fp32 [T, topk]) of the router ``logits`` [T, E]."""
    if logits.dim() != 2:
        raise ValueError(f"logits must be [tokens, experts], got shape {tuple(logits.shape)}")
    T, E = logits.shape
    if not 0 < topk <= E:
        raise ValueError(f"topk {topk} must be in 1..{E} (the number of experts)")
    if logits.stride(1) != 1:
        raise ValueError("logits must be contiguous along the experts")
    if rule not in ("softmax", "sigmoid_grouped"):
        raise ValueError(f"unknown routing rule {rule!r}; known: softmax, sigmoid_grouped")
    sigmoid = rule == "sigmoid_grouped"
    if sigmoid:
        if bias is None or tuple(bias.shape) != (E,):
            raise ValueError(f"the sigmoid_grouped rule needs a bias of shape ({E},)")
        if E % n_group or n_group & (n_group - 1) or not 0 < topk_group <= n_group:
            raise ValueError(f"n_group {n_group} must be a power of two dividing {E} experts, "
                             f"and topk_group {topk_group} in 1..n_group")
        if topk > topk_group * (E // n_group):
            raise ValueError(f"topk {topk} exceeds the {topk_group * (E // n_group)} experts of the kept groups")
    if logits.device.type == "cpu" and not interpreting():
        raise ValueError("CPU tensors need the Triton interpreter (TRITON_INTERPRET=1 before importing triton)")
    ids = torch.empty((T, topk), dtype=torch.int32, device=logits.device)
    w = torch.empty((T, topk), dtype=torch.float32, device=logits.device)
    if T == 0:
        return ids, w
    e_p = triton.next_power_of_2(E)
    # A row of 256 fp32 experts is 1 KB: 4 rows per program keep registers modest and give
    # decode batches (T = 1..64) a program per few tokens.
    block_t = 4 if e_p >= 128 else 16
    grid = (triton.cdiv(T, block_t),)
    _route_kernel[grid](logits, bias if sigmoid else logits, ids, w, T, E, logits.stride(0), float(scale),
                        TOPK=topk, K_P=triton.next_power_of_2(topk), E_P=e_p, BLOCK_T=block_t,
                        SIGMOID=sigmoid, N_GROUP=n_group if sigmoid else 1,
                        TOPK_GROUP=topk_group if sigmoid else 1, RENORM=bool(renormalize),
                        num_warps=4)
    return ids, w
