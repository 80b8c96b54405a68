import os
import tempfile
from pathlib import Path

import pytest

# Tests run on machines without a GPU: Triton kernels go through the interpreter,
# which must be switched on before Triton is first imported.
os.environ.setdefault("TRITON_INTERPRET", "1")
# Measured peaks are cached; keep the tests' cache out of the user's.
os.environ.setdefault("KERNELMARK_CACHE_DIR", tempfile.mkdtemp(prefix="kernelmark-test-cache-"))
# Every `kernelmark run` is also added to a history database; keep the tests' runs out of the user's.
os.environ.setdefault("KERNELMARK_DATA_DIR", tempfile.mkdtemp(prefix="kernelmark-test-data-"))


@pytest.fixture(params=["orjson", "stdlib"])
def json_parser(request, monkeypatch):
    """Run files read by orjson (where it is installed) and by Python's json, its fallback on
    machines without it (kernelmark/results.py): every refusal must be the same both ways."""
    from kernelmark import results
    if request.param == "stdlib":
        monkeypatch.setattr(results, "FAST_LOADS", None)
    elif results.FAST_LOADS is None:
        pytest.skip("orjson is not installed")
    return request.param


@pytest.fixture
def chaos_ops(monkeypatch):
    """The test-only ops of tests/chaos_ops.py, in this process and the runs it starts."""
    from kernelmark.ops import registry
    monkeypatch.setenv("KERNELMARK_OP_MODULES", "chaos_ops")
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parent))
    registry.all_ops.cache_clear()
    yield
    registry.all_ops.cache_clear()
