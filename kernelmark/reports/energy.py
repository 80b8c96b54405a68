"""Energy columns of the long table and csv (from `run --energy` records): J per call and
work per joule. Reads records only; only runs with energy get these columns.

``energy``: µJ (or mJ) per call net of idle where the idle power was measured, gross
otherwise, with the counter's uncertainty; ``GFLOP/J`` for compute-bound rows, ``GB/J`` for
memory-bound ones, from the same joules; "energy: unavailable (reason)" where it was not
measured. Nothing is estimated.
"""

from __future__ import annotations

COLUMNS = ("energy", "j_per_call", "work_per_j")
HEADERS = ("energy/call", "J/call", "per J")


def has_energy(records: list) -> bool:
    return any("energy" in r for r in records)


def _joules(j: float) -> str:
    return f"{j * 1e3:.3g} mJ" if j >= 1e-3 else f"{j * 1e6:.3g} µJ"


def cells(rec: dict) -> dict:
    """The energy columns of one record ({} where the record has no energy field)."""
    e = rec.get("energy")
    if not e:
        return {}
    if e.get("status") != "ok":
        return {"energy": f"energy: {e.get('status')} ({e.get('reason')})"}
    j = e["net_j_per_call"] if e.get("net_j_per_call") is not None and e["net_j_per_call"] > 0 \
        else e["gross_j_per_call"]
    kind = "net" if j is not e["gross_j_per_call"] else "gross"
    unc = e.get("net_uncertainty_rel") if kind == "net" else e.get("uncertainty_rel")
    text = f"{_joules(j)} {kind}" + (f" ±{100 * unc:.0f}%" if unc is not None else "")
    out = {"energy": text, "j_per_call": j}
    if rec.get("bound") == "compute" and rec.get("flops"):
        out["work_per_j"] = f"{rec['flops'] / j / 1e9:.3g} GFLOP/J"
    elif rec.get("bytes"):
        out["work_per_j"] = f"{rec['bytes'] / j / 1e9:.3g} GB/J"
    return out


# ---------------------------------------------------------------- one record's joules, for sums
# (the model roll-up, the wide view, the cross-device table)

def measured(rec: dict | None) -> bool:
    """Whether the record carries energy that was measured ("ok")."""
    e = (rec or {}).get("energy")
    return isinstance(e, dict) and e.get("status") == "ok"


def lack_reason(rec: dict) -> str:
    """Why a (timed) record has no joules to count: said in words, never replaced by a number."""
    e = rec.get("energy")
    if not e:
        return "no energy measured (the run had no --energy)"
    return f"energy {e.get('status')}: {e.get('reason') or 'no reason recorded'}"


def joules(rec: dict, kind: str):
    """(J per call, its absolute uncertainty bound or None) of kind "net" or "gross", or None
    where the record has no such figure (not measured; net: no idle power measured).

    The bound is the counter's own (docs/energy.md): gross r + P·u, net 2r + (P + P_idle)·u,
    over the window's calls. It is taken from the stored relative uncertainty where there is
    one, else rebuilt from the window's fields: a net at or below zero has no relative one."""
    if not measured(rec):
        return None
    e = rec["energy"]
    j = e.get("gross_j_per_call") if kind == "gross" else e.get("net_j_per_call")
    if j is None:
        return None
    rel = e.get("uncertainty_rel") if kind == "gross" else e.get("net_uncertainty_rel")
    if rel is not None and j > 0:
        return j, abs(j) * rel
    r, u, p, calls = (e.get(k) for k in ("resolution_j", "update_interval_s", "avg_w", "calls"))
    idle = e.get("idle_w") if kind == "net" else 0.0
    if None in (r, u, p, calls, idle) or calls <= 0:
        return j, None
    return j, ((1 if kind == "gross" else 2) * r + (p + idle) * u) / calls


def preferred(rec: dict) -> str:
    """The kind a single row shows: net where idle was measured and the net is positive, else gross."""
    n = (rec.get("energy") or {}).get("net_j_per_call")
    return "net" if n is not None and n > 0 else "gross"


def fmt_joules(j: float) -> str:
    """J, mJ or µJ with three significant digits (negative nets keep their sign)."""
    a = abs(j)
    if a >= 1:
        return f"{j:.3g} J"
    return f"{j * 1e3:.3g} mJ" if a >= 1e-3 or a == 0 else f"{j * 1e6:.3g} µJ"
