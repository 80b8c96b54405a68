"""A model from its Hugging Face ``config.json`` (standard library json; no download, no weights).

Only the numbers a decode step's kernels depend on are read. The architecture comes from
``architectures[0]`` (or ``model_type``); an unknown one, or a field the architecture needs
that the file lacks, is a ``ConfigError`` naming it. Our own configs (numbers only) for the
models people ask about are in ``model_configs/``; ``load(name_or_path)`` takes either.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

CONFIG_DIR = Path(__file__).resolve().parent / "model_configs"

# architectures[0] -> family; model_type as the fallback when architectures is absent.
ARCHITECTURES = {
    "LlamaForCausalLM": "dense", "MistralForCausalLM": "dense", "Qwen2ForCausalLM": "dense",
    "Qwen3ForCausalLM": "qwen3", "Qwen3MoeForCausalLM": "qwen3_moe", "MixtralForCausalLM": "mixtral",
    "DeepseekV3ForCausalLM": "deepseek_v3", "GptOssForCausalLM": "gpt_oss",
}
MODEL_TYPES = {"llama": "dense", "mistral": "dense", "qwen2": "dense", "qwen3": "qwen3",
               "qwen3_moe": "qwen3_moe", "mixtral": "mixtral", "deepseek_v3": "deepseek_v3", "gpt_oss": "gpt_oss"}


class ConfigError(ValueError):
    """A config that cannot be used; the message names the file and the field."""


@dataclass(frozen=True)
class MoE:
    experts: int            # routed experts
    topk: int
    inter: int              # each expert's intermediate size
    shared: int = 0         # shared experts (same inter size)
    rule: str = "softmax"   # moe_route rule
    renorm: int = 1
    n_group: int = 1
    topk_group: int = 1
    scale: str = "1"        # routed_scaling_factor, as moe_route spells it
    dense_layers: int = 0   # the first k layers keep a dense MLP (first_k_dense_replace)


@dataclass(frozen=True)
class MLA:
    q_lora_rank: int
    kv_lora_rank: int
    qk_rope_head_dim: int
    qk_nope_head_dim: int
    v_head_dim: int


@dataclass(frozen=True)
class ModelConfig:
    name: str
    family: str             # dense, qwen3, qwen3_moe, mixtral, deepseek_v3, gpt_oss
    layers: int
    hidden: int
    intermediate: int
    q_heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    rms_eps: float
    rope_theta: float
    rope_scaling: str       # none, llama3, yarn
    max_position: int
    tie_embeddings: bool
    qk_norm: bool = False   # Qwen3: RMSNorm over every q and k head before RoPE
    moe: Optional[MoE] = None
    mla: Optional[MLA] = None
    sliding_window: int = 0     # gpt-oss: the window of its sliding layers
    sliding_layers: int = 0     # how many layers attend only within it


def known() -> dict:
    """name -> path of the configs we ship."""
    return {p.stem: p for p in sorted(CONFIG_DIR.glob("*.json"))}


def load(name_or_path: str) -> ModelConfig:
    """A shipped config by name (llama-3.1-8b; dots and case as you like) or a config.json path."""
    p = Path(name_or_path)
    if p.suffix == ".json" or p.exists():
        if not p.is_file():
            raise ConfigError(f"{name_or_path}: no such config file")
        try:
            data = json.loads(p.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ConfigError(f"{name_or_path}: not a readable JSON config ({e})") from None
        return parse(data, p.stem, where=str(p))
    shipped = known()
    key = name_or_path.lower()
    if key not in shipped:
        # llama3.2-1b for llama-3.2-1b: dashes are optional
        alias = {k.replace("-", ""): k for k in shipped}
        key = alias.get(key.replace("-", ""), key)
    if key not in shipped:
        raise ConfigError(f"unknown model {name_or_path!r}; known: {', '.join(shipped)} (or --config PATH)")
    return parse(json.loads(shipped[key].read_text()), key, where=str(shipped[key]))


def _get(data: dict, where: str, field: str, kind=int, default=None):
    v = data.get(field, default)
    if v is None:
        raise ConfigError(f"{where}: missing field {field!r}")
    if kind is int:
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise ConfigError(f"{where}: {field} must be a positive integer, got {v!r}")
    elif kind is float:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            raise ConfigError(f"{where}: {field} must be a positive number, got {v!r}")
        v = float(v)
    return v


def _family(data: dict, where: str) -> str:
    archs = data.get("architectures") or []
    if archs:
        fam = ARCHITECTURES.get(archs[0])
        if fam is None:
            raise ConfigError(f"{where}: unknown architecture {archs[0]!r}; known: {', '.join(ARCHITECTURES)}")
        return fam
    mt = data.get("model_type")
    if mt is None:
        raise ConfigError(f"{where}: missing field 'architectures' (or 'model_type')")
    if mt not in MODEL_TYPES:
        raise ConfigError(f"{where}: unknown model_type {mt!r}; known: {', '.join(MODEL_TYPES)}")
    return MODEL_TYPES[mt]


def _rope_scaling(data: dict, where: str) -> str:
    rs = data.get("rope_scaling")
    if not rs:
        return "none"
    kind = rs.get("rope_type", rs.get("type"))
    if kind in ("llama3", "yarn", "linear", "dynamic", "default"):
        return "none" if kind == "default" else kind
    raise ConfigError(f"{where}: rope_scaling type {kind!r} is not one kernelmark knows (llama3, yarn, linear)")


def parse(data: dict, name: str, where: str = "config") -> ModelConfig:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: a config.json is a JSON object")
    fam = _family(data, where)
    g = lambda field, kind=int, default=None: _get(data, where, field, kind, default)  # noqa: E731
    hidden, heads = g("hidden_size"), g("num_attention_heads")
    common = dict(
        name=name, family=fam, layers=g("num_hidden_layers"), hidden=hidden,
        intermediate=g("intermediate_size"), q_heads=heads,
        kv_heads=g("num_key_value_heads", default=heads),
        head_dim=g("head_dim", default=hidden // heads if hidden % heads == 0 else None),
        vocab=g("vocab_size"), rms_eps=g("rms_norm_eps", float), rope_theta=g("rope_theta", float, 10000.0),
        rope_scaling=_rope_scaling(data, where), max_position=g("max_position_embeddings"),
        tie_embeddings=bool(data.get("tie_word_embeddings", False)), qk_norm=fam in ("qwen3", "qwen3_moe"),
    )
    if fam == "qwen3_moe":
        if data.get("mlp_only_layers") or data.get("decoder_sparse_step", 1) != 1:
            raise ConfigError(f"{where}: mlp_only_layers / decoder_sparse_step other than every layer MoE "
                              "are not supported")
        common["moe"] = MoE(g("num_experts"), g("num_experts_per_tok"), g("moe_intermediate_size"),
                            renorm=int(bool(data.get("norm_topk_prob", True))))
    elif fam == "mixtral":
        common["moe"] = MoE(g("num_local_experts"), g("num_experts_per_tok"), common["intermediate"])
    elif fam == "gpt_oss":
        topk = data.get("num_experts_per_tok", data.get("experts_per_token"))
        if topk is None:
            raise ConfigError(f"{where}: missing field 'num_experts_per_tok' (or 'experts_per_token')")
        common["moe"] = MoE(g("num_local_experts"), _get({"k": topk}, where, "k"), common["intermediate"])
    elif fam == "deepseek_v3":
        if data.get("scoring_func", "sigmoid") != "sigmoid":
            raise ConfigError(f"{where}: scoring_func {data['scoring_func']!r}: only sigmoid (DeepSeek-V3) is supported")
        scale = g("routed_scaling_factor", float, 1.0)
        common["moe"] = MoE(g("n_routed_experts"), g("num_experts_per_tok"), g("moe_intermediate_size"),
                            shared=int(data.get("n_shared_experts") or 0), rule="sigmoid_grouped",
                            renorm=int(bool(data.get("norm_topk_prob", True))), n_group=g("n_group"),
                            topk_group=g("topk_group"), scale=f"{scale:g}",
                            dense_layers=int(data.get("first_k_dense_replace") or 0))
        common["mla"] = MLA(g("q_lora_rank"), g("kv_lora_rank"), g("qk_rope_head_dim"), g("qk_nope_head_dim"),
                            g("v_head_dim"))
        common["head_dim"] = common["mla"].qk_nope_head_dim + common["mla"].qk_rope_head_dim
    common["sliding_layers"] = _sliding_layers(data, where, common["layers"])
    if common["sliding_layers"]:
        common["sliding_window"] = g("sliding_window")
    return ModelConfig(**common)


def _sliding_layers(data: dict, where: str, layers: int) -> int:
    """How many layers attend only within ``sliding_window``, as transformers decides:
    ``layer_types`` where the config lists them (gpt-oss, newer configs); else Mistral and
    Mixtral slide in every layer when ``sliding_window`` is set (Mistral-7B-v0.1: 4096;
    v0.3 has null), and Qwen2/Qwen3 only with ``use_sliding_window``, from layer
    ``max_window_layers`` on."""
    types = data.get("layer_types")
    if types:
        if not isinstance(types, list) or len(types) != layers:
            raise ConfigError(f"{where}: layer_types must list one type for each of the {layers} layers")
        return sum(t == "sliding_attention" for t in types)
    if not data.get("sliding_window"):
        return 0
    arch = ((data.get("architectures") or [None])[0] or "") + " " + str(data.get("model_type", ""))
    if "Mistral" in arch or "Mixtral" in arch or "mistral" in arch or "mixtral" in arch:
        return layers
    if ("Qwen" in arch or "qwen" in arch) and data.get("use_sliding_window"):
        first = data.get("max_window_layers", 0)
        if isinstance(first, bool) or not isinstance(first, int) or first < 0:
            raise ConfigError(f"{where}: max_window_layers must be a non-negative integer, got {first!r}")
        return max(0, layers - first)
    return 0
