"""Where the optional libraries' kernels for norms, activations and RoPE are found, and
why one is not usable here. Defines no ops.

FlashInfer (``flashinfer.norm``, ``flashinfer.activation``, ``flashinfer.rope``),
sgl-kernel (``sgl_kernel``: the same kernels as FlashInfer's, packaged for SGLang) and
vLLM's compiled ops (``vllm._custom_ops``, or ``torch.ops._C`` for the activations,
which vLLM's layers call directly). Every lookup is made once per process and only when
a backend is first asked about (importing vLLM takes seconds); ``available()`` returns
the reason a library cannot be used, never raises.
"""

from __future__ import annotations

import importlib
import importlib.util
from functools import lru_cache
from typing import Callable, Optional

GPU = ("cuda", "rocm")


def _spec_missing(package: str) -> bool:
    try:
        return importlib.util.find_spec(package) is None
    except (ImportError, ValueError):
        return True


@lru_cache(maxsize=None)
def module_function(module: str, name: str):
    """``module.name`` or raises ImportError/AttributeError."""
    return getattr(importlib.import_module(module), name)


def function_available(module: str, name: str, pip_name: str) -> Callable[[], Optional[str]]:
    """An ``available()`` for the function ``module.name`` of package ``pip_name``."""
    package = module.split(".")[0]

    @lru_cache(maxsize=None)
    def available() -> Optional[str]:
        if _spec_missing(package):
            return f"{pip_name} is not installed"
        try:
            module_function(module, name)
        except AttributeError:
            return f"this {pip_name} has no {module}.{name}"
        except Exception as e:  # a broken install: say so rather than fail the run
            return f"{module} does not import: {type(e).__name__}: {str(e)[:200]}"
        return None
    return available


@lru_cache(maxsize=None)
def vllm_op(name: str):
    """vLLM's compiled op ``name``: ``vllm._custom_ops.name`` where it has a Python
    wrapper, else ``torch.ops._C.name`` (registered when vLLM's extension is imported)."""
    ops = importlib.import_module("vllm._custom_ops")
    fn = getattr(ops, name, None)
    if fn is not None:
        return fn
    import torch
    return getattr(torch.ops._C, name)


def vllm_available(name: str) -> Callable[[], Optional[str]]:
    @lru_cache(maxsize=None)
    def available() -> Optional[str]:
        if _spec_missing("vllm"):
            return "vllm is not installed"
        try:
            vllm_op(name)
        except (AttributeError, RuntimeError):
            return f"this vllm has neither _custom_ops.{name} nor torch.ops._C.{name}"
        except Exception as e:
            return f"vllm._custom_ops does not import: {type(e).__name__}: {str(e)[:200]}"
        return None
    return available


def half_precision_only(library: str):
    """A ``supports`` for kernels built for fp16/bf16 only."""
    def supports(shape, dtype, device_kind, capability):
        if dtype not in ("fp16", "bf16"):
            return f"{library} builds this kernel for fp16 and bf16 only"
        return None
    return supports
