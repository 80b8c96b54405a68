"""kernelmark/ops/activation.py: silu_and_mul and gelu_tanh_and_mul as the runner uses them —
every backend that runs here passes the check; the other activation fails it; byte counts
are the tensors read and written; the library backends say why they cannot run."""
import pytest
import torch

from kernelmark import dtypes
from kernelmark.ops.registry import get_op

CPU = torch.device("cpu")
OPS = ("silu_and_mul", "gelu_tanh_and_mul")


def _inputs(op, shape, dtype, seed=7):
    return op.make_inputs(shape, dtype, CPU, torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", OPS)
@pytest.mark.parametrize("shape, dtype", [({"tokens": 5, "intermediate": 100}, "bf16"),
                                          ({"tokens": 2, "intermediate": 33}, "fp32"),
                                          ({"tokens": 3, "intermediate": 64}, "fp16")])
def test_every_backend_that_runs_here_passes(name, shape, dtype):
    op = get_op(name)
    op.check_shape(shape, dtype)
    ref = op.reference(_inputs(op, shape, dtype))
    ran = []
    for b in op.backends:
        if b.available() is not None or (b.devices and "cpu" not in b.devices):
            continue
        res = op.compare(b.run(_inputs(op, shape, dtype)), ref, dtype)
        assert res.passed, f"{b.name}: {res.detail}"
        ran.append(b.name)
    assert ran == ["triton", "torch"]


def test_the_other_activation_fails_the_check():
    shape = {"tokens": 8, "intermediate": 256}
    silu, gelu = get_op("silu_and_mul"), get_op("gelu_tanh_and_mul")
    x = _inputs(silu, shape, "bf16")
    assert not silu.compare(gelu.backend("torch").run(x), silu.reference(x), "bf16").passed
    assert not gelu.compare(silu.backend("torch").run(x), gelu.reference(x), "bf16").passed


@pytest.mark.parametrize("name", OPS)
def test_bytes_are_the_tensors_read_and_written(name):
    op = get_op(name)
    shape = {"tokens": 6, "intermediate": 40}
    x = _inputs(op, shape, "fp16")
    written = op.reference(x).numel() * dtypes.itemsize("fp16")
    assert op.nbytes(shape, "fp16") == x["x"].nbytes + written


def test_library_backends_are_gpu_only_and_say_what_is_missing():
    op = get_op("silu_and_mul")
    for name in ("flashinfer", "vllm", "sgl-kernel"):
        b = op.backend(name)
        assert b.devices and "cpu" not in b.devices
        why = b.available()
        assert why is None or name.split("-")[0] in why.replace("_", "-"), why
    fi = op.backend("flashinfer")
    assert "16 bytes" in fi.supports({"tokens": 1, "intermediate": 3}, "bf16", "cuda", (9, 0))
    assert "fp16 and bf16" in fi.supports({"tokens": 1, "intermediate": 64}, "fp32", "cuda", (9, 0))
    assert fi.supports({"tokens": 1, "intermediate": 64}, "bf16", "cuda", (9, 0)) is None
