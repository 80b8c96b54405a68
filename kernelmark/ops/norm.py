"""RMSNorm, plain and with the residual add every decoder layer does before it.

* ``rmsnorm``: y = x / sqrt(mean(x²) + eps) · w over the hidden dimension, x [tokens,
  hidden], w [hidden]. eps is a shape parameter: 1e-5 for Llama 3, 1e-6 for Qwen3 and
  DeepSeek-V3 (their config.json ``rms_norm_eps``).
* ``fused_add_rmsnorm``: r ← x + r (written back into r, in its dtype), y = rmsnorm(r).
  Returns (y, r): both are checked. Libraries write y into x (FlashInfer, vLLM, sgl-kernel
  do); so does our Triton backend.

Work, with s the dtype's size, T tokens, H hidden (what must be read and written once):

* rmsnorm: bytes ``2·T·H·s + H·s`` (x read, y written, w read); FLOPs ``4·T·H`` (square
  and add for the mean, the scale by 1/rms, the weight).
* fused_add_rmsnorm: bytes ``4·T·H·s + H·s`` (x and r read, r and y written, w read);
  FLOPs ``5·T·H`` (the add, then as rmsnorm).

Memory bound by a wide margin (about 1 FLOP a byte): judged in % of measured copy
bandwidth.

Inputs: rows of random magnitude, 2**U(-10, 4) times unit normals, so that some rows
have a mean square near eps (a kernel that ignores eps, or uses another row's scale,
fails) and none is constant; w = 1 + N(0, 0.5²) (a kernel that drops w fails). The
reference is fp64 from the same inputs: for the fused form the exact sum x + r, whose
rounding in a kernel is within the dtype's bound. Repeated timed calls keep adding to r
(in place, as in a model); values grow but the work per call does not change.
"""

from __future__ import annotations

import torch

from kernelmark import dtypes
from kernelmark.ops import compiled, lib_backends as libs
from kernelmark.ops.base import Backend, Op, positive_ints, shape_str

DTYPES = ("bf16", "fp16", "fp32")
PARAMS = ("tokens", "hidden", "eps")
DEFAULTS = {"eps": 1e-5}


def validate(shape, dtype):
    positive_ints(shape, ("tokens", "hidden"))
    eps = shape["eps"]
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 <= eps < 1:
        raise ValueError(f"shape {shape_str(shape)}: eps must be a number in [0, 1), got {eps!r}")


def random_rows(tokens: int, hidden: int, dtype: str, device, gen) -> torch.Tensor:
    """Unit normals times a per-row magnitude 2**U(-10, 4)."""
    mag = torch.exp2(torch.rand(tokens, 1, device=device, generator=gen) * 14 - 10)
    return (torch.randn(tokens, hidden, device=device, generator=gen) * mag).to(dtypes.torch_dtype(dtype))


def random_weight(hidden: int, dtype: str, device, gen) -> torch.Tensor:
    return (1 + 0.5 * torch.randn(hidden, device=device, generator=gen)).to(dtypes.torch_dtype(dtype))


def make_inputs(shape, dtype, device, gen):
    t, h = shape["tokens"], shape["hidden"]
    return {"x": random_rows(t, h, dtype, device, gen), "weight": random_weight(h, dtype, device, gen),
            "eps": float(shape["eps"])}


def fused_make_inputs(shape, dtype, device, gen):
    x = make_inputs(shape, dtype, device, gen)
    x["residual"] = random_rows(shape["tokens"], shape["hidden"], dtype, device, gen)
    return x


def rms_reference(s: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    s = s.double()
    return (s * torch.rsqrt(s.pow(2).mean(-1, keepdim=True) + eps) * w.double()).float()


def reference(x):
    return rms_reference(x["x"], x["weight"], x["eps"])


def fused_reference(x):
    s = x["x"].double() + x["residual"].double()
    return rms_reference(s, x["weight"], x["eps"]), s.float()


def nbytes(shape, dtype):
    t, h, s = shape["tokens"], shape["hidden"], dtypes.itemsize(dtype)
    return 2 * t * h * s + h * s


def fused_nbytes(shape, dtype):
    t, h, s = shape["tokens"], shape["hidden"], dtypes.itemsize(dtype)
    return 4 * t * h * s + h * s


# ---------------------------------------------------------------------------------------
# backends

def rms_eager(h: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    hf = h.float()
    return (hf * torch.rsqrt(hf.pow(2).mean(-1, keepdim=True) + eps) * w.float()).to(h.dtype)


def _torch(x):
    return rms_eager(x["x"], x["weight"], x["eps"])


def _torch_fused(x):
    r = x["residual"].add_(x["x"])
    return rms_eager(r, x["weight"], x["eps"]), r


def _triton(x):
    from kernelmark.kernels.rmsnorm import rmsnorm
    return rmsnorm(x["x"], x["weight"], x["eps"])


def _triton_fused(x):
    from kernelmark.kernels.rmsnorm import fused_add_rmsnorm
    return fused_add_rmsnorm(x["x"], x["residual"], x["weight"], x["eps"], out=x["x"])


def _triton_config(fused: bool):
    def detail():
        from kernelmark.kernels import chosen_config
        from kernelmark.kernels import rmsnorm as k
        return chosen_config(k._fused_add_rmsnorm if fused else k._rmsnorm)
    return detail


def _flashinfer(x):
    # flashinfer.norm.rmsnorm(input, weight, eps=1e-6, out=None, enable_pdl=None) -> Tensor
    return libs.module_function("flashinfer.norm", "rmsnorm")(x["x"], x["weight"], x["eps"])


def _flashinfer_fused(x):
    # flashinfer.norm.fused_add_rmsnorm(input, residual, weight, eps): residual += input, input = y
    libs.module_function("flashinfer.norm", "fused_add_rmsnorm")(x["x"], x["residual"], x["weight"], x["eps"])
    return x["x"], x["residual"]


def _sgl(x):
    # sgl_kernel.rmsnorm(input, weight, eps=1e-6, out=None, enable_pdl=None) -> Tensor
    return libs.module_function("sgl_kernel", "rmsnorm")(x["x"], x["weight"], x["eps"])


def _sgl_fused(x):
    # sgl_kernel.fused_add_rmsnorm(input, residual, weight, eps): as FlashInfer's, in place
    libs.module_function("sgl_kernel", "fused_add_rmsnorm")(x["x"], x["residual"], x["weight"], x["eps"])
    return x["x"], x["residual"]


def _vllm(x):
    # vllm._custom_ops.rms_norm(out, input, weight, epsilon)
    out = torch.empty_like(x["x"])
    libs.vllm_op("rms_norm")(out, x["x"], x["weight"], x["eps"])
    return out


def _vllm_fused(x):
    # vllm._custom_ops.fused_add_rms_norm(input, residual, weight, epsilon): residual += input, input = y
    libs.vllm_op("fused_add_rms_norm")(x["x"], x["residual"], x["weight"], x["eps"])
    return x["x"], x["residual"]


_KEY = compiled.tensor_key("x", scalars=("eps",))


def _backends(triton_run, eager, fused: bool, flashinfer_run, vllm_run, sgl_run) -> tuple:
    fi = sgl = "fused_add_rmsnorm" if fused else "rmsnorm"
    vl = "fused_add_rms_norm" if fused else "rms_norm"
    return (
        Backend("triton", triton_run, triton=True, detail=_triton_config(fused),
                description="kernelmark's Triton RMSNorm (kernels/rmsnorm.py): whole rows per program, "
                            "fp32 math, autotuned rows and warps" + ("; y written into x" if fused else "")),
        Backend("torch", eager, description="eager torch in fp32: pow, mean, rsqrt, two multiplies"
                + (", after an in-place add_ into the residual" if fused else "")),
        Backend("torch-compile", compiled.Compiled(eager, _KEY), devices=compiled.GPU,
                description=compiled.DESCRIPTION),
        Backend("flashinfer", flashinfer_run, devices=("cuda",), supports=libs.half_precision_only("flashinfer"),
                available=libs.function_available("flashinfer.norm", fi, "flashinfer"),
                description=f"flashinfer.norm.{fi}"),
        Backend("vllm", vllm_run, devices=libs.GPU, available=libs.vllm_available(vl),
                description=f"vllm._custom_ops.{vl}"),
        Backend("sgl-kernel", sgl_run, devices=libs.GPU, supports=libs.half_precision_only("sgl-kernel"),
                available=libs.function_available("sgl_kernel", sgl, "sgl-kernel"),
                description=f"sgl_kernel.{sgl}"),
    )


OPS = [
    Op(
        name="rmsnorm",
        description="y = x / rms(x) · w over the hidden dimension",
        params=PARAMS, defaults=DEFAULTS, dtypes=DTYPES,
        make_inputs=make_inputs, reference=reference,
        flops=lambda shape: 4 * shape["tokens"] * shape["hidden"],
        nbytes=nbytes, validate=validate, given=("x", "weight"),
        backends=_backends(_triton, _torch, False, _flashinfer, _vllm, _sgl),
    ),
    Op(
        name="fused_add_rmsnorm",
        description="r ← x + r in place, y = rmsnorm(r): the residual form of every layer; outputs (y, r)",
        params=PARAMS, defaults=DEFAULTS, dtypes=DTYPES,
        make_inputs=fused_make_inputs, reference=fused_reference,
        flops=lambda shape: 5 * shape["tokens"] * shape["hidden"],
        nbytes=fused_nbytes, validate=validate, given=("x", "weight", "residual"),
        backends=_backends(_triton_fused, _torch_fused, True, _flashinfer_fused, _vllm_fused,
                           _sgl_fused),
    ),
]
