"""kernelmark/ops/embedding.py: every backend that runs here returns the table's rows bit for
bit; a lookup off by one id fails the exact check; bytes are the rows touched, not the
table."""
import torch

from kernelmark.ops.registry import get_op

CPU = torch.device("cpu")
OP = get_op("embedding")


def _inputs(shape, dtype, seed=7):
    return OP.make_inputs(shape, dtype, CPU, torch.Generator().manual_seed(seed))


def test_every_backend_that_runs_here_is_exact():
    for shape, dtype in [({"tokens": 9, "vocab": 1000, "hidden": 100}, "bf16"),
                         ({"tokens": 1, "vocab": 32000, "hidden": 64}, "fp32")]:
        OP.check_shape(shape, dtype)
        ref = OP.reference(_inputs(shape, dtype))
        ran = []
        for b in OP.backends:
            if b.devices and "cpu" not in b.devices:
                continue
            res = OP.compare(b.run(_inputs(shape, dtype)), ref, dtype)
            assert res.passed, f"{b.name}: {res.detail}"
            ran.append(b.name)
        assert ran == ["triton", "torch"]


def test_a_lookup_of_the_wrong_row_fails():
    shape = {"tokens": 6, "vocab": 500, "hidden": 32}
    x = _inputs(shape, "bf16")
    ref = OP.reference(x)
    wrong = OP.backend("torch").run({**x, "ids": (x["ids"] + 1) % 500})
    assert not OP.compare(wrong, ref, "bf16").passed


def test_bytes_are_the_rows_read_written_and_the_ids():
    shape = {"tokens": 6, "vocab": 500, "hidden": 32}
    x = _inputs(shape, "fp16")
    out = OP.reference(x)
    assert OP.nbytes(shape, "fp16") == 2 * out.nbytes + x["ids"].nbytes
    assert OP.nbytes(shape, "fp16") < x["table"].nbytes        # the table is not read whole
