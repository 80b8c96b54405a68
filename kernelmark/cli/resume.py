"""`kernelmark run --resume RUN`: the options of the run being continued, read from its header.

The header is data, whoever wrote it: its ``command`` is read with the `run` parser's own
grammar, and only the options that say which cases run and how they are measured are taken
from it (``FROM_HEADER``). Everything about this invocation (the history database, the
output format, quiet, force) comes from the command line typed now; the run file is always
the one resumed. A header without a `kernelmark run` command is refused, and so is a
command line that gives an option the run's header decides.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import shlex
import sys
import warnings

from kernelmark.errors import UsageError

# Which cases run and how they are measured: always the run's own, never the command line's.
FROM_HEADER = ("suite", "ops", "backends", "dtypes", "device", "budget", "target_ci", "seed", "threads",
               "compile_check")
# How cases are run (a worker per case, a time limit): the run's, unless given again now.
OVERRIDABLE = ("isolation", "timeout")
# Meaningless with --resume: the run file is the one resumed, its peaks are in its header.
REFUSED = ("out", "remeasure")

_UNSET = object()


def option_name(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def given(argv: list, run_parser, dests) -> set:
    """The options among ``dests`` that ``argv`` (after `run`) gives explicitly, whatever
    their value (`--suite default` counts). argparse only fills in a default where the
    namespace lacks the attribute, so every one starts as a marker and the given ones change."""
    probe = argparse.Namespace(**{d: _UNSET for d in dests})
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        try:
            run_parser.parse_known_args(argv, probe)
        except SystemExit:      # argv was parsed once already; it cannot fail here
            pass
    return {d for d in dests if getattr(probe, d) is not _UNSET}


def header_command(run, run_parser) -> argparse.Namespace:
    """The options of the `kernelmark run` command in ``run``'s header, parsed and checked."""
    cmd = run.header.get("command")
    shown = shlex.join(cmd)[:200] if isinstance(cmd, list) and all(isinstance(t, str) for t in cmd) \
        else repr(cmd)[:200]
    if not (isinstance(cmd, list) and len(cmd) >= 2 and all(isinstance(t, str) for t in cmd)
            and cmd[:2] == ["kernelmark", "run"]):
        what = "has no command" if cmd is None else f"was made by `{shown}`"
        raise UsageError(f"--resume {run.path}: its header {what}, not `kernelmark run ...`: "
                         "only a run of `kernelmark run` can be resumed")
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            opts, extra = run_parser.parse_known_args(cmd[2:])
    except SystemExit:
        why = (err.getvalue().strip().splitlines() or ["not readable"])[-1]
        raise UsageError(f"--resume {run.path}: the command in its header ({shown}) is not a valid "
                         f"`kernelmark run` command: {why.split('error: ', 1)[-1]}") from None
    if extra:
        raise UsageError(f"--resume {run.path}: the command in its header ({shown}) has "
                         f"{' '.join(extra[:3])}, which `kernelmark run` does not take")
    return opts


def load(path: str):
    """The run to continue; a truncated last line is one warning line, not a Python warning."""
    from kernelmark import results
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            run = results.load(path)
        except results.RunFileError as e:
            raise UsageError(f"--resume: {e}") from None
    for w in run.warnings:
        print(f"kernelmark: warning: {w}", file=sys.stderr)
    if run.complete:
        raise UsageError(f"--resume: {path} is complete (it has a footer); nothing to resume")
    return run


def resume_args(args, run_parser) -> tuple:
    """(the options to run with, the run being continued) for ``kernelmark run --resume RUN``."""
    typed = given(args.command[2:], run_parser, FROM_HEADER + OVERRIDABLE + REFUSED)
    clash = [option_name(d) for d in FROM_HEADER + REFUSED if d in typed]
    if clash:
        raise UsageError(f"--resume takes the run's own options from {args.resume}: give it without "
                         f"{', '.join(clash)} (the run file is the one resumed, and its suite, filters, "
                         "sampling and peaks are those it was started with)")
    run = load(args.resume)
    orig = header_command(run, run_parser)
    new = argparse.Namespace(**vars(args))
    for d in FROM_HEADER + tuple(d for d in OVERRIDABLE if d not in typed):
        setattr(new, d, getattr(orig, d))
    new.out = args.resume
    return new, run
