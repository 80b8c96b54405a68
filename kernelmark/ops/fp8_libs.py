"""fp8 block-scaled backends from optional libraries (vLLM, sgl-kernel, DeepGEMM) and
torch's own blockwise scaled_mm, for ops/fp8_blockwise.py, with the device checks every fp8
backend shares. Each library is used only when importable and says why not otherwise. None
of these has run on the machine they were written on (no GPU): each follows the library's
documented API, named at the call, and a changed API shows as an ``error`` row, not a
wrong number (the check still holds every output to the reference).

Layouts each library wants are made by make_inputs, outside the timed call, as a serving
stack's quantiser writes them: ``a_scale_mmajor`` (sA stored token-fastest, stride (1, M)),
``a_scale_tma`` (the same with M padded to 4: TMA-aligned, DeepGEMM's
get_col_major_tma_aligned_tensor layout), ``b_scale_torch`` (sB transposed to
[ceil(K/128) padded to 4, N/128], column-major: torch's blockwise scaled_mm), ``codes_out``
and ``scales_out`` / ``out`` (buffers the library writes into).
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect

import torch

from kernelmark.ops.base import Backend

G = 128                # scale group: 1x128 for activations, 128x128 for weights
FP8_MAX = 448.0        # largest finite float8_e4m3fn


def needs_fp8(shape, dtype, device_kind, capability):
    if getattr(torch, "float8_e4m3fn", None) is None:
        return f"torch {torch.__version__} has no float8_e4m3fn"
    return None


def fp8_gpu(what: str):
    def supports(shape, dtype, device_kind, capability):
        why = needs_fp8(shape, dtype, device_kind, capability)
        if why is None and device_kind == "cuda" and (capability is None or tuple(capability) < (8, 9)):
            why = f"{what} needs compute capability 8.9 or newer"
        return why
    return supports


def _module_available(module: str, attrs: tuple, what: str):
    def available():
        if importlib.util.find_spec(module.split(".")[0]) is None:
            return f"{what} is not installed"
        try:
            mod = importlib.import_module(module)
        except Exception as e:   # a broken install: say so rather than fail the run
            return f"{module} does not import: {type(e).__name__}: {e}"
        if not any(hasattr(mod, a) for a in attrs):
            return f"this {what} has no {' or '.join(attrs)}"
        return None
    return available


def _attr(module: str, attrs: tuple):
    mod = importlib.import_module(module)
    return next(getattr(mod, a) for a in attrs if hasattr(mod, a))


_VLLM_FP8 = "vllm.model_executor.layers.quantization.utils.fp8_utils"


def _quant_vllm(x):
    # per_token_group_quant_fp8(x, group_size, eps=1e-10, dtype=None, column_major_scales=False,
    # out_q=None, use_ue8m0=None): ue8m0 (power-of-two) scales would be another format.
    fn = _attr(_VLLM_FP8, ("per_token_group_quant_fp8",))
    extra = {"use_ue8m0": False} if "use_ue8m0" in inspect.signature(fn).parameters else {}
    return fn(x["x"], x["group"], **extra)


def _quant_sgl(x):
    # sgl_kernel.sgl_per_token_group_quant_fp8(input, output_q, output_s, group_size, eps,
    # fp8_min, fp8_max[, scale_ue8m0]) writes into the buffers it is given.
    import sgl_kernel
    fn = sgl_kernel.sgl_per_token_group_quant_fp8
    extra = {"scale_ue8m0": False} if "scale_ue8m0" in inspect.signature(fn).parameters else {}
    fn(x["x"], x["codes_out"], x["scales_out"], x["group"], 1e-10, -FP8_MAX, FP8_MAX, **extra)
    return x["codes_out"], x["scales_out"]


def _gemm_deepgemm(x):
    # DeepGEMM >= 2.0: deep_gemm.fp8_gemm_nt((a, sfa), (b, sfb), d, c=None, recipe=None, ...);
    # 1.x: deep_gemm.gemm_fp8_fp8_bf16_nt((lhs, lhs_scales), (rhs, rhs_scales), out), whose lhs
    # scales must be TMA-aligned and M-major (get_col_major_tma_aligned_tensor): a_scale_tma is
    # that layout, which 2.x takes as is on sm_90. Not verified on a GPU: on sm_100, 2.x may
    # turn fp32 scales into power-of-two (UE8M0) ones, which this op's check would then fail.
    fn = _attr("deep_gemm", ("fp8_gemm_nt", "gemm_fp8_fp8_bf16_nt"))
    fn((x["a"], x["a_scale_tma"]), (x["b"], x["b_scale"]), x["out"])
    return x["out"]


def _gemm_vllm_cutlass(x):
    # vllm._custom_ops.cutlass_scaled_mm(a, b, scale_a, scale_b, out_dtype, bias=None), called as
    # vLLM's fp8_utils.cutlass_scaled_mm does for block fp8: b = Wᵀ (column-major), scale_a
    # [M, K/128] M-major, scale_b = sBᵀ [K/128, N/128]; the group shapes follow from the scales'.
    from vllm import _custom_ops as ops
    return ops.cutlass_scaled_mm(x["a"], x["b"].t(), out_dtype=torch.bfloat16,
                                 scale_a=x["a_scale_mmajor"], scale_b=x["b_scale"].t())


def _gemm_vllm_triton(x):
    # vLLM's fp8_utils.w8a8_triton_block_scaled_mm(A, B, As, Bs, block_size, output_dtype)
    # (named w8a8_block_fp8_matmul before): A [M, K], B [N, K], row-major scales.
    fn = _attr(_VLLM_FP8, ("w8a8_triton_block_scaled_mm", "w8a8_block_fp8_matmul"))
    return fn(x["a"], x["b"], x["a_scale"], x["b_scale"], [G, G], torch.bfloat16)


def _gemm_torch_blockwise(x):
    # torch.nn.functional.scaled_mm(mat_a, mat_b, scale_a, recipe_a, scale_b, recipe_b, ...,
    # output_dtype): BlockWise1x128 wants scale_a [M, K/128] with stride (1, M), BlockWise128x128
    # scale_b [round_up(K/128, 4), N/128] with stride (1, that): torch's own checks say so
    # (torch/_meta_registrations.py, torch 2.13); cuBLAS runs it on Hopper.
    from torch.nn.functional import ScalingType, scaled_mm
    return scaled_mm(x["a"], x["b"].t(), x["a_scale_mmajor"], ScalingType.BlockWise1x128,
                     x["b_scale_torch"], ScalingType.BlockWise128x128, output_dtype=torch.bfloat16)


def _sm90(what: str, extra=None):
    def supports(shape, dtype, device_kind, capability):
        if capability is None or tuple(capability) < (9, 0):
            return f"{what} needs an NVIDIA GPU of compute capability 9.0 or newer"
        return extra(shape) if extra else None
    return supports


def _torch_blockwise_available():
    import torch.nn.functional as F
    scaling = getattr(F, "ScalingType", None)
    if not hasattr(F, "scaled_mm") or not hasattr(scaling, "BlockWise128x128"):
        return f"torch {torch.__version__} has no torch.nn.functional.scaled_mm with 128x128 block scaling"
    return None


def _multiples_of_128(shape):
    bad = [d for d in ("n", "k") if shape[d] % G]
    return f"torch's blockwise scaled_mm needs {' and '.join(bad)} a multiple of 128" if bad else None


def _deepgemm_shape(shape):
    return "DeepGEMM needs K a multiple of 128" if shape["k"] % G else None


def _cutlass_shape(shape):
    if shape["m"] % 4:
        return "vLLM pads M to a multiple of 4 before its Hopper block-fp8 cutlass kernel: measured at such M"
    if shape["n"] % 16 or shape["k"] % 128:
        return "vLLM's cutlass block-fp8 kernel needs N a multiple of 16 and K of 128"
    return None


QUANT_BACKENDS = (
    Backend("vllm", _quant_vllm, devices=("cuda",),
            available=_module_available(_VLLM_FP8, ("per_token_group_quant_fp8",), "vllm"),
            supports=fp8_gpu("fp8 e4m3"),
            description="vLLM's fp8_utils.per_token_group_quant_fp8 (its CUDA op where it has one)"),
    Backend("sgl-kernel", _quant_sgl, devices=("cuda",),
            available=_module_available("sgl_kernel", ("sgl_per_token_group_quant_fp8",), "sgl-kernel"),
            supports=fp8_gpu("fp8 e4m3"), description="sgl_kernel.sgl_per_token_group_quant_fp8"),
)

GEMM_BACKENDS = (
    Backend("torch-scaled-mm-blockwise", _gemm_torch_blockwise, devices=("cuda",),
            available=_torch_blockwise_available,
            supports=_sm90("torch's blockwise scaled_mm", _multiples_of_128),
            description="torch.nn.functional.scaled_mm, BlockWise1x128 x BlockWise128x128 (cuBLAS)"),
    Backend("deepgemm", _gemm_deepgemm, devices=("cuda",),
            available=_module_available("deep_gemm", ("fp8_gemm_nt", "gemm_fp8_fp8_bf16_nt"), "deep_gemm"),
            supports=_sm90("DeepGEMM", _deepgemm_shape),
            description="deep_gemm.fp8_gemm_nt (gemm_fp8_fp8_bf16_nt in DeepGEMM 1.x)"),
    Backend("vllm-cutlass", _gemm_vllm_cutlass, devices=("cuda",),
            available=_module_available("vllm._custom_ops", ("cutlass_scaled_mm",), "vllm"),
            supports=_sm90("vLLM's cutlass block-fp8 GEMM", _cutlass_shape),
            description="vllm._custom_ops.cutlass_scaled_mm with block scales"),
    Backend("vllm-triton", _gemm_vllm_triton, devices=("cuda",),
            available=_module_available(_VLLM_FP8, ("w8a8_triton_block_scaled_mm", "w8a8_block_fp8_matmul"), "vllm"),
            supports=fp8_gpu("vLLM's Triton block-fp8 GEMM"),
            description="vLLM's Triton w8a8_triton_block_scaled_mm"),
)
