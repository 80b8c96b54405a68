"""A model's decode step and prefill chunk rolled up from run files, component by component.

The components (op, shape, dtype, count per step) come from kernelmark.suites.step via the
caller, as ``rollup.Need`` objects: reports read run files only and know no op. Each
component is matched exactly as in ``rollup`` (fastest backend that passed its check);
one missing means the phase is INCOMPLETE and its totals are not given. Output per device:
time per token per sequence, tokens/s per sequence and in aggregate, $ per 1M tokens with a
price, and the step by kernel family.
"""

from __future__ import annotations

import csv
import io
import json

from kernelmark.reports import crossdevice, rollup, stepcheck, token_energy
from kernelmark.reports import energy as energy_cols
from kernelmark.reports.escape import md_cell, md_text, plain

LABEL = ("sum of measured kernel times of every kernel of the step (framework and launch overhead "
         "not included)")
# Every layer of a model has the same kernels: each case is one layer's kernel at one layer's
# size, counted once a layer, so no case holds the whole model (a 405B model's cases fit a
# 24 GB machine); a case that still cannot fit is `oom`, and its phase INCOMPLETE.
PER_LAYER = ("each per-layer kernel is measured once, at one layer's size, and counted once a layer: no case "
             "holds the whole model; a case that cannot fit here is oom and its phase INCOMPLETE")


BREAKDOWN_NOTE = ("µs in total = median µs × count: µs a decode step; prefill: ÷ the chunk's tokens × 1000, "
                  "µs per 1k prompt tokens")


price_text = rollup.price_text


def build(runs: list, plans: list, dtype: str, price_per_hour=None, price_per_kwh=None, gpus: int = 1) -> list:
    """[(device, [Estimate...])]; ``plans`` = [(kind, size, [Need...])], one per phase. ``gpus``:
    the tensor-parallel degree; each device's components are one slice of the step, and its
    $ and J per token count all ``gpus`` devices."""
    out = []
    for dev in crossdevice.group_by_device(runs):
        recs = list(dev.records.values())
        ests = []
        for kind, size, needs in plans:
            found = settle_covers([rollup.find(n, recs, dtype) for n in needs], recs, dtype)
            ests.append(rollup.Estimate(dev.label, dtype, kind, size, found, price_per_hour,
                                        price_per_kwh=price_per_kwh, gpus=gpus))
        out.append((dev, ests))
    return out


def settle_covers(found: list, recs: list, dtype: str) -> list:
    """Components done inside another's kernel, counted there once. A record's "covers" names
    ops its call also does (fused_moe's Triton and vLLM kernels align inside, the torch loop
    does not); a component of such an op with the same count is then marked covered. The
    backend of the covering component is picked fairly: each candidate's time less what it
    covers (the covered components' own fastest times), against the others' times."""
    own = {}        # op -> (count, per) -> µs of that component as found alone
    for f in found:
        if f.rec is not None:
            own.setdefault(f.need.op, {})[(f.need.count, f.need.per)] = f.us

    def credit_of(need):
        return lambda r: sum(own.get(op, {}).get((need.count, need.per), 0.0) for op in r.get("covers", ()))

    out = list(found)
    for i, f in enumerate(out):
        if f.rec is None or not any(r.get("covers") for r in recs if r["op"] == f.need.op):
            continue
        g = out[i] = rollup.find(f.need, recs, dtype, credit=credit_of(f.need))
        for j, h in enumerate(out):
            if j != i and h.need.op in g.rec.get("covers", ()) and (h.need.count, h.need.per) == \
                    (g.need.count, g.need.per):
                out[j] = rollup.Found(h.need, None, f"done inside {g.need.name} ({g.rec['backend']}): counted there",
                                      covered=True)
    return out


def families(e: rollup.Estimate) -> dict:
    """kernel family -> µs a step (decode) or per 1k prompt tokens (prefill), measured parts only."""
    scale = 1000 if e.kind == "prefill" else 1
    out: dict = {}
    for f in e.found:
        if f.rec:
            out[f.need.family] = out.get(f.need.family, 0.0) + f.us * f.need.count / f.need.per * scale
    return out


def rows(built: list) -> list:
    """One flat dict a device and phase: the buyer's table."""
    out = []
    for dev, ests in built:
        for e in ests:
            fig = e.figures()
            r = {"device": dev.label, "phase": e.kind, "batch" if e.kind == "decode" else "prefill_tokens": e.batch,
                 "dtype": e.dtype, "complete": e.complete, "missing": len(e.missing)}
            if e.kind == "decode" and fig:
                r.update(ms_per_token=fig["ms_per_output_token"], tokens_per_s_per_seq=1e6 / fig["step_us"],
                         tokens_per_s=fig["tokens_per_s"])
            elif fig:
                r.update(ms_per_1k_prompt_tokens=fig["ms_per_1k_prompt_tokens"],
                         prompt_tokens_per_s=fig["prompt_tokens_per_s"])
            if fig and "usd_per_1m_tokens" in fig:
                r["usd_per_1m_tokens"] = fig["usd_per_1m_tokens"]
            pe = token_energy.of(e)
            if pe.shown:        # flat for csv: the lacking components by name
                en = token_energy.figures(pe, e.price_per_kwh)
                r["energy_complete"] = en.pop("complete")
                r["energy_lacking"] = "; ".join(f"{x['component']}: {x['why']}" for x in en.pop("lacking"))
                r.update(en)
            out.append(r)
    return out


def missing_names(e: rollup.Estimate, most: int = 3) -> str:
    """What an incomplete phase lacks, by component name (the full list is under the tables)."""
    names = list(dict.fromkeys(f.need.name for f in e.missing))
    more = f" and {len(names) - most} more" if len(names) > most else ""
    return "not measured: " + ", ".join(names[:most]) + more


def summary_table(built: list, price_per_kwh=None, with_energy: bool = False) -> tuple:
    """(headers, rows of display strings) of the buyer's table: one row a device and phase.
    Shared by the text formats and the HTML page."""
    summary = []
    phases = [e for _, ests in built for e in ests]
    for r, e in zip(rows(built), phases):
        dec = r["phase"] == "decode"
        summary.append([r["device"], r["dtype"], f"decode, batch {r['batch']}" if dec
                        else f"prefill, {r['prefill_tokens']}-token chunk",
                        rollup._fmt_time(r["ms_per_token"] * 1e3) if "ms_per_token" in r else
                        (rollup._fmt_time(r["ms_per_1k_prompt_tokens"] * 1e3) + " / 1k tokens"
                         if "ms_per_1k_prompt_tokens" in r else "n/a"),
                        rollup.fmt_rate(r["tokens_per_s_per_seq"]) if "tokens_per_s_per_seq" in r else "",
                        rollup.fmt_rate(r.get("tokens_per_s", r.get("prompt_tokens_per_s", 0))) if r["complete"] else "n/a",
                        rollup._fmt_money(r.get("usd_per_1m_tokens")),
                        "complete" if r["complete"] else "INCOMPLETE, " + missing_names(e)]
                       + (token_energy.cells(token_energy.of(e), price_per_kwh) if with_energy else []))
    heads = ["device", "dtype", "phase", "time per token", "tokens/s per sequence", "tokens/s (aggregate)",
             "$ per 1M tokens (output; prompt for prefill)", "status"] + (list(token_energy.HEADERS) if with_energy else [])
    return heads, summary


def render(built: list, model: str, context: int, tp: int, price_per_hour=None, fmt: str = "table",
           price_per_kwh=None, checks=None) -> str:
    """``checks``: measured decode steps beside the roll-up (kernelmark.reports.stepcheck), or None."""
    if fmt == "json":
        doc = rollup.as_json(built, model, context, tp)
        doc["label"] = LABEL
        doc["per_layer"] = PER_LAYER
        doc.pop("not_measured", None)
        for (dev, ests), d in zip(built, doc["devices"]):
            for e, item in zip(ests, d["estimates"]):
                item["families_us"] = families(e)
                for f, comp in zip(e.found, item["components"]):
                    comp.update(family=f.need.family, dtype=f.need.dtype)
        doc["summary"] = rows(built)
        if checks is not None:
            doc["step_check"] = {"label": stepcheck.LABEL, "checks": checks}
        return json.dumps(doc, indent=1, default=str)
    if fmt == "csv":
        rs = rows(built)
        if checks is not None:
            rs = [{**r, **stepcheck.csv_columns(r, checks)} for r in rs]
        keys = list(dict.fromkeys(k for r in rs for k in r))
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
        w.writeheader()
        w.writerows(rs)
        return buf.getvalue().rstrip("\n")     # _emit ends the text with one newline
    from tabulate import tabulate
    tf = "github" if fmt == "md" else "simple"
    with_energy = token_energy.any_shown(built)
    cell, text = (md_cell, md_text) if fmt == "md" else (plain, plain)
    head = [f"{model}: {LABEL}.", f"context {context} tokens a sequence; tensor parallel {tp}" + price_text(price_per_hour, tp)]
    head += [PER_LAYER + "."]
    head += [token_energy.intro(price_per_kwh)] if with_energy else []
    heads, summary = summary_table(built, price_per_kwh, with_energy)
    out = ["\n".join(head), "", tabulate(summary, headers=heads, tablefmt=tf, disable_numparse=True)]
    for dev, ests in built:
        fam_rows = []
        for e in ests:
            fam = families(e)
            total = sum(fam.values()) or 1.0
            # an incomplete phase: its families' measured µs, but no shares (of a partial sum)
            phase = rollup._phase(e) + ("" if e.complete else " (INCOMPLETE: measured part only)")
            # where energy was measured: each family's J per token and its share of the energy
            fj = token_energy.by_family(e, token_energy.of(e)) if with_energy else {}
            j_total = sum(v for v, _ in fj.values()) or 1.0
            fam_rows += [[phase, k, f"{v:,.1f}", f"{100 * v / total:.1f}%" if e.complete else ""]
                         + ([f"{energy_cols.fmt_joules(fj[k][0])} {fj[k][1]}", f"{100 * fj[k][0] / j_total:.1f}%"]
                            if k in fj else ["", ""] if with_energy else [])
                         for k, v in sorted(fam.items(), key=lambda kv: -kv[1])]
        fam_heads = ["phase", "family", "µs", "share"] + (["J per token", "energy share"] if with_energy else [])
        out += ["", f"{dev.label}: by kernel family (µs a step; per 1k prompt tokens for prefill)", "",
                tabulate(fam_rows, headers=fam_heads, tablefmt=tf, disable_numparse=True),
                "", f"{dev.label}: per component ({BREAKDOWN_NOTE})", "",
                tabulate([[cell(c) for c in r] for r in rollup.breakdown_rows(ests, with_energy)],
                         headers=rollup.breakdown_headers(with_energy), tablefmt=tf, disable_numparse=True)]
    lacking = token_energy.notes(built, rollup._phase)     # reasons from the run files: escaped
    if lacking:
        out += ["", "Energy per token (never a partial sum):", ""] + [f"- {text(m)}" for m in lacking]
    if checks:
        out += stepcheck.table_lines(checks, tabulate, tf)
    miss = rollup.missing_lines(built)
    if miss:
        out += ["", "Cases not in the run (never guessed; --emit-suite FILE writes a suite that measures them):", ""]
        out += [f"- {m}" for m in miss]
    return "\n".join(out)
