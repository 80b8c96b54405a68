"""Every op kernelmark knows, found by importing the op modules of this package.

An op module is any module in ``kernelmark.suites`` that defines ``OPS``, a list of
``Op``. Importing them is cheap: op modules import kernels lazily.
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import lru_cache

import kernelmark.suites as _pkg
from kernelmark.suites.op import Op

_NOT_OPS = {"op", "registry", "loader", "models"}


@lru_cache(maxsize=None)
def all_ops() -> dict:
    ops: dict = {}
    for info in sorted(pkgutil.iter_modules(_pkg.__path__), key=lambda i: i.name):
        if info.name in _NOT_OPS or info.name.startswith("_"):
            continue
        mod = importlib.import_module(f"{_pkg.__name__}.{info.name}")
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
