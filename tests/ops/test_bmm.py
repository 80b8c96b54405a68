"""The bmm op: its work counts, its inputs' layouts, its backends against the reference,
and its check failing spoiled outputs as the runner records them (failed_check)."""
import dataclasses

import pytest
import torch

from kernelmark.harness import device, runner, timing
from kernelmark.ops.base import Backend
from kernelmark.ops.registry import all_ops, get_op
from kernelmark.suites.loader import Case

DTYPES = ("fp32", "fp16", "bf16")


def _inputs(op, shape, dtype, seed=3):
    return op.make_inputs(op.full_shape(shape), dtype, torch.device("cpu"), torch.Generator().manual_seed(seed))


def test_registered_with_its_dtypes():
    op = all_ops()["bmm"]
    assert op.dtypes == DTYPES and {b.name for b in op.backends} == {"torch", "triton"}
    assert op.full_shape({"batch": 2, "m": 1, "n": 4, "k": 4})["layout"] == "nt"


def test_flops_and_bytes_closed_forms():
    op = get_op("bmm")
    s = {"batch": 128, "m": 3, "n": 512, "k": 128, "layout": "nt"}
    assert op.flops(s) == 2 * 128 * 3 * 512 * 128
    assert op.nbytes(s, "bf16") == 128 * (3 * 128 + 128 * 512 + 3 * 512) * 2
    assert op.nbytes(s, "fp32") == 128 * (3 * 128 + 128 * 512 + 3 * 512) * 4


def test_inputs_have_the_engines_strides():
    # A: [batch, m, k] view of token-major [m, batch, k] (q_nope.transpose(0, 1));
    # nt: B [batch, k, n] view of per-head weights [batch, n, k] (SGLang's w_kc / w_vc)
    op = get_op("bmm")
    x = _inputs(op, {"batch": 4, "m": 3, "n": 6, "k": 5, "layout": "nt"}, "fp32")
    assert x["a"].shape == (4, 3, 5) and x["a"].stride() == (5, 20, 1)
    assert x["b"].shape == (4, 5, 6) and x["b"].stride() == (30, 1, 5)
    x = _inputs(op, {"batch": 4, "m": 3, "n": 6, "k": 5, "layout": "nn"}, "fp32")
    assert x["b"].is_contiguous() and x["b"].shape == (4, 5, 6)


@pytest.mark.parametrize("shape, match", [
    ({"batch": 0, "m": 1, "n": 4, "k": 4}, "batch must be a positive integer"),
    ({"batch": 2, "m": 1, "n": -1, "k": 4}, "n must be a positive integer"),
    ({"batch": 2, "m": 1, "n": 4, "k": 4, "layout": "tn"}, "layout must be one of nn, nt"),
])
def test_invalid_shapes(shape, match):
    op = get_op("bmm")
    with pytest.raises(ValueError, match=match):
        op.check_shape(op.full_shape(shape), "fp32")


def test_a_batch_past_the_triton_grid_is_unsupported_there_not_an_error():
    from kernelmark.kernels.bmm import MAX_BATCH
    tri, torch_ = get_op("bmm").backend("triton"), get_op("bmm").backend("torch")
    big = {"batch": MAX_BATCH + 1, "m": 1, "n": 8, "k": 8, "layout": "nt"}
    assert "at most 65535" in tri.supports(big, "bf16", "cuda", (9, 0))
    assert tri.supports({**big, "batch": MAX_BATCH}, "bf16", "cuda", (9, 0)) is None
    assert torch_.supports(big, "bf16", "cuda", (9, 0)) is None


def test_fp8_is_not_defined():
    with pytest.raises(ValueError, match="not defined for dtype 'fp8_e4m3'"):
        get_op("bmm").check_shape(get_op("bmm").full_shape({"batch": 1, "m": 1, "n": 4, "k": 4}), "fp8_e4m3")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("shape", [
    {"batch": 1, "m": 7, "n": 37, "k": 45},                    # batch 1, tails in m, n, k
    {"batch": 5, "m": 33, "n": 20, "k": 70, "layout": "nn"},   # batch > 1, tails past one tile
    {"batch": 8, "m": 1, "n": 64, "k": 16},                    # absorbed q_nope·W_UK, scaled down
    {"batch": 8, "m": 3, "n": 16, "k": 64},                    # ·W_UV, scaled down
])
def test_backends_pass_the_op_check_on_fresh_inputs(dtype, backend, shape):
    op = get_op("bmm")
    ref = op.reference(_inputs(op, shape, dtype))
    out = op.backend(backend).run(_inputs(op, shape, dtype))
    res = op.compare(out, ref, dtype)
    assert res.passed, res.detail


# -------------------------------------------------------------- spoiled outputs
def _one_element(out):
    out = out.clone()
    out[-1, -1, out.shape[2] // 2] += 0.25 * out.float().pow(2).mean().sqrt().item()
    return out


def _batches_swapped(out):
    return out[[1, 0] + list(range(2, out.shape[0]))].clone()


def _last_row_zeroed(out):
    out = out.clone()
    out[-1, -1, :] = 0        # the M tail of the last batch element never written
    return out


SPOILS = {
    "one_element": lambda x: _one_element(torch.bmm(x["a"], x["b"])),
    "batches_swapped": lambda x: _batches_swapped(torch.bmm(x["a"], x["b"])),
    "last_row_zeroed": lambda x: _last_row_zeroed(torch.bmm(x["a"], x["b"])),
    # B read in the wrong layout: each head's weight transposed (n = k, so the shape is right)
    "transposed_b": lambda x: torch.bmm(x["a"], x["b"].transpose(1, 2)),
}


@pytest.fixture
def spoiled_runner(monkeypatch):
    op = dataclasses.replace(get_op("bmm"), backends=tuple(Backend(n, f) for n, f in SPOILS.items()))
    monkeypatch.setattr(runner, "get_op", lambda name: op)
    cfg = runner.RunConfig(timing=timing.TimingConfig(budget_s=0.05, min_samples=5), seed=1)
    out = []
    r = runner.Runner(device.resolve("cpu"), {"l2_bytes": 1 << 20, "datasheet": None},
                      {"copy_gbps": 10.0, "tflops": {"fp32": 0.1}}, cfg, out.append)
    return r, out


@pytest.mark.parametrize("dtype", DTYPES)
def test_spoiled_outputs_are_failed_checks(spoiled_runner, dtype):
    r, out = spoiled_runner
    shape = {"batch": 4, "m": 24, "n": 40, "k": 40, "layout": "nt"}
    r.run([Case("bmm", shape, dtype, tuple(SPOILS), (), "", None, 1, 3)])
    status = {rec["backend"]: rec["status"] for rec in out}
    assert status == {name: "failed_check" for name in SPOILS}
    assert all("timing" not in rec for rec in out)
