"""fp8 with block scales, as DeepSeek-V3 (and Qwen3's FP8 checkpoints) run their linear
layers: fp8_group_quant (activations to e4m3 codes with one scale per token and 128
columns) and gemm_fp8_blockwise (C = (A·sA)(B·sB)ᵀ with weights scaled per 128x128 block).
Kernels: kernels/fp8_group_quant.py and kernels/gemm_fp8_blockwise.py.

fp8_group_quant: x [tokens, hidden] -> (codes float8_e4m3fn [tokens, hidden], scales fp32
[tokens, hidden/group]); scale = absmax/448 of the group (IEEE fp32), codes round to
nearest even of x/scale (IEEE fp32), clamped to ±448; an all-zero group gets scale 0 and
codes 0 (libraries: eps/448, accepted). The reference is the format's definition in fp32
torch (fp64 would round differently at a few ties). Check: scales within 2**-21 relative
of the reference's (an approximate division is off by up to 2 ulps) and codes equal to its
bit for bit, except where x/scale lies within 2**-19 of the midpoint between two e4m3
values: there the other neighbour passes too (an approximate division, or a multiply by
448/absmax as sgl-kernel's reference does, may round it the other way; our kernel and
torch agree bit for bit everywhere, as tests/kernels/test_fp8_group_quant.py asserts). So
every code q is within half an e4m3 step of y = x/s, plus the band: the per-element
round-trip bound |x − s·q| <= s·(step(y)/2 + 2**-19·|y|), with step(y)/2 = 2**-4 of |y| at
most for normal values and 2**-10 below them (|y| < 2**-6).
Bytes T·H·s read, T·H + 4·T·H/group written; FLOPs 0 (memory bound).

gemm_fp8_blockwise: A [M, K] e4m3 with sA [M, ⌈K/128⌉], B [N, K] e4m3 (the weight) with
sB [⌈N/128⌉, ⌈K/128⌉], C [M, N] bf16. Inputs: A quantised per (1, 128) group from random
activations whose groups span 2**±3 in magnitude (so the scales matter), B per 128x128
block from random weights whose blocks span 2**±2. Reference: dequantise both in fp64, multiply in fp64. Check:
bf16's bounds, not fp8's: the backends multiply the same codes and scales, so only fp32
accumulation order and the bf16 output rounding separate them from the reference.
FLOPs 2·M·N·K; bytes M·K + N·K (codes) + 4·(M·⌈K/128⌉ + ⌈N/128⌉·⌈K/128⌉) + 2·M·N.

The dense fp8 roof (one scale per tensor, torch._scaled_mm) is a different op: measure it
as `gemm` with dtype fp8_e4m3 at the same m, n, k (layout nt), which the decode-ops suite
does next to these cases; this op's check would fail it, and rightly.

Backends here: ``triton`` (ours), ``torch`` (eager) and ``torch-compile`` (the torch code
through torch.compile; GPU only: a first compile in a fresh process took 29-36 s on this
project's 2-core CPU, over the 20 s allowed). Library backends (vLLM, sgl-kernel, DeepGEMM,
torch's cuBLAS blockwise scaled_mm) and the layouts they want: ops/fp8_libs.py.
"""

from __future__ import annotations

import torch

from kernelmark import dtypes
from kernelmark.ops import compiled
from kernelmark.ops.base import Backend, CheckResult, Op, compare, positive_ints, shape_str
from kernelmark.ops.check import where_text
from kernelmark.ops.fp8_libs import FP8_MAX, G, GEMM_BACKENDS, QUANT_BACKENDS, fp8_gpu, needs_fp8

QUANT_DTYPES = ("bf16", "fp16", "fp32")
GPU = ("cuda", "rocm")
SCALE_RTOL = 2.0 ** -21
TIE_BAND = 2.0 ** -19


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _fp8():
    return dtypes.torch_dtype("fp8_e4m3")


def group_quant_torch(x: torch.Tensor, group: int = G) -> tuple:
    """The format's definition in fp32 torch: (codes, scales). Division by tensors only:
    PyTorch's CUDA division by a Python scalar multiplies by its reciprocal."""
    t, h = x.shape
    xg = x.float().view(t, h // group, group)
    absmax = xg.abs().amax(-1)
    scale = absmax / torch.full_like(absmax, FP8_MAX)
    s = scale[:, :, None]
    y = (xg / torch.where(s > 0, s, torch.ones_like(s))).clamp(-FP8_MAX, FP8_MAX)
    return y.to(_fp8()).view(t, h), scale


# ---------------------------------------------------------------------------------------
# fp8_group_quant

def quant_validate(shape, dtype):
    positive_ints(shape, ("tokens", "hidden", "group"))
    if shape["hidden"] % shape["group"]:
        raise ValueError(f"shape {shape_str(shape)}: hidden must be a multiple of group")


def _activations(rows: int, cols: int, dtype: str, device, gen) -> torch.Tensor:
    """Random activations whose 128-column groups differ in magnitude by up to 2**±3."""
    x = torch.randn(rows, cols, device=device, generator=gen)
    mag = torch.exp2(torch.rand(rows, _cdiv(cols, G), device=device, generator=gen) * 6 - 3)
    return (x * mag.repeat_interleave(G, dim=1)[:, :cols]).to(dtypes.torch_dtype(dtype))


def quant_make_inputs(shape, dtype, device, gen):
    t, h = shape["tokens"], shape["hidden"]
    return {"x": _activations(t, h, dtype, device, gen), "group": shape["group"],
            # sgl-kernel writes into buffers it is given: random, so that unwritten ones show.
            "codes_out": torch.randn(t, h, device=device, generator=gen).to(_fp8()),
            "scales_out": torch.rand(t, h // shape["group"], device=device, generator=gen)}


def quant_reference(x):
    """(codes, scales, x/scale): the quotient lets the check tell a tie from an error."""
    codes, scale = group_quant_torch(x["x"], x["group"])
    t, h = x["x"].shape
    s = scale[:, :, None]
    quotient = (x["x"].float().view(t, h // x["group"], x["group"]) / torch.where(s > 0, s, torch.ones_like(s)))
    return codes, scale, quotient.view(t, h)


def quant_nbytes(shape, dtype):
    n = shape["tokens"] * shape["hidden"]
    return n * dtypes.itemsize(dtype) + n + 4 * n // shape["group"]


def _bad(detail: str) -> CheckResult:
    inf = float("inf")
    return CheckResult(False, inf, inf, inf, 0.0, detail)


def quant_check(out, ref, dtype) -> CheckResult:
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        return _bad("expected (codes, scales) from the backend")
    codes, scale = out
    r_codes, r_scale, quotient = ref
    for name, o, r in (("codes", codes, r_codes), ("scales", scale, r_scale)):
        if not isinstance(o, torch.Tensor) or tuple(o.shape) != tuple(r.shape) or o.dtype != r.dtype:
            got = f"{o.dtype} {tuple(o.shape)}" if isinstance(o, torch.Tensor) else type(o).__name__
            return _bad(f"{name}: expected {r.dtype} {tuple(r.shape)}, got {got}")
    dev = r_scale.device
    s, rs = scale.detach().to(dev).float(), r_scale
    s_bad = ~((s - rs).abs() <= SCALE_RTOL * rs.abs() + 1e-12)
    if bool(s_bad.any()):
        return CheckResult(False, float("inf"), float((s - rs).abs().max()), float("inf"), SCALE_RTOL,
                           where_text("scales", s_bad.cpu(), s.cpu(), rs.cpu(), f"off by more than {SCALE_RTOL:g} "
                                      "relative"), int(s_bad.sum()))
    q, rq = codes.detach().to(dev).float(), r_codes.float()
    differ = q != rq           # a NaN code differs too, and is no tie
    n_tie = 0
    if bool(differ.any()):
        mid = (q + rq) / 2          # exact: e4m3 values have 4 significant bits
        tie = (quotient - mid).abs() <= TIE_BAND * quotient.abs()
        bad = differ & ~tie
        n_tie = int((differ & tie).sum())
        if bool(bad.any()):
            return CheckResult(False, float("inf"), float((q - rq).abs().max()), float("inf"), 0.0,
                               where_text("codes", bad.cpu(), q.cpu(), rq.cpu(),
                                          "differ from the reference's (and x/scale is no rounding tie)"),
                               int(bad.sum()))
    note = f"{n_tie} of {q.numel()} codes at a rounding tie went to the other neighbour" if n_tie else ""
    return CheckResult(True, 0.0, 0.0, 0.0, 0.0, note)


def _quant_torch(x):
    return group_quant_torch(x["x"], x["group"])


# Compiled afresh for each new signature (ops/compiled.py: past torch's recompile limit a
# plain torch.compile would raise or run eagerly under this backend's name).
_quant_compile = compiled.Compiled(_quant_torch, compiled.tensor_key("x", scalars=("group",)))


def _quant_triton(x):
    from kernelmark.kernels.fp8_group_quant import per_token_group_quant
    return per_token_group_quant(x["x"], x["group"])


def _quant_triton_config():
    from kernelmark.kernels import chosen_config
    from kernelmark.kernels.fp8_group_quant import _group_quant_kernel
    return chosen_config(_group_quant_kernel)


def _quant_triton_supports(shape, dtype, device_kind, capability):
    g = shape["group"]
    if g < 16 or g > 1024 or g & (g - 1):
        return f"the Triton kernel takes groups that are powers of two from 16 to 1024, not {g}"
    return fp8_gpu("Triton's fp8 e4m3 conversion")(shape, dtype, device_kind, capability)


# ---------------------------------------------------------------------------------------
# gemm_fp8_blockwise

def gemm_validate(shape, dtype):
    positive_ints(shape, ("m", "n", "k"))


def _mn_major(s: torch.Tensor, pad_to: int) -> torch.Tensor:
    """``s`` [R, C] stored column by column (stride (1, R')), R' = R rounded up to ``pad_to``."""
    r, c = s.shape
    rp = _cdiv(r, pad_to) * pad_to
    out = torch.empty_strided((r, c), (1, rp), dtype=s.dtype, device=s.device)
    out.copy_(s)
    return out


def gemm_make_inputs(shape, dtype, device, gen):
    m, n, k = shape["m"], shape["n"], shape["k"]
    kb, nb = _cdiv(k, G), _cdiv(n, G)
    a, sa = group_quant_torch(_pad_cols(_activations(m, k, "fp32", device, gen)))
    a = a[:, :k].contiguous()
    # Weights with block magnitudes that differ by up to 2**±2, so that a wrong block scale shows.
    mag = torch.exp2(torch.rand(nb, 1, kb, 1, device=device, generator=gen) * 4 - 2)
    blocks = torch.randn(nb, G, kb, G, device=device, generator=gen) * 0.05 * mag
    sb = blocks.abs().amax(dim=(1, 3)) / torch.full((1,), FP8_MAX, device=device)
    b = (blocks / sb[:, None, :, None]).clamp(-FP8_MAX, FP8_MAX).to(_fp8()).view(nb * G, kb * G)[:n, :k].contiguous()
    l4 = _cdiv(kb, 4) * 4
    sb_torch = torch.empty_strided((l4, nb), (1, l4), dtype=torch.float32, device=device)
    sb_torch.fill_(1.0)
    sb_torch[:kb].copy_(sb.t())
    return {
        "a": a, "b": b, "a_scale": sa, "b_scale": sb,
        "a_scale_mmajor": _mn_major(sa, 1), "a_scale_tma": _mn_major(sa, 4), "b_scale_torch": sb_torch,
        # DeepGEMM writes into the output it is given: random, so that an unwritten tile shows.
        "out": torch.randn(m, n, device=device, generator=gen).to(torch.bfloat16),
    }


def _pad_cols(x: torch.Tensor) -> torch.Tensor:
    """Columns padded with zeros up to a multiple of 128, so that a tail group is quantised
    like the others (its scale from its real columns); the padding is cut away after."""
    k = x.shape[1]
    kp = _cdiv(k, G) * G
    return x if kp == k else torch.cat([x, x.new_zeros(x.shape[0], kp - k)], dim=1)


def dequantize(codes: torch.Tensor, scale: torch.Tensor, rows_per_scale: int) -> torch.Tensor:
    """fp64 values of block-scaled codes: scale [⌈R/rows⌉, ⌈C/128⌉] broadcast over blocks."""
    r, c = codes.shape
    s = scale.double().repeat_interleave(rows_per_scale, 0)[:r].repeat_interleave(G, 1)[:, :c]
    return codes.double() * s


def gemm_reference(x):
    a = dequantize(x["a"], x["a_scale"], 1)
    b = dequantize(x["b"], x["b_scale"], G)
    return (a @ b.t()).to(torch.bfloat16)


def gemm_flops(shape):
    return 2 * shape["m"] * shape["n"] * shape["k"]


def gemm_nbytes(shape, dtype):
    m, n, k = shape["m"], shape["n"], shape["k"]
    kb = _cdiv(k, G)
    return m * k + n * k + 4 * (m * kb + _cdiv(n, G) * kb) + 2 * m * n


def gemm_check(out, ref, dtype) -> CheckResult:
    return compare(out, ref, dtypes.tolerance("bf16"), dtype="bf16")


def gemm_torch(a, b, a_scale, b_scale) -> torch.Tensor:
    """Dequantise to fp32, multiply in fp32 (TF32 off, torch's default), round to bf16.

    The scales are expanded by indexing with column // 128 (and row // 128): torch 2.13's
    inductor miscompiles the fp8 conversion times a repeat_interleave(...)[:, :k] or an
    expand().reshape() of the scales on the CPU (wrong values, which the check caught)."""
    k, n = a.shape[1], b.shape[0]
    col = torch.arange(k, device=a.device) // G
    row = torch.arange(n, device=a.device) // G
    a32 = a.float() * a_scale[:, col]
    b32 = b.float() * b_scale[row][:, col]
    return (a32 @ b32.t()).to(torch.bfloat16)


def _gemm_torch(x):
    return gemm_torch(x["a"], x["b"], x["a_scale"], x["b_scale"])


_gemm_compile = compiled.Compiled(_gemm_torch, compiled.tensor_key("a", "b", "a_scale", "b_scale"))


def _gemm_torch_supports(shape, dtype, device_kind, capability):
    if device_kind == "cpu" and gemm_flops(shape) > 2 ** 34:
        return "the fp32 dequantise-and-multiply is too slow on a CPU at this size"
    return needs_fp8(shape, dtype, device_kind, capability)


def _gemm_triton(x):
    from kernelmark.kernels.gemm_fp8_blockwise import block_fp8_matmul
    return block_fp8_matmul(x["a"], x["b"], x["a_scale"], x["b_scale"])


def _gemm_triton_config():
    from kernelmark.kernels import chosen_config
    from kernelmark.kernels.gemm_fp8_blockwise import _block_fp8_gemm_kernel
    return chosen_config(_block_fp8_gemm_kernel)


OPS = [
    Op(
        name="fp8_group_quant",
        description="activations to fp8 e4m3 codes with one fp32 scale per token and 128 columns "
                    "(dynamic, absmax/448): the step before a block-scaled GEMM",
        params=("tokens", "hidden", "group"),
        defaults={"group": G},
        dtypes=QUANT_DTYPES,
        make_inputs=quant_make_inputs,
        reference=quant_reference,
        flops=lambda shape: 0,
        nbytes=quant_nbytes,
        validate=quant_validate,
        check=quant_check,
        backends=(
            Backend("triton", _quant_triton, triton=True, supports=_quant_triton_supports,
                    detail=_quant_triton_config,
                    description="kernelmark's Triton group quantiser (kernels/fp8_group_quant.py)"),
            Backend("torch", _quant_torch, supports=needs_fp8,
                    description="fp32 torch ops: absmax, divide, clamp, convert"),
            Backend("torch-compile", _quant_compile, devices=GPU, supports=needs_fp8,
                    description="torch.compile of the torch backend (first compile outside timing)"),
        ) + QUANT_BACKENDS,
    ),
    Op(
        name="gemm_fp8_blockwise",
        description="C = (A·sA)(B·sB)ᵀ: fp8 e4m3 A with per-token 128-column scales, fp8 weights with "
                    "128x128 block scales, bf16 out (DeepSeek-V3's linear layers)",
        params=("m", "n", "k"),
        dtypes=("fp8_e4m3",),
        make_inputs=gemm_make_inputs,
        reference=gemm_reference,
        flops=gemm_flops,
        nbytes=gemm_nbytes,
        validate=gemm_validate,
        check=gemm_check,
        backends=(
            Backend("triton", _gemm_triton, triton=True, supports=fp8_gpu("fp8 tl.dot"), detail=_gemm_triton_config,
                    description="kernelmark's autotuned Triton block-scaled fp8 GEMM, scales applied per "
                                "128-deep K step (kernels/gemm_fp8_blockwise.py)"),
            Backend("torch", _gemm_torch, supports=_gemm_torch_supports,
                    description="dequantise to fp32 and torch.matmul (the slow, plain baseline)"),
            Backend("torch-compile", _gemm_compile, devices=GPU, supports=needs_fp8,
                    description="torch.compile of the torch backend (first compile outside timing)"),
        ) + GEMM_BACKENDS,
    ),
]

