"""Test-only ops whose backends crash, hang, exit or run out of memory on purpose.

Loaded into runs through KERNELMARK_OP_MODULES=chaos_ops (with tests/ on PYTHONPATH).
"""
import os
import signal
import time

import torch

from kernelmark.ops.base import Backend, Op


def _make(shape, dtype, device, gen):
    return {"x": torch.randn(shape["n"], generator=gen, device=device), "slow_ms": shape["slow_ms"]}


def _reference(inputs):
    time.sleep(inputs["slow_ms"] / 1000)     # once per case: makes a run last long enough to kill
    return inputs["x"].double() * 2


def _segfault(x):
    os.kill(os.getpid(), signal.SIGSEGV)


def _hang(x):
    time.sleep(3600)


def _exit(x):
    os._exit(3)


def _oom(x):
    raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (GPU 0; 79.1 GiB total)")


OPS = [Op(
    name="chaos", description="y = 2x, with misbehaving backends", params=("n", "slow_ms"),
    defaults={"slow_ms": 0}, dtypes=("fp32",), make_inputs=_make, reference=_reference,
    flops=lambda s: s["n"], nbytes=lambda s, d: 8 * s["n"],
    validate=lambda s, d: None,
    backends=(
        Backend("good", lambda x: x["x"] * 2),
        Backend("segfault", _segfault),
        Backend("hang", _hang),
        Backend("exit", _exit),
        Backend("oom", _oom),
        Backend("good_too", lambda x: x["x"] + x["x"]),
    ),
)]
