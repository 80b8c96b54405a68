"""DeepSeek-V3 multi-head latent attention (MLA), paged decode with absorbed weights,
in Triton: split-KV like kernels/paged_decode_attention.py, plus a combine.

With W_UK absorbed into the query and W_UV into the output projection, every head
attends over one shared compressed cache: each token holds a latent vector of
``kv_lora_rank`` (512) dims and a rope key of ``rope_dim`` (64) dims, stored together
as one row of 576. A head's key is the whole row, its value the first 512 dims of the
same row (K = cache[..., :576], V = cache[..., :512]); q is [batch, heads, 576] and the
output [batch, heads, 512], plus the log-sum-exp of the scaled scores (natural log,
fp32), which a caller needs to merge this result with another (prefix caching, the
chunked context of a long prefill).

The cache is paged as in kernels/paged.py with one "KV head": [num_blocks, page_size,
576]; token t of sequence s is row ``block_table[s, t // page_size]``, offset
``t % page_size``. Any page size works (1, 16, 64 are the ones engines use): a tile
of BLOCK_N tokens looks up each token's page, so it may span pages.

Why the kernel has this shape (for the GPU): all heads read the same latent rows, so
a program owns one (block of BLOCK_H heads, split, sequence) and puts its heads in the
M dimension of tl.dot. One K tile [BLOCK_N, 576] is loaded once per head block and
serves both products: scores = q_nope·c^T + q_rope·k_rope^T, then acc += p·c with the
same c already on chip (no second load for V). That makes MLA decode compute-dense
(BLOCK_H x 2 x 1088 FLOPs per 1152 bytes of cache at bf16), and the fewer head blocks,
the fewer times a row is read (from L2 after the first). Split-KV gives the device
enough programs at batch 1: the context is cut into ``num_splits`` partitions; each
writes an unnormalised partial (max m, sum l, acc[512]) to fp32 scratch and a combine
kernel merges them per (sequence, head), looping over the splits so that its register
use does not grow with their number. With one split the first kernel writes the
output and LSE itself.

Loop bounds are scalar kernel arguments only (the split's start and the host's split
size), with a mask at the sequence's end, never a loaded context length (Triton 3.6's
interpreter; tl_utils applies the work-around for runtime bounds).

Softmax in base 2 (scale pre-multiplied by log2 e), fp32 accumulation. A sequence of
context 0 gets output 0 and LSE -inf.
"""

from __future__ import annotations

from functools import lru_cache

import torch
import triton
import triton.language as tl

from kernelmark.kernels import interpreting, paged
from kernelmark.kernels.autotune_prune import autotune
from kernelmark.kernels.tl_utils import dot

KV_LORA_RANK = 512
ROPE_DIM = 64
# DeepSeek-V3's softmax scale: 1/sqrt(qk_nope_head_dim 128 + qk_rope_head_dim 64), the
# head dim of the un-absorbed attention, not of the 576-dim absorbed query.
DEEPSEEK_V3_SCALE = 192 ** -0.5
_DTYPES = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32"}
_LOG2E = 1.4426950408889634
_LN2 = 0.6931471805599453
_MAX_SPLITS = 64
_SPLIT_ALIGN = 128          # split boundaries fall on multiples of every GPU BLOCK_N
_MIN_SPLIT_TOKENS = 256     # below this a split costs more in the combine than it saves
_MAX_GRID_YZ = 65535
# Heads per program assumed when sizing the splits (the autotuned BLOCK_H may differ).
_NOMINAL_BLOCK_H = 16
# The split of the last launch ({"num_splits": n, "split_tokens": t}), for the record: the
# heuristic's choice matters as much as the tile config when comparing two runs.
LAST_SPLIT: dict = {}


def _configs():
    if interpreting():
        # One small config: BLOCK_N = 16 so that tiles span pages of 1 and 8 and sit
        # inside pages of 64; BLOCK_H = 16 so that 20 heads leave a masked head block.
        return [triton.Config({"BLOCK_H": 16, "BLOCK_N": 16}, num_warps=4, num_stages=1)]
    tiles = [
        # (BLOCK_H, BLOCK_N, num_warps, num_stages) for Hopper. A K tile of 32 tokens is
        # 36 KB at bf16; acc [BLOCK_H, 512] fp32 lives in registers (64 heads at 8 warps:
        # 128 registers a thread), so larger head blocks need more warps. Bigger head
        # blocks read each cache row fewer times; smaller ones make more programs.
        (16, 32, 4, 2),
        (16, 64, 4, 2),
        (16, 32, 4, 3),
        (32, 32, 8, 2),
        (32, 64, 8, 2),
        (64, 32, 8, 2),
        (64, 16, 8, 3),
    ]
    return [triton.Config({"BLOCK_H": h, "BLOCK_N": n}, num_warps=w, num_stages=s) for h, n, w, s in tiles]


@autotune(configs=_configs(), key=["heads", "split_tokens", "PAGE_SIZE", "SPLIT", "RANK", "ROPE"])
@triton.jit
def _mla_decode_split_kernel(
        Q, KV, block_table, context_lens, O, LSE, Part_O, Part_M, Part_L, qk_scale,
        stride_qb, stride_qh, stride_kvb, stride_kvt, stride_btb, stride_ob, stride_oh, stride_lb,
        heads, num_splits, split_tokens,
        RANK: tl.constexpr, ROPE: tl.constexpr, PAGE_SIZE: tl.constexpr, SPLIT: tl.constexpr,
        UPCAST_DOT: tl.constexpr, IEEE_FP32: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_N: tl.constexpr):
    # Head blocks vary fastest in the launch order, so the programs that read the same
    # cache rows (one sequence and split, every head block) run together and share L2.
    hb = tl.program_id(0)
    s = tl.program_id(1)
    b = tl.program_id(2)
    b64 = b.to(tl.int64)
    ctx = tl.load(context_lens + b).to(tl.int32)
    lo = s * split_tokens
    hi = lo + split_tokens          # the scalar loop bound; tokens past ctx are masked

    offs_h = hb * BLOCK_H + tl.arange(0, BLOCK_H)
    offs_c = tl.arange(0, RANK)
    offs_r = tl.arange(0, ROPE)
    offs_n = tl.arange(0, BLOCK_N)
    h_ok = offs_h < heads
    q_row = Q + b64 * stride_qb + offs_h[:, None] * stride_qh
    q_c = tl.load(q_row + offs_c[None, :], mask=h_ok[:, None], other=0.0)           # [BLOCK_H, RANK]
    q_r = tl.load(q_row + RANK + offs_r[None, :], mask=h_ok[:, None], other=0.0)    # [BLOCK_H, ROPE]

    m_i = tl.full((BLOCK_H,), float("-inf"), dtype=tl.float32)
    l_i = tl.zeros((BLOCK_H,), dtype=tl.float32)
    acc = tl.zeros((BLOCK_H, RANK), dtype=tl.float32)
    bt_row = block_table + b64 * stride_btb
    for start in range(lo, hi, BLOCK_N):
        # A split that starts past the sequence's end (ragged batches) skips its tiles.
        if start < ctx:
            tok = start + offs_n
            ok = tok < tl.minimum(hi, ctx)
            blk = tl.load(bt_row + tok // PAGE_SIZE, mask=ok, other=0).to(tl.int64)
            row = KV + (blk * stride_kvb + (tok % PAGE_SIZE) * stride_kvt)[:, None]
            c = tl.load(row + offs_c[None, :], mask=ok[:, None], other=0.0)           # [BLOCK_N, RANK]
            kr = tl.load(row + RANK + offs_r[None, :], mask=ok[:, None], other=0.0)   # [BLOCK_N, ROPE]
            qk = dot(q_c, tl.trans(c), tl.zeros((BLOCK_H, BLOCK_N), dtype=tl.float32), UPCAST_DOT, IEEE_FP32)
            qk = dot(q_r, tl.trans(kr), qk, UPCAST_DOT, IEEE_FP32)
            qk = tl.where(ok[None, :], qk * qk_scale, float("-inf"))
            # start < ctx: the tile holds a valid token, so m_new is finite.
            m_new = tl.maximum(m_i, tl.max(qk, 1))
            alpha = tl.math.exp2(m_i - m_new)
            p = tl.math.exp2(qk - m_new[:, None])
            l_i = l_i * alpha + tl.sum(p, 1)
            acc = dot(p.to(c.dtype), c, acc * alpha[:, None], UPCAST_DOT, IEEE_FP32)   # V = c, already loaded
            m_i = m_new

    if SPLIT:
        # Scratch [batch, heads, num_splits(, RANK)], fp32, contiguous; m in base-2 units.
        prow = (b64 * heads + offs_h) * num_splits + s
        tl.store(Part_M + prow, m_i, mask=h_ok)
        tl.store(Part_L + prow, l_i, mask=h_ok)
        tl.store(Part_O + prow[:, None] * RANK + offs_c[None, :], acc, mask=h_ok[:, None])
    else:
        nonempty = l_i > 0
        out = acc / tl.where(nonempty, l_i, 1.0)[:, None]
        lse = tl.where(nonempty, (m_i + tl.math.log2(tl.where(nonempty, l_i, 1.0))) * 0.6931471805599453,
                       float("-inf"))
        tl.store(O + b64 * stride_ob + offs_h[:, None] * stride_oh + offs_c[None, :], out.to(O.dtype.element_ty),
                 mask=h_ok[:, None])
        tl.store(LSE + b64 * stride_lb + offs_h, lse, mask=h_ok)


@triton.jit
def _mla_decode_combine_kernel(Part_O, Part_M, Part_L, O, LSE, stride_ob, stride_oh, stride_lb, heads, num_splits,
                               RANK: tl.constexpr, SPLITS_PAD: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    h = tl.program_id(1)
    base = (b * heads + h) * num_splits
    offs_s = tl.arange(0, SPLITS_PAD)
    offs_c = tl.arange(0, RANK)
    m = tl.load(Part_M + base + offs_s, mask=offs_s < num_splits, other=float("-inf"))
    m_max = tl.max(m, 0)
    # Every split empty (context 0): keep exp2 away from -inf - -inf.
    m_ref = tl.where(m_max == float("-inf"), 0.0, m_max)
    l_sum = 0.0
    acc = tl.zeros((RANK,), dtype=tl.float32)
    # One split's [RANK] partial at a time: registers do not grow with num_splits.
    for s in range(0, num_splits):
        w = tl.math.exp2(tl.load(Part_M + base + s) - m_ref)      # an empty split: exp2(-inf) = 0
        l_sum += w * tl.load(Part_L + base + s)
        acc += w * tl.load(Part_O + (base + s) * RANK + offs_c)
    nonempty = l_sum > 0
    out = acc / tl.where(nonempty, l_sum, 1.0)
    lse = tl.where(nonempty, (m_ref + tl.math.log2(tl.where(nonempty, l_sum, 1.0))) * 0.6931471805599453,
                   float("-inf"))
    tl.store(O + b * stride_ob + h * stride_oh + offs_c, out.to(O.dtype.element_ty))
    tl.store(LSE + b * stride_lb + h, lse)


@lru_cache(maxsize=None)
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def choose_num_splits(batch: int, heads: int, max_context_len: int, device: torch.device) -> int:
    """Partitions of the context: about two waves of programs over the SMs, no split
    under _MIN_SPLIT_TOKENS, at most _MAX_SPLITS."""
    if interpreting() or device.type != "cuda":
        return max(1, min(2, triton.cdiv(max_context_len, 64)))   # the combine runs in tests
    programs = batch * triton.cdiv(heads, _NOMINAL_BLOCK_H)
    index = device.index if device.index is not None else torch.cuda.current_device()
    want = triton.cdiv(2 * _sm_count(index), programs)
    return max(1, min(want, _MAX_SPLITS, triton.cdiv(max_context_len, _MIN_SPLIT_TOKENS)))


def _pow2(n: int) -> bool:
    return n > 0 and not n & (n - 1)


def _check(q, kv_cache, block_table, context_lens, kv_lora_rank):
    if q.dim() != 3:
        raise ValueError(f"q must be 3-D [batch, heads, kv_lora_rank + rope_dim], got shape {tuple(q.shape)}")
    if q.dtype not in _DTYPES:
        raise ValueError(f"q is {q.dtype}; supported: fp16, bf16, fp32")
    if kv_cache.dim() != 3:
        raise ValueError(f"kv_cache must be 3-D [num_blocks, page_size, kv_lora_rank + rope_dim], "
                         f"got shape {tuple(kv_cache.shape)}")
    if kv_cache.dtype != q.dtype:
        raise ValueError(f"kv_cache is {kv_cache.dtype} but q is {q.dtype}; they must match")
    if kv_cache.device != q.device:
        raise ValueError(f"kv_cache is on {kv_cache.device} but q is on {q.device}")
    if q.stride(-1) != 1 or kv_cache.stride(-1) != 1:
        raise ValueError(f"q and kv_cache must be contiguous in their last dim, got strides {q.stride()} "
                         f"and {kv_cache.stride()}")
    batch, heads, qk_dim = q.shape
    num_blocks, page_size, kv_dim = kv_cache.shape
    if qk_dim != kv_dim:
        raise ValueError(f"q has last dim {qk_dim} but the cache rows have {kv_dim}")
    rope = qk_dim - kv_lora_rank
    if not _pow2(kv_lora_rank) or kv_lora_rank < 16 or not _pow2(rope) or rope < 16:
        raise ValueError(f"kv_lora_rank {kv_lora_rank} and rope dim {rope} (= {qk_dim} - {kv_lora_rank}) "
                         f"must be powers of two >= 16 (DeepSeek-V3: 512 + 64)")
    paged.check_table_args(q, block_table, context_lens, batch, page_size)
    if batch == 0 or batch > _MAX_GRID_YZ or heads == 0 or heads > _MAX_GRID_YZ:
        raise ValueError(f"batch {batch}, heads {heads} outside the grid limits")
    if q.device.type == "cpu" and not interpreting():
        raise ValueError("CPU tensors need the Triton interpreter (TRITON_INTERPRET=1 before importing triton)")
    return num_blocks, page_size, rope


def mla_decode_attention(q: torch.Tensor, kv_cache: torch.Tensor, block_table: torch.Tensor,
                         context_lens: torch.Tensor, *, kv_lora_rank: int = KV_LORA_RANK,
                         max_context_len: int | None = None, sm_scale: float = DEEPSEEK_V3_SCALE,
                         num_splits: int | None = None, check_tables: bool = True):
    """MLA decode, one query token per sequence, over a paged latent cache.

    q [batch, heads, kv_lora_rank + rope_dim]; kv_cache [num_blocks, page_size,
    kv_lora_rank + rope_dim] in q's dtype; block_table [batch, max_blocks] and
    context_lens [batch] (int32 or int64) on q's device. Returns (o [batch, heads,
    kv_lora_rank] in q's dtype, lse [batch, heads] fp32, natural log of the sum of
    exp(scaled scores)).

    ``sm_scale`` defaults to DeepSeek-V3's 1/sqrt(192), which does not follow from the
    576-dim absorbed q. ``max_context_len`` (a host int) sizes the splits, read from
    context_lens if None; ``check_tables`` validates the used block table entries and
    that max_context_len covers every sequence (both sync with the device: a caller
    that has checked these tensors and passes max_context_len may skip them).
    ``num_splits`` overrides the split heuristic (choose_num_splits).
    """
    num_blocks, page_size, rope = _check(q, kv_cache, block_table, context_lens, kv_lora_rank)
    if check_tables:
        paged.check_block_table(block_table, context_lens, num_blocks, page_size)
        longest = int(context_lens.max())
        if max_context_len is None:
            max_context_len = longest
        elif max_context_len < longest:
            raise ValueError(f"max_context_len = {max_context_len} but a sequence has context {longest}")
    elif max_context_len is None:
        max_context_len = int(context_lens.max())
    if not isinstance(max_context_len, int) or max_context_len < 0:
        raise ValueError(f"max_context_len must be a non-negative int, got {max_context_len!r}")
    batch, heads, _ = q.shape
    chosen = num_splits is None
    if chosen:
        num_splits = choose_num_splits(batch, heads, max_context_len, q.device)
    if not isinstance(num_splits, int) or not 1 <= num_splits <= _MAX_SPLITS:
        raise ValueError(f"num_splits must be an int in 1..{_MAX_SPLITS}, got {num_splits!r}")

    # Split boundaries on _SPLIT_ALIGN tokens (16 in the interpreter, so that tiny test
    # contexts get several splits, empty ones included).
    align = 16 if interpreting() else _SPLIT_ALIGN
    split_tokens = max(align, triton.cdiv(triton.cdiv(max(max_context_len, 1), num_splits), align) * align)
    if chosen:
        num_splits = max(1, triton.cdiv(max_context_len, split_tokens))
    split = num_splits > 1
    LAST_SPLIT.update(num_splits=num_splits, split_tokens=split_tokens)
    o = torch.empty((batch, heads, kv_lora_rank), device=q.device, dtype=q.dtype)
    lse = torch.empty((batch, heads), device=q.device, dtype=torch.float32)
    if split:
        part_o = torch.empty((batch, heads, num_splits, kv_lora_rank), device=q.device, dtype=torch.float32)
        part_m = torch.empty((batch, heads, num_splits), device=q.device, dtype=torch.float32)
        part_l = torch.empty((batch, heads, num_splits), device=q.device, dtype=torch.float32)
    else:
        part_o = part_m = part_l = lse   # unused

    def grid(meta):
        return (triton.cdiv(heads, meta["BLOCK_H"]), num_splits, batch)

    _mla_decode_split_kernel[grid](
        q, kv_cache, block_table, context_lens, o, lse, part_o, part_m, part_l, sm_scale * _LOG2E,
        q.stride(0), q.stride(1), kv_cache.stride(0), kv_cache.stride(1), block_table.stride(0),
        o.stride(0), o.stride(1), lse.stride(0), heads, num_splits, split_tokens,
        RANK=kv_lora_rank, ROPE=rope, PAGE_SIZE=page_size, SPLIT=split,
        UPCAST_DOT=interpreting() and q.dtype == torch.bfloat16, IEEE_FP32=q.dtype == torch.float32)
    if split:
        _mla_decode_combine_kernel[(batch, heads)](
            part_o, part_m, part_l, o, lse, o.stride(0), o.stride(1), lse.stride(0), heads, num_splits,
            RANK=kv_lora_rank, SPLITS_PAD=max(2, triton.next_power_of_2(num_splits)), num_warps=4)
    return o, lse

