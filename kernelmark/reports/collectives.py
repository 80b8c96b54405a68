"""The collectives of a run in nccl-tests' terms (time, algbw, busbw, % of the link's peak),
printed under the main table of a torchrun run. Reads run records only."""

from __future__ import annotations


def _size(n: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift} {unit}"
    return f"{n} B"


def busbw_table(header: dict, records: list, fmt: str = "table") -> str:
    """The collectives in nccl-tests' terms: time, algbw, busbw and % of the link's peak."""
    from tabulate import tabulate
    d = header.get("distributed") or {}
    link = d.get("link") or {}
    rows = []
    for r in records:
        if r.get("bus_factor") is None and r["status"] == "ok":
            continue            # not a collective
        if r["status"] != "ok":
            if "bytes" in r["shape"]:
                rows.append([r["op"], _size(r["shape"]["bytes"]), r["dtype"], "", "", "", "", "", r["status"]])
            continue
        t = r["timing"]
        pct = r.get("pct_of_link_peak")
        rows.append([r["op"], _size(r["bytes"]), r["dtype"], f"{t['median_us']:.2f}", f"±{100 * t['ci_rel']:.1f}%",
                     f"{r['algbw_gbps']:.2f}", f"{r['busbw_gbps']:.2f}",
                     f"{pct:.1f}" if isinstance(pct, (int, float)) else "unknown",
                     f"ok (slowest rank {r['slowest_rank']})"])
    if link.get("gbps"):
        about = f"link: {link['name']}, {link['gbps']:g} GB/s per direction ({link.get('source')})"
    else:
        about = f"link peak unknown: {link.get('why', 'not a distributed run')}"
    title = (f"collectives on {d.get('world_size')} ranks ({d.get('backend')}"
             + (f" {d['nccl_version']}" if d.get("nccl_version") else "")
             + f"), time = slowest rank per sample; busbw as nccl-tests (doc/PERFORMANCE.md); {about}")
    heads = ["op", "size", "dtype", "time µs", "±95% CI", "algbw GB/s", "busbw GB/s", "% link", "status"]
    return title + "\n" + tabulate(rows, headers=heads, tablefmt="github" if fmt == "md" else "simple",
                                   disable_numparse=True)
