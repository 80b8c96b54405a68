"""Next-token sampling from logits [batch, vocab]: greedy (argmax) and top-k/top-p with
temperature, in Triton.

argmax: int64 [batch]; ties go to the lowest index, as torch.argmax. Each program scans one
segment of a row keeping, per lane, the first largest value it has seen (a strict ``>``),
then reduces its lanes (largest value, then lowest index). A row is split into segments
when there are too few rows to fill the GPU (decode: batch 1..32 on 132 SMs); a second,
tiny kernel then reduces the segments' (value, index) pairs in order, so the lowest index
still wins. NaN logits are not supported (never chosen here; torch.argmax would pick one).

top_k_top_p_sample: int64 [batch, draws] token ids from softmax(logits / T) restricted to
the top-k tokens, then to the smallest set of the most likely of those whose probability,
renormalised over the top k, reaches top_p (the token that crosses top_p is kept). This is
vLLM's, Hugging Face's and FlashInfer's "top_k_first" order. Ties at either threshold are
all kept. One program per row, which loops over the row in blocks:

1. max, the softmax denominator Z (online, per lane) and the range of the keys: the fp32
   bits of l = logit/T made order preserving as int32 (negative values' magnitude bits
   flipped), so that thresholds are searched over integers and are exact.
2. top-k threshold: the largest key K with count(key >= K) >= k, by a 16-way search on
   the key range: each pass counts the row at 16 candidate keys at once, so the interval
   shrinks 17x a pass (at most 8 passes for 2**32 keys). It stops as soon as one element
   is left between the bounds: that element is the threshold.
3. top-p threshold, the same search over masses: the largest key K >= the top-k threshold
   with mass(key >= K) >= top_p · Z_k.
   Passes, replayed on the host for the suites' logits (std 2, vocab 128k-152k): 4-6 for
   top-k 20 or 50, then 2-3 for top-p; 6-7 for top-p 0.95 alone.
4. the draw: u·Z_allowed located in the running (blocked cumsum) mass of the allowed tokens,
   a block of draws at a time; the token is the first allowed one whose cumulative mass
   exceeds the target (a rounding overshoot falls back to the last allowed token).

Steps 2 and 3 are skipped when top_k >= vocab or top_p >= 1. Every pass rereads the row
(from L2 on a GPU when the row's program runs alone on its SM); FlashInfer instead uses
rejection sampling with pivots, which often needs fewer passes: compare them in the table.
Random numbers: Philox (tl.rand) at (seed, row·draws + draw).
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from kernelmark.kernels import tl_utils  # noqa: F401  (the triton 3.6 interpreter work-around)

from kernelmark.kernels import interpreting
from kernelmark.kernels.kv_validate import next_pow2, sm_count

LOGIT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
# Counts are summed in fp32 in the threshold search (exact below 2**24) and indices are int32.
MAX_VOCAB = 1 << 24
WAYS = 16            # candidate thresholds per search pass
SEARCH_ITERS = 8     # 17**8 > 2**32: enough for any interval of int32 keys
MIN_SEGMENT = 8192   # elements an argmax program scans at least when rows are split
_BIG = tl.constexpr(2 ** 31 - 1)   # a constexpr: kernels may read no other globals


# ----------------------------------------------------------------------------- argmax

@triton.jit
def _argmax_kernel(x_ptr, out_ptr, val_ptr, idx_ptr, V, stride_row, seg_len, splits,
                   BLOCK: tl.constexpr, FINAL: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    seg = tl.program_id(1)
    start = seg * seg_len
    end = tl.minimum(start + seg_len, V)
    lanes = tl.arange(0, BLOCK)
    best_v = tl.full((BLOCK,), float("-inf"), tl.float32)
    best_i = tl.full((BLOCK,), _BIG, tl.int32)
    for off in range(0, seg_len, BLOCK):
        idx = start + off + lanes
        ok = idx < end
        v = tl.load(x_ptr + row * stride_row + idx, mask=ok, other=float("-inf")).to(tl.float32)
        # Strictly greater keeps each lane's first maximum; a lane's first element is taken
        # even when it is -inf, so an all -inf row still answers its lowest index.
        take = ok & ((v > best_v) | (best_i == _BIG))
        best_v = tl.where(take, v, best_v)
        best_i = tl.where(take, idx, best_i)
    m = tl.max(best_v, axis=0)
    i = tl.min(tl.where(best_v == m, best_i, _BIG), axis=0)
    if FINAL:
        tl.store(out_ptr + row, i.to(tl.int64))
    else:
        tl.store(val_ptr + row * splits + seg, m)
        tl.store(idx_ptr + row * splits + seg, i)


@triton.jit
def _argmax_combine_kernel(val_ptr, idx_ptr, out_ptr, splits, BLOCK_S: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    s = tl.arange(0, BLOCK_S)
    ok = s < splits
    v = tl.load(val_ptr + row * splits + s, mask=ok, other=float("-inf"))
    i = tl.load(idx_ptr + row * splits + s, mask=ok, other=_BIG)
    m = tl.max(v, axis=0)
    # Segments are in order and each answered its own lowest index: the lowest wins overall.
    best = tl.min(tl.where(ok & (v == m), i, _BIG), axis=0)
    tl.store(out_ptr + row, best.to(tl.int64))


def _check_logits(logits: torch.Tensor) -> tuple:
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"logits must be a 2-D tensor [batch, vocab], got {shape}")
    b, v = logits.shape
    if b < 1 or v < 1:
        raise ValueError(f"logits [batch, vocab] must not be empty, got {b} x {v}")
    if logits.dtype not in LOGIT_DTYPES:
        raise ValueError(f"logits dtype {logits.dtype} is not supported; supported: fp32, fp16, bf16")
    if v > MAX_VOCAB:
        raise ValueError(f"vocab {v} is larger than the {MAX_VOCAB} this kernel counts exactly")
    if logits.stride(1) != 1:
        raise ValueError(f"logits' vocab dimension must be contiguous (stride 1), got strides {logits.stride()}")
    if logits.device.type == "cpu" and not interpreting():
        raise ValueError("CPU tensors need the Triton interpreter (TRITON_INTERPRET=1 before importing triton)")
    return b, v


def _argmax_splits(batch: int, vocab: int, device: torch.device) -> int:
    """Segments per row: enough programs for two per SM, none shorter than MIN_SEGMENT.
    One on a CPU, where the interpreter runs programs one after another."""
    sms = sm_count(device)
    if sms <= 1:
        return 1
    want = -(-2 * sms // batch)
    return max(1, min(want, vocab // MIN_SEGMENT))


def argmax(logits: torch.Tensor, splits: int | None = None, block: int | None = None) -> torch.Tensor:
    """Greedy sampling: the index of each row's largest logit (lowest index on ties), int64 [batch].

    ``splits`` (segments per row) and ``block`` (elements per loop step, a power of two)
    are chosen here unless given (tests give them to reach the two-stage path on a CPU)."""
    b, v = _check_logits(logits)
    if block is None:
        block = 1024 if interpreting() else 2048
    if block < 16 or block & (block - 1):
        raise ValueError(f"block must be a power of two >= 16, got {block}")
    splits = _argmax_splits(b, v, logits.device) if splits is None else splits
    if not isinstance(splits, int) or splits < 1:
        raise ValueError(f"splits must be a positive integer, got {splits!r}")
    # Whole blocks per segment, and no empty segment.
    seg_len = triton.cdiv(triton.cdiv(v, splits), block) * block
    splits = triton.cdiv(v, seg_len)
    out = torch.empty(b, dtype=torch.int64, device=logits.device)
    warps = 1 if interpreting() else 8
    if splits == 1:
        _argmax_kernel[(b, 1)](logits, out, out, out, v, logits.stride(0), seg_len, 1,
                               BLOCK=block, FINAL=True, num_warps=warps)
        return out
    vals = torch.empty((b, splits), dtype=torch.float32, device=logits.device)
    idxs = torch.empty((b, splits), dtype=torch.int32, device=logits.device)
    _argmax_kernel[(b, splits)](logits, out, vals, idxs, v, logits.stride(0), seg_len, splits,
                                BLOCK=block, FINAL=False, num_warps=warps)
    _argmax_combine_kernel[(b,)](vals, idxs, out, splits, BLOCK_S=max(16, next_pow2(splits)), num_warps=1)
    return out


# ----------------------------------------------------------------------------- top-k / top-p

@triton.jit
def _search(row_ptr, V, inv_temp, m, lo, hi, cnt_lo, mass_lo, cnt_hi, target,
            BY_MASS: tl.constexpr, BLOCK: tl.constexpr, WAYS_: tl.constexpr, ITERS: tl.constexpr):
    """The largest key K in [lo, hi) with f(K) >= target, f = count (or, BY_MASS, softmax
    mass) of the row's keys >= K. Invariants: f(lo) >= target > f(hi). Returns
    (K, count(key >= K), mass(key >= K))."""
    j = tl.arange(0, WAYS_)
    lanes = tl.arange(0, BLOCK)
    for _ in range(ITERS):
        # Stop once at most one element lies in [lo, hi): it is the threshold element.
        if (hi - lo > 1) & (cnt_lo - cnt_hi > 1.0):
            step = (hi - lo + WAYS_) // (WAYS_ + 1)
            cand = lo + step * (j + 1).to(tl.int64)
            # Per-lane sums, reduced once after the pass (a reduction per block costs more).
            cnt_l = tl.full((BLOCK, WAYS_), 0.0, tl.float32)
            mass_l = tl.full((BLOCK, WAYS_), 0.0, tl.float32)
            for start in range(0, V, BLOCK):
                idx = start + lanes
                ok = idx < V
                l = tl.load(row_ptr + idx, mask=ok, other=float("-inf")).to(tl.float32) * inv_temp
                bits = l.to(tl.int32, bitcast=True)
                key = tl.where(l == 0.0, 0, tl.where(bits < 0, bits ^ 0x7FFFFFFF, bits)).to(tl.int64)
                ge = ok[:, None] & (key[:, None] >= cand[None, :])
                cnt_l += ge.to(tl.float32)
                mass_l += tl.where(ge, tl.exp(l - m)[:, None], 0.0)
            cnt = tl.sum(cnt_l, axis=0)
            mass = tl.sum(mass_l, axis=0)
            f = mass if BY_MASS else cnt
            # f falls with the key, so the candidates that pass are a prefix.
            n = tl.sum(((f >= target) & (cand < hi)).to(tl.int32), axis=0)
            new_hi = tl.minimum(hi, lo + step * (n + 1).to(tl.int64))
            cnt_hi = tl.where(new_hi < hi, tl.sum(tl.where(j == n, cnt, 0.0), axis=0), cnt_hi)
            cnt_lo = tl.where(n > 0, tl.sum(tl.where(j == n - 1, cnt, 0.0), axis=0), cnt_lo)
            mass_lo = tl.where(n > 0, tl.sum(tl.where(j == n - 1, mass, 0.0), axis=0), mass_lo)
            lo = lo + step * n.to(tl.int64)
            hi = new_hi
    return lo, cnt_lo, mass_lo


@triton.jit
def _top_k_top_p_kernel(x_ptr, out_ptr, V, stride_row, inv_temp, top_k, top_p, draws, seed,
                        USE_TOP_K: tl.constexpr, USE_TOP_P: tl.constexpr,
                        BLOCK: tl.constexpr, BLOCK_W: tl.constexpr, BLOCK_D: tl.constexpr,
                        DRAW_BLOCK: tl.constexpr, WAYS_: tl.constexpr, ITERS: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    row_ptr = x_ptr + row * stride_row
    lanes = tl.arange(0, BLOCK)

    # 1. max, softmax denominator (online, per lane) and key range.
    m_l = tl.full((BLOCK,), -3.0e38, tl.float32)     # finite: exp(m_old - m_new) never sees inf - inf
    z_l = tl.full((BLOCK,), 0.0, tl.float32)
    kmin_l = tl.full((BLOCK,), _BIG, tl.int32)
    kmax_l = tl.full((BLOCK,), -_BIG - 1, tl.int32)
    for start in range(0, V, BLOCK):
        idx = start + lanes
        ok = idx < V
        l = tl.load(row_ptr + idx, mask=ok, other=float("-inf")).to(tl.float32) * inv_temp
        m_new = tl.maximum(m_l, l)
        z_l = z_l * tl.exp(m_l - m_new) + tl.exp(l - m_new)
        m_l = m_new
        # Order-preserving int32 keys: negative floats' magnitude bits flipped; -0.0 is 0.
        # (Written out in each loop: a helper call costs a millisecond in the interpreter.)
        bits = l.to(tl.int32, bitcast=True)
        key = tl.where(l == 0.0, 0, tl.where(bits < 0, bits ^ 0x7FFFFFFF, bits))
        kmin_l = tl.where(ok, tl.minimum(kmin_l, key), kmin_l)
        kmax_l = tl.where(ok, tl.maximum(kmax_l, key), kmax_l)
    m = tl.max(m_l, axis=0)
    z = tl.sum(z_l * tl.exp(m_l - m), axis=0)
    lo = tl.min(kmin_l, axis=0).to(tl.int64)
    top = tl.max(kmax_l, axis=0).to(tl.int64) + 1
    cnt = z * 0.0 + V          # an fp32 scalar tensor even where V is specialised to a constant
    mass = z

    # 2. top-k threshold: every key >= it, ties included.
    if USE_TOP_K:
        lo, cnt, mass = _search(row_ptr, V, inv_temp, m, lo, top, cnt, mass, z * 0.0, top_k * 1.0,
                                False, BLOCK_W, WAYS_, ITERS)
    # 3. top-p threshold within the top k (mass is now Z_k).
    if USE_TOP_P:
        lo, cnt, mass = _search(row_ptr, V, inv_temp, m, lo, top, cnt, mass, z * 0.0, top_p * mass,
                                True, BLOCK_W, WAYS_, ITERS)

    # 4. the draws, DRAW_BLOCK at a time.
    d_lanes = tl.arange(0, DRAW_BLOCK)
    v_lanes = tl.arange(0, BLOCK_D)
    for d0 in range(0, draws, DRAW_BLOCK):
        d = d0 + d_lanes
        u = tl.rand(seed, (row * draws + d).to(tl.int32))
        target = u * mass
        running = mass * 0.0        # an fp32 scalar, as the loop carries it
        found = tl.full((BLOCK_D, DRAW_BLOCK), _BIG, tl.int32)     # per lane, reduced after the pass
        last = tl.full((BLOCK_D,), -1, tl.int32)
        for start in range(0, V, BLOCK_D):
            idx = start + v_lanes
            ok = idx < V
            l = tl.load(row_ptr + idx, mask=ok, other=float("-inf")).to(tl.float32) * inv_temp
            bits = l.to(tl.int32, bitcast=True)
            key = tl.where(l == 0.0, 0, tl.where(bits < 0, bits ^ 0x7FFFFFFF, bits)).to(tl.int64)
            w = tl.where(ok & (key >= lo), tl.exp(l - m), 0.0)
            c = tl.cumsum(w, axis=0) + running
            hit = (c[:, None] > target[None, :]) & (w[:, None] > 0.0)
            # The first hit is the lowest index that hits, in this block or any.
            found = tl.minimum(found, tl.where(hit, idx[:, None], _BIG))
            running += tl.sum(w, axis=0)
            last = tl.maximum(last, tl.where(w > 0.0, idx, -1))
        first = tl.min(found, axis=0)
        token = tl.where(first < _BIG, first, tl.max(last, axis=0))
        tl.store(out_ptr + row * draws + d, token.to(tl.int64), mask=d < draws)


def _number(name: str, v, kind) -> float:
    if isinstance(v, bool) or not isinstance(v, kind) or not math.isfinite(v):
        raise ValueError(f"{name} must be a finite number, got {v!r}")
    return v


def check_sampling_params(vocab: int, top_k, top_p, temperature, draws) -> None:
    """ValueError naming the first parameter the sampler cannot take."""
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= vocab:
        raise ValueError(f"top_k must be an integer in [1, vocab = {vocab}] (vocab: no top-k), got {top_k!r}")
    p = _number("top_p", top_p, (int, float))
    if not 0.0 < p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p!r}")
    t = _number("temperature", temperature, (int, float))
    if t <= 0.0:
        raise ValueError(f"temperature must be > 0 (temperature 0 is greedy: argmax), got {temperature!r}")
    if isinstance(draws, bool) or not isinstance(draws, int) or draws < 1:
        raise ValueError(f"draws must be a positive integer, got {draws!r}")


def top_k_top_p_sample(logits: torch.Tensor, top_k: int, top_p: float, temperature: float = 1.0,
                       draws: int = 1, seed: int | None = None) -> torch.Tensor:
    """``draws`` tokens per row of ``logits`` [batch, vocab] (fp32/fp16/bf16) from
    softmax(logits / temperature) restricted to top_k, then top_p (see the module
    docstring); int64 [batch, draws]. ``top_k = vocab`` and ``top_p = 1`` switch a filter
    off. ``seed`` (an int) fixes the random numbers; by default it is drawn from torch's
    default CPU generator. A row needs at least one finite logit."""
    b, v = _check_logits(logits)
    check_sampling_params(v, top_k, top_p, temperature, draws)
    if b * draws >= 2 ** 31:
        raise ValueError(f"batch x draws = {b * draws} needs 64-bit random offsets; at most 2**31 - 1")
    if seed is None:
        seed = int(torch.randint(0, 2 ** 31 - 1, (1,)).item())
    elif isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2 ** 63:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    out = torch.empty((b, draws), dtype=torch.int64, device=logits.device)
    draw_block = min(64, next_pow2(draws))
    interp = interpreting()
    _top_k_top_p_kernel[(b,)](
        logits, out, v, logits.stride(0), 1.0 / float(temperature), top_k, float(top_p), draws, seed,
        USE_TOP_K=top_k < v, USE_TOP_P=top_p < 1.0,
        BLOCK=1024 if interp else 4096, BLOCK_W=1024 if interp else 512,
        BLOCK_D=1024 if interp else max(64, 4096 // draw_block), DRAW_BLOCK=draw_block,
        WAYS_=WAYS, ITERS=SEARCH_ITERS, num_warps=1 if interp else 8,
    )
    return out
