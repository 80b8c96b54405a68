"""Token embedding: out[t] = table[ids[t]], the first op of every forward pass, from a
[vocab, hidden] table (vocab 32k..256k: Llama 3 128256, Qwen3 151936, DeepSeek-V3 129280).

An exact copy (checked bit for bit). Work, with s the dtype's size, T tokens, H hidden:
bytes ``2·T·H·s + 8·T`` (the T rows read, the output written, the int64 ids read; the
rest of the table is never touched); FLOPs 0. Judged in % of copy bandwidth.

Inputs: ids uniform over the vocabulary (a decode batch's tokens are scattered over the
table, so each row is a fresh read) and a random table. No library ships its own kernel
for this (vLLM's and SGLang's embedding layers call torch's F.embedding), so the backends
are ours, eager torch and torch.compile.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kernelmark import dtypes
from kernelmark.ops import compiled
from kernelmark.ops.base import Backend, Op, positive_ints

DTYPES = ("bf16", "fp16", "fp32")
PARAMS = ("tokens", "vocab", "hidden")


def validate(shape, dtype):
    positive_ints(shape, PARAMS)


def make_inputs(shape, dtype, device, gen):
    t, v, h = shape["tokens"], shape["vocab"], shape["hidden"]
    return {"ids": torch.randint(0, v, (t,), device=device, generator=gen),
            "table": torch.randn(v, h, device=device, generator=gen).to(dtypes.torch_dtype(dtype))}


def reference(x):
    return x["table"].index_select(0, x["ids"])


def nbytes(shape, dtype):
    return 2 * shape["tokens"] * shape["hidden"] * dtypes.itemsize(dtype) + 8 * shape["tokens"]


def _torch(x):
    return F.embedding(x["ids"], x["table"])


def _triton(x):
    from kernelmark.kernels.embedding import embedding
    return embedding(x["ids"], x["table"], check_ids=False)


def _triton_config():
    from kernelmark.kernels import chosen_config
    from kernelmark.kernels.embedding import _embedding
    return chosen_config(_embedding)


OPS = [
    Op(
        name="embedding",
        description="rows of a [vocab, hidden] table gathered for a batch of token ids",
        params=PARAMS, dtypes=DTYPES,
        make_inputs=make_inputs, reference=reference, flops=lambda shape: 0, nbytes=nbytes, validate=validate,
        exact=True,
        backends=(
            Backend("triton", _triton, triton=True, detail=_triton_config,
                    description="kernelmark's Triton row gather (kernels/embedding.py)"),
            Backend("torch", _torch, description="torch.nn.functional.embedding (what vLLM's and SGLang's "
                                                 "embedding layers call)"),
            Backend("torch-compile", compiled.Compiled(_torch, compiled.tensor_key("ids", "table")),
                    devices=compiled.GPU, description=compiled.DESCRIPTION),
        ),
    ),
]
