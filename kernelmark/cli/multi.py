"""`kernelmark run` beyond one device: under torchrun (the collectives suite, one run file
written by rank 0; kernelmark/multi/distributed.py) and on every GPU of a node (``--all-gpus``:
one run per GPU and a node summary that flags an outlier card; kernelmark/multi/allgpus.py).
See docs/multi-gpu.md.
"""

from __future__ import annotations

from kernelmark.cli import UsageError

# The `run` parser, kept so that --all-gpus can rebuild each GPU's command line from it.
RUN_PARSER = None


def register(subparsers) -> None:
    """No subcommand of its own: this module extends `run`."""


def add_run_arguments(run_parser) -> None:
    global RUN_PARSER
    RUN_PARSER = run_parser
    g = run_parser.add_argument_group("every GPU of a node (docs/multi-gpu.md)")
    g.add_argument("--all-gpus", action="store_true",
                   help="run the suite on each visible GPU (one process per GPU, in parallel), one run file "
                        "per GPU in the --out directory, and a node summary flagging an outlier card")
    g.add_argument("--serial", action="store_true", help="with --all-gpus: one GPU after the other")
    g.add_argument("--outlier-threshold", metavar="PCT",
                   help="with --all-gpus: a GPU is flagged when a case is more than this slower than the "
                        "node's median for it, as 10%% or 0.1 (default 10%%)")


def intercept_run(args):
    """Take over `run` under torchrun or with --all-gpus; None lets the normal run proceed."""
    from kernelmark.multi import distributed
    if distributed.launched():
        if args.all_gpus:
            raise UsageError("--all-gpus cannot be combined with torchrun: torchrun already starts "
                             "one process per GPU")
        return distributed.run(args)
    if args.all_gpus:
        from kernelmark.multi import allgpus
        return allgpus.run(args)
    if args.serial or args.outlier_threshold is not None:
        raise UsageError("--serial and --outlier-threshold go with --all-gpus")
    return None


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
