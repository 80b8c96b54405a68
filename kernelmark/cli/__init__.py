"""The `kernelmark` command. One module per command group: run.py (run, list, env),
reports.py (report, model, publish), ci.py (compare, ab, history, export) and multi.py
(torchrun and --all-gpus); this module assembles the parser and dispatches.

Exit status: 0 when the command did its job (a run that finished, even with failed
checks, which its table shows); 2 on usage or input errors (unknown op, bad suite file,
unwritable output, a device that is not there).
"""

from __future__ import annotations

import argparse
import sys

from kernelmark.errors import USAGE_ERROR, UsageError  # noqa: F401  (re-exported for command modules)


# Modules that add subcommands. Each has register(subparsers), which adds its parsers with
# set_defaults(func=...) (func(args) -> exit status, raising UsageError on bad input), and
# optionally add_run_arguments(run_parser) and after_run(args, run_path) to extend `run`.
# A module may also define intercept_run(args) -> exit status or None, to take over `run`
# (distributed launches, one run per GPU of a node).
COMMAND_MODULES = ("kernelmark.cli.reports", "kernelmark.cli.ci", "kernelmark.cli.multi", "kernelmark.cli.compile")
# run, list and env (kernelmark/cli/run.py) are registered first, by _parser itself.


def _command_modules() -> list:
    import importlib
    mods = []
    for name in COMMAND_MODULES:
        try:
            mods.append(importlib.import_module(name))
        except ModuleNotFoundError as e:
            if e.name != name:      # a real missing dependency inside the module
                raise
    return mods


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kernelmark", description="GPU kernel microbenchmarks for LLM inference.")
    sub = p.add_subparsers(dest="cmd", required=True)

    from kernelmark.cli import run as run_cmd
    r = run_cmd.register(sub)

    for mod in _command_modules():
        mod.register(sub)
        if hasattr(mod, "add_run_arguments"):
            mod.add_run_arguments(r)
    return p


def main(argv: list | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    args.command = ["kernelmark", *(sys.argv[1:] if argv is None else argv)]
    try:
        args.parser, args.extensions = parser, _command_modules()
        return args.func(args)
    except UsageError as e:
        print(f"kernelmark: error: {e}", file=sys.stderr)
        return USAGE_ERROR
    except KeyboardInterrupt:
        print("kernelmark: interrupted; records written so far are kept", file=sys.stderr)
        return 130
    except BrokenPipeError:     # `kernelmark report ... | head`: the reader left; not an error of ours
        import os
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


