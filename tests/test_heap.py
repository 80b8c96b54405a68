"""kernelmark/heap.py: with freed memory kept, the arrays of compare's batches, made and
dropped again and again, stop faulting in fresh pages (counted by the kernel, not timed)."""
import subprocess
import sys

import pytest

from kernelmark import heap

CHURN = """
import resource, sys
import numpy as np
from kernelmark import heap
if sys.argv[1] == "keep":
    assert heap.keep_freed()
rng = np.random.default_rng(0)
rows = [rng.random(1000) for _ in range(64)]
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(100):        # what a batch of compare's statistics makes and frees
    x = np.sort(np.stack(rows), axis=1)
    y = np.sort(np.stack(rows), axis=1)
    p = np.concatenate([x, y], axis=1)
    o = np.argsort(p, axis=1, kind="stable")
    v = np.take_along_axis(p, o, axis=1)
    rows = [rng.random(1000) for _ in range(64)]    # the next batch's samples, read meanwhile
    del x, y, p, o, v
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", CHURN, mode], capture_output=True, text=True, check=True)
    return int(out.stdout)


def _glibc() -> bool:
    import ctypes
    try:
        ctypes.CDLL(None).gnu_get_libc_version
        return sys.platform.startswith("linux")
    except (OSError, AttributeError):
        return False


@pytest.mark.skipif(not _glibc(), reason="mallopt is glibc's")
def test_kept_memory_is_reused_not_faulted_in_again():
    plain, kept = _faults("plain"), _faults("keep")
    assert plain > 100 * 200            # 0.5 to 1 MiB arrays: 128 to 256 fresh pages each
    assert kept < plain / 10, (plain, kept)


def test_elsewhere_it_says_it_could_not(monkeypatch):
    monkeypatch.setattr(sys, "platform", "darwin")
    assert heap.keep_freed() is False
