"""MoE routing and layout: moe_route (router logits -> top-k experts and weights) and
moe_align (the (token, slot) pairs sorted by expert, each expert's run padded to the GEMM
block size). Both are latency-bound steps of a decode layer; FLOPs 0.

moe_route rules (kernels/moe_route.py has the details):

* ``softmax``: top-k of the softmax probabilities, optionally renormalised (Mixtral,
  Qwen3-MoE, gpt-oss);
* ``sigmoid_grouped``: DeepSeek-V3's sigmoid scores with the bias correction, grouped
  top-k (n_group, topk_group), weights renormalised and times routed_scaling_factor
  (``scale``, a string such as "2.5" because suite values are integers or strings).

Ties are broken by the lower expert id (and the lower group id), and the k slots are in
decreasing order of the choice, so the ids are checked exactly. The inputs plant exact
ties between the best expert and a partner in half the rows, so a kernel that breaks
ties the other way fails. The ranking is done in fp32 as the kernels do it (the logits
themselves for softmax, sigmoid + bias for DeepSeek); the weights are computed in fp64
by the reference and held to the fp32 bound.

Bytes: moe_route reads the logits (and the bias) and writes int32 ids and fp32 weights;
moe_align reads the int32 ids and writes the layout (sorted ids, block experts, counts).
The dtype of moe_align names the activations the layout serves; the op moves int32 only.
"""

from __future__ import annotations

import importlib.util

import torch

from kernelmark import dtypes
from kernelmark.ops.base import Backend, Op, positive_ints, shape_str
from kernelmark.ops.check import CheckResult, compare
from kernelmark.ops.kv_cache import vllm_available, vllm_ops

RULES = ("softmax", "sigmoid_grouped")
GPU = ("cuda", "rocm")


def _sgl_available(name: str):
    def available():
        if importlib.util.find_spec("sgl_kernel") is None:
            return "sgl_kernel is not installed"
        import sgl_kernel
        return None if hasattr(sgl_kernel, name) else f"this sgl_kernel has no {name}"
    return available


# ---------------------------------------------------------------------------------------
# moe_route

def route_validate(shape, dtype):
    positive_ints(shape, ("tokens", "experts", "topk", "n_group", "topk_group"))
    e, k, g, tg = shape["experts"], shape["topk"], shape["n_group"], shape["topk_group"]
    if shape["rule"] not in RULES:
        raise ValueError(f"shape {shape_str(shape)}: rule must be one of {', '.join(RULES)}")
    if shape["renorm"] not in (0, 1):
        raise ValueError(f"shape {shape_str(shape)}: renorm must be 0 or 1")
    try:
        float(shape["scale"])
    except (TypeError, ValueError):
        raise ValueError(f"shape {shape_str(shape)}: scale must be a number as a string, e.g. \"2.5\"") from None
    if k > e:
        raise ValueError(f"shape {shape_str(shape)}: topk {k} exceeds experts {e}")
    if shape["rule"] == "sigmoid_grouped":
        if e % g or g & (g - 1) or tg > g:
            raise ValueError(f"shape {shape_str(shape)}: n_group must be a power of two dividing experts, "
                             f"topk_group at most n_group")
        if k > tg * (e // g):
            raise ValueError(f"shape {shape_str(shape)}: topk {k} exceeds the experts of {tg} kept groups")
    elif g != 1 or tg != 1:
        raise ValueError(f"shape {shape_str(shape)}: n_group and topk_group are for the sigmoid_grouped rule")


def _choice32(logits, bias, rule):
    """The fp32 quantity experts are ranked by, and the scores the weights come from (fp64)."""
    if rule == "softmax":
        return logits.float(), torch.softmax(logits.double(), dim=-1)
    return torch.sigmoid(logits.float()) + bias.float(), torch.sigmoid(logits.double())


def route_make_inputs(shape, dtype, device, gen):
    t, e = shape["tokens"], shape["experts"]
    logits = torch.randn(t, e, device=device, generator=gen).to(dtypes.torch_dtype(dtype))
    # Pairs of experts (2j, 2j+1) share a bias, so a copied logit is an exact tie.
    bias = (0.1 * torch.randn(e, device=device, generator=gen)).float()
    bias[1::2] = bias[0::2][: e // 2]
    choice, _ = _choice32(logits, bias, shape["rule"])
    best = choice.argmax(dim=1)
    partner = torch.where(best % 2 == 0, best + 1, best - 1).clamp(max=e - 1)
    rows = torch.arange(0, t, 2, device=device)          # half the rows get a tie for first place
    logits[rows, partner[rows]] = logits[rows, best[rows]]
    return {"logits": logits, "bias": bias, "topk": shape["topk"], "rule": shape["rule"],
            "renorm": bool(shape["renorm"]), "n_group": shape["n_group"], "topk_group": shape["topk_group"],
            "scale": float(shape["scale"])}


def _route_torch(x, double_weights: bool = False):
    """The eager routing: stable sorts, so equal choices keep the lower expert id first."""
    logits, k = x["logits"], x["topk"]
    choice, scores = _choice32(logits, x["bias"], x["rule"])
    if not double_weights:
        scores = scores.float()
    if x["rule"] == "sigmoid_grouped" and x["n_group"] > 1:
        t, e = choice.shape
        g = x["n_group"]
        grouped = choice.view(t, g, e // g)
        top2 = torch.sort(grouped, dim=-1, descending=True, stable=True).values[..., :2]
        gscore = top2[..., 0] + top2[..., 1]
        keep_g = torch.sort(gscore, dim=-1, descending=True, stable=True).indices[:, : x["topk_group"]]
        keep = torch.zeros(t, g, dtype=torch.bool, device=choice.device).scatter_(1, keep_g, True)
        choice = grouped.masked_fill(~keep[..., None], float("-inf")).view(t, e)
    ids = torch.sort(choice, dim=-1, descending=True, stable=True).indices[:, :k]
    w = scores.gather(1, ids)
    if x["renorm"]:
        w = w / w.sum(dim=1, keepdim=True)
    return ids.to(torch.int32), (w * x["scale"]).float()


def route_reference(x):
    return _route_torch(x, double_weights=True)


def route_check(out, ref, dtype) -> CheckResult:
    """Ids exact (order included); weights within the fp32 bound, every element."""
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        return CheckResult(False, float("inf"), float("inf"), float("inf"), 0.0,
                           "moe_route must return (ids, weights)")
    ids = compare(out[0].to(torch.int32), ref[0], 0.0, exact=True)
    if not ids.passed:
        return CheckResult(False, ids.rel_l2, ids.max_abs, ids.max_rel, 0.0, "expert ids: " + ids.detail,
                           ids.bad_elements)
    return compare(out[1].float(), ref[1], dtypes.tolerance("fp32"), dtype="fp32")


def route_nbytes(shape, dtype):
    t, e, k = shape["tokens"], shape["experts"], shape["topk"]
    bias = 4 * e if shape["rule"] == "sigmoid_grouped" else 0
    return t * e * dtypes.itemsize(dtype) + bias + 8 * t * k


def _route_triton(x):
    from kernelmark.kernels.moe_route import moe_route
    return moe_route(x["logits"], x["topk"], x["rule"], x["renorm"], x["bias"], x["n_group"], x["topk_group"],
                     x["scale"])


def _softmax_only(shape, dtype, device_kind, capability):
    return None if shape["rule"] == "softmax" else "implements the softmax rule only"


def _lib_topk_softmax(fn, x, with_indices: bool):
    logits, k = x["logits"], x["topk"]
    t = logits.shape[0]
    w = torch.empty(t, k, dtype=torch.float32, device=logits.device)
    ids = torch.empty(t, k, dtype=torch.int32, device=logits.device)
    args = (w, ids, torch.empty(t, k, dtype=torch.int32, device=logits.device)) if with_indices else (w, ids)
    try:
        fn(*args, logits, x["renorm"])
    except TypeError:                      # versions without the renormalize argument
        fn(*args, logits)
        if x["renorm"]:
            w = w / w.sum(dim=1, keepdim=True)
    return ids, w * x["scale"]


def _route_vllm(x):
    return _lib_topk_softmax(vllm_ops("topk_softmax"), x, with_indices=True)


def _route_sgl(x):
    import sgl_kernel
    return _lib_topk_softmax(sgl_kernel.topk_softmax, x, with_indices=False)


def _route_sgl_gate(x):
    import sgl_kernel
    w, ids = sgl_kernel.moe_fused_gate(x["logits"], x["bias"], x["n_group"], x["topk_group"], x["topk"], 0,
                                       x["scale"], True)
    return ids.to(torch.int32), w.float()


def _sgl_gate_supports(shape, dtype, device_kind, capability):
    if shape["rule"] != "sigmoid_grouped" or not shape["renorm"]:
        return "implements DeepSeek's sigmoid_grouped rule with renormalisation only"
    return None


# ---------------------------------------------------------------------------------------
# moe_align

def align_validate(shape, dtype):
    positive_ints(shape, ("tokens", "experts", "topk", "block"))
    if shape["topk"] > shape["experts"]:
        raise ValueError(f"shape {shape_str(shape)}: topk exceeds experts")
    if shape["block"] & (shape["block"] - 1):
        raise ValueError(f"shape {shape_str(shape)}: block must be a power of two")


def random_topk_ids(tokens, experts, topk, device, gen):
    """k distinct experts per token, uniformly (the rows of a random permutation)."""
    r = torch.rand(tokens, experts, device=device, generator=gen)
    return r.argsort(dim=1)[:, :topk].to(torch.int32)


def align_make_inputs(shape, dtype, device, gen):
    return {"topk_ids": random_topk_ids(shape["tokens"], shape["experts"], shape["topk"], device, gen),
            "experts": shape["experts"], "block": shape["block"]}


def _align_torch(x):
    """The eager layout: a stable sort by expert, then each run moved to its padded start."""
    ids, e, b = x["topk_ids"].view(-1), x["experts"], x["block"]
    n = ids.numel()
    counts = torch.bincount(ids, minlength=e)
    padded = (counts + b - 1) // b * b
    end = torch.cumsum(padded, 0)
    start = end - padded
    order = torch.sort(ids, stable=True).indices
    first = torch.cumsum(counts, 0) - counts
    e_sorted = ids[order].long()
    pos = start[e_sorted] + torch.arange(n, device=ids.device) - first[e_sorted]
    size = n + e * (b - 1)
    sorted_ids = torch.full((size,), n, dtype=torch.int32, device=ids.device)
    sorted_ids[pos] = order.to(torch.int32)
    n_blocks = -(-size // b)
    bpos = torch.arange(n_blocks, device=ids.device) * b
    npp = end[-1]
    owner = torch.searchsorted(end, bpos, right=True)
    expert_ids = torch.where(bpos < npp, owner, -1).to(torch.int32)
    return sorted_ids, expert_ids, npp.view(1).to(torch.int32), counts.to(torch.int32)


def align_reference(x):
    return _align_torch(x)


def align_check(out, ref, dtype) -> CheckResult:
    """Exact, up to the order of pairs within one expert's run (a grouped GEMM does not care,
    and library kernels place them with atomics): counts, the used length, every used block's
    expert, each run's pairs as a set, and the padding and tail holding T·k."""
    if not isinstance(out, (tuple, list)) or len(out) != 4:
        return CheckResult(False, float("inf"), float("inf"), float("inf"), 0.0,
                           "moe_align must return (sorted_ids, expert_ids, num_post_padded, counts)")
    s_ref, e_ref, npp_ref, c_ref = ref
    npp = int(npp_ref[0])
    # The block size, from the layout's length: len = T·k + E·(block − 1).
    b = (s_ref.numel() - int(c_ref.sum())) // c_ref.numel() + 1
    used = npp // b

    def canonical(s):
        s = s.to(torch.int64).cpu().clone()
        owner = e_ref[:used].to(torch.int64).cpu().repeat_interleave(b)
        seg = s[:npp]
        key = owner * (1 << 32) + seg
        s[:npp] = seg[torch.argsort(key, stable=True)]
        return s

    parts = [("num_post_padded", out[2].to(torch.int32).view(-1)[:1], npp_ref),
             ("counts", out[3].to(torch.int32), c_ref),
             ("expert_ids (used blocks)", out[1].to(torch.int32)[:used], e_ref[:used]),
             ("sorted_ids (each run as a set)", canonical(out[0]), canonical(s_ref))]
    for name, o, r in parts:
        res = compare(o.cpu(), r.cpu().to(o.dtype), 0.0, exact=True)
        if not res.passed:
            return CheckResult(False, res.rel_l2, res.max_abs, res.max_rel, 0.0, f"{name}: {res.detail}",
                               res.bad_elements)
    return CheckResult(True, 0.0, 0.0, 0.0, 0.0)


def align_nbytes(shape, dtype):
    n, e, b = shape["tokens"] * shape["topk"], shape["experts"], shape["block"]
    size = n + e * (b - 1)
    return 4 * n + 4 * (size + -(-size // b) + 1 + e)


def _align_triton(x):
    from kernelmark.kernels.moe_align import moe_align
    return moe_align(x["topk_ids"], x["experts"], x["block"])


def _lib_align(fn, x, extra):
    ids, e, b = x["topk_ids"], x["experts"], x["block"]
    n = ids.numel()
    size = n + e * (b - 1)
    sorted_ids = torch.full((size,), n, dtype=torch.int32, device=ids.device)
    expert_ids = torch.full((-(-size // b),), -1, dtype=torch.int32, device=ids.device)
    npp = torch.empty((1,), dtype=torch.int32, device=ids.device)
    fn(ids, e, b, sorted_ids, expert_ids, npp, *extra(ids, e))
    # The libraries return no counts: one bincount, inside the timed call.
    return sorted_ids, expert_ids, npp, torch.bincount(ids.view(-1), minlength=e).to(torch.int32)


def _align_vllm(x):
    return _lib_align(vllm_ops("moe_align_block_size"), x, lambda ids, e: ())


def _align_sgl(x):
    import sgl_kernel
    return _lib_align(sgl_kernel.moe_align_block_size, x,
                      lambda ids, e: (torch.zeros(e + 1, dtype=torch.int32, device=ids.device), True))


OPS = [
    Op(
        name="moe_route",
        description="MoE router: logits [T, E] -> top-k expert ids and weights (softmax or DeepSeek grouped sigmoid)",
        params=("tokens", "experts", "topk", "rule", "renorm", "n_group", "topk_group", "scale"),
        defaults={"rule": "softmax", "renorm": 1, "n_group": 1, "topk_group": 1, "scale": "1"},
        dtypes=("fp32", "bf16"),
        make_inputs=route_make_inputs,
        reference=route_reference,
        flops=lambda shape: 0,
        nbytes=route_nbytes,
        validate=route_validate,
        check=route_check,
        backends=(
            Backend("torch", _route_torch,
                    description="eager torch: softmax or sigmoid + bias, stable sorts for the (grouped) top-k"),
            Backend("triton", _route_triton, triton=True,
                    description="kernelmark's Triton router (kernels/moe_route.py): a row per token in registers"),
            Backend("vllm", _route_vllm, devices=GPU, available=vllm_available("topk_softmax"),
                    supports=_softmax_only, description="vLLM _custom_ops.topk_softmax"),
            Backend("sgl_kernel", _route_sgl, devices=GPU, available=_sgl_available("topk_softmax"),
                    supports=_softmax_only, description="sgl-kernel topk_softmax"),
            Backend("sgl_kernel_gate", _route_sgl_gate, devices=GPU, available=_sgl_available("moe_fused_gate"),
                    supports=_sgl_gate_supports, description="sgl-kernel moe_fused_gate (DeepSeek-V3 routing)"),
        ),
    ),
    Op(
        name="moe_align",
        description="MoE layout: (token, slot) pairs sorted by expert, runs padded to the GEMM block, counts",
        params=("tokens", "experts", "topk", "block"),
        defaults={"block": 16},
        dtypes=("bf16",),
        make_inputs=align_make_inputs,
        reference=align_reference,
        flops=lambda shape: 0,
        nbytes=align_nbytes,
        validate=align_validate,
        check=align_check,
        backends=(
            Backend("torch", _align_torch, description="eager torch: bincount, stable sort, scatter"),
            Backend("triton", _align_triton, triton=True,
                    description="kernelmark's Triton layout (kernels/moe_align.py): histogram, offsets, scatter"),
            Backend("vllm", _align_vllm, devices=GPU, available=vllm_available("moe_align_block_size"),
                    description="vLLM _custom_ops.moe_align_block_size (+ a bincount for the counts)"),
            Backend("sgl_kernel", _align_sgl, devices=GPU, available=_sgl_available("moe_align_block_size"),
                    description="sgl-kernel moe_align_block_size (+ a bincount for the counts)"),
        ),
    ),
]
