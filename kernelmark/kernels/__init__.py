"""The implementations being measured: Triton kernels with their launchers.

Kernel modules import Triton at import time, so import them only after the runner has
decided the device (on a CPU, TRITON_INTERPRET=1 must be set before Triton is first
imported).
"""

from __future__ import annotations

import os


def interpreting() -> bool:
    """True when Triton kernels run under the Triton interpreter (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def chosen_config(kernel) -> str | None:
    """The config an autotuned kernel used on its last launch ("BLOCK_M: 128, ..., num_warps: 8"),
    or None before any launch. Records carry it so that a tuning change shows up in a comparison."""
    cfg = getattr(kernel, "best_config", None)
    return None if cfg is None else str(cfg)
