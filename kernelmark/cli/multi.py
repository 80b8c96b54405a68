"""`kernelmark run` beyond one device: under torchrun (the collectives suite, one run file
written by rank 0; kernelmark/multi/distributed.py) and on every GPU of a node (``--all-gpus``:
one run per GPU and a node summary that flags an outlier card; kernelmark/multi/allgpus.py).
See docs/multi-gpu.md.
"""

from __future__ import annotations

from kernelmark.errors import UsageError

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
        hooks = [mod.after_run for mod in args.extensions if hasattr(mod, "after_run")]
        return distributed.run(args, after_run=hooks)
    if args.all_gpus:
        from kernelmark.multi import allgpus
        return allgpus.run(args, RUN_PARSER)
    if args.serial or args.outlier_threshold is not None:
        raise UsageError("--serial and --outlier-threshold go with --all-gpus")
    return None
