"""Autotuning that leaves out, before any config is compiled, the configs this GPU cannot launch.

A config whose tiles need more shared memory (LDS on AMD) than a block may use on this GPU
compiles, then fails at its first launch; Triton's autotuner would spend a compile on it and
drop it, saying nothing. Here each autotuned kernel's `early_config_prune` hook (Triton's own
hook, the same in triton 3.6 and 3.9: `hook(configs, named_args, **kwargs)`) first applies the
kernel's own prune by shape, then compares each config's shared-memory need (the kernel's
estimate from its tiles) with the limit of the GPU the arguments are on: the target-limits
table (kernelmark/gpu_limits.py, the numbers `kernelmark compile` checks against), with the
limit the device itself reports where it gives one. Only on that GPU: the same config is kept
on a GPU where it fits. With `kernelmark run --compile-check FILE`, the configs that compile
file found failing or over a limit on this GPU's target, for the case being run, are left out
too (that is where registers come in). What was left out, and why, is written to
autotune_log for the record.

Registers are not estimated here: a kernel's register count is known only once it is
compiled. `kernelmark compile` reports it per target, and `--compile-check` brings its
verdict in; a config that still cannot launch while Triton tunes (it times it as inf) is
named from Triton's own timings (failed_while_tuning).

On the CPU (the Triton interpreter, or meta tensors in the compile check) there is no GPU
limit: nothing is left out.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Callable, Optional

import triton

from kernelmark import gpu_limits
from kernelmark.kernels import autotune_log

SharedBytes = Callable[[object, dict], Optional[int]]      # (config, named args) -> bytes, None: unknown


def split(configs, shared_bytes: Optional[SharedBytes], target, named_args=None, asked=None) -> tuple:
    """(kept, left_out): the configs that fit `target`'s per-block shared memory and that the
    compile check did not rule out (`asked`: {config name: why}), and [(config name, why), ...]
    for the others. Keeps at least one (Triton needs one): if none is left, the one needing
    least shared memory stays, and its launch then fails saying so."""
    if target is None:
        return list(configs), []
    need = {id(c): shared_bytes(c, named_args or {}) if shared_bytes else None for c in configs}
    kept, out = [], []
    for c in configs:
        name = gpu_limits.config_name(c)
        ok, why = gpu_limits.fits(target, need[id(c)], None)
        if asked and name in asked:
            out.append((c, asked[name]))
        elif ok:
            kept.append(c)
        else:
            out.append((c, f"{why} (estimated from the config's tiles, before compiling)"))
    if not kept and out:
        least = min(out, key=lambda p: need[id(p[0])] or 0)
        out.remove(least)
        kept = [least[0]]
    return kept, [(gpu_limits.config_name(c), why) for c, why in out]


def _first_device(named_args: dict):
    for v in named_args.values():
        dev = getattr(v, "device", None)
        if dev is not None and hasattr(v, "data_ptr"):
            return dev
    return None


@functools.lru_cache(maxsize=None)
def _gpu_target(index: int):
    """The Target of GPU `index`: the table's entry for its architecture with the per-block
    limit it reports itself (the device's word is final), or, for a GPU the table does not
    hold, one made of what it reports. None when it reports nothing usable."""
    import torch
    try:
        props = torch.cuda.get_device_properties(index)
    except Exception:  # noqa: BLE001  (no usable device: no limit to prune by)
        return None
    hip = bool(getattr(torch.version, "hip", None))
    backend = "hip" if hip else "cuda"
    arch = str(getattr(props, "gcnArchName", "")).split(":")[0] if hip else props.major * 10 + props.minor
    live = _reported_shared(props, index)
    known = gpu_limits.for_device(backend, arch)
    if known is not None:
        return dataclasses.replace(known, max_shared_bytes=live) if live else known
    if not live:
        return None
    return gpu_limits.Target(f"{backend}:{arch}", backend, arch, 64 if hip else 32, str(props.name), live,
                             512 if hip else 255, None, "reported by the device (torch.cuda.get_device_properties)")


def _reported_shared(props, index: int) -> Optional[int]:
    v = getattr(props, "shared_memory_per_block_optin", None)
    if v:
        return int(v)
    try:
        from triton.runtime import driver
        return int(driver.active.utils.get_device_properties(index)["max_shared_mem"]) or None
    except Exception:  # noqa: BLE001
        return None


def device_target(named_args: dict):
    """The Target whose limits apply to a launch on these arguments; None off a GPU."""
    dev = _first_device(named_args)
    if dev is None or dev.type != "cuda":
        return None
    import torch
    return _gpu_target(dev.index if dev.index is not None else torch.cuda.current_device())


class LimitPrune:
    """The `early_config_prune` hook: the kernel's own prune, then the GPU's limits. Remembers
    what it left out per tuning key, which the launcher wrapper of `autotune` sets."""

    def __init__(self, kernel: str, shared_bytes: Optional[SharedBytes], inner=None, target_of=None):
        self.kernel, self.shared_bytes, self.inner = kernel, shared_bytes, inner
        self.target_of = target_of or device_target
        self.key = None
        self.left_out: dict = {}        # tuning key -> [(config name, why), ...]

    def __call__(self, configs, named_args, **kwargs):
        if self.inner is not None:
            configs = self.inner(configs, named_args, **kwargs)
        target = self.target_of(named_args)
        asked = autotune_log.asked(target.name, self.kernel) if target is not None else None
        kept, out = split(configs, self.shared_bytes, target, named_args, asked)
        self.left_out[self.key] = out
        return kept


def tuning_key(at, args, kwargs) -> tuple:
    """The key Triton's Autotuner.run caches a tuning result under: the values of its `key`
    arguments, then the dtypes of the arguments that have one. None if this Triton's
    Autotuner lacks the attributes (the record then names the last key tuned)."""
    arg_names, keys = getattr(at, "arg_names", None), getattr(at, "keys", None)
    if arg_names is None or keys is None:
        return None
    all_args = {**dict(zip(arg_names, args)), **kwargs}
    named = {k: v for k, v in all_args.items() if k in arg_names}
    key = [named[k] for k in keys if k in named]
    key += [str(v.dtype) for v in named.values() if hasattr(v, "dtype")]
    return tuple(key)


FAILED_WHILE_TUNING = ("failed to compile or launch on this GPU while tuning (Triton timed it as inf: out of "
                       "resources, or a compile error)")


def failed_while_tuning(configs_timings) -> list:
    """[(config name, why), ...]: the configs Triton's autotuner tried and could not run (it
    catches OutOfResources and compile errors and times them as inf): left out too, and said
    so, where no estimate caught them first."""
    if not isinstance(configs_timings, dict):   # a result read from Triton's disk cache is a list of pairs
        return []
    out = []
    for cfg, t in configs_timings.items():
        first = t[0] if isinstance(t, (list, tuple)) and t else t
        if isinstance(first, float) and math.isinf(first):
            out.append((gpu_limits.config_name(cfg), FAILED_WHILE_TUNING))
    return out


def autotune(configs, key, shared_bytes: Optional[SharedBytes] = None, early_config_prune=None, **kw):
    """triton.autotune(configs, key, ...) whose configs over this GPU's limits are left out
    before compiling (`shared_bytes(config, named_args)` is the kernel's estimate of what a
    config needs; None: the kernel has none, and only its own prune applies), and whose every
    launch says in autotune_log what tuning its key left out."""
    def decorator(fn):
        name = getattr(fn, "__name__", None) or fn.fn.__name__
        hook = LimitPrune(name, shared_bytes, early_config_prune)
        at = triton.autotune(configs=configs, key=key, prune_configs_by={"early_config_prune": hook}, **kw)(fn)
        at.limit_prune = hook

        def run(*args, **kwargs):
            # An instance attribute, calling the class's run as it is at call time: the compile
            # check (kernelmark/harness/aot.py) replaces Autotuner.run to record launches.
            hook.key = tuning_key(at, args, kwargs)
            before = getattr(at, "configs_timings", None)
            try:
                return type(at).run(at, *args, **kwargs)
            finally:
                after = getattr(at, "configs_timings", None)
                if after is not before and hook.key in hook.left_out:      # this call tuned: add what failed
                    hook.left_out[hook.key] = hook.left_out[hook.key] + failed_while_tuning(after)
                autotune_log.note(name, hook.left_out.get(hook.key))

        at.run = run
        return at
    return decorator
