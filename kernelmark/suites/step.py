"""Every kernel of one decode step and of one prefill chunk of a model, as data.

A step is a list of ``Component``: (op, shape, dtype, count per step). Decode at batch B:
B sequences each get one token, each with ``context`` tokens of KV cache. Prefill: a chunk
of T tokens made of T // context sequences of ``context`` tokens; its components carry
``per`` = T (their time covers T prompt tokens). Everything is on one of ``tp`` GPUs:
column-parallel layers (qkv, gate_up, q_b, lm_head) split N, row-parallel ones (o, down)
split K, attention splits whole heads, experts split their intermediate size; each layer
then needs two all-reduces of the hidden state (after o and after the MLP).

Per layer of a standard decoder (Llama, Qwen, Mixtral, gpt-oss):

    norm (fused with the residual add, except the very first) · qkv GEMM · [Qwen3: q/k head
    norms] · RoPE on q, k · KV append · paged decode attention · o GEMM · [all-reduce] ·
    fused add+norm · MLP: gate_up GEMM, silu·mul, down GEMM  |  MoE: router GEMM, route,
    align, fused experts (shared expert inside) · [all-reduce]

plus embedding before the layers and final fused add+norm, lm_head GEMM and sampling after.
DeepSeek-V3 (MLA, absorbed weights as decode engines run it): q_a GEMM, q_a norm, q_b GEMM,
kv_a GEMM, kv_a norm, RoPE of the 64 rope dims, latent-cache append (576 a token), q_nope ·
W_UK (one bmm over the heads, [h,B,128]x[h,128,512]), MLA decode attention, · W_UV (one bmm,
[h,B,512]x[h,512,128]), o GEMM; its first ``first_k_dense_replace`` layers have a dense MLP.

A component whose op kernelmark does not have (MLA prefill attention) has ``op = None`` and is
always reported missing, never guessed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from kernelmark.ops.registry import get_op
from kernelmark.suites.model_config import ModelConfig

DTYPES = ("bf16", "fp16", "fp32", "fp8")
PAGE_SIZE = 16
MLA_PAGE_SIZE = 64
# Shape parameters a roll-up lets vary: they change where data lives, not the work.
FREE = {"kv_append": ("num_blocks", "page_size", "layout"), "paged_decode_attention": ("page_size",),
        "mla_decode_attention": ("page_size",)}


@dataclass(frozen=True)
class Component:
    name: str               # e.g. "qkv", "attention", "all_reduce (after o)"
    family: str             # for the breakdown: gemm, attention, norm, rope, kv_cache, activation, moe, ...
    op: Optional[str]       # None: kernelmark has no op for it (always missing)
    shape: dict = field(default_factory=dict)
    dtype: str = "bf16"
    count: float = 1        # times per step (layers it appears in)
    per: float = 1          # tokens the time covers (prefill chunk); 1 for decode
    required: bool = True

    @property
    def fixed(self) -> dict:
        """The shape parameters a measured record must equal."""
        free = FREE.get(self.op, ())
        return {k: v for k, v in self.shape.items() if k not in free}

    def key(self) -> tuple:
        return (self.op, self.dtype, tuple(sorted(self.shape.items())))


def check(cfg: ModelConfig, batch: int, context: int, dtype: str, tp: int) -> None:
    """ValueError naming the option (as `kernelmark model` spells it) that cannot be used."""
    for opt, v in (("--batch", batch), ("--context", context), ("--tp", tp)):
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise ValueError(f"{opt} must be a positive integer (got {v!r})")
    if dtype not in DTYPES:
        raise ValueError(f"--dtype {dtype}: use one of {', '.join(DTYPES)}")
    heads = [(cfg.q_heads, "query")] + ([] if cfg.mla else [(cfg.kv_heads, "KV")])
    inters = [cfg.intermediate] + ([cfg.moe.inter] if cfg.moe else [])
    ok = [d for d in range(1, min(n for n, _ in heads) + 1)
          if all(n % d == 0 for n, _ in heads) and all(i % d == 0 for i in inters)]
    use = f"; use {', '.join(map(str, ok[:-1]))} or {ok[-1]}" if len(ok) > 1 else "; use 1"
    split = [f"{n} {what} heads" for n, what in heads if n % tp]
    if split:
        raise ValueError(f"--tp {tp}: {cfg.name}'s {' and '.join(split)} do not split evenly over {tp} GPUs "
                         f"(tensor parallelism gives each GPU whole heads){use}")
    if any(i % tp for i in inters):
        raise ValueError(f"--tp {tp}: {cfg.name}'s intermediate sizes {inters} do not split evenly over {tp} GPUs"
                         + use)


def _dt(op: str, want: str, fallback: str = "bf16") -> str:
    """The dtype the op is measured in: the step's, or (an op that has no such dtype, like
    moe_align's integer work) the op's own."""
    have = get_op(op).dtypes
    return want if have is None or want in have else (fallback if fallback in have else have[0])


class _Builder:
    def __init__(self, cfg: ModelConfig, tokens: int, dtype: str, tp: int, per: int):
        self.cfg, self.t, self.tp, self.per = cfg, tokens, tp, per
        self.fp8 = dtype == "fp8"
        self.act = "bf16" if self.fp8 else dtype
        self.out: list = []

    def add(self, name, family, op, shape, count, dtype=None, required=True):
        if count <= 0:
            return
        dt = dtype or (_dt(op, self.act) if op else self.act)
        self.out.append(Component(name, family, op, dict(shape), dt, count, self.per, required))

    def linear(self, name, m, n, k, count):
        """y = x @ W^T with W [n, k]; fp8: block-scaled GEMM after quantising x per 128 columns."""
        if self.fp8 and n % 128 == 0 and k % 128 == 0:
            self.add(f"{name} (quantise x)", "quant", "fp8_group_quant", {"tokens": m, "hidden": k, "group": 128},
                     count)
            self.add(name, "gemm", "gemm_fp8_blockwise", {"m": m, "n": n, "k": k}, count, dtype="fp8_e4m3")
        else:
            self.add(name, "gemm", "gemm", {"m": m, "n": n, "k": k, "layout": "nt"}, count)

    def norm(self, name, tokens, hidden, count, fused=False):
        self.add(name, "norm", "fused_add_rmsnorm" if fused else "rmsnorm",
                 {"tokens": tokens, "hidden": hidden, "eps": self.cfg.rms_eps}, count)


def _rope(b: _Builder, q_heads, k_heads, head_dim, style, count):
    c = b.cfg
    b.add("rope", "rope", "rope", {"tokens": b.t, "q_heads": q_heads, "kv_heads": k_heads, "head_dim": head_dim,
                                   "rotary_dim": head_dim, "style": style, "theta": int(c.rope_theta),
                                   # YaRN / linear scaling change only the cache's values, not the work
                                   "scaling": "llama3" if c.rope_scaling == "llama3" else "none",
                                   "max_position": c.max_position}, count)


def _attention(b: _Builder, decode: bool, context: int, seqs: int):
    c, tp, t, L = b.cfg, b.tp, b.t, b.cfg.layers
    qh, kvh, hd = c.q_heads // tp, max(1, c.kv_heads // tp), c.head_dim
    b.linear("qkv", t, (qh + 2 * kvh) * hd, c.hidden, L)
    if c.qk_norm:
        b.norm("q_norm (per head)", t * qh, hd, L)
        b.norm("k_norm (per head)", t * kvh, hd, L)
    _rope(b, qh, kvh, hd, "neox", L)
    b.add("kv_append", "kv_cache", "kv_append",
          {"tokens": t, "seq_tokens": 1 if decode else context, "kv_heads": kvh, "head_dim": hd,
           "page_size": PAGE_SIZE, "num_blocks": _blocks(seqs, context, PAGE_SIZE), "layout": "NHD", "padding": 0}, L)
    # gpt-oss: half its layers attend only within a 128-token window (Mistral-7B-v0.1: all, 4096)
    groups = [(L - c.sliding_layers, context)]
    if c.sliding_layers:
        groups.append((c.sliding_layers, min(context, c.sliding_window)))
    for n, ctx in groups:
        name = "attention" + (f" (window {ctx})" if ctx != context else "")
        if decode:
            b.add(name, "attention", "paged_decode_attention",
                  {"batch": t, "context": ctx, "q_heads": qh, "kv_heads": kvh, "head_dim": hd,
                   "page_size": PAGE_SIZE, "ragged": 0}, n)
        elif ctx == context:
            b.add(name, "attention", "prefill_attention",
                  {"batch": seqs, "seq": ctx, "q_heads": qh, "kv_heads": kvh, "head_dim": hd, "causal": 1}, n)
        else:
            # a window of w: each query attends w keys (fewer only in the first w), the work of
            # full (not causal) attention within w-token blocks; context / w of those a sequence
            # (a causal block would attend w / 2 on average: half the work)
            b.add(name, "attention", "prefill_attention",
                  {"batch": seqs, "seq": ctx, "q_heads": qh, "kv_heads": kvh, "head_dim": hd, "causal": 0},
                  n * context / ctx)
    b.linear("o", t, c.hidden, qh * hd, L)


def _mla(b: _Builder, decode: bool, context: int, seqs: int):
    c, m, tp, t, L = b.cfg, b.cfg.mla, b.tp, b.t, b.cfg.layers
    h = c.q_heads // tp
    rope = m.qk_rope_head_dim
    b.linear("q_a", t, m.q_lora_rank, c.hidden, L)
    b.norm("q_a_norm", t, m.q_lora_rank, L)
    b.linear("q_b", t, h * (m.qk_nope_head_dim + rope), m.q_lora_rank, L)
    b.linear("kv_a", t, m.kv_lora_rank + rope, c.hidden, L)
    b.norm("kv_a_norm", t, m.kv_lora_rank, L)
    _rope(b, h, 1, rope, "gptj", L)
    b.add("kv_append (latent)", "kv_cache", "kv_append",
          {"tokens": t, "seq_tokens": 1 if decode else context, "kv_heads": 1, "head_dim": m.kv_lora_rank + rope,
           "page_size": PAGE_SIZE, "num_blocks": _blocks(seqs, context, PAGE_SIZE), "layout": "NHD", "padding": 0}, L)
    if decode:
        # The absorbed products are one torch.bmm over the heads a layer each, as vLLM and
        # SGLang run them ([h, B, 128] x [h, 128, 512], then [h, B, 512] x [h, 512, 128]), not
        # h GEMMs: per-head GEMMs would count 2·h·L launches that never happen. Family
        # "attention": with W_UK and W_UV absorbed they are attention's own matrix work (the
        # K and V up-projections of MLA moved onto the query and the output), not a linear
        # layer of the model; a reader of the breakdown finds them beside the attention they
        # feed. Their dtype is the activations' (bf16 in an fp8 step: engines dequantise the
        # absorbed weights at load and run these products in bf16).
        bmm = {"batch": h, "m": t, "layout": "nt"}
        b.add("q_nope·W_UK (bmm over heads)", "attention", "bmm",
              {**bmm, "n": m.kv_lora_rank, "k": m.qk_nope_head_dim}, L)
        b.add("attention (MLA)", "attention", "mla_decode_attention",
              {"batch": t, "context": context, "heads": h, "page_size": MLA_PAGE_SIZE, "ragged": 0}, L)
        b.add("·W_UV (bmm over heads)", "attention", "bmm", {**bmm, "n": m.v_head_dim, "k": m.kv_lora_rank}, L)
    else:
        # prefill decompresses the latent (kv_b) and runs MHA with q/k 192 and v 128 wide:
        # no kernelmark op has that attention, so it is named, never guessed.
        b.linear("kv_b", t, h * (m.qk_nope_head_dim + m.v_head_dim), m.kv_lora_rank, L)
        b.add("attention (MLA prefill, q/k 192, v 128)", "attention", None,
              {"batch": seqs, "seq": context, "heads": h}, L)
    b.linear("o", t, c.hidden, h * m.v_head_dim, L)


def _mlp(b: _Builder, inter: int, count: int, name: str = "mlp"):
    i = inter // b.tp
    b.linear(f"{name} gate_up", b.t, 2 * i, b.cfg.hidden, count)
    b.add(f"{name} silu·mul", "activation", "silu_and_mul", {"tokens": b.t, "intermediate": i}, count)
    b.linear(f"{name} down", b.t, b.cfg.hidden, i, count)


def _moe(b: _Builder, count: int):
    c, e = b.cfg, b.cfg.moe
    b.add("router", "moe", "gemm", {"m": b.t, "n": e.experts, "k": c.hidden, "layout": "nt"}, count)
    b.add("route (top-k)", "moe", "moe_route",
          {"tokens": b.t, "experts": e.experts, "topk": e.topk, "rule": e.rule, "renorm": e.renorm,
           "n_group": e.n_group, "topk_group": e.topk_group, "scale": e.scale}, count)
    b.add("align", "moe", "moe_align", {"tokens": b.t, "experts": e.experts + e.shared, "topk": e.topk + e.shared,
                                        "block": 16}, count)
    # fp8 block scales need hidden and inter multiples of 128 (gpt-oss's 2880 is not): bf16 then
    blockable = c.hidden % 128 == 0 and (e.inter // b.tp) % 128 == 0
    dt = "fp8_e4m3" if b.fp8 and blockable else _dt("fused_moe", b.act)
    b.add("experts" + (" + shared expert" if e.shared else ""), "moe", "fused_moe",
          {"tokens": b.t, "experts": e.experts, "topk": e.topk, "hidden": c.hidden, "inter": e.inter // b.tp,
           "shared": e.shared}, count, dtype=dt)


def _blocks(seqs: int, context: int, page: int) -> int:
    # room for every sequence's context plus the appended tokens (and one spare page each)
    return max(16, seqs * (-(-(context + 1) // page) + 1))


def components(cfg: ModelConfig, batch: int, context: int, dtype: str = "bf16", tp: int = 1,
               kind: str = "decode", prefill_tokens: Optional[int] = None) -> list:
    """Every kernel of one decode step at ``batch`` (kind "decode") or one prefill chunk of
    ``prefill_tokens`` (default ``batch · context``) tokens (kind "prefill")."""
    check(cfg, batch, context, dtype, tp)
    decode = kind == "decode"
    if kind not in ("decode", "prefill"):
        raise ValueError(f"kind must be decode or prefill, got {kind!r}")
    if decode:
        tokens, seqs, per = batch, batch, 1
    else:
        tokens = prefill_tokens or batch * context
        if tokens % context:
            raise ValueError(f"--prefill-tokens {tokens} is not a whole number of {context}-token sequences")
        seqs, per = tokens // context, tokens
    b = _Builder(cfg, tokens, dtype, tp, per)
    L = cfg.layers
    b.add("embedding", "embedding", "embedding", {"tokens": tokens, "vocab": cfg.vocab // tp, "hidden": cfg.hidden}, 1)
    b.norm("input norm (layer 1)", tokens, cfg.hidden, 1)
    # every other norm of the hidden state adds the residual first: 2 a layer, less the first, plus the final one
    b.norm("add + norm", tokens, cfg.hidden, 2 * L, fused=True)
    (_mla if cfg.mla else _attention)(b, decode, context, seqs)
    if cfg.moe:
        dense = min(cfg.moe.dense_layers, L)
        if dense:
            _mlp(b, cfg.intermediate, dense, "dense mlp")
        _moe(b, L - dense)
    else:
        _mlp(b, cfg.intermediate, L)
    if tp > 1:
        nbytes = tokens * cfg.hidden * (4 if b.act == "fp32" else 2)
        b.add("all_reduce (after o and after the MLP)", "communication", "all_reduce", {"bytes": nbytes}, 2 * L,
              dtype="fp32" if b.act == "fp32" else "bf16")
    rows = tokens if decode else seqs      # prefill: only each sequence's last token is sampled
    b.linear("lm_head", rows, cfg.vocab // tp, cfg.hidden, 1)
    b.add("sampling (argmax)", "sampling", "argmax_sampling", {"batch": rows, "vocab": cfg.vocab}, 1,
          dtype=_dt("argmax_sampling", b.act, "fp32"))
    return b.out


def distinct_cases(comps: list) -> list:
    """(op, dtype, shape) of each distinct case, in first-seen order (ops kernelmark has)."""
    seen, out = set(), []
    for c in comps:
        if c.op is None or c.key() in seen:
            continue
        seen.add(c.key())
        out.append((c.op, c.dtype, dict(c.shape)))
    return out


def _toml_value(v) -> str:
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(v) if isinstance(v, float) else str(v)


def suite_toml(name: str, description: str, cases: list, budget_s: float = 0.5) -> str:
    """A suite file measuring exactly ``cases`` [(op, dtype, shape)], one [[case]] each."""
    lines = [f"name = {_toml_value(name)}", f"description = {_toml_value(description)}", "",
             "[defaults]", f"budget_s = {budget_s!r}", ""]
    for op, dt, shape in cases:
        inner = ", ".join(f"{k} = {_toml_value(v)}" for k, v in shape.items())
        lines += ["[[case]]", f"op = {_toml_value(op)}", f"dtypes = [{_toml_value(dt)}]", f"shapes = [{{{inner}}}]", ""]
    return "\n".join(lines)
