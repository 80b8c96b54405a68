"""What an op is: inputs, reference, minimum work, and the backends that implement it.

An op says *what* is measured; the harness (runner, timing) alone decides *how*.
An op knows nothing about devices, clocks or timing. Op modules must not import
Triton at import time: a Triton backend imports its kernel module inside ``run`` (the
runner decides whether TRITON_INTERPRET must be set first).

Contract the runner relies on:

* ``make_inputs(shape, dtype, device, gen)`` is deterministic for a given generator
  seed and returns fresh tensors each call (the runner calls it once per backend so an
  op that writes in place, like a cache append, is checked on untouched inputs). It
  must fill every buffer with random data, never zeros, so unwritten outputs show.
* ``reference(inputs)`` computes the result in higher precision from the same inputs
  and must not modify them.
* ``Backend.run(inputs)`` returns what ``reference`` returns (a tensor or a tuple of
  tensors, same order); it is the callable that is timed, so it does no set-up. Set-up
  one backend needs on top of the op's inputs is ``Backend.prepare`` (the runner calls
  ``Backend.setup(inputs)`` once per input set, outside timing).
* A backend that finds only when called that it cannot run a case (a library refusing
  that configuration) raises ``Unsupported`` with the reason: the record is
  ``unsupported``, not an error. Nothing else is caught that way.
* ``flops(shape)`` and ``nbytes(shape, dtype)`` are the minimum the op needs: every
  input read once, every output written once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch

from kernelmark import dtypes
from kernelmark.ops.check import CheckResult, compare  # noqa: F401  (op modules import them from here)

Shape = dict  # param name -> int or str


class Unsupported(Exception):
    """Raised by ``Backend.run`` when the library it calls refuses this case (the message says
    what was refused and where to look instead)."""


@dataclass(frozen=True)
class Backend:
    name: str
    run: Callable[[Any], Any]
    # dtypes it implements; None means every dtype of the op.
    dtypes: Optional[tuple] = None
    # Triton backends run under the interpreter on a CPU: checked there, never timed.
    triton: bool = False
    # Device kinds it runs on ("cpu", "cuda", "rocm"); None means all.
    devices: Optional[tuple] = None
    # Why it cannot run on this machine at all (an optional library missing), or None.
    available: Callable[[], Optional[str]] = lambda: None
    # Why it cannot run this shape/dtype/device (e.g. fp8 needs sm_89+), or None.
    # Called as supports(shape, dtype, device_kind, capability) where capability is
    # (major, minor) on CUDA and None elsewhere.
    supports: Optional[Callable[..., Optional[str]]] = None
    description: str = ""
    # What the backend chose for the last call (an autotuned kernel's config), for the record.
    detail: Optional[Callable[[], Optional[str]]] = None
    # Set-up on top of the op's inputs, outside timing: inputs -> the inputs ``run`` takes
    # (e.g. K/V repeated for a GQA backend that cannot broadcast heads). None: as they are.
    prepare: Optional[Callable[[Any], Any]] = None
    # Other ops whose work this backend's call also does (fused_moe's Triton and vLLM kernels
    # align the routed tokens inside): a model roll-up counts those there, not again. In
    # the record as "covers".
    covers: tuple = ()

    def setup(self, inputs):
        return inputs if self.prepare is None else self.prepare(inputs)

    def leave_out_of_tuning(self, table: dict) -> None:
        """From now on, tuning on target T leaves out table[T][kernel] ({config: why}): what
        the compile check found failing or over a limit for the case about to run."""
        from kernelmark.kernels import autotune_log
        autotune_log.ask(table)

    def tuning_mark(self):
        """Where the autotune log stands before a call of a Triton backend (None for others):
        left_out_since(mark) after the call says what tuning left out for it."""
        if not self.triton:
            return None
        from kernelmark.kernels import autotune_log
        return autotune_log.mark()

    def left_out_since(self, mark):
        """[{"kernel", "config", "why"}, ...]: the autotune configs that the autotuned kernels
        launched since `mark` left out on this device (kernelmark/kernels/autotune_prune.py);
        [] when none; None when no autotuned kernel was launched (nothing to say)."""
        if mark is None:
            return None
        from kernelmark.kernels import autotune_log
        return autotune_log.since(mark) if autotune_log.launched_since(mark) else None


def positive_ints(shape: Shape, names) -> None:
    for k in names:
        v = shape.get(k)
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            raise ValueError(f"shape {shape_str(shape)}: {k} must be a positive integer, got {v!r}")


def given_like(ours: torch.Tensor, given: torch.Tensor, name: str) -> torch.Tensor:
    """A fresh copy of ``given`` shaped, placed and typed as the op's own ``ours`` (fresh, so
    an op writing in place never changes what the next backend is given)."""
    if tuple(given.shape) != tuple(ours.shape):
        raise ValueError(f"given input {name} is {list(given.shape)}; the op's is {list(ours.shape)}")
    return given.to(device=ours.device, dtype=ours.dtype, copy=True).contiguous()


def shape_str(shape: Shape) -> str:
    return " ".join(f"{k}={v}" for k, v in shape.items())


@dataclass(frozen=True)
class Op:
    name: str
    description: str
    params: tuple                  # shape keys, in display order
    dtypes: tuple                  # dtype names the op is defined for
    make_inputs: Callable[[Shape, str, torch.device, torch.Generator], Any]
    reference: Callable[[Any], Any]
    flops: Callable[[Shape], int]
    nbytes: Callable[[Shape, str], int]
    backends: tuple
    # Raise ValueError naming what is wrong with a shape; default: every param a positive int.
    validate: Optional[Callable[[Shape, str], None]] = None
    # Optional parameters and their defaults (filled in before validate).
    defaults: dict = field(default_factory=dict)
    # Bitwise equality instead of a tolerance (copies, gathers).
    exact: bool = False
    # Per-dtype tolerance overrides; else kernelmark.dtypes.TOLERANCE.
    tolerance: dict = field(default_factory=dict)
    # Per-dtype elementwise bound overrides, dtype -> (rtol, atol_rms); else
    # kernelmark.dtypes.ELEMENTWISE. Each one says in its op why the dtype's is too tight.
    elementwise: dict = field(default_factory=dict)
    # Replace the default comparison entirely: check(out, ref, dtype) -> CheckResult. A custom
    # check must bound every element too (see kernelmark/ops/check.py), not only a norm.
    check: Optional[Callable[[Any, Any, str], CheckResult]] = None
    # Which measured bandwidth bounds it: "copy" (device memory) or "h2d"/"d2h" (host link).
    memory_peak: str = "copy"
    # What the byte count rests on beyond the shape, for the record's "inputs":
    # inputs_summary(shape, dtype) -> dict (fused_moe: how many experts its routing hits).
    inputs_summary: Optional[Callable[[Shape, str], dict]] = None
    # Bytes one set of make_inputs' inputs holds, where that is more than nbytes (what a call
    # touches): fused_moe holds every expert's weights and a call reads the hit ones. The
    # runner refuses a case whose inputs cannot fit before allocating them (on a CPU the
    # kernel's OOM killer, not an error, ends an allocation past the free memory).
    alloc_bytes: Optional[Callable[[Shape, str], int]] = None
    # Inputs a caller may give instead of the random ones (a FlashInfer-Trace workload's
    # safetensors blobs): names in the dict make_inputs returns. ``take_given(inputs,
    # {name: tensor})`` puts them in where a plain swap of same-shape tensors is not enough
    # (gemm's nt ``b`` is a view of W [N, K]); None: the swap of ``use_given``.
    given: tuple = ()
    take_given: Optional[Callable[[Any, dict], Any]] = None

    def backend(self, name: str) -> Backend:
        for b in self.backends:
            if b.name == name:
                return b
        raise ValueError(f"op {self.name!r} has no backend {name!r}; "
                         f"known: {', '.join(b.name for b in self.backends)}")

    def full_shape(self, shape: Shape) -> Shape:
        unknown = [k for k in shape if k not in self.params]
        if unknown:
            raise ValueError(f"op {self.name!r} has no shape parameter {', '.join(map(repr, unknown))}; "
                             f"its parameters: {', '.join(self.params)}")
        full = {**self.defaults, **shape}
        missing = [k for k in self.params if k not in full]
        if missing:
            raise ValueError(f"op {self.name!r}: shape {shape_str(shape)} lacks {', '.join(missing)}")
        return {k: full[k] for k in self.params}

    def check_shape(self, shape: Shape, dtype: str) -> None:
        if dtype not in self.dtypes:
            raise ValueError(f"op {self.name!r} is not defined for dtype {dtype!r}; "
                             f"its dtypes: {', '.join(self.dtypes)}")
        if self.validate is not None:
            self.validate(shape, dtype)
        else:
            positive_ints(shape, self.params)

    def use_given(self, inputs, tensors: dict):
        """``inputs`` with the given tensors in place of the op's own, on the inputs' device and
        in their dtype; ValueError naming the input where the op cannot take one."""
        unknown = [n for n in tensors if n not in self.given]
        if unknown:
            raise ValueError(f"op {self.name!r} cannot take given input(s) {', '.join(unknown)} "
                             f"(it takes: {', '.join(self.given) or 'none'})")
        if self.take_given is not None:
            return self.take_given(inputs, tensors)
        for name, t in tensors.items():
            inputs[name] = given_like(inputs[name], t, name)
        return inputs

    def compare(self, out, ref, dtype: str) -> CheckResult:
        if self.check is not None:
            return self.check(out, ref, dtype)
        tol = 0.0 if self.exact else self.tolerance.get(dtype, None)
        if tol is None:
            tol = dtypes.tolerance(dtype)
        return compare(out, ref, tol, exact=self.exact, dtype=dtype, elementwise=self.elementwise.get(dtype))
