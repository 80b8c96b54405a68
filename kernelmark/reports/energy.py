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
