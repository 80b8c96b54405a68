"""Data types by the names suites use, their sizes, and the tolerance each is checked to.

Tolerances are on the relative L2 error ``||out - ref|| / ||ref||`` against a reference
computed in higher precision (fp32 or fp64 on upcast inputs). They are set from how
many mantissa bits the format keeps, with headroom for accumulation order:

=========  ========  =======================================================
name       rel. L2   why
=========  ========  =======================================================
fp32       1e-5      IEEE fp32 math (no TF32): rounding ~6e-8 per op, sums of K terms
fp16       2e-3      10 mantissa bits: one output rounding is ~2.4e-4 on average
bf16       1.6e-2    7 mantissa bits: one output rounding is ~2e-3 on average
fp8_e4m3   6e-2      3 mantissa bits: one rounding is ~2.5e-2 on average
int8       -         only as a storage format (quantisation ops state their own bound)
=========  ========  =======================================================

A result with any NaN or inf never passes, whatever the tolerance.
"""

from __future__ import annotations

import torch

_TORCH = {
    "fp32": torch.float32,
    "fp16": torch.float16,
    "bf16": torch.bfloat16,
    "fp8_e4m3": getattr(torch, "float8_e4m3fn", None),
    "int8": torch.int8,
}

TOLERANCE = {"fp32": 1e-5, "fp16": 2e-3, "bf16": 1.6e-2, "fp8_e4m3": 6e-2}

KNOWN = tuple(_TORCH)


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype for a suite's dtype name; ValueError naming the known ones."""
    dt = _TORCH.get(name)
    if dt is None:
        if name in _TORCH:
            raise ValueError(f"dtype {name!r} is not available in torch {torch.__version__}")
        raise ValueError(f"unknown dtype {name!r}; known: {', '.join(KNOWN)}")
    return dt


def itemsize(name: str) -> int:
    return torch.tensor([], dtype=torch_dtype(name)).element_size()


def tolerance(name: str) -> float:
    try:
        return TOLERANCE[name]
    except KeyError:
        raise ValueError(f"no numerical tolerance is defined for dtype {name!r}") from None
