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


# ---------------------------------------------------------------- MLA (issue 16)
# Multi-head latent attention as the decode kernels see it (absorbed weights): every
# head attends over one shared latent cache row of kv_lora_rank + rope dims per token.

@dataclass(frozen=True)
class MLAConfig:
    name: str
    layers: int
    heads: int
    kv_lora_rank: int
    qk_rope_head_dim: int
    qk_nope_head_dim: int
    v_head_dim: int

    def heads_per_gpu(self, tp: int = 1) -> int:
        """Attention heads are split across tensor-parallel GPUs; the latent cache is not."""
        if not isinstance(tp, int) or isinstance(tp, bool) or tp <= 0:
            raise ValueError(f"tp must be a positive integer, got {tp!r}")
        if self.heads % tp:
            raise ValueError(f"{self.name}: {self.heads} heads do not split over tp={tp}")
        return self.heads // tp


# DeepSeek-V3 / R1 (config.json of the released checkpoints).
DEEPSEEK_V3_MLA = MLAConfig("deepseek-v3", layers=61, heads=128, kv_lora_rank=512, qk_rope_head_dim=64,
                            qk_nope_head_dim=128, v_head_dim=128)
MLA_MODELS = {m.name: m for m in (DEEPSEEK_V3_MLA,)}


def mla_decode_shapes(model: str = "deepseek-v3", batch=(1, 8, 32), context=(4096,), tp=1,
                      page_size: int = 64) -> list:
    """(label, shape) for mla_decode_attention on one of ``tp`` GPUs (one int or a list of them)."""
    try:
        mdl = MLA_MODELS[model]
    except KeyError:
        raise ValueError(f"unknown MLA model {model!r}; known: {', '.join(MLA_MODELS)}") from None
    if (mdl.kv_lora_rank, mdl.qk_rope_head_dim) != (512, 64):
        raise ValueError(f"{model}: mla_decode_attention is defined for kv_lora_rank 512 + rope 64")
    def values(v):
        return list(v) if isinstance(v, (list, tuple)) else [v]

    out = []
    for t in values(tp):
        heads = mdl.heads_per_gpu(t)
        for b in values(batch):
            for c in values(context):
                out.append((f"{model}.mla" + (f".tp{t}" if t > 1 else ""),
                            {"batch": b, "context": c, "heads": heads, "page_size": page_size, "ragged": 0}))
    return out


SHAPE_SETS.update({f"{name}.mla_decode": (lambda n: lambda **kw: mla_decode_shapes(n, **kw))(name)
                   for name in MLA_MODELS})


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


# ---------------------------------------------------------------- the rest of a decode step
# (norms, activation, RoPE, embedding: kernelmark/ops/norm.py, activation.py, rope.py,
# embedding.py), for the decode-ops suite. Sizes from each model's config.json.

@dataclass(frozen=True)
class StepSizes:
    """What the non-GEMM ops of one decoder layer see (tensor parallel degree 1)."""
    name: str
    hidden: int
    rms_eps: float
    # (label, intermediate size, rows per token) of each gated MLP (SiLU·mul on [rows, 2·I])
    mlps: tuple
    # (label, hidden, rows per token) of the layer's other RMSNorms: Qwen3's per-head q/k
    # norms, DeepSeek-V3's norms of the compressed q and kv (MLA)
    other_norms: tuple
    # RoPE: the q and k tensors it rotates [tokens, heads, head_dim] and its cache
    q_heads: int
    k_heads: int
    head_dim: int
    rotary_dim: int
    rope_style: str
    rope_theta: int
    rope_scaling: str
    max_position: int
    vocab: int


STEP_SIZES = {s.name: s for s in (
    # Llama-3.1-8B/70B: rope_scaling "llama3" (factor 8), max_position_embeddings 131072.
    StepSizes("llama3.1-8b", hidden=4096, rms_eps=1e-5, mlps=(("mlp", 14336, 1),), other_norms=(),
              q_heads=32, k_heads=8, head_dim=128, rotary_dim=128, rope_style="neox", rope_theta=500000,
              rope_scaling="llama3", max_position=131072, vocab=128256),
    StepSizes("llama3.1-70b", hidden=8192, rms_eps=1e-5, mlps=(("mlp", 28672, 1),), other_norms=(),
              q_heads=64, k_heads=8, head_dim=128, rotary_dim=128, rope_style="neox", rope_theta=500000,
              rope_scaling="llama3", max_position=131072, vocab=128256),
    # Qwen3-32B: RMSNorm of every q and k head (head_dim 128) before RoPE; no rope scaling.
    StepSizes("qwen3-32b", hidden=5120, rms_eps=1e-6, mlps=(("mlp", 25600, 1),),
              other_norms=(("q_norm", 128, 64), ("k_norm", 128, 8)),
              q_heads=64, k_heads=8, head_dim=128, rotary_dim=128, rope_style="neox", rope_theta=1000000,
              rope_scaling="none", max_position=40960, vocab=151936),
    # DeepSeek-V3: MLA's rope part is 64 wide (qk_rope_head_dim), 128 q heads and one shared
    # k_pe head, interleaved (vLLM runs it with is_neox_style=False). Its YaRN scaling
    # (factor 40) changes only the cache's values, which the work does not depend on: the
    # cache here is unscaled, of its 163840 positions. MLPs: the first 3 layers dense
    # (18432); the others 8 of 256 routed experts a token (one activation over the
    # tokens x 8 routed rows, as a fused MoE does it) and one shared expert, 2048 each.
    StepSizes("deepseek-v3", hidden=7168, rms_eps=1e-6,
              mlps=(("dense_mlp", 18432, 1), ("routed_experts", 2048, 8), ("shared_expert", 2048, 1)),
              other_norms=(("q_a_norm", 1536, 1), ("kv_a_norm", 512, 1)),
              q_heads=128, k_heads=1, head_dim=64, rotary_dim=64, rope_style="gptj", rope_theta=10000,
              rope_scaling="none", max_position=163840, vocab=129280),
)}

# Tokens in a step: decode batches (1, 16, 128) and prefill chunks (1024, 8192).
STEP_TOKENS = (1, 16, 128, 1024, 8192)


def get_step_sizes(name: str) -> StepSizes:
    try:
        return STEP_SIZES[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(STEP_SIZES)}") from None


def _tokens(tokens) -> list:
    return [tokens] if isinstance(tokens, int) else list(tokens)


def rmsnorm_shapes(model: str, tokens=STEP_TOKENS, fused: bool = False) -> list:
    """The layer's RMSNorms: the hidden-size one (fused with the residual add when ``fused``,
    as every layer but the first does it), and, unfused, the model's other norms."""
    s = get_step_sizes(model)
    out = [(f"{model}.norm", {"tokens": t, "hidden": s.hidden, "eps": s.rms_eps}) for t in _tokens(tokens)]
    if not fused:
        out += [(f"{model}.{label}", {"tokens": t * per_token, "hidden": h, "eps": s.rms_eps})
                for label, h, per_token in s.other_norms for t in _tokens(tokens)]
    return out


def silu_and_mul_shapes(model: str, tokens=STEP_TOKENS) -> list:
    s = get_step_sizes(model)
    return [(f"{model}.{label}", {"tokens": t * per_token, "intermediate": i})
            for label, i, per_token in s.mlps for t in _tokens(tokens)]


def rope_shapes(model: str, tokens=STEP_TOKENS) -> list:
    s = get_step_sizes(model)
    return [(f"{model}.rope", {"tokens": t, "q_heads": s.q_heads, "kv_heads": s.k_heads, "head_dim": s.head_dim,
                               "rotary_dim": s.rotary_dim, "style": s.rope_style, "theta": s.rope_theta,
                               "scaling": s.rope_scaling, "max_position": s.max_position})
            for t in _tokens(tokens)]


def embedding_shapes(model: str, tokens=STEP_TOKENS) -> list:
    s = get_step_sizes(model)
    return [(f"{model}.embedding", {"tokens": t, "vocab": s.vocab, "hidden": s.hidden}) for t in _tokens(tokens)]


for _name in STEP_SIZES:
    SHAPE_SETS[f"{_name}.rmsnorm"] = (lambda n: lambda **kw: rmsnorm_shapes(n, **kw))(_name)
    SHAPE_SETS[f"{_name}.fused_add_rmsnorm"] = (lambda n: lambda **kw: rmsnorm_shapes(n, fused=True, **kw))(_name)
    SHAPE_SETS[f"{_name}.silu_and_mul"] = (lambda n: lambda **kw: silu_and_mul_shapes(n, **kw))(_name)
    SHAPE_SETS[f"{_name}.rope"] = (lambda n: lambda **kw: rope_shapes(n, **kw))(_name)
    SHAPE_SETS[f"{_name}.embedding"] = (lambda n: lambda **kw: embedding_shapes(n, **kw))(_name)

# ---------------------------------------------------------------- sampling and fp8 block-scaled GEMMs
# (issue 15: argmax/top-k/top-p sampling, fp8_group_quant, gemm_fp8_blockwise), from the models'
# public config.json files.

# vocab_size: Llama-3.1-8B/70B 128256, Qwen3-32B 151936, DeepSeek-V3 129280.
VOCAB = {"llama3-8b": 128256, "llama3-70b": 128256, "qwen3-32b": 151936, "deepseek-v3": 129280}

# The linear layers of one block as (N, K) of y = x @ W^T, W [N, K], for the models that ship
# fp8 weights with 128x128 block scales (DeepSeek-V3; Qwen3-32B-FP8) or are served that way.
# DeepSeek-V3: hidden 7168, q_lora_rank 1536, kv_lora_rank 512, qk_rope_head_dim 64,
# qk_nope_head_dim 128, v_head_dim 128, 128 heads, intermediate 18432 (the 3 dense layers),
# moe_intermediate 2048 (each routed expert and the shared one).
BLOCK_FP8_LINEARS = {
    "deepseek-v3": {
        "q_a": (1536, 7168), "kv_a": (512 + 64, 7168), "q_b": (128 * (128 + 64), 1536),
        "kv_b": (128 * (128 + 128), 512), "o": (7168, 128 * 128),
        "dense_gate_up": (2 * 18432, 7168), "dense_down": (7168, 18432),
        "expert_gate_up": (2 * 2048, 7168), "expert_down": (7168, 2048),
    },
    # Qwen3-32B: hidden 5120, 64 q heads and 8 kv heads of 128, intermediate 25600.
    "qwen3-32b": {"qkv": ((64 + 2 * 8) * 128, 5120), "o": (5120, 64 * 128),
                  "gate_up": (2 * 25600, 5120), "down": (5120, 25600)},
}
for _name in MODELS:
    BLOCK_FP8_LINEARS[_name] = MODELS[_name].projections()

DECODE_TOKENS = (1, 16, 128, 1024, 4096, 8192)


def block_fp8_gemm_shapes(model: str, m=DECODE_TOKENS, layers=None) -> list:
    """(label, {m, n, k}) for gemm_fp8_blockwise at each linear layer of ``model``."""
    projs = BLOCK_FP8_LINEARS.get(model)
    if projs is None:
        raise ValueError(f"no fp8 linear layers for {model!r}; known: {', '.join(BLOCK_FP8_LINEARS)}")
    names = list(projs) if layers is None else list(layers)
    out = []
    for name in names:
        if name not in projs:
            raise ValueError(f"{model} has no linear layer {name!r}; known: {', '.join(projs)}")
        n, k = projs[name]
        out += [(f"{model}.{name}", {"m": mm, "n": n, "k": k}) for mm in ([m] if isinstance(m, int) else m)]
    return out


def block_fp8_dense_shapes(model: str, m=DECODE_TOKENS, layers=None) -> list:
    """The same (M, N, K) for the `gemm` op in fp8 with one scale per tensor (layout nt):
    the dense fp8 roof a block-scaled GEMM is compared with."""
    return [(f"{label} (per-tensor)", {**s, "layout": "nt"}) for label, s in block_fp8_gemm_shapes(model, m, layers)]


def group_quant_shapes(model: str, tokens=DECODE_TOKENS) -> list:
    """(label, {tokens, hidden}) for fp8_group_quant: each distinct K of the model's linear layers
    is an activation that is quantised before its GEMM."""
    projs = BLOCK_FP8_LINEARS.get(model)
    if projs is None:
        raise ValueError(f"no fp8 linear layers for {model!r}; known: {', '.join(BLOCK_FP8_LINEARS)}")
    widths = sorted({k for _, k in projs.values()})
    return [(f"{model}.k{k}", {"tokens": t, "hidden": k})
            for k in widths for t in ([tokens] if isinstance(tokens, int) else tokens)]


def _vocab(model: str) -> int:
    vocab = VOCAB.get(model)
    if vocab is None:
        raise ValueError(f"no vocabulary size for {model!r}; known: {', '.join(VOCAB)}")
    return vocab


def argmax_shapes(model: str, batch=(1, 32, 128, 256)) -> list:
    """(label, {batch, vocab}) for argmax_sampling at the model's vocabulary."""
    return [(f"{model}.vocab", {"batch": b, "vocab": _vocab(model)})
            for b in ([batch] if isinstance(batch, int) else batch)]


def top_k_top_p_shapes(model: str, batch=(1, 32, 128, 256), top_k=50, top_p=1.0, temperature=1.0,
                       draws: int = 1) -> list:
    """(label, shape) for top_k_top_p_sampling at the model's vocabulary; ``top_k = "vocab"``
    keeps every token (no top-k)."""
    vocab = _vocab(model)
    if top_k == "vocab":
        top_k = vocab
    return [(f"{model}.vocab", {"batch": b, "vocab": vocab, "top_k": top_k, "top_p": top_p,
                                "temperature": temperature, "draws": draws})
            for b in ([batch] if isinstance(batch, int) else batch)]


for _name in BLOCK_FP8_LINEARS:
    SHAPE_SETS[f"{_name}.fp8_block_gemm"] = (lambda n: lambda **kw: block_fp8_gemm_shapes(n, **kw))(_name)
    SHAPE_SETS[f"{_name}.fp8_dense_gemm"] = (lambda n: lambda **kw: block_fp8_dense_shapes(n, **kw))(_name)
    SHAPE_SETS[f"{_name}.fp8_group_quant"] = (lambda n: lambda **kw: group_quant_shapes(n, **kw))(_name)
for _name in VOCAB:
    SHAPE_SETS[f"{_name}.argmax"] = (lambda n: lambda **kw: argmax_shapes(n, **kw))(_name)
    SHAPE_SETS[f"{_name}.top_k_top_p"] = (lambda n: lambda **kw: top_k_top_p_shapes(n, **kw))(_name)


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
