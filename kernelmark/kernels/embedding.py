"""Token embedding lookup in Triton: out[t] = table[ids[t]] for a table [vocab, hidden].

Tiling: a 2-D grid of [ROWS, BLOCK_N] tiles of the output; a program loads its ROWS
token ids once and copies those rows' BLOCK_N-wide slices (a gather of whole, contiguous
row segments: full-width loads and stores). Row offsets are int64 (a 256k x 8k table has
2**31 elements). An id outside [0, vocab) gives a row of zeros — what vLLM's
vocabulary-parallel embedding does with ids of another rank's shard — rather than a read
out of bounds; ``check_ids=True`` refuses such ids on the host before the launch instead.
A pure copy: autotuning picks the tile and warps per (tokens, hidden).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernelmark.kernels import tl_utils  # noqa: F401  (the triton 3.6 interpreter work-around)

from kernelmark.kernels import interpreting
from kernelmark.kernels.autotune_prune import autotune
from kernelmark.kernels.kv_validate import next_pow2

DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _configs():
    if interpreting():
        return [triton.Config({"ROWS": 2, "BLOCK_N": 64}, num_warps=4)]
    return [triton.Config({"ROWS": r, "BLOCK_N": n}, num_warps=w)
            for r in (1, 2, 4, 8) for n in (256, 512, 1024, 2048, 4096) for w in (2, 4, 8)
            if r * n <= 8192]


def prune(configs, named_args, **kwargs):
    """Drop tiles wider than the row (rounded up to a power of two, at least 256), taller
    than the batch, or that leave a thread without one 16-byte vector."""
    args = {**named_args, **kwargs}
    width, m = max(256, next_pow2(args["N"])), max(1, next_pow2(args["M"]))
    itemsize = args["table_ptr"].element_size()
    keep = [c for c in configs
            if c.kwargs["BLOCK_N"] <= width and c.kwargs["ROWS"] <= m
            and c.kwargs["ROWS"] * c.kwargs["BLOCK_N"] * itemsize >= 16 * 32 * c.num_warps]
    return keep or [min(configs, key=lambda c: (c.kwargs["ROWS"] * c.kwargs["BLOCK_N"], c.num_warps))]


@triton.jit
def _embedding_kernel(ids_ptr, table_ptr, out_ptr, M, N, VOCAB, stride_table, stride_out,
                      ROWS: tl.constexpr, BLOCK_N: tl.constexpr):
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < M
    ids = tl.load(ids_ptr + rows, mask=row_ok, other=0).to(tl.int64)
    id_ok = (ids >= 0) & (ids < VOCAB)
    col_ok = (cols < N)[None, :]
    src = table_ptr + (ids * stride_table)[:, None] + cols[None, :]
    vals = tl.load(src, mask=(row_ok & id_ok)[:, None] & col_ok, other=0.0)
    dst = out_ptr + (rows.to(tl.int64) * stride_out)[:, None] + cols[None, :]
    tl.store(dst, vals, mask=row_ok[:, None] & col_ok)


_embedding = autotune(configs=_configs(), key=["M", "N"], early_config_prune=prune)(_embedding_kernel)


def embedding(ids: torch.Tensor, table: torch.Tensor, out: torch.Tensor | None = None, *,
              check_ids: bool = True) -> torch.Tensor:
    """Rows of ``table`` [vocab, hidden] (fp32/fp16/bf16, rows contiguous) for ``ids``
    [tokens] (int32/int64). Returns ``out`` [tokens, hidden].

    ``check_ids``: refuse an id outside [0, vocab) (copies ids to the host: a device
    synchronisation); without it such an id gives a row of zeros."""
    if table.dim() != 2:
        raise ValueError(f"table must be 2-D [vocab, hidden], got shape {tuple(table.shape)}")
    vocab, hidden = table.shape
    if vocab < 1 or vocab > 2 ** 31 - 1:
        raise ValueError(f"vocab size {vocab} is not supported: 1..{2 ** 31 - 1} (int32 token ids)")
    if hidden < 1:
        raise ValueError(f"hidden size {hidden} is not supported: it must be positive")
    if table.dtype not in DTYPES:
        raise ValueError(f"table has dtype {table.dtype}; supported: float32, float16, bfloat16")
    if table.stride(1) != 1:
        raise ValueError(f"table's rows must be contiguous, got strides {table.stride()}")
    if ids.dim() != 1:
        raise ValueError(f"ids must be 1-D [tokens], got shape {tuple(ids.shape)}")
    if ids.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"ids must be int32 or int64, got {ids.dtype}")
    if ids.device != table.device:
        raise ValueError(f"ids are on {ids.device} but the table on {table.device}")
    tokens = ids.shape[0]
    if out is None:
        out = torch.empty((tokens, hidden), device=table.device, dtype=table.dtype)
    elif (tuple(out.shape) != (tokens, hidden) or out.dtype != table.dtype or out.device != table.device
          or out.stride(1) != 1):
        raise ValueError(f"out must be a {table.dtype} [{tokens}, {hidden}] tensor on {table.device} with "
                         f"contiguous rows, got {out.dtype} {tuple(out.shape)} on {out.device}")
    if check_ids and tokens:
        host = ids.detach().to("cpu", torch.int64)
        bad = (host < 0) | (host >= vocab)
        if bool(bad.any()):
            i = int(bad.nonzero()[0, 0])
            raise ValueError(f"ids[{i}] = {int(host[i])} is outside the table (vocab = {vocab})")
    if table.device.type == "cpu" and not interpreting():
        raise ValueError("CPU tensors need the Triton interpreter (TRITON_INTERPRET=1 before importing triton)")
    if tokens == 0:
        return out
    grid = lambda meta: (triton.cdiv(tokens, meta["ROWS"]), triton.cdiv(hidden, meta["BLOCK_N"]))  # noqa: E731
    _embedding[grid](ids, table, out, tokens, hidden, vocab, table.stride(0), out.stride(0))
    return out
