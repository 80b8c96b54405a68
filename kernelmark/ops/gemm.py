"""The GEMM family: C = A·B (layout "nn") and C = A·Wᵀ (layout "nt", as linear layers
store their weights [N, K]).

FLOPs 2·M·N·K; bytes (M·K + K·N)·input size + M·N·output size. fp8 (e4m3) inputs
produce a bf16 output with unit scales. The reference is fp64 matmul of the same
(upcast) inputs.
"""

from __future__ import annotations

import torch

from kernelmark import dtypes
from kernelmark.ops.base import Backend, Op, given_like, positive_ints, shape_str

LAYOUTS = ("nn", "nt")


def out_dtype(dtype: str) -> str:
    return "bf16" if dtype == "fp8_e4m3" else dtype


def validate(shape, dtype):
    positive_ints(shape, ("m", "n", "k"))
    if shape["layout"] not in LAYOUTS:
        raise ValueError(f"shape {shape_str(shape)}: layout must be one of {', '.join(LAYOUTS)}")


def make_inputs(shape, dtype, device, gen):
    m, n, k = shape["m"], shape["n"], shape["k"]
    dt = dtypes.torch_dtype(dtype)
    # Unit-variance entries; for fp8 that keeps values well inside e4m3's range (±448).
    a = torch.randn(m, k, device=device, generator=gen).to(dt)
    if shape["layout"] == "nt":
        b = torch.randn(n, k, device=device, generator=gen).to(dt).t()   # [K, N] view of W [N, K]
    else:
        b = torch.randn(k, n, device=device, generator=gen).to(dt)
    x = {"a": a, "b": b, "dtype": dtype}
    if dtype == "fp8_e4m3":
        x["unit_scale"] = torch.ones((), device=device, dtype=torch.float32)   # _scaled_mm's per-tensor scales
    return x


def take_given(x, given):
    """Given A [M, K] and B: B as FlashInfer-Trace and the "nt" layout give it, W [N, K]
    (``b`` is its [K, N] view), else as ``b`` itself."""
    for name, t in given.items():
        if name == "b" and not x["b"].is_contiguous():
            x["b"] = given_like(x["b"].t(), t, "b").t()
        else:
            x[name] = given_like(x[name], t, name)
    return x


def reference(x):
    return (x["a"].double() @ x["b"].double()).to(dtypes.torch_dtype(out_dtype(x["dtype"])))


def flops(shape):
    return 2 * shape["m"] * shape["n"] * shape["k"]


def nbytes(shape, dtype):
    m, n, k = shape["m"], shape["n"], shape["k"]
    return (m * k + k * n) * dtypes.itemsize(dtype) + m * n * dtypes.itemsize(out_dtype(dtype))


def _torch_run(x):
    if x["dtype"] == "fp8_e4m3":
        one = x["unit_scale"]
        return torch._scaled_mm(x["a"], x["b"], scale_a=one, scale_b=one, out_dtype=torch.bfloat16)
    return torch.matmul(x["a"], x["b"])


def _torch_supports(shape, dtype, device_kind, capability):
    if dtype == "fp8_e4m3":
        if device_kind != "cuda" or capability is None or capability < (8, 9):
            return "fp8 matmul (torch._scaled_mm) needs an NVIDIA GPU of compute capability 8.9 or newer"
        if shape["layout"] != "nt":
            return "torch._scaled_mm needs B column-major: fp8 is measured in the nt layout only"
        if any(shape[d] % 16 for d in ("m", "n", "k")):
            return "torch._scaled_mm needs M, N and K divisible by 16"
    if dtype in ("fp16", "bf16") and device_kind == "cpu" and shape["m"] * shape["n"] * shape["k"] > 2 ** 33:
        return "half-precision matmul on the CPU is emulated and too slow at this size"
    return None


def _triton_run(x):
    from kernelmark.kernels.gemm import matmul
    return matmul(x["a"], x["b"], out_dtype=dtypes.torch_dtype(out_dtype(x["dtype"])))


def _triton_config():
    from kernelmark.kernels import chosen_config
    from kernelmark.kernels.gemm import _gemm_kernel
    return chosen_config(_gemm_kernel)


def _triton_supports(shape, dtype, device_kind, capability):
    if dtype == "fp8_e4m3":
        if device_kind == "cpu":
            return "fp8 tl.dot is not supported by the Triton interpreter"
        if device_kind == "cuda" and (capability is None or capability < (8, 9)):
            return "fp8 tl.dot needs compute capability 8.9 or newer"
    return None


OPS = [
    Op(
        name="gemm",
        description="C = A·B (nn) or A·Wᵀ (nt); fp32 accumulation",
        params=("m", "n", "k", "layout"),
        defaults={"layout": "nn"},
        dtypes=("fp32", "fp16", "bf16", "fp8_e4m3"),
        make_inputs=make_inputs,
        reference=reference,
        flops=flops,
        nbytes=nbytes,
        validate=validate,
        given=("a", "b"), take_given=take_given,
        backends=(
            Backend("torch", _torch_run, supports=_torch_supports,
                    description="torch.matmul (cuBLAS/hipBLASLt on GPU, oneDNN/MKL on CPU); fp8 via torch._scaled_mm"),
            Backend("triton", _triton_run, triton=True, supports=_triton_supports, detail=_triton_config,
                    description="kernelmark's autotuned tiled Triton GEMM (kernels/gemm.py)"),
        ),
    ),
]
