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
