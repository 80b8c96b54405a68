"""The options of `kernelmark run` that every way of running a suite shares (one process,
worker processes, torchrun ranks): which cases, and sampling limits that make sense."""

from __future__ import annotations

import math

from kernelmark.errors import UsageError

DEFAULT_ENERGY_WINDOW_S = 2.0


def names(s: str | None) -> list | None:
    """A comma-separated option as a list, or None when it was not given."""
    return [x.strip() for x in s.split(",") if x.strip()] if s else None


def select(suite, args, kind: str) -> list:
    """The suite's cases for a device of this kind, kept to --ops, --backends and --dtypes."""
    from kernelmark.ops.registry import select_cases
    try:
        cases = select_cases(suite.cases, kind, names(args.ops), names(args.backends), names(args.dtypes))
    except ValueError as e:
        raise UsageError(str(e)) from None
    if not cases:
        raise UsageError(f"suite {suite.name!r} has no case for {kind} with the filters given")
    return cases


def check_sampling(args) -> None:
    """--budget, --target-ci and --timeout: finite, positive, and a fraction where one is meant."""
    budget, target_ci, timeout = args.budget, args.target_ci, getattr(args, "timeout", None)
    if budget is not None and not (math.isfinite(budget) and budget > 0):
        raise UsageError(f"--budget must be a positive, finite number of seconds (got {budget})")
    if not (math.isfinite(target_ci) and 0 < target_ci < 1):
        raise UsageError(f"--target-ci must be a fraction between 0 and 1, e.g. 0.01 (got {target_ci})")
    if timeout is not None and not (math.isfinite(timeout) and timeout > 0):
        raise UsageError(f"--timeout must be a positive, finite number of seconds (got {timeout})")


def energy_window(args) -> float | None:
    """--energy and --energy-window: the window's seconds, or None when energy is off."""
    window = getattr(args, "energy_window", None)
    if not getattr(args, "energy", False):
        if window is not None:
            raise UsageError("--energy-window needs --energy")
        return None
    if window is None:
        return DEFAULT_ENERGY_WINDOW_S
    if not (math.isfinite(window) and 0 < window <= 3600):
        raise UsageError(f"--energy-window must be a positive number of seconds, at most 3600 (got {window})")
    return window
