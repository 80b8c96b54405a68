"""``torch.compile`` of an op's own eager torch function, as a backend. Defines no ops.

What it measures: the code torch's compiler (Inductor; on a GPU it generates Triton)
makes of exactly the function the ``torch`` backend runs eagerly. Compiled with
``fullgraph=True`` (a graph break is an error, not a silent partial compile) and
``dynamic=False`` (each shape specialised, as the eager kernels and ours are).

The first call for a new input signature compiles; the runner's first call (the check)
stays outside timing, so compilation is never timed. Two traps of a long-running
benchmark process are avoided:

* torch caches compiled graphs per Python code object and, past its recompile limit
  (8 by default), runs the function eagerly — or, with fullgraph=True, raises
  (FailOnRecompileLimitHit, torch 2.13): from the ninth shape of a suite on, every
  torch-compile row would be an error, or eager code under the torch-compile name. So on
  a new signature the compile caches are reset (``torch.compiler.reset()``) and the
  function compiled afresh: each case gets its own static compile, however many cases
  came before.
* the signature is a cheap key the op chooses (shapes, dtype, scalar parameters), not a
  walk over every tensor, so the timed call adds almost nothing before the compiled
  function's own guards.
"""

from __future__ import annotations

from typing import Any, Callable, Hashable

import torch

# A tiny compile on the 2-core development CPU (cold caches) took 24 s, over the 20 s
# this project allows a CPU backend: these backends run on GPUs only.
GPU = ("cuda", "rocm")


class Compiled:
    """``run(x)`` = ``torch.compile(fn)(x)``, recompiled (after a reset) whenever
    ``key(x)`` changes. ``backend`` is torch.compile's (tests use "eager" or a counter)."""

    def __init__(self, fn: Callable[[Any], Any], key: Callable[[Any], Hashable], backend: Any = "inductor"):
        self.fn, self.key, self.backend = fn, key, backend
        self._key: Hashable = None
        self._compiled: Callable[[Any], Any] | None = None
        self.compiles = 0          # how many fresh compiles were started (for tests and records)

    def __call__(self, x):
        k = self.key(x)
        if self._compiled is None or k != self._key:
            torch.compiler.reset()
            self._compiled = torch.compile(self.fn, backend=self.backend, fullgraph=True, dynamic=False)
            self._key = k
            self.compiles += 1
        return self._compiled(x)


def tensor_key(*names: str, scalars: tuple = ()) -> Callable[[dict], tuple]:
    """A key of the shapes and dtypes of the inputs' tensors ``names`` and the values of
    the scalar inputs ``scalars``."""
    def key(x: dict) -> tuple:
        return (tuple((tuple(x[n].shape), x[n].dtype, x[n].device) for n in names)
                + tuple(x[s] for s in scalars))
    return key


DESCRIPTION = ("torch.compile (Inductor, fullgraph, static shapes) of the torch backend's function; "
               "compiled on the first call of each case, outside timing; GPU only (a cold compile "
               "took 24 s on a 2-core CPU)")
