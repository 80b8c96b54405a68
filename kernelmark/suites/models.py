"""Named shape sets of model layers for suite files, e.g. ``shape_set = "llama3-8b.gemm"``.

Every number comes from the model configs we ship (``model_configs/*.json``, read by
kernelmark.suites.model_config): the dataclasses here are the views the shape sets need,
derived from those configs, never a second copy of the numbers. The legacy names keep
their spelling (``llama3-8b`` is Llama-3.1-8B's config: the same shapes as Llama 3 8B).
"""

from __future__ import annotations

from dataclasses import dataclass

from kernelmark.suites import model_config as _mc


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


def _model(name: str, config: str) -> Model:
    c = _mc.load(config)
    return Model(name, layers=c.layers, hidden=c.hidden, intermediate=c.intermediate, q_heads=c.q_heads,
                 kv_heads=c.kv_heads, head_dim=c.head_dim, vocab=c.vocab, rope_theta=c.rope_theta)


# Llama 3: the 3.1 configs (Llama 3 8B/70B have the same shapes; 3.1 added rope scaling).
LLAMA3_8B = _model("llama3-8b", "llama-3.1-8b")
LLAMA3_70B = _model("llama3-70b", "llama-3.1-70b")

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


def _mla(name: str) -> MLAConfig:
    c = _mc.load(name)
    return MLAConfig(name, layers=c.layers, heads=c.q_heads, kv_lora_rank=c.mla.kv_lora_rank,
                     qk_rope_head_dim=c.mla.qk_rope_head_dim, qk_nope_head_dim=c.mla.qk_nope_head_dim,
                     v_head_dim=c.mla.v_head_dim)


# DeepSeek-V3 / R1
DEEPSEEK_V3_MLA = _mla("deepseek-v3")
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


def _step_sizes(name: str, config: str) -> StepSizes:
    """The non-GEMM ops' sizes of one layer, from the model's config."""
    c = _mc.load(config)
    if c.mla:
        # DeepSeek-V3: MLA's rope part (qk_rope_head_dim) over all q heads and one shared
        # k_pe head, interleaved (vLLM runs it with is_neox_style=False); its norms of the
        # compressed q and kv. Its YaRN scaling changes only the cache's values, which the
        # work does not depend on: the cache here is unscaled. MLPs: the first k layers
        # dense; the others top-k routed experts a token (one activation over the tokens x
        # top-k rows, as a fused MoE does it) and the shared expert(s).
        m, e = c.mla, c.moe
        mlps = (("dense_mlp", c.intermediate, 1), ("routed_experts", e.inter, e.topk)) + \
            ((("shared_expert", e.inter * e.shared, 1),) if e.shared else ())
        return StepSizes(name, hidden=c.hidden, rms_eps=c.rms_eps, mlps=mlps,
                         other_norms=(("q_a_norm", m.q_lora_rank, 1), ("kv_a_norm", m.kv_lora_rank, 1)),
                         q_heads=c.q_heads, k_heads=1, head_dim=m.qk_rope_head_dim, rotary_dim=m.qk_rope_head_dim,
                         rope_style="gptj", rope_theta=int(c.rope_theta), rope_scaling="none",
                         max_position=c.max_position, vocab=c.vocab)
    # Qwen3: RMSNorm of every q and k head before RoPE
    norms = (("q_norm", c.head_dim, c.q_heads), ("k_norm", c.head_dim, c.kv_heads)) if c.qk_norm else ()
    return StepSizes(name, hidden=c.hidden, rms_eps=c.rms_eps, mlps=(("mlp", c.intermediate, 1),),
                     other_norms=norms, q_heads=c.q_heads, k_heads=c.kv_heads, head_dim=c.head_dim,
                     rotary_dim=c.head_dim, rope_style="neox", rope_theta=int(c.rope_theta),
                     rope_scaling="llama3" if c.rope_scaling == "llama3" else "none",
                     max_position=c.max_position, vocab=c.vocab)


STEP_SIZES = {s.name: s for s in (
    _step_sizes("llama3.1-8b", "llama-3.1-8b"), _step_sizes("llama3.1-70b", "llama-3.1-70b"),
    _step_sizes("qwen3-32b", "qwen3-32b"), _step_sizes("deepseek-v3", "deepseek-v3"),
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

VOCAB = {"llama3-8b": LLAMA3_8B.vocab, "llama3-70b": LLAMA3_70B.vocab,
         **{n: _mc.load(n).vocab for n in ("qwen3-32b", "deepseek-v3")}}

def _mla_linears(name: str) -> dict:
    """DeepSeek-V3's linear layers (N, K): MLA's projections, the dense and the expert MLPs."""
    c = _mc.load(name)
    m, h, e = c.mla, c.q_heads, c.moe
    return {"q_a": (m.q_lora_rank, c.hidden), "kv_a": (m.kv_lora_rank + m.qk_rope_head_dim, c.hidden),
            "q_b": (h * (m.qk_nope_head_dim + m.qk_rope_head_dim), m.q_lora_rank),
            "kv_b": (h * (m.qk_nope_head_dim + m.v_head_dim), m.kv_lora_rank), "o": (c.hidden, h * m.v_head_dim),
            "dense_gate_up": (2 * c.intermediate, c.hidden), "dense_down": (c.hidden, c.intermediate),
            "expert_gate_up": (2 * e.inter, c.hidden), "expert_down": (c.hidden, e.inter)}


# The linear layers of one block as (N, K) of y = x @ W^T, W [N, K], for the models that ship
# fp8 weights with 128x128 block scales (DeepSeek-V3; Qwen3-32B-FP8) or are served that way.
BLOCK_FP8_LINEARS = {"deepseek-v3": _mla_linears("deepseek-v3"),
                     "qwen3-32b": _model("qwen3-32b", "qwen3-32b").projections()}
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


def _moe_model(name: str) -> MoEModel:
    c = _mc.load(name)
    e = c.moe
    return MoEModel(name, experts=e.experts, topk=e.topk, hidden=c.hidden, inter=e.inter, shared=e.shared,
                    rule=e.rule, n_group=e.n_group, topk_group=e.topk_group, scale=e.scale, renorm=e.renorm)


# Mixtral-8x7B, Qwen3-30B-A3B (norm_topk_prob), DeepSeek-V3 (256 routed experts, 1 shared,
# grouped sigmoid routing with e_score_correction_bias), gpt-oss-120b (softmax over the top-4
# logits = top-4 of the softmax, renormalised; its clamped SwiGLU with biases is measured as
# plain silu·mul): model_configs/*.json, as kernelmark.suites.model_config reads them.
MOE_MODELS = {m.name: m for m in map(_moe_model, ("mixtral-8x7b", "qwen3-30b-a3b", "deepseek-v3", "gpt-oss-120b"))}

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
