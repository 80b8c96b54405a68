"""kv_quantize / kv_dequantize: a KV cache tensor [tokens, kv_heads, head_dim] (fp16/bf16/
fp32; an NHD cache's pages seen as tokens; K and V are quantized alike, one at a time) to
codes and fp32 scales, and back. Formats and scales are kernels/kv_quant.py's:
``qformat`` "fp8_e4m3" or "int8"; ``granularity`` "tensor" or "head" (static, calibrated
scales: an input, here absmax/QMAX of the data, so nothing clips) or "token_head"
(dynamic: computed from each row's absmax).

Round-trip error bound, per element, with s its scale (what tests/kernels/test_kv_quant.py
asserts on every element; the fp32 division adds at most 2**-24·|x|):

* int8, symmetric absmax (QMAX 127): ``|x − s·q| ≤ s/2`` — round to nearest at step s.
* fp8 e4m3 (QMAX 448, 3 mantissa bits): ``|x − s·q| ≤ max(2**-4·|x|, 2**-10·s)`` — half
  a quantum, relative 2**-4 for normal values (|x|/s ≥ 2**-6), and half the subnormal
  quantum 2**-9·s below that.

Check of kv_quantize (what was chosen): codes and scales must equal the reference's bit
for bit. The reference rounds to nearest even from the same IEEE fp32 quotient, so it
holds the closest codes the format has at that scale, i.e. the bound above; any other
code (off by one step) would be a larger round-trip error, so no off-by-one allowance is
made. The reference is the plain-torch implementation (fp32 math is the format's
definition; fp64 would round differently at a few ties). The check reports the error
of the dequantized codes against the reference's, for the record.

Check of kv_dequantize: every element within one ulp of the output dtype of
code·scale (one rounding of an exact fp32 product; see kv_inputs.within_ulps).

Bytes, with s the dtype's size, n = T·H·D elements and σ the scale bytes (4 for
"tensor", 4·H for "head", 4·T·H for "token_head"): quantize ``n·s + n + σ`` (x read,
codes written, scales read or written); dequantize ``n + σ + n·s``. FLOPs 0 (memory bound).
"""

from __future__ import annotations

import torch

from kernelmark import dtypes
from kernelmark.ops import kv_inputs as kvi
from kernelmark.ops.base import Backend, CheckResult, Op, positive_ints, shape_str

QFORMATS = ("fp8_e4m3", "int8")
GRANULARITIES = ("tensor", "head", "token_head")
QMAX = {"fp8_e4m3": 448.0, "int8": 127.0}
PARAMS = ("tokens", "kv_heads", "head_dim", "qformat", "granularity")
DEFAULTS = {"qformat": "fp8_e4m3", "granularity": "tensor"}
QUANT_DTYPES = ("fp32", "fp16", "bf16")


def code_dtype(qformat: str) -> torch.dtype:
    return torch.int8 if qformat == "int8" else dtypes.torch_dtype("fp8_e4m3")


def validate(shape, dtype):
    positive_ints(shape, ("tokens", "kv_heads", "head_dim"))
    if shape["qformat"] not in QFORMATS:
        raise ValueError(f"shape {shape_str(shape)}: qformat must be one of {', '.join(QFORMATS)}")
    if shape["granularity"] not in GRANULARITIES:
        raise ValueError(f"shape {shape_str(shape)}: granularity must be one of {', '.join(GRANULARITIES)}")


def scale_view(scale: torch.Tensor) -> torch.Tensor:
    """A scale broadcast against [T, H, D]: [T, H] -> [T, H, 1]; [1] or [H] -> [1, ·, 1]."""
    return scale[:, :, None] if scale.dim() == 2 else scale.view(1, -1, 1)


def calibrate(x: torch.Tensor, qformat: str, granularity: str) -> torch.Tensor:
    """absmax/QMAX over the whole tensor, per head or per (token, head), in fp32."""
    a = x.float().abs()
    if granularity == "tensor":
        absmax = a.amax().reshape(1)
    elif granularity == "head":
        absmax = a.amax(dim=(0, 2))
    else:
        absmax = a.amax(dim=2)
    # Divide by a tensor: PyTorch's CUDA division by a Python scalar multiplies by its
    # reciprocal, which is not the IEEE quotient the kernel computes.
    return absmax / torch.full_like(absmax, QMAX[qformat])


def quantize_torch(x: torch.Tensor, qformat: str, granularity: str, scale=None) -> tuple:
    """The format's definition in plain torch: fp32 x / scale (IEEE), clamped to ±QMAX,
    rounded to nearest even by the conversion (fp8) or torch.round (int8)."""
    if granularity == "token_head":
        scale = calibrate(x, qformat, granularity)
    s = scale_view(scale)
    y = (x.float() / torch.where(s > 0, s, torch.ones_like(s))).clamp(-QMAX[qformat], QMAX[qformat])
    codes = y.round().to(torch.int8) if qformat == "int8" else y.to(code_dtype(qformat))
    return codes, scale


def dequantize_torch(codes: torch.Tensor, scale: torch.Tensor, out_dtype: torch.dtype) -> torch.Tensor:
    return (codes.float() * scale_view(scale)).to(out_dtype)


def _x_and_scale(shape, dtype, device, gen):
    x = kvi.random_tensor((shape["tokens"], shape["kv_heads"], shape["head_dim"]), dtype, device, gen)
    static = None if shape["granularity"] == "token_head" else calibrate(x, shape["qformat"], shape["granularity"])
    return x, static


def scale_bytes(shape) -> int:
    g = shape["granularity"]
    return 4 * {"tensor": 1, "head": shape["kv_heads"], "token_head": shape["tokens"] * shape["kv_heads"]}[g]


def nbytes(shape, dtype):
    n = shape["tokens"] * shape["kv_heads"] * shape["head_dim"]
    return n * dtypes.itemsize(dtype) + n + scale_bytes(shape)


# ---------------------------------------------------------------------------------------
# kv_quantize

def quantize_make_inputs(shape, dtype, device, gen):
    x, scale = _x_and_scale(shape, dtype, device, gen)
    return {"x": x, "scale": scale, "qformat": shape["qformat"], "granularity": shape["granularity"]}


def quantize_reference(x):
    scale = None if x["scale"] is None else x["scale"].clone()
    return quantize_torch(x["x"], x["qformat"], x["granularity"], scale)


def quantize_check(out, ref, dtype) -> CheckResult:
    inf = float("inf")
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        return CheckResult(False, inf, inf, inf, 0.0, "expected (codes, scale) from the backend")
    why = [w for w in (kvi.bitwise_equal(out[0], ref[0], "codes"), kvi.bitwise_equal(out[1], ref[1], "scale")) if w]
    if not why:
        return CheckResult(True, 0.0, 0.0, 0.0, 0.0)
    rel_l2 = max_abs = max_rel = inf
    if tuple(out[0].shape) == tuple(ref[0].shape) and tuple(out[1].shape) == tuple(ref[1].shape):
        # How far the dequantized values are off, for the record (on the device, fp64).
        dev = out[0].device
        o = out[0].detach().double() * scale_view(out[1].detach().double())
        r = ref[0].detach().to(dev).double() * scale_view(ref[1].detach().to(dev).double())
        d = (o - r).abs()
        norm = float(r.norm())
        rel_l2 = float(d.norm()) / norm if norm > 0 else float(d.norm())
        max_abs = float(d.max()) if d.numel() else 0.0
        max_rel = float((d / (r.abs() + 1e-6)).max()) if d.numel() else 0.0
    return CheckResult(False, rel_l2, max_abs, max_rel, 0.0, "; ".join(why))


def _quantize_triton(x):
    from kernelmark.kernels.kv_quant import kv_quantize
    return kv_quantize(x["x"], x["qformat"], x["granularity"], x["scale"])


def _quantize_torch(x):
    return quantize_torch(x["x"], x["qformat"], x["granularity"], x["scale"])


# ---------------------------------------------------------------------------------------
# kv_dequantize

def dequantize_make_inputs(shape, dtype, device, gen):
    x, scale = _x_and_scale(shape, dtype, device, gen)
    codes, scale = quantize_torch(x, shape["qformat"], shape["granularity"], scale)
    return {"codes": codes, "scale": scale, "granularity": shape["granularity"],
            "out_dtype": dtypes.torch_dtype(dtype)}


def dequantize_reference(x):
    return dequantize_torch(x["codes"], x["scale"], x["out_dtype"])


def dequantize_check(out, ref, dtype) -> CheckResult:
    if not isinstance(out, torch.Tensor):
        return CheckResult(False, float("inf"), float("inf"), float("inf"), 0.0, "expected one tensor")
    ok, detail, rel_l2, max_abs, max_rel = kvi.within_ulps(out, ref, "output", 1.0)
    return CheckResult(ok, rel_l2, max_abs, max_rel, torch.finfo(ref.dtype).eps, detail)


def _dequantize_triton(x):
    from kernelmark.kernels.kv_quant import kv_dequantize
    return kv_dequantize(x["codes"], x["scale"], x["granularity"], x["out_dtype"])


def _dequantize_torch(x):
    return dequantize_torch(x["codes"], x["scale"], x["out_dtype"])


def _needs_fp8(shape, dtype, device_kind, capability):
    if shape["qformat"] == "fp8_e4m3" and getattr(torch, "float8_e4m3fn", None) is None:
        return f"torch {torch.__version__} has no float8_e4m3fn"
    return None


def _triton_needs_fp8(shape, dtype, device_kind, capability):
    why = _needs_fp8(shape, dtype, device_kind, capability)
    if why is None and shape["qformat"] == "fp8_e4m3" and device_kind == "cuda" and \
            (capability is None or tuple(capability) < (8, 9)):
        why = "Triton's fp8 e4m3 conversion needs compute capability 8.9 or newer"
    return why


OPS = [
    Op(
        name="kv_quantize",
        description="KV cache tensor to fp8 e4m3 or int8 codes with tensor/head (static) or "
                    "token-head (dynamic) fp32 scales",
        params=PARAMS, defaults=dict(DEFAULTS), dtypes=QUANT_DTYPES,
        make_inputs=quantize_make_inputs, reference=quantize_reference,
        flops=lambda shape: 0, nbytes=nbytes, validate=validate, check=quantize_check,
        backends=(
            Backend("triton", _quantize_triton, triton=True, supports=_triton_needs_fp8,
                    description="kernelmark's Triton quantizer (kernels/kv_quant.py)"),
            Backend("torch", _quantize_torch, supports=_needs_fp8,
                    description="fp32 torch ops: divide, clamp, round/convert"),
        ),
    ),
    Op(
        name="kv_dequantize",
        description="fp8 e4m3 or int8 KV codes times their fp32 scales, back to the cache dtype",
        params=PARAMS, defaults=dict(DEFAULTS), dtypes=QUANT_DTYPES,
        make_inputs=dequantize_make_inputs, reference=dequantize_reference,
        flops=lambda shape: 0, nbytes=nbytes, validate=validate, check=dequantize_check,
        backends=(
            Backend("triton", _dequantize_triton, triton=True, supports=_triton_needs_fp8,
                    description="kernelmark's Triton dequantizer (kernels/kv_quant.py)"),
            Backend("torch", _dequantize_torch, supports=_needs_fp8,
                    description="fp32 torch ops: multiply, convert"),
        ),
    ),
]
