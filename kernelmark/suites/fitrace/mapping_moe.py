"""FlashInfer-Trace ``moe`` definitions -> kernelmark's ``fused_moe``.

The published MoE definitions come in several forms (flashinfer-bench's dataset, read as
data): pre-routed bf16 experts (``hidden_states``, ``w1``/``w2``, ``topk_ids``,
``topk_weights``: Qwen3.5's ``moe_bf16_*``), TensorRT-LLM style fused MoE with the routing
inside (``routing_logits`` [+ ``routing_bias``], DeepSeek's grouped sigmoid or top-k
softmax), fp8 block-scale with the activations already quantized (``hidden_states``
float8_e4m3fn + ``hidden_states_scale``), per-tensor fp8, fp4, expert parallelism
(``num_local_experts`` < ``num_experts`` with ``local_expert_offset``).

fused_moe computes one of these exactly: the routed experts' SwiGLU MLP over all the
layer's experts, from routed ids and weights, in bf16 (or fp8 weights with activations it
quantizes itself). Only a definition of that form is mapped. Every other one is an
``unsupported`` row whose reason names the definition's field that fused_moe cannot
express; a near match is never run as if it were the definition, since its time would be
read as the definition's.

What a mapped row still differs in, and says in its notes: the routing is fused_moe's own
(top-k of a softmax over N(0, 1) logits seeded by the shape; the workload's ids are not
fed, so the experts hit follow that distribution, not the captured one), and the
activation and the order of the gate and up halves are the op's (silu on the first half):
the definition states those only in its reference, which kernelmark never runs. With
random weights neither changes the work done.
"""

from __future__ import annotations

import re

from kernelmark.suites.fitrace.mapping import Mapped, Unmappable, _mapped, tensor_shape

# Input names by role, as the published definitions spell them.
HIDDEN = ("hidden_states",)
GEMM1 = ("w1", "w13", "gemm1_weights", "gate_up_proj")
GEMM2 = ("w2", "gemm2_weights", "down_proj")
IDS = ("topk_ids",)
WEIGHTS = ("topk_weights",)
LOGITS = ("routing_logits", "gating_output", "router_logits")
KNOWN = HIDDEN + GEMM1 + GEMM2 + IDS + WEIGHTS + LOGITS + ("local_expert_offset",)

# fused_moe's dtypes; fp8_e4m3 only with bf16 activations it quantizes itself, a form no
# definition states outside its reference, so only bf16 is mapped.
OUR_DTYPE = {"bfloat16": "bf16"}


def _find(defn, names: tuple):
    return next((n for n in names if n in defn.inputs), None)


def _dtype_reason(defn, hidden: str, w1: str, w2: str) -> list:
    """Why the tensors' dtypes are not fused_moe's bf16 ([] when they are)."""
    dts = {n: defn.inputs[n]["dtype"] for n in (hidden, w1, w2)}
    if all(d == "bfloat16" for d in dts.values()):
        return []
    hd, wd = dts[hidden], dts[w1]
    if hd in ("float8_e4m3fn", "float8_e5m2"):
        scale = next((n for n in defn.inputs if n.startswith(hidden) and "scale" in n), None)
        return [f"{hidden} {hd}, quantized before the op" + (f" ({scale})" if scale else "")
                + ": fused_moe's fp8 takes bf16 activations and quantizes them itself"]
    if wd in ("float8_e4m3fn", "float8_e5m2") and hd == "bfloat16":
        return [f"{w1} {wd} with {hd} {hidden}: whether the activations are quantized (as fused_moe's fp8 "
                "does) is only in the reference, which kernelmark does not run"]
    bad = ", ".join(f"{n} {d}" for n, d in dts.items() if d != "bfloat16")
    quant = [t.split(":", 1)[1] for t in defn.tags if t.startswith("quantization:")]
    return [f"{bad}" + (f" (quantization:{quant[0]} inside the op)" if quant else "")
            + ": fused_moe takes bf16 (or fp8 weights with bf16 activations)"]


def _geometry(defn, dims, hidden, w1, w2, reasons: list) -> tuple:
    """(tokens, experts, hidden, inter) from [T, H], w1 [E, 2I, H], w2 [E, H, I]."""
    xs, g1, g2 = (tensor_shape(defn, dims, n) for n in (hidden, w1, w2))
    if len(xs) != 2 or len(g1) != 3 or len(g2) != 3:
        raise Unmappable(f"{hidden} {xs}, {w1} {g1}, {w2} {g2}: expected [T, H], [E, 2I, H], [E, H, I]")
    t, h = xs
    e, two_i, h1 = g1
    e2, h2, i = g2
    # By axis name as well as by size: [E, H, 2I] with H = 2I is another layout of the same sizes.
    h_axis = defn.inputs[hidden]["shape"][1]
    by_name = defn.inputs[w1]["shape"][2] == h_axis and defn.inputs[w2]["shape"][1] == h_axis
    if (h1, h2, e2) != (h, h, e) or two_i != 2 * i or not by_name:
        reasons.append(f"{w1} {g1}, {w2} {g2} for hidden {h}: not fused_moe's [E, 2I, H] gate+up and [E, H, I] "
                       "down weights")
    return t, e, h, i


def _routing(defn, dims, w, tokens: int, experts: int, reasons: list, notes: list):
    """top-k from the definition's routing inputs; the reasons where it routes in a way
    fused_moe does not take."""
    ids, wts, logits = _find(defn, IDS), _find(defn, WEIGHTS), _find(defn, LOGITS)
    if ids is None:
        if logits is not None:
            # Only to say which rule: the dataset names its definitions after it.
            rule = " (DeepSeek's grouped sigmoid)" if "ds_routing" in defn.name else \
                " (top-k softmax)" if "renorm" in defn.name else ""
            reasons.append(f"{logits}: routes inside the op{rule}; fused_moe takes routed ids and weights "
                           "(the routing alone is op moe_route)")
        else:
            reasons.append("no topk_ids and no routing logits: which experts a token uses is only in the "
                           "reference")
        return None
    shape = tensor_shape(defn, dims, ids)
    if len(shape) != 2 or shape[0] != tokens:
        raise Unmappable(f"{ids} {shape}: expected [{tokens}, top_k]")
    topk = shape[1]
    if wts is None:
        reasons.append(f"{ids} without topk_weights: how the experts' outputs are weighted is only in the "
                       "reference")
    elif tensor_shape(defn, dims, wts) != shape:
        reasons.append(f"{wts} {tensor_shape(defn, dims, wts)} does not match {ids} {shape}")
    if topk > experts:
        reasons.append(f"top_k {topk} exceeds the {experts} experts of the weights")
    captured = [n for n in (ids, wts) if n and w.inputs.get(n, {}).get("type") == "safetensors"]
    # The same words for every workload, so the table shows them once under the definition.
    notes.append("routing: kernelmark's own (top-k of softmax over N(0,1) logits seeded by the shape, "
                 f"renormalised); the workload's {ids}/{wts} are not fed")
    if captured:
        notes.append(f"captured {' and '.join(captured)} not fed: the experts hit follow kernelmark's "
                     "routing, not the captured one")
    if logits is not None:
        notes.append(f"{logits} given beside {ids}: the ids and weights are taken as the routing")
    return topk


def map_moe(defn, w, dims, blobs=None) -> Mapped:
    hidden, w1, w2 = _find(defn, HIDDEN), _find(defn, GEMM1), _find(defn, GEMM2)
    if not (hidden and w1 and w2):
        lack = [x for x, n in ((HIDDEN[0], hidden), ("w1 or gemm1_weights", w1), ("w2 or gemm2_weights", w2))
                if not n]
        raise Unmappable(f"no {' / '.join(lack)} input (inputs: {', '.join(defn.inputs)}): "
                         "not the experts' MLP fused_moe computes")
    reasons = _dtype_reason(defn, hidden, w1, w2)
    tokens, experts, h, inter = _geometry(defn, dims, hidden, w1, w2, reasons)
    notes: list = []
    topk = _routing(defn, dims, w, tokens, experts, reasons, notes)
    total = dims.get("num_experts")
    if total is not None and total != experts:
        reasons.append(f"num_experts {total}, {w1} for {experts}: expert parallelism; fused_moe computes "
                       "every expert of the layer")
    offset = w.inputs.get("local_expert_offset", {})
    if offset.get("type") == "scalar" and offset.get("value") not in (0, None):
        reasons.append(f"local_expert_offset {offset['value']}: only some experts are local")
    named = " ".join(reasons)        # inputs a reason already names (hidden_states_scale) are not repeated
    other = [n for n in defn.inputs if n not in KNOWN and not re.search(rf"\b{re.escape(n)}\b", named)]
    if other:
        reasons.append(f"{', '.join(other)}: no counterpart in fused_moe")
    if reasons:
        raise Unmappable("; ".join(dict.fromkeys(reasons)))
    notes.append("activation silu(gate)·up with gate the first half of w1's rows (kernelmark's op); "
                 "the definition's own order is only in its reference (same work with random weights)")
    return _mapped("fused_moe", {"tokens": tokens, "experts": experts, "topk": topk, "hidden": h,
                                 "inter": inter, "shared": 0}, OUR_DTYPE[defn.inputs[hidden]["dtype"]], notes)
