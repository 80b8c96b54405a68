"""Our own compact reference decoder: one model built from its ModelConfig, random weights,
eager torch, a paged KV cache already holding ``context`` tokens a sequence, one decode step
at a time. It exists to check the roll-up against reality: the roll-up is a sum of kernel
times (kernelmark.suites.step); a real step also pays for Python, views, launches and
whatever else runs between the kernels. Timing this decoder's step next to the kernel sum
makes that gap a number (`kernelmark model ... --measure --check-step`).

Every kernel goes through an op's own backend callable (``kernelmark.ops``: the function
the runner times), given the same kind of inputs the op makes for itself, so the step runs
the very code the roll-up's cases timed. ``backend_for(op, shape)`` says which backend (the
roll-up's pick); the default is each op's eager torch backend. Each call can be recorded as
(op, dtype, shape), the shape read off the tensors actually passed, so a test can hold the
decoder's calls against the step derivation's components: every call one component, none
counted twice.

One decode step (B sequences, one new token each, at position ``context - 1``; the cache
holds the ``context - 1`` before it, so attention reads ``context`` tokens):

    embedding · per layer: rmsnorm (first layer) or fused add+rmsnorm · qkv GEMM ·
    [Qwen3: q/k head norms] · RoPE · KV append · paged decode attention · o GEMM ·
    fused add+rmsnorm · gate_up GEMM · silu·mul · down GEMM · then final fused add+rmsnorm ·
    lm_head GEMM · argmax.

Repeated steps write the same cache slots and read the same positions, so every step does
the same work (what timing needs). Dense GQA models (Llama, Mistral, Qwen2, Qwen3) and
softmax-routed MoE ones (Mixtral, Qwen3-MoE: router GEMM, top-k routing, align, fused
experts in the MLP's place; experts in bf16 for an fp32 model, as fused_moe is measured).
MLA (DeepSeek-V3) and sliding-window layers (gpt-oss) are refused with a
``DecoderUnsupported`` naming the architecture.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from kernelmark import dtypes
from kernelmark.ops import rope as rope_op
from kernelmark.ops.registry import get_op
from kernelmark.suites import step
from kernelmark.suites.model_config import ModelConfig

PAGE_SIZE = 16
DTYPES = ("fp32", "bf16", "fp16")
# The op's eager torch backend, used where no other is asked for.
DEFAULT_BACKEND = {"paged_decode_attention": "torch-gather-sdpa"}
WEIGHT_STD = 0.02       # small init: activations stay finite through any number of layers


class DecoderUnsupported(ValueError):
    """The reference decoder cannot build this model (the message says what and why)."""


@dataclass(frozen=True)
class Call:
    op: str
    dtype: str
    shape: dict


def supported(cfg: ModelConfig) -> Optional[str]:
    """Why the reference decoder cannot build ``cfg``, or None."""
    if cfg.mla is not None:
        return f"{cfg.name} uses multi-head latent attention (MLA)"
    if cfg.moe is not None and cfg.moe.rule != "softmax":
        return f"{cfg.name} routes its experts by {cfg.moe.rule}"
    if cfg.sliding_layers:
        return f"{cfg.name} has sliding-window layers"
    return None


def expert_dtype(dtype: str) -> str:
    """The dtype the experts run in: the model's, or the one fused_moe is measured in (bf16
    for an fp32 model), as the step derivation has it."""
    return step._dt("fused_moe", dtype)


def dense_layers(cfg: ModelConfig) -> int:
    return cfg.layers if cfg.moe is None else min(cfg.moe.dense_layers, cfg.layers)


def weight_bytes(cfg: ModelConfig, dtype: str) -> int:
    """Bytes of the weights the decoder allocates (tied embeddings counted once)."""
    h, i, hd, size = cfg.hidden, cfg.intermediate, cfg.head_dim, dtypes.itemsize(dtype)
    attn = h * (cfg.q_heads + 2 * cfg.kv_heads) * hd + cfg.q_heads * hd * h + 2 * h + (2 * hd if cfg.qk_norm else 0)
    dense = dense_layers(cfg)
    n = cfg.layers * attn + dense * 3 * h * i + cfg.vocab * h * (1 if cfg.tie_embeddings else 2) + h
    out = n * size
    if cfg.moe:
        e = cfg.moe
        out += (cfg.layers - dense) * (e.experts * h * size + (e.experts + e.shared) * 3 * h * e.inter
                                       * dtypes.itemsize(expert_dtype(dtype)))
    return out


def _dtype_name(t: torch.Tensor) -> str:
    for name in DTYPES:
        if dtypes.torch_dtype(name) == t.dtype:
            return name
    raise DecoderUnsupported(f"the reference decoder has no name for {t.dtype}")


class ReferenceDecoder:
    def __init__(self, cfg: ModelConfig, batch: int, context: int, dtype: str, device="cpu",
                 backend_for: Optional[Callable[[str, str, dict], Optional[str]]] = None, seed: int = 0):
        why = supported(cfg)
        if why:
            raise DecoderUnsupported(f"the reference decoder does not support this architecture: {why}; "
                                     "it builds dense GQA decoders (Llama, Mistral, Qwen2, Qwen3) and softmax-routed "
                                     "MoE ones (Mixtral, Qwen3-MoE)")
        if dtype not in DTYPES:
            raise DecoderUnsupported(f"the reference decoder runs {', '.join(DTYPES)}, not {dtype}")
        self.cfg, self.dtype = cfg, dtype
        self.device = torch.device(device)
        self.gen = torch.Generator(device=self.device).manual_seed(seed)
        self._weights()
        self.resize(batch, context, backend_for)

    def resize(self, batch: int, context: int, backend_for=None) -> None:
        """Another batch and context (a new cache) on the same weights; ``backend_for(op, dtype,
        shape)`` names the backend of each case (None: each op's eager torch)."""
        for name, v in (("batch", batch), ("context", context)):
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ValueError(f"{name} must be a positive integer (got {v!r})")
        if context > self.cfg.max_position:
            raise ValueError(f"context {context} is beyond {self.cfg.name}'s {self.cfg.max_position} positions")
        self.batch, self.context = batch, context
        self.backend_for = backend_for or (lambda op, dtype, shape: None)
        self.calls: Optional[list] = None       # a list to record into, or None
        self.op_times: Optional[list] = None    # a list of (key, ns) to time each call into, or None
        self.kept: Optional[dict] = None        # (op, shape, dtype) -> the inputs of its first call
        self.backends_used: dict = {}           # op -> backend names it ran
        self.substituted: dict = {}             # "op backend" asked for -> the backend run instead
        self._fns: dict = {}
        self.caches = []                        # free the old cache before making the new one
        self._cache()

    # ------------------------------------------------------------ weights and cache

    def _randn(self, *shape, std=WEIGHT_STD):
        return torch.empty(shape, dtype=dtypes.torch_dtype(self.dtype), device=self.device).normal_(
            0.0, std, generator=self.gen)

    def _weights(self) -> None:
        c, dev, dt = self.cfg, self.device, dtypes.torch_dtype(self.dtype)

        def ones(n):
            return torch.ones(n, dtype=dt, device=dev)

        h, hd, qh, kvh, w = c.hidden, c.head_dim, c.q_heads, c.kv_heads, self._randn
        self.embed = w(c.vocab, h)
        self.lm_head = self.embed if c.tie_embeddings else w(c.vocab, h)
        self.final_norm = ones(h)
        self.layers = []
        for n in range(c.layers):
            layer = {"in_norm": ones(h), "post_norm": ones(h), "qkv": w((qh + 2 * kvh) * hd, h), "o": w(h, qh * hd)}
            if n < dense_layers(c):
                layer.update(gate_up=w(2 * c.intermediate, h), down=w(h, c.intermediate))
            else:
                e, edt = c.moe, dtypes.torch_dtype(expert_dtype(self.dtype))
                # w1 [E, 2I, H] (gate rows, then up rows), w2 [E, H, I]; a shared expert is expert E
                layer.update(router=w(e.experts, h), w1=w(e.experts + e.shared, 2 * e.inter, h).to(edt),
                             w2=w(e.experts + e.shared, h, e.inter).to(edt))
            if c.qk_norm:
                layer["q_norm"], layer["k_norm"] = ones(hd), ones(hd)
            self.layers.append(layer)
        self.cos_sin_cache = rope_op.cos_sin_cache(c.max_position, hd, c.rope_theta, self._scaling(), dev)
        if c.moe:
            self.route_bias = torch.zeros(c.moe.experts, dtype=torch.float32, device=dev)  # softmax: unused

    def _cache(self) -> None:
        c, dev = self.cfg, self.device
        pages = -(-self.context // PAGE_SIZE)
        num_blocks = self.batch * pages + 1         # one spare page: block 0 is never a sequence's
        # the context already in the cache: unit-variance keys and values, a (k, v) pair a layer
        self.caches = [tuple(self._randn(num_blocks, PAGE_SIZE, c.kv_heads, c.head_dim, std=1.0) for _ in "kv")
                       for _ in self.layers]
        # sequence i owns blocks 1 + i·pages ... ; its new token is at position context - 1
        table = 1 + torch.arange(self.batch * pages, device=dev, dtype=torch.int32).view(self.batch, pages)
        pos = self.context - 1
        self.block_table = table
        self.context_lens = torch.full((self.batch,), self.context, dtype=torch.int32, device=dev)
        self.positions = torch.full((self.batch,), pos, dtype=torch.long, device=dev)
        self.slot_mapping = (table[:, pos // PAGE_SIZE].long() * PAGE_SIZE + pos % PAGE_SIZE)
        self.ids = torch.randint(0, c.vocab, (self.batch,), generator=self.gen, device=dev)

    def _scaling(self) -> str:
        # YaRN and linear scaling change only the cache's values, not the work (as the step does)
        return "llama3" if self.cfg.rope_scaling == "llama3" else "none"

    # ------------------------------------------------------------ one op call

    def _run(self, op: str, shape: dict, dtype: str, inputs: dict):
        key = (op, tuple(sorted(shape.items())), dtype)
        if self.calls is not None:
            self.calls.append(Call(op, dtype, dict(shape)))
            if self.kept is not None and key not in self.kept:
                self.kept[key] = inputs
        fn = self._fns.get(key)
        if fn is None:
            want = self.backend_for(op, dtype, shape)
            b = self._backend(op, want)
            fn = self._fns[key] = b.run
            self.backends_used.setdefault(op, set()).add(b.name)
            if want and want != b.name:
                self.substituted[f"{op} {want}"] = b.name
        if self.op_times is None:
            return fn(inputs)
        t0 = time.perf_counter_ns()
        out = fn(inputs)
        self.op_times.append((key, time.perf_counter_ns() - t0))
        return out

    def _backend(self, op: str, name: Optional[str]):
        """The backend ``name`` of ``op`` where this step can run it as the runner did, else the
        op's eager torch one: a name the op does not know (a run of another version), a Triton
        kernel on a CPU (the interpreter: checked there, never timed), a device it does not run
        on, a library missing, or per-call set-up (``prepare``, outside the runner's timing)."""
        o = get_op(op)
        default = o.backend(DEFAULT_BACKEND.get(op, "torch"))
        b = next((x for x in o.backends if x.name == name), None)
        kind = "cpu" if self.device.type == "cpu" else ("rocm" if getattr(torch.version, "hip", None) else "cuda")
        if b is None or b.prepare is not None or (b.triton and kind == "cpu") or \
                (b.devices is not None and kind not in b.devices) or b.available() is not None:
            return default
        return b

    def _aligns_inside(self, experts: dict, dtype: str) -> bool:
        """Whether the fused_moe backend this step runs for ``experts`` aligns the tokens itself
        (``covers`` moe_align); decided once a shape, as ``_run`` picks its backends, so the
        timed step does not look it up every layer."""
        key = ("covers moe_align", tuple(sorted(experts.items())), dtype)
        if key not in self._fns:
            b = self._backend("fused_moe", self.backend_for("fused_moe", dtype, experts))
            self._fns[key] = "moe_align" in b.covers
        return self._fns[key]

    def linear(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """x @ W^T, W [n, k]: the gemm op's nt layout (b is the [k, n] view of W)."""
        shape = {"m": x.shape[0], "n": weight.shape[0], "k": weight.shape[1], "layout": "nt"}
        return self._run("gemm", shape, self.dtype, {"a": x, "b": weight.t(), "dtype": self.dtype})

    def rmsnorm(self, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        shape = {"tokens": x.shape[0], "hidden": x.shape[1], "eps": eps}
        return self._run("rmsnorm", shape, _dtype_name(x), {"x": x, "weight": weight, "eps": float(eps)})

    def add_rmsnorm(self, x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float):
        """residual += x in place; returns rmsnorm(residual)."""
        shape = {"tokens": x.shape[0], "hidden": x.shape[1], "eps": eps}
        y, _ = self._run("fused_add_rmsnorm", shape, _dtype_name(x),
                         {"x": x, "residual": residual, "weight": weight, "eps": float(eps)})
        return y

    # ------------------------------------------------------------ the step

    def _attention(self, layer: dict, cache: tuple, x: torch.Tensor) -> torch.Tensor:
        c, b = self.cfg, self.batch
        qh, kvh, hd = c.q_heads, c.kv_heads, c.head_dim
        qkv = self.linear(x, layer["qkv"])
        q, k, v = qkv.split([qh * hd, kvh * hd, kvh * hd], dim=-1)
        q, k, v = q.view(b, qh, hd), k.view(b, kvh, hd), v.view(b, kvh, hd)
        if c.qk_norm:
            q = self.rmsnorm(q.reshape(b * qh, hd), layer["q_norm"], c.rms_eps).view(b, qh, hd)
            k = self.rmsnorm(k.reshape(b * kvh, hd), layer["k_norm"], c.rms_eps).view(b, kvh, hd)
        self._run("rope", {"tokens": b, "q_heads": qh, "kv_heads": kvh, "head_dim": hd, "rotary_dim": hd,
                           "style": "neox", "theta": int(c.rope_theta), "scaling": self._scaling(),
                           "max_position": c.max_position}, _dtype_name(q),
                  {"q": q, "k": k, "positions": self.positions, "cos_sin_cache": self.cos_sin_cache,
                   "rotary_dim": hd, "neox": True})
        kc, vc = cache
        self._run("kv_append", {"tokens": b, "seq_tokens": 1, "kv_heads": kvh, "head_dim": hd,
                                "page_size": PAGE_SIZE, "num_blocks": kc.shape[0], "layout": "NHD", "padding": 0},
                  _dtype_name(k),
                  {"key": k, "value": v, "k_cache": kc, "v_cache": vc, "slot_mapping": self.slot_mapping,
                   "layout": "NHD", "page_size": PAGE_SIZE, "padding": 0})
        o = self._run("paged_decode_attention",
                      {"batch": b, "context": self.context, "q_heads": qh, "kv_heads": kvh, "head_dim": hd,
                       "page_size": PAGE_SIZE, "ragged": 0}, _dtype_name(q),
                      {"q": q, "k_cache": kc, "v_cache": vc, "block_table": self.block_table,
                       "context_lens": self.context_lens, "context_lens_host": [self.context] * b,
                       "max_context_len": self.context, "page_size": PAGE_SIZE, "ragged": False,
                       "scale": 1.0 / math.sqrt(hd), "dtype": self.dtype, "q_heads": qh, "kv_heads": kvh})
        return self.linear(o.reshape(b, qh * hd), layer["o"])

    def _mlp(self, layer: dict, x: torch.Tensor) -> torch.Tensor:
        gu = self.linear(x, layer["gate_up"])
        a = self._run("silu_and_mul", {"tokens": gu.shape[0], "intermediate": gu.shape[1] // 2},
                      _dtype_name(gu), {"x": gu})
        return self.linear(a, layer["down"])

    def _moe(self, layer: dict, x: torch.Tensor) -> torch.Tensor:
        """Router GEMM, top-k routing, the experts' layout (align), the fused experts."""
        e, t, h = self.cfg.moe, x.shape[0], x.shape[1]
        logits = self.linear(x, layer["router"])
        ids, weights = self._run("moe_route", {"tokens": t, "experts": e.experts, "topk": e.topk, "rule": e.rule,
                                               "renorm": e.renorm, "n_group": e.n_group, "topk_group": e.topk_group,
                                               "scale": e.scale}, _dtype_name(logits),
                                 {"logits": logits, "bias": self.route_bias, "topk": e.topk, "rule": e.rule,
                                  "renorm": bool(e.renorm), "n_group": e.n_group, "topk_group": e.topk_group,
                                  "scale": float(e.scale)})
        if e.shared:        # every token also goes to the shared expert (id E), weight 1
            ids = torch.cat([ids, torch.full((t, 1), e.experts, dtype=ids.dtype, device=ids.device)], dim=1)
            weights = torch.cat([weights, torch.ones(t, 1, dtype=weights.dtype, device=weights.device)], dim=1)
        n, k = e.experts + e.shared, e.topk + e.shared
        edt = expert_dtype(self.dtype)
        experts = {"tokens": t, "experts": e.experts, "topk": e.topk, "hidden": h, "inter": e.inter, "shared": e.shared}
        # its result feeds a grouped-GEMM kernel (the eager experts loop sorts for itself); a
        # fused_moe backend that aligns inside (``covers``) is not given a second align
        if not self._aligns_inside(experts, edt):
            self._run("moe_align", {"tokens": t, "experts": n, "topk": k, "block": 16},
                      step._dt("moe_align", self.dtype), {"topk_ids": ids, "experts": n, "block": 16})
        y = self._run("fused_moe", experts, edt,
                      {"x": x.to(dtypes.torch_dtype(edt)), "w1": layer["w1"], "w2": layer["w2"], "w1_scale": None,
                       "w2_scale": None, "topk_ids": ids, "topk_weights": weights, "dtype": edt})
        return y.to(x.dtype)

    @torch.inference_mode()
    def step(self) -> torch.Tensor:
        """One decode step: the next token of every sequence (greedy), [batch] int64."""
        c = self.cfg
        resid = self._run("embedding", {"tokens": self.batch, "vocab": self.embed.shape[0],
                                        "hidden": self.embed.shape[1]}, _dtype_name(self.embed),
                          {"ids": self.ids, "table": self.embed})
        x = self.rmsnorm(resid, self.layers[0]["in_norm"], c.rms_eps)
        for i, (layer, cache) in enumerate(zip(self.layers, self.caches)):
            if i:
                x = self.add_rmsnorm(x, resid, layer["in_norm"], c.rms_eps)
            x = self._attention(layer, cache, x)
            x = self.add_rmsnorm(x, resid, layer["post_norm"], c.rms_eps)
            x = self._mlp(layer, x) if "down" in layer else self._moe(layer, x)
        x = self.add_rmsnorm(x, resid, self.final_norm, c.rms_eps)
        logits = self.logits = self.linear(x, self.lm_head)      # kept for tests to compare
        return self._run("argmax_sampling", {"batch": logits.shape[0], "vocab": logits.shape[1]},
                         _dtype_name(logits), {"logits": logits})

    def record_step(self, keep_inputs: bool = False) -> list:
        """The op calls of one step, in order (the step is run to list them). ``keep_inputs``:
        also keep, in ``kept``, each distinct call's inputs, to time it alone (``calls_to_time``)."""
        self.calls, self.kept = [], ({} if keep_inputs else None)
        try:
            self.step()
            return self.calls
        finally:
            self.calls = None

    def time_ops_in_step(self, steps: int = 3) -> dict:
        """Where a step's time goes, on a CPU (calls return when their work is done): ``steps``
        steps with each kernel call timed inside them; the figures are the median step's
        (by wall time), so they add up: ``step_us`` = ``ops_us`` (its kernel calls) + what ran
        between them (Python, dispatch, views, allocation). ``by_key``: (op, dtype, shape key)
        -> µs of that step spent in that call, all its calls together."""
        if self.device.type != "cpu":
            raise ValueError("time_ops_in_step times calls on the host clock: a CPU only")
        runs = []
        for _ in range(steps):
            self.op_times = []
            try:
                t0 = time.perf_counter_ns()
                self.step()
                runs.append((time.perf_counter_ns() - t0, self.op_times))
            finally:
                self.op_times = None
        wall, times = sorted(runs, key=lambda r: r[0])[len(runs) // 2]
        per: dict = {}
        for (op, items, dtype), ns in times:
            k = _key(op, dtype, dict(items))
            per[k] = per.get(k, 0) + ns
        return {"steps": steps, "step_us": wall / 1e3, "ops_us": sum(ns for _, ns in times) / 1e3,
                "by_key": {k: ns / 1e3 for k, ns in per.items()}}

    def calls_to_time(self) -> list:
        """[(op, dtype, shape, callable, inputs)] of each distinct call kept by the last
        ``record_step(keep_inputs=True)``: the step's own tensors (a call that writes in place,
        like the residual add, keeps doing so, as the runner's repeated calls do)."""
        return [(op, dtype, dict(items), self._fns[(op, items, dtype)], inputs)
                for (op, items, dtype), inputs in (self.kept or {}).items()]


# ---------------------------------------------------------------- accounting

def _key(op: str, dtype: str, shape: dict) -> tuple:
    # matched as the roll-up matches a record: every shape parameter but the free ones
    free = step.FREE.get(op, ())
    return (op, dtype, tuple(sorted((k, v) for k, v in shape.items() if k not in free)))


def _text(key: tuple) -> str:
    op, dtype, items = key
    return f"{op} {' '.join(f'{k}={v}' for k, v in items)} {dtype}"


def accounting(calls: list, components: list) -> list:
    """How one step's op calls and the step derivation's components disagree: [] when each
    call is counted by a component and no component counts more calls than ran. Components
    kernelmark has no op for (op None) are left out; the decoder cannot run them either."""
    ran: dict = {}
    for c in calls:
        k = _key(c.op, c.dtype, c.shape)
        ran[k] = ran.get(k, 0) + 1
    counted: dict = {}
    for c in components:
        if c.op is None:
            continue
        k = _key(c.op, c.dtype, c.shape)
        counted[k] = counted.get(k, 0) + c.count
    out = []
    for k in list(dict.fromkeys([*ran, *counted])):
        n, m = ran.get(k, 0), counted.get(k, 0)
        if n != m:
            out.append(f"{_text(k)}: the decoder ran it {n:g} time(s) a step, the roll-up counts {m:g}")
    return out
