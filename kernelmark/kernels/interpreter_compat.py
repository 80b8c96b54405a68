"""A work-around for a bug in the Triton interpreter of Triton 3.6 (and releases before
it) under numpy >= 2.4, which the kernels would otherwise hit in every loop.

The interpreter holds every scalar of a kernel (a scalar argument, a ``tl.load`` of one
address, ``tl.cdiv`` or ``tl.minimum`` of scalars, a reduction) as a one-element 1-D
numpy array, and converts it with ``int(array)`` wherever Python needs an int: in the
bounds of ``for i in range(lo, hi)``. numpy 2.4 made ``int()`` of an array with ndim > 0
a TypeError ("only 0-dimensional arrays can be converted to Python scalars"), so any
loop whose bound is not a constexpr fails: the K loop of the GEMM, the key loop of
prefill attention, the per-split loop of paged decode. Triton fixed its interpreter in
3.8 (triton-lang/triton issue 9171; 3.8 converts ``data.squeeze()``), but the GPU machines
run 3.6.

No form of a runtime loop bound avoids it inside a kernel (all scalars are 1-D there),
and making the bounds constexpr or the loops ``while`` loops would change the compiled
kernels (a recompile per value; no software pipelining). So the fix is here, in the
interpreter, and only when it is needed: ``apply()`` probes the interpreter and, where
its scalar-to-int conversion fails, has it convert the single element instead. The
compiled (GPU) path is never touched: nothing is done unless TRITON_INTERPRET is set,
and the interpreter module is not used by compiled kernels.
"""

from __future__ import annotations

import operator

import numpy as np

_applied = False


def _scalar_index(self) -> int:
    # The interpreter's scalar is a one-element array; take that element. A block
    # tensor (more than one element) still fails, as it does in a compiled kernel.
    return operator.index(self.handle.data.reshape(()).item())


def _interpreter():
    """Triton's interpreter module if it has the layout this work-around knows
    (a _patch_lang_tensor(tensor, scope) that _patch_lang calls per launch), else None."""
    try:
        from triton.runtime import interpreter
    except ImportError:
        return None
    if not all(hasattr(interpreter, n) for n in ("_patch_lang_tensor", "_LangPatchScope", "TensorHandle")):
        return None
    return interpreter


def scalar_bound_fails() -> bool:
    """True where the interpreter cannot use a runtime scalar as a loop bound: run its
    own tensor patching on a one-element scalar, as it does at each launch, and ask
    Python for the int that range() would ask for."""
    interpreter = _interpreter()
    if interpreter is None:
        return False
    import triton.language as tl

    scalar = tl.tensor(interpreter.TensorHandle(np.array([3], dtype=np.int32), tl.int32), tl.int32)
    scope = interpreter._LangPatchScope()
    try:
        interpreter._patch_lang_tensor(tl.tensor, scope)
        return operator.index(scalar) != 3
    except TypeError:
        return True
    finally:
        scope.restore()


def apply() -> bool:
    """Install the work-around where the interpreter is on and needs it; returns whether
    it is installed. Idempotent; call before the first kernel launch (tl_utils does, at
    import)."""
    global _applied
    from kernelmark.kernels import interpreting

    if _applied:
        return True
    if not interpreting() or not scalar_bound_fails():
        return False
    interpreter = _interpreter()
    original = interpreter._patch_lang_tensor

    def patch_lang_tensor(tensor, scope):
        original(tensor, scope)
        # Through the scope, so that the interpreter restores tl.tensor after the launch.
        scope.set_attr(tensor, "__index__", _scalar_index)

    interpreter._patch_lang_tensor = patch_lang_tensor
    _applied = True
    return True
