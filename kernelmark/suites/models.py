"""Model shapes as data, in one place (gpt-fast's ModelArgs style).

Suites refer to derived shape sets by name, e.g. ``shape_set = "llama3-8b.gemm"``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Model:
    name: str
    layers: int
    hidden: int
    intermediate: int
    q_heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    rope_theta: float

    def projections(self, tp: int = 1) -> dict:
        """The linear layers of one block as (N, K) of y = x @ W^T, W stored [N, K].

        ``tp``: tensor-parallel degree; column-parallel layers split N, row-parallel K.
        """
        qkv = (self.q_heads + 2 * self.kv_heads) * self.head_dim
        return {
            "qkv": (qkv // tp, self.hidden),
            "o": (self.hidden, self.q_heads * self.head_dim // tp),
            "gate_up": (2 * self.intermediate // tp, self.hidden),
            "down": (self.hidden, self.intermediate // tp),
        }


# Llama 3 configs (params.json of the released checkpoints).
LLAMA3_8B = Model("llama3-8b", layers=32, hidden=4096, intermediate=14336, q_heads=32, kv_heads=8,
                  head_dim=128, vocab=128256, rope_theta=500000.0)
LLAMA3_70B = Model("llama3-70b", layers=80, hidden=8192, intermediate=28672, q_heads=64, kv_heads=8,
                   head_dim=128, vocab=128256, rope_theta=500000.0)

MODELS = {m.name: m for m in (LLAMA3_8B, LLAMA3_70B)}

# M = tokens in the batch: 1 and 16 are decode (memory bound), 128+ prefill chunks.
DEFAULT_TOKENS = (1, 16, 128, 1024, 4096)


def get_model(name: str) -> Model:
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(MODELS)}") from None


def gemm_shapes(model: str, m=DEFAULT_TOKENS, layers=None, tp: int = 1) -> list:
    """(label, shape) for the projection GEMMs of ``model`` at each M (A·Wᵀ, layout nt)."""
    mdl = get_model(model)
    projs = mdl.projections(tp)
    names = list(projs) if layers is None else list(layers)
    out = []
    for name in names:
        if name not in projs:
            raise ValueError(f"{model} has no projection {name!r}; known: {', '.join(projs)}")
        n, k = projs[name]
        for mm in ([m] if isinstance(m, int) else m):
            label = f"{model}.{name}" + (f".tp{tp}" if tp > 1 else "")
            out.append((label, {"m": mm, "n": n, "k": k, "layout": "nt"}))
    return out


def _gemm_set(model):
    return lambda **kw: gemm_shapes(model, **kw)


# name -> function(**params from the suite) -> [(label, shape), ...]
SHAPE_SETS = {f"{name}.gemm": _gemm_set(name) for name in MODELS}


# ---------------------------------------------------------------- for the model roll-up
# (kernelmark.reports.rollup): the rest of a decode step, beside the projections above.

def lm_head(model: str, tp: int = 1) -> tuple:
    """(N, K) of the output projection y = x @ W^T (vocab split across ``tp``, column parallel)."""
    mdl = get_model(model)
    return (mdl.vocab // tp, mdl.hidden)


def attention_heads(model: str, tp: int = 1) -> tuple:
    """(q_heads, kv_heads, head_dim) on one of ``tp`` GPUs (a KV head is replicated when tp > kv_heads)."""
    mdl = get_model(model)
    return (mdl.q_heads // tp, max(1, mdl.kv_heads // tp), mdl.head_dim)


# Shape sets for the roll-up's other cases, so a suite can measure exactly what
# `kernelmark model` looks for (shape_set = "llama3-8b.decode_attention", say).
def lm_head_shapes(model: str, m=(1, 8, 32), tp: int = 1) -> list:
    n, k = lm_head(model, tp)
    return [(f"{model}.lm_head" + (f".tp{tp}" if tp > 1 else ""), {"m": mm, "n": n, "k": k, "layout": "nt"})
            for mm in ([m] if isinstance(m, int) else m)]


def decode_attention_shapes(model: str, batch=(1, 8, 32), context=(4096,), tp: int = 1, page_size: int = 16) -> list:
    qh, kvh, hd = attention_heads(model, tp)
    return [(f"{model}.decode", {"batch": b, "context": c, "q_heads": qh, "kv_heads": kvh, "head_dim": hd,
                                 "page_size": page_size, "ragged": 0})
            for b in ([batch] if isinstance(batch, int) else batch)
            for c in ([context] if isinstance(context, int) else context)]


def kv_append_shapes(model: str, tokens=(1, 8, 32), tp: int = 1, page_size: int = 16, num_blocks: int = 4096) -> list:
    _, kvh, hd = attention_heads(model, tp)
    return [(f"{model}.kv_append", {"tokens": t, "seq_tokens": 1, "kv_heads": kvh, "head_dim": hd,
                                    "page_size": page_size, "num_blocks": num_blocks})
            for t in ([tokens] if isinstance(tokens, int) else tokens)]


for _name in MODELS:
    SHAPE_SETS[f"{_name}.lm_head"] = (lambda n: lambda **kw: lm_head_shapes(n, **kw))(_name)
    SHAPE_SETS[f"{_name}.decode_attention"] = (lambda n: lambda **kw: decode_attention_shapes(n, **kw))(_name)
    SHAPE_SETS[f"{_name}.kv_append"] = (lambda n: lambda **kw: kv_append_shapes(n, **kw))(_name)


# ---------------------------------------------------------------- mixtures of experts
# (issue 16, the moe suite): one MoE layer's routing and routed-experts MLP.

@dataclass(frozen=True)
class MoEModel:
    name: str
    experts: int        # routed experts
    topk: int
    hidden: int
    inter: int          # moe_intermediate_size of one expert
    shared: int         # shared experts (of the same inter size), 0 or 1
    rule: str           # moe_route rule
    n_group: int = 1
    topk_group: int = 1
    scale: str = "1"    # routed_scaling_factor
    renorm: int = 1     # renormalise the top-k weights


# From the released configs (config.json): Mixtral-8x7B, Qwen3-30B-A3B (norm_topk_prob),
# DeepSeek-V3 (n_routed_experts 256, n_shared_experts 1, n_group 8, topk_group 4,
# routed_scaling_factor 2.5, sigmoid scoring with e_score_correction_bias), gpt-oss-120b
# (softmax over the top-4 logits = top-4 of the softmax, renormalised; its clamped
# SwiGLU with biases is measured as plain silu·mul).
MOE_MODELS = {m.name: m for m in (
    MoEModel("mixtral-8x7b", experts=8, topk=2, hidden=4096, inter=14336, shared=0, rule="softmax"),
    MoEModel("qwen3-30b-a3b", experts=128, topk=8, hidden=2048, inter=768, shared=0, rule="softmax"),
    MoEModel("deepseek-v3", experts=256, topk=8, hidden=7168, inter=2048, shared=1, rule="sigmoid_grouped",
             n_group=8, topk_group=4, scale="2.5"),
    MoEModel("gpt-oss-120b", experts=128, topk=4, hidden=2880, inter=2880, shared=0, rule="softmax"),
)}

MOE_TOKENS = (1, 8, 32, 128, 1024, 4096)


def get_moe_model(name: str) -> MoEModel:
    try:
        return MOE_MODELS[name]
    except KeyError:
        raise ValueError(f"unknown MoE model {name!r}; known: {', '.join(MOE_MODELS)}") from None


def _ints(v) -> tuple:
    return (v,) if isinstance(v, int) else tuple(v)


def _moe_slice(mdl: MoEModel, tp: int, ep: int, experts) -> tuple:
    """(label suffix, experts, topk, inter) of one GPU's slice. TP splits each expert's inter;
    EP holds experts/ep experts, approximated as top-(k/ep) routing over them (the same pairs
    per local expert on average). ``experts`` (CPU blocks) keeps fewer experts, said in the label."""
    if mdl.inter % tp or mdl.experts % ep or (ep > 1 and mdl.topk % ep):
        raise ValueError(f"{mdl.name}: tp {tp} must divide inter {mdl.inter}, ep {ep} experts and topk")
    e, k, suffix = mdl.experts // ep, mdl.topk // ep, ""
    if tp > 1:
        suffix += f".tp{tp}"
    if ep > 1:
        suffix += f".ep{ep} (top-{k} of {e} local experts)"
    if experts is not None:
        if experts < k:
            raise ValueError(f"{mdl.name}: experts {experts} is fewer than topk {k}")
        suffix += f" ({experts} of {e} experts, to fit)"
        e = experts
    return suffix, e, k, mdl.inter // tp


def moe_shapes(model: str, tokens=MOE_TOKENS, tp: int = 1, ep: int = 1, experts=None, shared=None) -> list:
    """fused_moe shapes of one layer (or one TP/EP slice) at each token count."""
    mdl = get_moe_model(model)
    suffix, e, k, inter = _moe_slice(mdl, tp, ep, experts)
    sh = mdl.shared if shared is None else shared
    return [(f"{model}.experts{suffix}", {"tokens": t, "experts": e, "topk": k, "hidden": mdl.hidden,
                                          "inter": inter, "shared": sh}) for t in _ints(tokens)]


def moe_route_shapes(model: str, tokens=MOE_TOKENS) -> list:
    mdl = get_moe_model(model)
    return [(f"{model}.route", {"tokens": t, "experts": mdl.experts, "topk": mdl.topk, "rule": mdl.rule,
                                "renorm": mdl.renorm, "n_group": mdl.n_group, "topk_group": mdl.topk_group,
                                "scale": mdl.scale}) for t in _ints(tokens)]


def moe_align_shapes(model: str, tokens=MOE_TOKENS, block: int = 16) -> list:
    mdl = get_moe_model(model)
    return [(f"{model}.align", {"tokens": t, "experts": mdl.experts + mdl.shared, "topk": mdl.topk + mdl.shared,
                                "block": block}) for t in _ints(tokens)]


for _name in MOE_MODELS:
    SHAPE_SETS[f"{_name}.moe"] = (lambda n: lambda **kw: moe_shapes(n, **kw))(_name)
    SHAPE_SETS[f"{_name}.moe_route"] = (lambda n: lambda **kw: moe_route_shapes(n, **kw))(_name)
    SHAPE_SETS[f"{_name}.moe_align"] = (lambda n: lambda **kw: moe_align_shapes(n, **kw))(_name)
