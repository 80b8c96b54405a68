"""Every op kernelmark knows, found by importing the op modules of this package.

An op module is any module in ``kernelmark.ops`` that defines ``OPS``, a list of
``Op``. Importing them is cheap: op modules import kernels lazily. A project can add
its own op modules by naming them, comma-separated, in ``KERNELMARK_OP_MODULES``
(importable module paths); worker processes inherit the variable.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
from functools import lru_cache

import kernelmark.ops as _pkg
from kernelmark.ops.base import Op

_NOT_OPS = {"base", "registry"}


@lru_cache(maxsize=None)
def all_ops() -> dict:
    ops: dict = {}
    names = [f"{_pkg.__name__}.{info.name}"
             for info in sorted(pkgutil.iter_modules(_pkg.__path__), key=lambda i: i.name)
             if info.name not in _NOT_OPS and not info.name.startswith("_")]
    names += [n.strip() for n in os.environ.get("KERNELMARK_OP_MODULES", "").split(",") if n.strip()]
    for name in names:
        mod = importlib.import_module(name)
        for op in getattr(mod, "OPS", ()):
            if op.name in ops:
                raise RuntimeError(f"op {op.name!r} is defined twice ({mod.__name__})")
            ops[op.name] = op
    return ops


def get_op(name: str) -> Op:
    ops = all_ops()
    try:
        return ops[name]
    except KeyError:
        raise ValueError(f"unknown op {name!r}; known: {', '.join(sorted(ops))}") from None


def select_cases(cases, kind: str, ops=None, backends=None, dtypes_=None) -> list:
    """The cases of a suite that run on a device of this kind, kept to the ops, backends and
    dtypes named (None keeps all). An unknown name is a ValueError that lists the known ones."""
    known_ops = all_ops()
    if ops:
        bad = [o for o in ops if o not in known_ops]
        if bad:
            raise ValueError(f"unknown op(s) {', '.join(bad)}; known: {', '.join(sorted(known_ops))}")
    if backends:
        names = {b.name for op in known_ops.values() for b in op.backends}
        bad = [b for b in backends if b not in names]
        if bad:
            raise ValueError(f"unknown backend(s) {', '.join(bad)}; known: {', '.join(sorted(names))}")
    if dtypes_:
        from kernelmark import dtypes as dt
        bad = [d for d in dtypes_ if d not in dt.KNOWN]
        if bad:
            raise ValueError(f"unknown dtype(s) {', '.join(bad)}; known: {', '.join(dt.KNOWN)}")
    chosen = []
    for c in cases:
        if not c.runs_on(kind) or (ops and c.op not in ops) or (dtypes_ and c.dtype not in dtypes_):
            continue
        # A case that cannot run at all (meta["unsupported"]) is kept whatever backends are
        # asked for: its row says why, rather than the case vanishing from the run.
        if backends and not (getattr(c, "meta", None) or {}).get("unsupported"):
            keep = tuple(b for b in c.backends if b in backends)
            if not keep:
                continue
            c = type(c)(**{**c.__dict__, "backends": keep})
        chosen.append(c)
    return chosen
