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
