"""kernelmark/ops/norm.py: rmsnorm and fused_add_rmsnorm as the runner uses them — every
backend that runs here passes the check on make_inputs; the inputs make a kernel that
ignores eps, drops the weight or leaves the residual unwritten fail; byte counts are
the bytes of the tensors read and written; bad shapes are suite errors with the line."""
import pytest
import torch

from kernelmark import dtypes
from kernelmark.ops.registry import get_op
from kernelmark.suites import loader

CPU = torch.device("cpu")


def _gen(seed=7):
    return torch.Generator().manual_seed(seed)


def _inputs(op, shape, dtype, seed=7):
    return op.make_inputs(shape, dtype, CPU, _gen(seed))


@pytest.mark.parametrize("name", ["rmsnorm", "fused_add_rmsnorm"])
@pytest.mark.parametrize("shape, dtype", [({"tokens": 7, "hidden": 300}, "bf16"),
                                          ({"tokens": 3, "hidden": 64, "eps": 1e-6}, "fp32"),
                                          ({"tokens": 5, "hidden": 130}, "fp16")])
def test_every_backend_that_runs_here_passes(name, shape, dtype):
    op = get_op(name)
    shape = op.full_shape(shape)
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


def test_an_rmsnorm_without_eps_or_without_the_weight_fails():
    op = get_op("rmsnorm")
    shape = op.full_shape({"tokens": 16, "hidden": 256, "eps": 1e-5})
    ref = op.reference(_inputs(op, shape, "bf16"))
    x = _inputs(op, shape, "bf16")
    h = x["x"].float()
    no_eps = (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True)) * x["weight"].float()).bfloat16()
    no_weight = (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-5)).bfloat16()
    assert not op.compare(no_eps, ref, "bf16").passed
    assert not op.compare(no_weight, ref, "bf16").passed


def test_a_fused_add_that_does_not_write_the_residual_back_fails():
    op = get_op("fused_add_rmsnorm")
    shape = op.full_shape({"tokens": 8, "hidden": 128})
    ref = op.reference(_inputs(op, shape, "bf16"))
    x = _inputs(op, shape, "bf16")
    y, _ = op.backend("torch").run(_inputs(op, shape, "bf16"))    # y right, r left as it was:
    res = op.compare((y, x["residual"]), ref, "bf16")
    assert not res.passed and res.detail.startswith("output 1:")


def test_the_triton_backend_writes_y_into_x_and_r_in_place():
    op = get_op("fused_add_rmsnorm")
    shape = op.full_shape({"tokens": 4, "hidden": 96})
    x = _inputs(op, shape, "fp16")
    y, r = op.backend("triton").run(x)
    assert y.data_ptr() == x["x"].data_ptr() and r.data_ptr() == x["residual"].data_ptr()


def test_make_inputs_is_deterministic_fresh_and_eps_matters_for_some_rows():
    op = get_op("fused_add_rmsnorm")
    shape = op.full_shape({"tokens": 64, "hidden": 128})
    a, b = _inputs(op, shape, "bf16", 3), _inputs(op, shape, "bf16", 3)
    for k in ("x", "residual", "weight"):
        assert torch.equal(a[k], b[k]) and a[k].data_ptr() != b[k].data_ptr()
        assert a[k].float().count_nonzero() > 0.9 * a[k].numel()
    ms = a["x"].float().pow(2).mean(-1)
    assert float(ms.min()) < shape["eps"] < float(ms.max())


@pytest.mark.parametrize("name", ["rmsnorm", "fused_add_rmsnorm"])
def test_bytes_are_the_tensors_read_and_written(name):
    op = get_op(name)
    shape = op.full_shape({"tokens": 6, "hidden": 80})
    x = _inputs(op, shape, "bf16")
    read = sum(x[k].nbytes for k in ("x", "weight", "residual") if k in x)
    out = op.reference(x)
    written = sum(o.numel() for o in (out if isinstance(out, tuple) else (out,))) * dtypes.itemsize("bf16")
    assert op.nbytes(shape, "bf16") == read + written
    assert op.flops(shape) == (5 if name == "fused_add_rmsnorm" else 4) * 6 * 80


@pytest.mark.parametrize("shape, message", [
    ("{tokens = 4, hidden = 64, eps = -1e-5}", r"eps must be a number in \[0, 1\), got -1e-05"),
    ('{tokens = 4, hidden = 64, eps = "1e-5"}', "eps must be a number"),
    ("{tokens = 4, hidden = 64.0}", "hidden must be a positive integer, got 64.0"),
    ("{tokens = 0, hidden = 64}", "tokens must be a positive integer"),
])
def test_bad_shapes_are_suite_errors_with_the_line(tmp_path, shape, message):
    p = tmp_path / "s.toml"
    p.write_text(f'name = "s"\n\n[[case]]\nop = "rmsnorm"\nshapes = [{shape}]\n')
    with pytest.raises(loader.SuiteError, match=rf"s\.toml:3 \(case 1\): .*{message}"):
        loader.load(str(p))


def test_a_suite_gives_eps_as_a_float_and_the_default_is_llamas(tmp_path):
    p = tmp_path / "s.toml"
    p.write_text('[[case]]\nop = "rmsnorm"\nshapes = [{tokens = 4, hidden = 64, eps = 1e-6}, {tokens = 4, hidden = 64}]\n')
    assert [c.shape["eps"] for c in loader.load(str(p)).cases] == [1e-6, 1e-5]
