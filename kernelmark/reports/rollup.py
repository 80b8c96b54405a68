"""The model roll-up: a decode step and a prefill chunk of a model composed from measured
kernel times on one device. A kernel-sum lower bound: no communication, no sampling, no
framework or launch overhead, and no op the run did not measure.

Decode step at batch B (one new token for each of B sequences, each with ``context``
tokens of KV cache), on one of ``tp`` GPUs:

    step_us = layers · (t_qkv + t_o + t_gate_up + t_down        gemm, m = B, layout nt
                        + t_paged_decode_attention               batch B, context, ragged 0
                        + t_kv_append)                           tokens B, seq_tokens 1
              + t_lm_head                                        gemm, m = B, n = vocab
    time per output token ≥ step_us (each sequence gets one token a step)
    tokens/s ≤ B / step_s;  $ per 1M output tokens ≥ tp · price_per_hour / 3600 / (tokens/s) · 1e6
    (the price is per device-hour, and the step runs on all tp devices at once)

Prefill per 1k prompt tokens, a chunk of T = ``prefill_tokens`` tokens made of
sequences of S = ``context`` tokens (each kernel's time per token it handles):

    us_per_1k = 1000 · (layers · (Σ t_gemm(m = T) / T + t_prefill_attention(seq S, causal) / (batch · S)
                                  + t_kv_append(tokens T) / T)
                        + t_lm_head(m = 1) / S)           the last token of each sequence only

Each case is matched exactly (op, dtype and every shape parameter the formula fixes);
parameters it does not fix (page size, cache layout, the prefill attention's batch) take
the preferred value when the run has it, else any measured one, and the table says which.
Of the backends that passed their check and were timed, the fastest is used, named per
component. Nothing is interpolated: a needed case missing from the run is named, with the
built-in suites that have it, and the totals that need it are not given. The projections
and attention are required; kv_append and lm_head are counted when measured and otherwise
named with the ops never measured (norms, RoPE, activation, residual adds, embedding,
sampling).

Energy per token (J, tokens per kWh, energy $ with --price-per-kwh) is the same sum in
joules, from the same records, where they were measured with `run --energy`
(kernelmark.reports.token_energy); only then does it add columns.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

from kernelmark.reports import crossdevice, table, token_energy
from kernelmark.reports import energy as energy_cols
from kernelmark.reports.escape import md_cell, md_text, plain
from kernelmark.results import strict_json
from kernelmark.suites import models

NOT_MEASURED = ("RMSNorm (2 a layer + 1 final)", "RoPE on q and k", "SiLU·mul activation",
                "residual adds (2 a layer)", "embedding lookup", "sampling (softmax / top-k over the vocabulary)")
DTYPE_ORDER = ("bf16", "fp16", "fp32", "fp8_e4m3")
LABEL = ("kernel-sum lower bound: the sum of measured kernel times; no communication, sampling, "
         "framework or launch overhead, and no unmeasured op")


@dataclass(frozen=True)
class Need:
    name: str           # component, e.g. "qkv", "attention"
    op: str
    fixed: dict         # shape params that must equal
    prefer: dict        # shape params preferred when the run has a choice
    count: float        # how many times per step (layers), or the per-token divisor's inverse
    per: float          # the time is divided by this (tokens it covers); 1 for decode
    required: bool = True
    dtype: str | None = None    # its own dtype (a model step's component); None: the estimate's
    family: str = ""            # kernel family, for the breakdown by family


@dataclass
class Found:
    need: Need
    rec: dict | None            # the record used
    why: str = ""               # why none, when rec is None
    covered: bool = False       # done inside another component's kernel (its record "covers" it)
    untimeable: bool = False    # in the run, every backend unsupported or skipped there: re-running will not time it

    @property
    def us(self):
        return self.rec["timing"]["median_us"] if self.rec else None


@dataclass
class Estimate:
    device: str
    dtype: str
    kind: str                   # "decode" or "prefill"
    batch: int                  # decode batch, or prefill tokens
    found: list
    price_per_hour: float | None = None
    extra_unmeasured: list = field(default_factory=list)
    price_per_kwh: float | None = None
    gpus: int = 1               # tensor parallel: the step runs on this many devices at once, each paid for

    @property
    def missing(self) -> list:
        return [f for f in self.found if f.rec is None and f.need.required and not f.covered]

    @property
    def complete(self) -> bool:
        return not self.missing

    @property
    def total_us(self):
        """step µs (decode) or µs per 1k prompt tokens (prefill) of what was measured."""
        s = sum(f.us * f.need.count / f.need.per for f in self.found if f.rec)
        return s * 1000 if self.kind == "prefill" else s

    def figures(self) -> dict:
        if not self.complete:
            return {}
        t = self.total_us
        if self.kind == "decode":
            tok_s = self.batch / (t * 1e-6)
            out = {"step_us": t, "ms_per_output_token": t / 1e3, "tokens_per_s": tok_s}
        else:
            tok_s = 1000 / (t * 1e-6)
            out = {"us_per_1k_prompt_tokens": t, "ms_per_1k_prompt_tokens": t / 1e3, "prompt_tokens_per_s": tok_s}
        if self.price_per_hour:     # a price per device-hour: every device of the TP group is paid for
            out["usd_per_1m_tokens"] = self.price_per_hour * self.gpus / 3600 / tok_s * 1e6
        return out


def check_options(model: str, batches: list, context: int, prefill_tokens: int, tp: int = 1,
                  dtype: str | None = None, price_per_hour: float | None = None,
                  price_per_kwh: float | None = None) -> None:
    """ValueError naming the option (as `kernelmark model` spells it) that the roll-up cannot use."""
    import math
    mdl = models.get_model(model)
    if not batches or any(b <= 0 for b in batches):
        raise ValueError(f"--batch must be positive integers, e.g. 1,8,32 (got {','.join(map(str, batches))})")
    for name, v in (("--context", context), ("--prefill-tokens", prefill_tokens), ("--tp", tp)):
        if v <= 0:
            raise ValueError(f"{name} must be a positive integer (got {v})")
    # Tensor parallelism splits whole attention heads over the GPUs: a slice of a head, or
    # GPUs holding different head counts, is no layout an engine runs.
    split = [f"{n} {what} heads" for n, what in ((mdl.q_heads, "query"), (mdl.kv_heads, "KV")) if n % tp]
    if split:
        ok = [d for d in range(1, mdl.kv_heads + 1) if mdl.q_heads % d == 0 and mdl.kv_heads % d == 0]
        raise ValueError(f"--tp {tp}: {model}'s {' and '.join(split)} do not split evenly over {tp} GPUs "
                         f"(tensor parallelism gives each GPU whole heads); use {', '.join(map(str, ok[:-1]))} "
                         f"or {ok[-1]}")
    if dtype is not None and dtype not in DTYPE_ORDER:
        raise ValueError(f"--dtype {dtype}: the roll-up uses one of {', '.join(DTYPE_ORDER)}")
    for name, price in (("--price-per-hour", price_per_hour), ("--price-per-kwh", price_per_kwh)):
        if price is not None and not (math.isfinite(price) and price > 0):
            raise ValueError(f"{name} must be a positive, finite number of dollars (got {price:g})")


def decode_needs(model: str, batch: int, context: int, tp: int = 1) -> list:
    mdl = models.get_model(model)
    qh, kvh, hd = models.attention_heads(model, tp)
    L = mdl.layers
    out = [Need(p, "gemm", {"m": batch, "n": n, "k": k, "layout": "nt"}, {}, L, 1)
           for p, (n, k) in mdl.projections(tp).items()]
    out.append(Need("attention", "paged_decode_attention",
                    {"batch": batch, "context": context, "q_heads": qh, "kv_heads": kvh, "head_dim": hd,
                     "ragged": 0}, {"page_size": 16}, L, 1))
    out.append(Need("kv_append", "kv_append", {"tokens": batch, "seq_tokens": 1, "kv_heads": kvh,
                                               "head_dim": hd, "padding": 0},
                    {"layout": "NHD", "page_size": 16}, L, 1, required=False))
    n, k = models.lm_head(model, tp)
    out.append(Need("lm_head", "gemm", {"m": batch, "n": n, "k": k, "layout": "nt"}, {}, 1, 1, required=False))
    return out


def prefill_needs(model: str, tokens: int, context: int, tp: int = 1) -> list:
    mdl = models.get_model(model)
    qh, kvh, hd = models.attention_heads(model, tp)
    L = mdl.layers
    out = [Need(p, "gemm", {"m": tokens, "n": n, "k": k, "layout": "nt"}, {}, L, tokens)
           for p, (n, k) in mdl.projections(tp).items()]
    # per is set from the batch of the record found (see find): seq · batch tokens.
    out.append(Need("attention", "prefill_attention",
                    {"seq": context, "q_heads": qh, "kv_heads": kvh, "head_dim": hd, "causal": 1},
                    {"batch": max(1, tokens // context)}, L, context))
    out.append(Need("kv_append", "kv_append", {"tokens": tokens, "kv_heads": kvh, "head_dim": hd, "padding": 0},
                    {"seq_tokens": context, "layout": "NHD", "page_size": 16}, L, tokens, required=False))
    n, k = models.lm_head(model, tp)
    out.append(Need("lm_head", "gemm", {"m": 1, "n": n, "k": k, "layout": "nt"}, {}, 1, context, required=False))
    return out


def find(need: Need, records: list, dtype: str, credit=None) -> Found:
    """The fastest timed record of ``need``. ``credit(rec)``: µs to take off a record's time
    when ranking (what its kernel also does for other components), so a backend that does
    more in one call is weighed against the others plus what they leave to other kernels."""
    dtype = need.dtype or dtype
    if need.op is None:
        return Found(need, None, "kernelmark has no op for it")
    cands = [r for r in records if r["op"] == need.op and r["dtype"] == dtype
             and all(r["shape"].get(k) == v for k, v in need.fixed.items())]
    if not cands:
        return Found(need, None, "not in the run")
    ok = [r for r in cands if r["status"] == "ok"]
    if not ok:
        seen = sorted({f"{r['backend']} {crossdevice.short_status(r)}"
                       for r in cands})
        return Found(need, None, "in the run, but no backend was timed: " + "; ".join(seen),
                     untimeable=all(r["status"] in ("unsupported", "skipped") for r in cands))
    preferred = [r for r in ok if all(r["shape"].get(k) == v for k, v in need.prefer.items())]
    best = min(preferred or ok, key=lambda r: r["timing"]["median_us"] - (credit(r) if credit else 0.0))
    if need.op == "prefill_attention":        # time per token of the sequences it attended
        if need.dtype is None:        # (a model step's component already says its tokens)
            need = Need(need.name, need.op, need.fixed, need.prefer, need.count,
                        best["shape"]["batch"] * best["shape"]["seq"], need.required)
    return Found(need, best)


@lru_cache(maxsize=1)
def _builtin_cases() -> tuple:
    """(suite name, case) of every built-in suite that loads: to say where a missing case is."""
    from kernelmark.suites import loader
    out = []
    for name, path in loader.builtin_suites().items():
        try:
            out += [(name, c) for c in loader.load(str(path)).cases]
        except Exception:  # a broken suite only costs the hint
            continue
    return tuple(out)


def suites_with(need: Need, dtype: str, kind: str) -> list:
    names = []
    for name, c in _builtin_cases():
        if c.op == need.op and c.dtype == dtype and c.runs_on(kind) and \
                all(c.shape.get(k) == v for k, v in need.fixed.items()):
            names.append(name)
    return sorted(set(names))


def case_text(need: Need, dtype: str) -> str:
    dtype = need.dtype or dtype
    free = " ".join(f"{k}={v}" for k, v in need.prefer.items())
    return f"{need.op} {table.shape_text(need.fixed)} {dtype}" + (f" (preferring {free})" if free else "")


def choose_dtype(records: list, needs: list) -> str:
    """The dtype in which the run has the most required cases timed (ties: DTYPE_ORDER)."""
    have = {r["dtype"] for r in records}
    best, score = None, -1
    for dt in [d for d in DTYPE_ORDER if d in have] + sorted(have - set(DTYPE_ORDER)):
        s = sum(find(n, records, dt).rec is not None for n in needs if n.required)
        if s > score:
            best, score = dt, s
    return best or DTYPE_ORDER[0]


def estimate(dev: crossdevice.Device, model: str, kind: str, size: int, context: int, dtype: str,
             tp: int = 1, price_per_hour: float | None = None, price_per_kwh: float | None = None) -> Estimate:
    needs = decode_needs(model, size, context, tp) if kind == "decode" else prefill_needs(model, size, context, tp)
    recs = list(dev.records.values())
    found = [find(n, recs, dtype) for n in needs]
    extra = [f.need.name for f in found if f.rec is None and not f.need.required]
    return Estimate(dev.label, dtype, kind, size, found, price_per_hour, extra, price_per_kwh, gpus=tp)


def build(runs: list, model: str, batches: list, context: int, prefill_tokens: int, dtype: str | None = None,
          tp: int = 1, price_per_hour: float | None = None, price_per_kwh: float | None = None) -> list:
    """[(device, [Estimate...])]: decode at each batch, then one prefill, per device. Without
    ``dtype``, each device uses the one dtype in which its runs have the most needed cases."""
    models.get_model(model)
    out = []
    for dev in crossdevice.group_by_device(runs):
        needs = [n for b in batches for n in decode_needs(model, b, context, tp)]
        needs += prefill_needs(model, prefill_tokens, context, tp)
        dt = dtype or choose_dtype(list(dev.records.values()), needs)
        ests = [estimate(dev, model, "decode", b, context, dt, tp, price_per_hour, price_per_kwh) for b in batches]
        ests.append(estimate(dev, model, "prefill", prefill_tokens, context, dt, tp, price_per_hour, price_per_kwh))
        out.append((dev, ests))
    return out


# ---------------------------------------------------------------- rendering

def _fmt_time(us: float) -> str:
    if us >= 1e9:       # 1,262 s, not 1.26e+03 s
        return f"{us / 1e6:,.0f} s"
    if us >= 1e6:
        return f"{us / 1e6:,.3g} s"
    return f"{us / 1e3:.3g} ms" if us >= 1e3 else f"{us:.3g} µs"


def price_text(price_per_hour, tp: int) -> str:
    """The header's price clause; with tensor parallelism, that every device is paid for."""
    if not price_per_hour:
        return "; no price given (--price-per-hour)"
    return f"; ${price_per_hour:g} per GPU-hour" + (f", × {tp} GPUs in every $ figure" if tp > 1 else "")


def fmt_rate(x: float) -> str:
    """Tokens/s as people read them: 47,060 and 93.6, never 4.706e+04."""
    return f"{x:,.0f}" if x >= 1000 else f"{x:.4g}"


def _fmt_money(x) -> str:
    return "" if x is None else (f"${x:,.2f}" if x >= 0.1 else f"${x:.3g}")


def _phase(e: Estimate) -> str:
    return f"decode, batch {e.batch}" if e.kind == "decode" else f"prefill, {e.batch}-token chunks"


def summary_rows(built: list) -> list:
    rows = []
    with_energy = token_energy.any_shown(built)
    for dev, ests in built:
        for e in ests:
            f = e.figures()
            if e.kind == "decode":
                t = f"{_fmt_time(f['step_us'])} a token" if f else ""
                rate = f"{fmt_rate(f['tokens_per_s'])} tokens/s" if f else ""
            else:
                t = f"{_fmt_time(f['us_per_1k_prompt_tokens'])} per 1k prompt tokens" if f else ""
                rate = f"{fmt_rate(f['prompt_tokens_per_s'])} prompt tokens/s" if f else ""
            if e.complete:
                status = "complete" + (f"; not in the run: {', '.join(e.extra_unmeasured)}"
                                       if e.extra_unmeasured else "")
            else:
                status = (f"INCOMPLETE: {len(e.missing)} needed case(s) not measured "
                          f"(measured part ≥ {_fmt_time(e.total_us)})")
            rows.append([dev.label, e.dtype, _phase(e), t or "n/a", rate or "n/a",
                         _fmt_money(f.get("usd_per_1m_tokens")) if f else "", status]
                        + (token_energy.cells(token_energy.of(e), e.price_per_kwh) if with_energy else []))
    return rows


def breakdown_rows(ests: list, with_energy: bool = False) -> list:
    """One row per component; ``with_energy`` adds its energy per call (or why there is none)."""
    rows = []
    for e in ests:
        for f in e.found:
            n = f.need
            times = f"×{n.count:g}" + (f" ÷ {n.per:g} tokens" if n.per != 1 else "")
            if f.rec:
                contrib = f.us * n.count / n.per * (1000 if e.kind == "prefill" else 1)
                rows.append([_phase(e), n.name, f"{f.rec['op']} {table.shape_text(f.rec['shape'])} {f.rec['dtype']}",
                             f.rec["backend"], table._num(f.us, 2), times, table._num(contrib, 2)]
                            + ([energy_cols.cells(f.rec).get("energy", "no --energy")] if with_energy else []))
            else:
                rows.append([_phase(e), n.name, case_text(n, e.dtype), "", "", times,
                             ("" if f.covered else "MISSING: " if n.required else "not counted: ") + f.why]
                            + ([""] if with_energy else []))
    return rows


BREAKDOWN_HEADERS = ["phase", "component", "case used", "backend", "median µs", "count", "µs in total"]


def breakdown_headers(with_energy: bool) -> list:
    return BREAKDOWN_HEADERS + (["energy/call"] if with_energy else [])


def missing_lines(built: list) -> list:
    out = []
    for dev, ests in built:
        for e in ests:
            for f in e.found:
                if f.rec is not None:
                    continue
                where = suites_with(f.need, f.need.dtype or e.dtype, dev.kind) if f.need.op else []
                hint = (f"built-in suite(s) with it for {dev.kind}: {', '.join(where)}" if where
                        else f"no built-in suite has it for {dev.kind}")
                if f.untimeable:        # --emit-suite / --measure would only record the same refusals
                    hint += (f"; measuring it again on this {dev.kind} will not time it (every backend was "
                             "unsupported or skipped): try another --dtype, a smaller shape (--prefill-tokens, "
                             "--batch) or another device")
                if f.need.family == "communication":
                    hint += ("; a collective: measure it with torchrun on the GPUs that would serve "
                             "(docs/multi-gpu.md) and add that run with --run")
                what = "needed" if f.need.required else "optional, left out of the total"
                out.append(f"{dev.label}, {_phase(e)}: {case_text(f.need, e.dtype)} ({what}): {f.why}; {hint}")
    return out


def render(runs: list, model: str, batches: list, context: int, prefill_tokens: int, dtype: str | None = None,
           tp: int = 1, price_per_hour: float | None = None, fmt: str = "table",
           price_per_kwh: float | None = None) -> str:
    from tabulate import tabulate
    built = build(runs, model, batches, context, prefill_tokens, dtype, tp, price_per_hour, price_per_kwh)
    with_energy = token_energy.any_shown(built)
    if fmt == "json":
        return strict_json(as_json(built, model, context, tp), indent=1)
    tf = "github" if fmt == "md" else "simple"
    intro = [f"{model} roll-up from measured kernel times: a {LABEL}.",
             f"context {context} tokens a sequence; decode batches {', '.join(map(str, batches))}; prefill in "
             f"{prefill_tokens}-token chunks of {context}-token sequences; tensor parallel {tp}"
             + price_text(price_per_hour, tp),
             "Each case matched exactly; the fastest backend that passed its check is used (named below). "
             "Nothing is interpolated."] + ([token_energy.intro(price_per_kwh)] if with_energy else [])
    heads = ["device", "dtype", "phase", "time (lower bound)", "throughput (upper bound)",
             "$ per 1M tokens (output; prompt for prefill)", "status"] + \
        (list(token_energy.HEADERS) if with_energy else [])
    # Device names, shapes, backends and reasons come from run files: escaped for the format.
    cell, text = (md_cell, md_text) if fmt == "md" else (plain, plain)

    def tab(rows, headers):
        return tabulate([[cell(c) for c in r] for r in rows], headers=headers, tablefmt=tf, disable_numparse=True)

    out = ["\n".join(f"> {x}" for x in intro) if fmt == "md" else "\n".join(intro), "", tab(summary_rows(built), heads)]
    for dev, ests in built:
        head = f"{text(dev.label)}: per component (µs of the case × its count = µs a step, or per 1k prompt tokens)"
        out += ["", f"**{head}**" if fmt == "md" else head, "",
                tab(breakdown_rows(ests, with_energy), breakdown_headers(with_energy))]
    lacking = token_energy.notes(built, _phase)
    if lacking:
        out += ["", "Energy per token (never a partial sum):", ""] + [f"- {text(m)}" for m in lacking]
    miss = missing_lines(built)
    if miss:
        out += ["", "Cases not in the run (never guessed):", ""] + [f"- {text(m)}" for m in miss]
    out += ["", "Never measured by kernelmark, not in any total: " + "; ".join(NOT_MEASURED) + "."]
    return "\n".join(out)


def energy_json(e: Estimate) -> dict:
    """{"energy": {...}} where a record used carries energy (token_energy.figures), else {}."""
    pe = token_energy.of(e)
    return {"energy": token_energy.figures(pe, e.price_per_kwh)} if pe.shown else {}


def as_json(built: list, model: str, context: int, tp: int) -> dict:
    devices = []
    for dev, ests in built:
        items = []
        for e in ests:
            items.append({
                "phase": e.kind, "batch" if e.kind == "decode" else "prefill_tokens": e.batch, "dtype": e.dtype,
                "complete": e.complete, "measured_us": e.total_us, **e.figures(), **energy_json(e),
                "components": [{"name": f.need.name, "op": f.need.op, "count": f.need.count, "per": f.need.per,
                                "required": f.need.required, "wanted": {**f.need.fixed},
                                "shape": f.rec["shape"] if f.rec else None,
                                "backend": f.rec["backend"] if f.rec else None, "median_us": f.us,
                                "missing": f.why or None,
                                "suites_with_it": None if f.rec else (suites_with(f.need, f.need.dtype or e.dtype, dev.kind) if f.need.op else [])}
                               for f in e.found]})
        devices.append({"device": dev.label, "kind": dev.kind, "runs": [r.path for r in dev.runs],
                        "estimates": items})
    return {"model": model, "context": context, "tp": tp, "label": LABEL, "not_measured": list(NOT_MEASURED),
            "devices": devices}
