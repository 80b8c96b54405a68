"""Energy per token of a model roll-up (kernelmark.reports.rollup / modelstep estimates), from
the joules per call that `run --energy` measured for each component's record. Reads records
only; nothing is estimated.

For one phase (a decode step at batch B, or a prefill chunk), each component i used by the
time total has J_i per call (net of idle, or gross), ``count_i`` calls a step and covers
``per_i`` tokens (1 for decode):

    decode:   J per output token = tp · Σ J_i · count_i / per_i / B      (each sequence gets one token a step)
    prefill:  J per prompt token = tp · Σ J_i · count_i / per_i
    (tp: the tensor-parallel degree; each of its devices runs the measured slice)
    tokens per kWh = 3.6e6 J / (J per token)
    energy $ per 1M tokens = price per kWh · (J per token) · 1e6 / 3.6e6

The uncertainty of the sum is the sum of its parts' bounds, δ = Σ δ_i · count_i / per_i (/ B),
with δ_i the counter's bound on J_i (kernelmark.reports.energy.joules): each bound is a worst
case (a read up to one update late), not a standard deviation, and one window may serve
several components, so the bounds add rather than in quadrature. Relative: δ / total.

Complete or nothing: every component the time total counts must have measured joules;
where one lacks them (no --energy, no readable counter, a merged run without energy) the
figures are not given and the components lacking them are named. The net needs every
component's idle-corrected J; where idle power was not measured, only the gross is given.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from kernelmark.reports import energy

J_PER_KWH = 3.6e6
KINDS = ("net", "gross")


@dataclass
class TokenEnergy:
    """One kind (net or gross) of a phase's energy per token; ``j`` None with ``why``."""
    kind: str
    j: float | None = None          # J per token
    err_j: float | None = None      # absolute bound on it (None: a part has no bound)
    why: str = ""

    @property
    def rel(self):
        return self.err_j / self.j if self.j and self.err_j is not None else None

    @property
    def tokens_per_kwh(self):
        return J_PER_KWH / self.j if self.j else None

    def usd_per_1m(self, price_per_kwh):
        return price_per_kwh * self.j * 1e6 / J_PER_KWH if self.j and price_per_kwh else None


@dataclass
class PhaseEnergy:
    shown: bool                                     # some record used carries an energy field
    lacking: list = field(default_factory=list)     # [(component, why)] of parts the time total counts
    kinds: dict = field(default_factory=dict)       # "net" / "gross" -> TokenEnergy

    @property
    def complete(self) -> bool:
        return not self.lacking


def _tokens(est) -> float:
    """Tokens one device's share of the phase's energy pays for: a decode step gives B tokens,
    and with tensor parallelism every one of the ``gpus`` devices spends its own joules on them."""
    return (est.batch if est.kind == "decode" else 1) / getattr(est, "gpus", 1)


def of(est) -> PhaseEnergy:
    """The energy per token of a rollup.Estimate (duck-typed: kind, batch, found, missing)."""
    used = [f for f in est.found if f.rec]
    shown = any("energy" in f.rec for f in used)
    lacking = [(f.need.name, f"not measured at all ({f.why})") for f in est.missing]
    lacking += [(f.need.name, energy.lack_reason(f.rec)) for f in used if not energy.measured(f.rec)]
    out = PhaseEnergy(shown, lacking)
    if lacking:
        return out
    tokens = _tokens(est)
    for kind in KINDS:
        total, err, no_net = 0.0, 0.0, []
        for f in used:
            got = energy.joules(f.rec, kind)
            if got is None:
                no_net.append(f.need.name)
                continue
            j, dj = got
            w = f.need.count / f.need.per / tokens
            total += j * w
            err = None if err is None or dj is None else err + dj * w
        if no_net:
            out.kinds[kind] = TokenEnergy(kind, why="idle power not measured for " + ", ".join(dict.fromkeys(no_net)))
        elif total <= 0 or not math.isfinite(total):
            bound = f" ± {energy.fmt_joules(err)}" if err is not None else ""
            out.kinds[kind] = TokenEnergy(kind, why=f"not above idle: {energy.fmt_joules(total)}{bound} a token")
        else:
            out.kinds[kind] = TokenEnergy(kind, total, err)
    return out


def by_family(est, pe: PhaseEnergy) -> dict:
    """family -> (J per token, kind) of a complete phase, in the kind its cells show; {}
    otherwise (shares of an incomplete sum would mislead as much as the sum)."""
    t = _main(pe) if pe.complete else None
    if t is None:
        return {}
    tokens = _tokens(est)
    out: dict = {}
    for f in est.found:
        if f.rec:
            j = energy.joules(f.rec, t.kind)[0]
            out[f.need.family] = out.get(f.need.family, 0.0) + j * f.need.count / f.need.per / tokens
    return {k: (v, t.kind) for k, v in out.items()}


def figures(pe: PhaseEnergy, price_per_kwh=None) -> dict:
    """The JSON/CSV form: j_per_token (net), j_per_token_gross, their bounds, tokens per kWh
    and the energy $ per 1M tokens of each; or complete False with what lacks energy."""
    out: dict = {"complete": pe.complete,
                 "lacking": [{"component": n, "why": w} for n, w in pe.lacking]}
    for kind, t in pe.kinds.items():
        sfx = "" if kind == "net" else "_gross"
        out[f"j_per_token{sfx}"] = t.j
        out[f"uncertainty_rel{sfx}"] = t.rel
        out[f"tokens_per_kwh{sfx}"] = t.tokens_per_kwh
        if price_per_kwh:
            out[f"usd_energy_per_1m_tokens{sfx}"] = t.usd_per_1m(price_per_kwh)
        if t.j is None:
            out[f"why_not{sfx}"] = t.why
    return out


def any_shown(built: list) -> bool:
    """Whether any phase of any device used a record that carries energy: only then do the
    roll-up's tables get energy columns."""
    return any(of(e).shown for _, ests in built for e in ests)


# ---------------------------------------------------------------- table cells

def _count(x: float) -> str:
    """A count with three significant digits and a word for its size (tokens per kWh run
    from thousands on a CPU to billions on a GPU)."""
    for scale, word in ((1e12, "trillion"), (1e9, "billion"), (1e6, "million")):
        if x >= scale:
            return f"{x / scale:.3g} {word}"
    return f"{x:,.0f}"


def _main(pe: PhaseEnergy) -> TokenEnergy | None:
    """The figure a cell shows: net where it could be had, else gross (and the cell says which)."""
    for kind in KINDS:
        t = pe.kinds.get(kind)
        if t is not None and t.j is not None:
            return t
    return None


def cells(pe: PhaseEnergy, price_per_kwh=None) -> list:
    """[J per token, tokens per kWh, energy $ per 1M tokens]: "INCOMPLETE" where a part lacks
    energy (the lines under the table name it), never a partial sum."""
    if not pe.complete:
        return [f"INCOMPLETE ({len(pe.lacking)} lack energy)", "", ""]
    t = _main(pe)
    if t is None:
        return ["n/a (see below)", "", ""]
    j = f"{energy.fmt_joules(t.j)} {t.kind}" + (f" ±{100 * t.rel:.0f}%" if t.rel is not None else "")
    gross = pe.kinds.get("gross")
    if t.kind == "net" and gross is not None and gross.j is not None:
        j += f" ({energy.fmt_joules(gross.j)} gross)"
    usd = t.usd_per_1m(price_per_kwh)
    return [j, _count(t.tokens_per_kwh) + f" {t.kind}",
            "" if usd is None else (f"${usd:,.2f}" if usd >= 0.1 else f"${usd:.3g}")]


HEADERS = ("J per token (kernel sum)", "tokens per kWh", "energy $ per 1M tokens")


def intro(price_per_kwh=None) -> str:
    """The line above the table saying what the energy columns are."""
    return ("Energy: Σ J per call × calls a step ÷ tokens a step, from each component's --energy window; net of "
            "idle where idle was measured (gross beside it), ± the counters' bounds added up; a lower bound like "
            "the time (no gaps between kernels)" +
            (f"; ${price_per_kwh:g} per kWh" if price_per_kwh else "; no electricity price given (--price-per-kwh)"))


def notes(built: list, phase_name) -> list:
    """Lines under the table: what lacks energy per device and phase, and why a net is not given."""
    if not any_shown(built):
        return []
    out = []
    for dev, ests in built:
        for e in ests:
            pe = of(e)
            where = f"{dev.label}, {phase_name(e)}"
            if not pe.shown:      # beside a device that has energy: one line, not one per component
                out.append(f"{where}: energy INCOMPLETE: no record it uses was measured with --energy")
                continue
            if pe.lacking:
                out.append(f"{where}: energy INCOMPLETE, not summed: " +
                           "; ".join(f"{n}: {w}" for n, w in pe.lacking))
            for t in pe.kinds.values():
                if t.j is None:
                    out.append(f"{where}: no {t.kind} J per token: {t.why}")
    return out
