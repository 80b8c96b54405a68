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

Beside the L2 bound, every element must satisfy ``|out - ref| <= atol + rtol·|ref|`` with
``atol = atol_rms · rms(ref)`` (kernelmark/ops/check.py): the L2 norm of a large output hides an
error confined to a few elements (a bf16 [4096, 64] GEMM output with its last row never
written has relative L2 error 0.0157 against the 0.016 tolerance). ``rtol`` allows a few
roundings of the value itself; ``atol``, scaled to the output's own magnitude, allows the
absolute error that accumulation leaves on elements near zero (cancellation):

=========  ======  ========  ==================================================================
name       rtol    atol_rms  why
=========  ======  ========  ==================================================================
fp32       1e-4    1e-4      ~800 fp32 roundings (6e-8 each): sums of K ≤ 16384 products, in any
                             order, stay near sqrt(K)·6e-8 ≈ 8e-6 of the RMS; 10x headroom
fp16       4e-3    4e-3      4 output roundings (one is at most 2**-11 ≈ 4.9e-4 relative) plus
                             fp16 intermediates (attention's P) of the same size
bf16       3.2e-2  3.2e-2    4 output roundings (at most 2**-8 ≈ 3.9e-3 each, 2 for a reference
                             rounded to bf16 too); a zeroed element is off by ~1 RMS, 30x this
fp8_e4m3   1.25e-1 1.25e-1   2 roundings at 3 mantissa bits (2**-4 each); fp8 GEMMs output bf16,
                             so honest ones sit far inside it
=========  ======  ========  ==================================================================

Attention (prefill, paged decode, MLA) in fp16/bf16 uses ATTENTION_ELEMENTWISE instead, with
atol_rms 2.5x the table's (bf16 0.08, fp16 0.012): honest kernels round the softmax weights P
(FlashAttention, SDPA's flash path) or the scores (plain torch) to the input dtype before the
weighted sum, and a score off by |s|·2**-8 moves its weight by as much, an error the table
(output roundings only) does not count. Measured on fresh random inputs: torch-sdpa-flash bf16
needed 0.024·rms at 8.4M output elements and broke 0.032 at 67M (prefill b=8 s=2048 h=32/8
d=128); MLA's torch-eager needed up to 0.046 (bf16) and 0.0066 (fp16) and failed the table's
bound in 3 of 10 bf16 and 6 of 10 fp16 draws. A dropped head, a swapped page or a zeroed
element is off by about one RMS, still 12x beyond.

The bound follows the op's dtype (the precision its kernels compute in), not the output's.
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
# (rtol, atol as a multiple of the reference's RMS), per element; see the table above.
ELEMENTWISE = {"fp32": (1e-4, 1e-4), "fp16": (4e-3, 4e-3), "bf16": (3.2e-2, 3.2e-2), "fp8_e4m3": (1.25e-1, 1.25e-1)}
# Attention's, for 16-bit inputs (see the docstring): P or the scores rounded to the input dtype.
ATTENTION_ELEMENTWISE = {"fp16": (4e-3, 1.2e-2), "bf16": (3.2e-2, 8e-2)}

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


def elementwise(name: str) -> tuple:
    """(rtol, atol_rms) of the elementwise bound for a dtype."""
    try:
        return ELEMENTWISE[name]
    except KeyError:
        raise ValueError(f"no elementwise tolerance is defined for dtype {name!r}") from None
