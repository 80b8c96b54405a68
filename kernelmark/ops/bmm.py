"""Batched GEMM: C[b] = A[b]·B[b] for b in range(batch), one launch for the whole batch.

What it is for: DeepSeek-V3's absorbed MLA decode, where each layer multiplies every
head's q_nope by its W_UK ([h, B, 128] x [h, 128, 512]) and the attention output by its
W_UV ([h, B, 512] x [h, 512, 128]) in one torch.bmm over the heads, not h separate GEMMs.

Operand layouts are the ones decode engines hand to torch.bmm. SGLang
(python/sglang/srt/models/deepseek_v2.py: forward_absorb and post_load_weights) and
vLLM's MLA backends both pass A as ``x.transpose(0, 1)`` of token-major activations
[tokens, heads, k], so A [batch, m, k] is a view with batch stride k and row stride
batch·k; we make A that way. B: SGLang keeps each head's weight as stored in kv_b_proj,
row-major [n, k], and passes its transposed view (``w_kc.transpose(1, 2).contiguous()
.transpose(1, 2)``, ``w_vc.contiguous().transpose(1, 2)``), which is layout "nt" here (the
default); "nn" is B [batch, k, n] with n contiguous, as vLLM holds W_UK_T (a permuted view of
the transposed kv_b weight; its W_UV is nt like SGLang's). C [batch, m, n] is contiguous,
as torch.bmm returns it. (vLLM's q_nope is also a slice of q [tokens, heads, 192], so its
rows are 192 apart where ours are k apart: the same bytes are read either way.)

FLOPs 2·batch·m·n·k; bytes: A, B and C once each, (m·k + k·n + m·n)·batch·itemsize. The
reference is fp64 bmm of the same inputs. fp8 is not defined: the engines run these
products in bf16 (the absorbed weights are dequantised at load), and an fp8 bmm would need
its own scales per head to mean anything.
"""

from __future__ import annotations

import torch

from kernelmark import dtypes
from kernelmark.ops.base import Backend, Op, positive_ints, shape_str

LAYOUTS = ("nn", "nt")


def validate(shape, dtype):
    positive_ints(shape, ("batch", "m", "n", "k"))
    if shape["layout"] not in LAYOUTS:
        raise ValueError(f"shape {shape_str(shape)}: layout must be one of {', '.join(LAYOUTS)}")


def make_inputs(shape, dtype, device, gen):
    bt, m, n, k = shape["batch"], shape["m"], shape["n"], shape["k"]
    dt = dtypes.torch_dtype(dtype)
    # token-major activations [m, batch, k], seen per batch element (see the module docstring)
    a = torch.randn(m, bt, k, device=device, generator=gen).to(dt).transpose(0, 1)
    if shape["layout"] == "nt":
        b = torch.randn(bt, n, k, device=device, generator=gen).to(dt).transpose(1, 2)   # [batch, K, N] view
    else:
        b = torch.randn(bt, k, n, device=device, generator=gen).to(dt)
    return {"a": a, "b": b, "dtype": dtype}


def reference(x):
    return torch.bmm(x["a"].double(), x["b"].double()).to(dtypes.torch_dtype(x["dtype"]))


def flops(shape):
    return 2 * shape["batch"] * shape["m"] * shape["n"] * shape["k"]


def nbytes(shape, dtype):
    bt, m, n, k = shape["batch"], shape["m"], shape["n"], shape["k"]
    return bt * (m * k + k * n + m * n) * dtypes.itemsize(dtype)


def _torch_run(x):
    return torch.bmm(x["a"], x["b"])


def _torch_supports(shape, dtype, device_kind, capability):
    if (dtype in ("fp16", "bf16") and device_kind == "cpu"
            and shape["batch"] * shape["m"] * shape["n"] * shape["k"] > 2 ** 33):
        return "half-precision matmul on the CPU is emulated and too slow at this size"
    return None


def _triton_run(x):
    from kernelmark.kernels.bmm import bmm
    return bmm(x["a"], x["b"])


def _triton_config():
    from kernelmark.kernels import chosen_config
    from kernelmark.kernels.bmm import _bmm_kernel
    return chosen_config(_bmm_kernel)


def _triton_supports(shape, dtype, device_kind, capability):
    if shape["batch"] > 65535:     # kernels/bmm.py MAX_BATCH (not imported here: it imports triton)
        return "the Triton bmm launches the batch on the grid's second axis, at most 65535"
    return None


OPS = [
    Op(
        name="bmm",
        description="C[b] = A[b]·B[b] over a batch (nt: B[b] = W[b]ᵀ, W [batch, n, k]); fp32 accumulation",
        params=("batch", "m", "n", "k", "layout"),
        defaults={"layout": "nt"},
        dtypes=("fp32", "fp16", "bf16"),
        make_inputs=make_inputs,
        reference=reference,
        flops=flops,
        nbytes=nbytes,
        validate=validate,
        backends=(
            Backend("torch", _torch_run, supports=_torch_supports,
                    description="torch.bmm (cuBLAS/hipBLASLt strided-batched GEMM on GPU, oneDNN/MKL on CPU)"),
            Backend("triton", _triton_run, triton=True, supports=_triton_supports, detail=_triton_config,
                    description="kernelmark's autotuned tiled Triton GEMM with a grid axis over the batch "
                                "(kernels/bmm.py)"),
        ),
    ),
]
