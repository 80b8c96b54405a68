"""Gated MLP activations: x [tokens, 2·I] (the fused gate_up projection's output) →
y [tokens, I].

* ``silu_and_mul``: y = silu(a) · b, a = x[:, :I], b = x[:, I:] (Llama, Qwen, DeepSeek).
* ``gelu_tanh_and_mul``: y = gelu_tanh(a) · b, gelu_tanh(a) = ½·a·(1 + tanh(√(2/π)·(a +
  0.044715·a³))) (Gemma's GeGLU).

Work, with s the dtype's size, T tokens (what must be read and written once): bytes
``3·T·I·s`` (x read, y written). FLOPs per output element, a transcendental (exp, tanh)
counted as one: silu·mul 5 (exp, add, divide for σ; two multiplies) → ``5·T·I``;
gelu_tanh·mul 10 (a³ and the polynomial 4, the scale 1, tanh 1, the add 1, the half 1,
two multiplies 2) → ``10·T·I``. Memory bound: judged in % of copy bandwidth.

Inputs: unit normals times 2 (activations of a trained MLP span a few units; the
curvature of silu and gelu around 0 and their tails both matter). Reference: fp64 on
the same inputs. The eager torch backend is vLLM's native form, ``F.silu(a) * b`` in the
input dtype (two kernels, two roundings).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from kernelmark import dtypes
from kernelmark.ops import compiled, lib_backends as libs
from kernelmark.ops.base import Backend, Op, positive_ints

DTYPES = ("bf16", "fp16", "fp32")
PARAMS = ("tokens", "intermediate")


def validate(shape, dtype):
    positive_ints(shape, PARAMS)


def make_inputs(shape, dtype, device, gen):
    t, i = shape["tokens"], shape["intermediate"]
    x = (2 * torch.randn(t, 2 * i, device=device, generator=gen)).to(dtypes.torch_dtype(dtype))
    return {"x": x}


def _halves(x: torch.Tensor) -> tuple:
    i = x.shape[-1] // 2
    return x[..., :i], x[..., i:]


def silu_reference(x):
    a, b = (h.double() for h in _halves(x["x"]))
    return (a * torch.sigmoid(a) * b).float()


def gelu_tanh_reference(x):
    a, b = (h.double() for h in _halves(x["x"]))
    u = math.sqrt(2 / math.pi) * (a + 0.044715 * a ** 3)
    return (0.5 * a * (1 + torch.tanh(u)) * b).float()


def nbytes(shape, dtype):
    return 3 * shape["tokens"] * shape["intermediate"] * dtypes.itemsize(dtype)


# ---------------------------------------------------------------------------------------
# backends

def _torch_silu(x):
    a, b = _halves(x["x"])
    return F.silu(a) * b


def _torch_gelu_tanh(x):
    a, b = _halves(x["x"])
    return F.gelu(a, approximate="tanh") * b


def _triton(activation: str):
    def run(x):
        from kernelmark.kernels.activation import act_and_mul
        return act_and_mul(x["x"], activation)
    return run


def _triton_config():
    from kernelmark.kernels import chosen_config
    from kernelmark.kernels.activation import _act_and_mul
    return chosen_config(_act_and_mul)


def _flashinfer(name: str):
    def run(x):
        # flashinfer.activation.<name>(input, out=None, enable_pdl=None) -> Tensor [..., I]
        return libs.module_function("flashinfer.activation", name)(x["x"])
    return run


def _sgl(name: str):
    def run(x):
        # sgl_kernel.<name>(input, out=None) -> Tensor [..., I]
        return libs.module_function("sgl_kernel", name)(x["x"])
    return run


def _vllm(name: str):
    def run(x):
        # vLLM's activation layers call torch.ops._C.<name>(out, input), out [..., I]
        inp = x["x"]
        out = torch.empty(inp.shape[:-1] + (inp.shape[-1] // 2,), dtype=inp.dtype, device=inp.device)
        libs.vllm_op(name)(out, inp)
        return out
    return run


def _flashinfer_supports(shape, dtype, device_kind, capability):
    # FlashInfer's activation launcher refuses rows that are not a multiple of 16 bytes.
    if (2 * shape["intermediate"] * dtypes.itemsize(dtype)) % 16:
        return "flashinfer's activations need 2·intermediate·itemsize to be a multiple of 16 bytes"
    return libs.half_precision_only("flashinfer")(shape, dtype, device_kind, capability)


_KEY = compiled.tensor_key("x")


def _backends(activation: str, name: str, eager, eager_text: str) -> tuple:
    return (
        Backend("triton", _triton(activation), triton=True, detail=_triton_config,
                description="kernelmark's Triton gated activation (kernels/activation.py): 2-D tiles, fp32 math"),
        Backend("torch", eager, description=f"eager torch in the input dtype: {eager_text} (vLLM's native form)"),
        Backend("torch-compile", compiled.Compiled(eager, _KEY), devices=compiled.GPU,
                description=compiled.DESCRIPTION),
        Backend("flashinfer", _flashinfer(name), devices=("cuda",), supports=_flashinfer_supports,
                available=libs.function_available("flashinfer.activation", name, "flashinfer"),
                description=f"flashinfer.activation.{name}"),
        Backend("vllm", _vllm(name), devices=libs.GPU, available=libs.vllm_available(name),
                description=f"vllm torch.ops._C.{name}"),
        Backend("sgl-kernel", _sgl(name), devices=libs.GPU, supports=libs.half_precision_only("sgl-kernel"),
                available=libs.function_available("sgl_kernel", name, "sgl-kernel"),
                description=f"sgl_kernel.{name}"),
    )


OPS = [
    Op(
        name="silu_and_mul",
        description="y = silu(a) · b for x = [a | b] [tokens, 2·I] (SwiGLU)",
        params=PARAMS, dtypes=DTYPES,
        make_inputs=make_inputs, reference=silu_reference,
        flops=lambda shape: 5 * shape["tokens"] * shape["intermediate"],
        nbytes=nbytes, validate=validate,
        backends=_backends("silu", "silu_and_mul", _torch_silu, "F.silu(a) * b"),
    ),
    Op(
        name="gelu_tanh_and_mul",
        description="y = gelu_tanh(a) · b for x = [a | b] [tokens, 2·I] (GeGLU)",
        params=PARAMS, dtypes=DTYPES,
        make_inputs=make_inputs, reference=gelu_tanh_reference,
        flops=lambda shape: 10 * shape["tokens"] * shape["intermediate"],
        nbytes=nbytes, validate=validate,
        backends=_backends("gelu_tanh", "gelu_tanh_and_mul", _torch_gelu_tanh,
                           "F.gelu(a, approximate='tanh') * b"),
    ),
]
