"""fused_moe: the routed experts' MLP of a batch — for each token, Σ over its top-k experts
of weight · down_e(silu(gate_e(x)) · up_e(x)) — with an optional shared expert.

Weights: w1 [E, 2I, H] (gate rows, then up rows) and w2 [E, H, I], as vLLM and SGLang
store them. ``shared = 1`` adds one shared expert of the same inter size (DeepSeek-V3) as
expert E, hit by every token with weight 1 (SGLang's "shared experts fusion").
bf16: bf16 weights and activations, fp32 accumulation, bf16 output. fp8_e4m3: e4m3
weights with one fp32 scale per 128×128 block, activations quantized per token and 128
columns (DeepSeek-V3's recipe, kernels/fused_moe.quantize_groups, part of the op and of
the reference), bf16 output; hidden and inter must be multiples of 128.

Routing is part of the inputs, not of the op: the top-k of softmax over N(0, 1) logits,
renormalised, drawn from a generator seeded by the shape alone. So every device, every
seed and every rotated input set routes the same tokens to the same experts, and the
byte count can honestly depend on it. Bytes: the weights (and fp8 scales) of the experts
the routing actually hits — a decode step reads only those — plus x, the ids and weights
read and the output written; the intermediate is not counted (an ideal kernel keeps it
on chip). The record's ``inputs`` says how many experts were hit. FLOPs: 6·pairs·H·I
with pairs = T·(k + shared).

The reference is an fp64 per-expert loop over the same inputs (for fp8, the dequantized
codes, with the intermediate quantized as the op defines it). The torch backend is the
per-expert loop a naïve implementation runs: one host sync for the counts, then a
gather, two GEMMs and an index_add per hit expert.
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache

import torch
import torch.nn.functional as F

from kernelmark import dtypes
from kernelmark.ops.base import Backend, Op, positive_ints, shape_str

GPU = ("cuda", "rocm")
FP8_GROUP = 128
_ROUTING_SEED = 0x6D6F65   # "moe": fixed, so the routing is a function of the shape


def validate(shape, dtype):
    positive_ints(shape, ("tokens", "experts", "topk", "hidden", "inter"))
    if shape["shared"] not in (0, 1):
        raise ValueError(f"shape {shape_str(shape)}: shared must be 0 or 1")
    if shape["topk"] > shape["experts"]:
        raise ValueError(f"shape {shape_str(shape)}: topk {shape['topk']} exceeds experts {shape['experts']}")
    if dtype == "fp8_e4m3" and (shape["hidden"] % FP8_GROUP or shape["inter"] % FP8_GROUP):
        raise ValueError(f"shape {shape_str(shape)}: fp8 block scales need hidden and inter multiples of 128")


@lru_cache(maxsize=64)
def _routing_cpu(tokens: int, experts: int, topk: int) -> tuple:
    gen = torch.Generator().manual_seed(_ROUTING_SEED + 7919 * experts + topk)
    logits = torch.randn(tokens, experts, generator=gen)
    w, ids = torch.topk(torch.softmax(logits, dim=-1), topk, dim=-1)
    return ids.to(torch.int32), (w / w.sum(dim=-1, keepdim=True)).float()


def routing(shape) -> tuple:
    """(ids int32 [T, k'], weights fp32 [T, k']) with k' = k + shared; the shared expert is id E."""
    t, e = shape["tokens"], shape["experts"]
    ids, w = _routing_cpu(t, e, shape["topk"])
    if shape["shared"]:
        ids = torch.cat([ids, torch.full((t, 1), e, dtype=torch.int32)], dim=1)
        w = torch.cat([w, torch.ones(t, 1)], dim=1)
    return ids, w


def experts_hit(shape) -> int:
    return int(torch.unique(routing(shape)[0]).numel())


def _weight(e, n, k, dtype, device, gen):
    """An expert weight stack [e, n, k] of unit-RMS rows scaled by 1/sqrt(k); for fp8, codes
    and block scales whose product has that scale. Drawn one expert at a time: a DeepSeek-V3
    layer's fp32 draws at once would need 45 GB beside the 11 GB of codes."""
    fp8 = dtype == "fp8_e4m3"
    w = torch.empty(e, n, k, device=device, dtype=torch.float8_e4m3fn if fp8 else dtypes.torch_dtype(dtype))
    for j in range(e):
        r = torch.randn(n, k, device=device, generator=gen, dtype=torch.float32)
        w[j] = (r * 64).clamp_(-448, 448) if fp8 else r.mul_(k ** -0.5)
    if not fp8:
        return w, None
    scale = torch.rand(e, n // FP8_GROUP, k // FP8_GROUP, device=device, generator=gen) + 0.5
    return w, scale.mul_(k ** -0.5 / 64)


def make_inputs(shape, dtype, device, gen):
    t, h, i = shape["tokens"], shape["hidden"], shape["inter"]
    e = shape["experts"] + shape["shared"]
    act = torch.bfloat16 if dtype == "fp8_e4m3" else dtypes.torch_dtype(dtype)
    x = torch.randn(t, h, device=device, generator=gen).to(act)
    w1, w1s = _weight(e, 2 * i, h, dtype, device, gen)
    w2, w2s = _weight(e, h, i, dtype, device, gen)
    ids, w = routing(shape)
    return {"x": x, "w1": w1, "w2": w2, "w1_scale": w1s, "w2_scale": w2s,
            "topk_ids": ids.to(device), "topk_weights": w.to(device), "dtype": dtype}


def _dequant(w, scale, dt):
    if scale is None:
        return w.to(dt)
    s = scale.repeat_interleave(FP8_GROUP, 1).repeat_interleave(FP8_GROUP, 2)
    return w.to(dt) * s.to(dt)


def quantize_groups(x: torch.Tensor, group: int = FP8_GROUP) -> tuple:
    """(e4m3 codes, fp32 scales [rows, cols/group]): one scale per row and ``group`` columns,
    amax/448, round to nearest even (DeepSeek-V3's activation quantization). The Triton
    kernels compute the same bits (kernels/fused_moe.quantize_groups_triton)."""
    rows, cols = x.shape
    g = x.float().view(rows, cols // group, group)
    scale = (g.abs().amax(dim=-1) / 448.0).clamp(min=1e-12)
    codes = (g / scale[..., None]).clamp(-448.0, 448.0).to(torch.float8_e4m3fn).view(rows, cols)
    return codes, scale


def _quant_dequant(a, dt):
    codes, scale = quantize_groups(a)
    return (codes.to(dt).view(a.shape[0], -1, FP8_GROUP) * scale[..., None].to(dt)).view(a.shape)


def _loop(x, topk_ids, topk_weights, expert_w, dt, fp8: bool):
    """Σ_slot weight · down(silu(gate)·up) by a loop over the experts hit, in dtype ``dt``."""
    t, h = x.shape
    flat = topk_ids.reshape(-1).long()
    order = torch.argsort(flat, stable=True)
    counts = torch.bincount(flat).tolist()                    # the host sync a naïve loop has
    tw = topk_weights.reshape(-1)
    out = torch.zeros(t, h, device=x.device, dtype=torch.float32 if dt != torch.float64 else dt)
    xa = _quant_dequant(x, dt) if fp8 else x.to(dt)
    start = 0
    k = topk_ids.shape[1]
    for e, c in enumerate(counts):
        if not c:
            continue
        pairs = order[start:start + c]
        start += c
        tok = pairs // k
        w1, w2 = expert_w(e)
        gu = xa[tok] @ w1.t()
        inter = w1.shape[0] // 2
        a = F.silu(gu[:, :inter]) * gu[:, inter:]
        if fp8:
            a = _quant_dequant(a.to(torch.bfloat16) if dt != torch.float64 else a, dt)
        y = (a @ w2.t()).to(out.dtype) * tw[pairs].to(out.dtype)[:, None]
        out.index_add_(0, tok, y)
    return out


def _expert_weights(x, dt):
    """expert_w(e) -> (w1[e], w2[e]) in dtype ``dt``, dequantized one expert at a time (all of
    DeepSeek-V3's experts in fp64 would be 90 GB)."""
    def expert_w(e):
        if x["w1_scale"] is None:
            return x["w1"][e].to(dt), x["w2"][e].to(dt)
        return (_dequant(x["w1"][e:e + 1], x["w1_scale"][e:e + 1], dt)[0],
                _dequant(x["w2"][e:e + 1], x["w2_scale"][e:e + 1], dt)[0])
    return expert_w


def reference(x):
    fp8 = x["dtype"] == "fp8_e4m3"
    out = _loop(x["x"], x["topk_ids"], x["topk_weights"], _expert_weights(x, torch.float64), torch.float64, fp8)
    return out.to(torch.bfloat16 if fp8 else x["x"].dtype)


def _torch_run(x):
    # fp8: each hit expert dequantized to bf16 for bf16 GEMMs, what eager torch can do
    dt = x["x"].dtype
    return _loop(x["x"], x["topk_ids"], x["topk_weights"], _expert_weights(x, dt), dt,
                 x["dtype"] == "fp8_e4m3").to(dt)


def _torch_supports(shape, dtype, device_kind, capability):
    if device_kind == "cpu" and shape["tokens"] * (shape["topk"] + shape["shared"]) * shape["hidden"] * \
            shape["inter"] > 2 ** 34:
        return "half-precision GEMMs on the CPU are emulated and too slow at this size"
    return None


def _triton_run(x):
    from kernelmark.kernels.fused_moe import fused_experts
    return fused_experts(x["x"], x["w1"], x["w2"], x["topk_ids"], x["topk_weights"], x["w1_scale"], x["w2_scale"])


def _triton_detail():
    from kernelmark.kernels.fused_moe import last_config
    return last_config()


def _triton_supports(shape, dtype, device_kind, capability):
    if dtype == "fp8_e4m3" and device_kind == "cuda" and (capability is None or capability < (8, 9)):
        return "fp8 tl.dot needs compute capability 8.9 or newer"
    return None


def _vllm_available():
    if importlib.util.find_spec("vllm") is None:
        return "vllm is not installed"
    try:
        from vllm.model_executor.layers.fused_moe import fused_experts  # noqa: F401
    except Exception as e:
        return f"vllm.model_executor.layers.fused_moe.fused_experts does not import: {type(e).__name__}: {e}"
    return None


def _vllm_run(x):
    from vllm.model_executor.layers.fused_moe import fused_experts
    args = (x["x"], x["w1"], x["w2"], x["topk_weights"], x["topk_ids"])
    if x["dtype"] != "fp8_e4m3":
        return fused_experts(*args)
    try:     # vLLM before the FusedMoEQuantConfig refactor
        return fused_experts(*args, use_fp8_w8a8=True, w1_scale=x["w1_scale"], w2_scale=x["w2_scale"],
                             block_shape=[FP8_GROUP, FP8_GROUP])
    except TypeError:
        from vllm.model_executor.layers.fused_moe.config import fp8_w8a8_moe_quant_config
        cfg = fp8_w8a8_moe_quant_config(w1_scale=x["w1_scale"], w2_scale=x["w2_scale"],
                                        block_shape=[FP8_GROUP, FP8_GROUP])
        return fused_experts(*args, quant_config=cfg)


def nbytes(shape, dtype):
    t, h, i = shape["tokens"], shape["hidden"], shape["inter"]
    k = shape["topk"] + shape["shared"]
    per_expert = 3 * h * i * dtypes.itemsize(dtype)
    if dtype == "fp8_e4m3":
        per_expert += 4 * 3 * (h // FP8_GROUP) * (i // FP8_GROUP)
    act = 2 if dtype == "fp8_e4m3" else dtypes.itemsize(dtype)
    return experts_hit(shape) * per_expert + 2 * t * h * act + 8 * t * k


def alloc_bytes(shape, dtype):
    """Every expert's weights (and fp8 scales), as make_inputs holds them; nbytes counts the hit ones."""
    e, h, i = shape["experts"] + shape["shared"], shape["hidden"], shape["inter"]
    per_expert = 3 * h * i * dtypes.itemsize(dtype)
    if dtype == "fp8_e4m3":
        per_expert += 4 * 3 * (h // FP8_GROUP) * (i // FP8_GROUP)
    return e * per_expert + 4 * i * h + nbytes(shape, dtype)     # + one expert's fp32 draw


def flops(shape):
    return 6 * shape["tokens"] * (shape["topk"] + shape["shared"]) * shape["hidden"] * shape["inter"]


def inputs_summary(shape, dtype) -> dict:
    ids, _ = routing(shape)
    per = torch.bincount(ids.view(-1).long(), minlength=shape["experts"] + shape["shared"])
    return {"experts_hit": experts_hit(shape), "experts": shape["experts"] + shape["shared"],
            "max_pairs_per_expert": int(per.max()),
            "routing": "top-k of softmax over N(0,1) logits seeded by the shape, renormalised"}


OPS = [
    Op(
        name="fused_moe",
        description="routed experts' MLP: grouped gate_up GEMM, silu·mul, grouped down GEMM, weighted top-k sum",
        params=("tokens", "experts", "topk", "hidden", "inter", "shared"),
        defaults={"shared": 0},
        dtypes=("bf16", "fp8_e4m3"),
        make_inputs=make_inputs,
        reference=reference,
        flops=flops,
        nbytes=nbytes,
        validate=validate,
        inputs_summary=inputs_summary,
        alloc_bytes=alloc_bytes,
        backends=(
            Backend("torch", _torch_run, supports=_torch_supports,
                    description="eager torch: a loop over the hit experts (gather, GEMM, silu·mul, GEMM, index_add)"),
            Backend("triton", _triton_run, triton=True, supports=_triton_supports, detail=_triton_detail,
                    covers=("moe_align",),
                    description="kernelmark's fused MoE (kernels/fused_moe.py): align, grouped gate_up with "
                                "silu·mul, grouped down with the top-k weight, top-k sum"),
            Backend("vllm", _vllm_run, devices=GPU, available=_vllm_available, covers=("moe_align",),
                    description="vLLM fused_experts (its Triton fused_moe kernel)"),
        ),
    ),
]
