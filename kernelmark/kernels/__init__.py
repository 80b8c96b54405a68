"""The implementations being measured: Triton kernels with their launchers.

Kernel modules import Triton at import time, so import them only after the runner has
decided the device (on a CPU, TRITON_INTERPRET=1 must be set before Triton is first
imported).
"""

import os


def interpreting() -> bool:
    """True when Triton kernels run under the Triton interpreter (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
