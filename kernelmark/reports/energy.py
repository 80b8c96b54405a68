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
SHOWN = ("energy", "work_per_j")       # in the text, md and HTML tables (J/call, a bare number, is csv's)


def has_energy(records: list) -> bool:
    return any("energy" in r for r in records)


def cells(rec: dict) -> dict:
    """The energy columns of one record ({} where the record has no energy field)."""
    e = rec.get("energy")
    if not e:
        return {}
    if e.get("status") != "ok":
        return {"energy": f"energy: {e.get('status')} ({e.get('reason')})"}
    kind = preferred(rec)
    j = e["net_j_per_call"] if kind == "net" else e["gross_j_per_call"]
    unc = e.get("net_uncertainty_rel") if kind == "net" else e.get("uncertainty_rel")
    text = f"{fmt_joules(j)} {kind}" + (f" ±{100 * unc:.0f}%" if unc is not None else "")
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


# ---------------------------------------------------------------- the default wide view

WIDE_SUB = ("energy", "per J")
NOT_MEASURED = "-"


def wide_cells(rec: dict | None) -> tuple:
    """(J per call, work per J) of one backend's cell: '-' for a timed row with no measured
    energy (the notes say why), blank for one that was not timed."""
    if rec is None or rec.get("status") != "ok":
        return "", ""
    if not measured(rec):
        return NOT_MEASURED, ""
    kind = preferred(rec)
    c = cells(rec)
    j = rec["energy"]["net_j_per_call"] if kind == "net" else rec["energy"]["gross_j_per_call"]
    return fmt_joules(j) + ("" if kind == "net" else " g"), c.get("work_per_j", "")


def _rows(n: int) -> str:
    return f"{n} row" + ("" if n == 1 else "s")


def wide_notes(records: list) -> list:
    """Lines under the wide view about energy: what its columns are, and why rows have none.
    Nothing at all when no record carries an energy field (a run without --energy)."""
    if not has_energy(records):
        return []
    timed = [r for r in records if r.get("status") == "ok"]
    whys: dict = {}
    for r in timed:
        if not measured(r):
            why = lack_reason(r)
            whys[why] = whys.get(why, 0) + 1
    out = []
    if any(measured(r) for r in timed):
        out.append("energy: J per call in the --energy window, net of idle (g: gross, no idle measured); "
                   "per J: GFLOP/J compute-bound, GB/J memory-bound; ± in --long")
        out += [f"energy {NOT_MEASURED} ({_rows(n)}): {why}" for why, n in sorted(whys.items())]
    else:
        out += [f"energy not measured on any timed row ({_rows(n)}): {why}; nothing is estimated"
                for why, n in sorted(whys.items())]
    return out


# ---------------------------------------------------------------- across devices

def common_kind(a: dict | None, b: dict | None):
    """The kind two records can be compared in: net where both have a positive net, else
    gross where both were measured; None where either lacks energy. Never net against gross."""
    if not (measured(a) and measured(b)):
        return None
    return "net" if preferred(a) == preferred(b) == "net" else "gross"


def efficiency_vs(base_rec: dict | None, rec: dict | None):
    """(baseline J per call / this device's J per call, kind): above 1, this device spends
    less energy on the call; None where either lacks energy."""
    kind = common_kind(base_rec, rec)
    if kind is None:
        return None
    jb, j = joules(base_rec, kind)[0], joules(rec, kind)[0]
    return (jb / j, kind) if j > 0 and jb > 0 else None


def work_per_j(rec: dict | None, unit: str):
    """GFLOP/J (a row in TFLOP/s) or GB/J (GB/s) of the record's preferred joules, or None."""
    if not measured(rec):
        return None
    j = joules(rec, preferred(rec))[0]
    work = rec.get("flops") if unit == "TFLOP/s" else rec.get("bytes")
    return work / j / 1e9 if work and j > 0 else None
