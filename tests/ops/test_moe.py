"""kernelmark/ops/moe.py: fused_moe against the fp64 per-expert loop; a kernel that drops
one expert's output must fail; bytes count only the experts the routing hits."""
import pytest
import torch

from kernelmark import dtypes
from kernelmark.harness import device, runner, timing
from kernelmark.ops import moe
from kernelmark.ops.registry import get_op
from kernelmark.suites.loader import Case

CPU = torch.device("cpu")
OP = get_op("fused_moe")


def _x(shape, dtype, seed=0):
    return OP.make_inputs(shape, dtype, CPU, torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("shape,dtype", [
    ({"tokens": 5, "experts": 6, "topk": 2, "hidden": 80, "inter": 48}, "bf16"),               # K and N tails
    ({"tokens": 3, "experts": 3, "topk": 2, "hidden": 128, "inter": 128, "shared": 1}, "fp8_e4m3"),
])
def test_triton_matches_the_fp64_loop(shape, dtype):
    shape = OP.full_shape(shape)
    OP.check_shape(shape, dtype)
    ref = OP.reference(_x(shape, dtype))
    res = OP.compare(OP.backend("triton").run(_x(shape, dtype)), ref, dtype)
    assert res.passed, res.detail


@pytest.mark.parametrize("dtype", ["bf16", "fp8_e4m3"])
def test_torch_loop_passes_and_dropping_one_expert_fails(dtype):
    shape = OP.full_shape({"tokens": 32, "experts": 8, "topk": 2, "hidden": 128, "inter": 128, "shared": 1})
    ref = OP.reference(_x(shape, dtype))
    honest = OP.compare(OP.backend("torch").run(_x(shape, dtype)), ref, dtype)
    assert honest.passed, honest.detail
    x = _x(shape, dtype)
    # A kernel that loses one routed expert's output: its pairs contribute nothing.
    x["topk_weights"][x["topk_ids"] == 3] = 0
    res = OP.compare(OP.backend("torch").run(x), ref, dtype)
    assert not res.passed and "elements outside" in res.detail


def test_bytes_count_only_the_experts_hit():
    s = OP.full_shape({"tokens": 1, "experts": 8, "topk": 2, "hidden": 256, "inter": 512})
    # one token hits its two experts: their weights, x in, out back, ids and weights
    assert OP.nbytes(s, "bf16") == 2 * 3 * 256 * 512 * 2 + 2 * 256 * 2 + 8 * 2
    big = OP.full_shape({**s, "tokens": 64})
    assert moe.experts_hit(big) == 8
    assert OP.nbytes(big, "bf16") == 8 * 3 * 256 * 512 * 2 + 2 * 64 * 256 * 2 + 8 * 64 * 2
    fp8 = OP.nbytes(s, "fp8_e4m3")          # e4m3 weights plus one fp32 scale per 128x128 block
    assert fp8 == 2 * (3 * 256 * 512 + 4 * 3 * 2 * 4) + 2 * 256 * 2 + 8 * 2


def test_routing_is_a_function_of_the_shape_and_recorded():
    s = OP.full_shape({"tokens": 4, "experts": 16, "topk": 4, "hidden": 64, "inter": 32})
    a, b = _x(s, "bf16", 1), _x(s, "bf16", 2)
    assert torch.equal(a["topk_ids"], b["topk_ids"]) and not torch.equal(a["x"], b["x"])
    target = device.resolve("cpu")
    cfg = runner.RunConfig(timing=timing.TimingConfig(budget_s=0.05, min_samples=3), seed=1)
    out = []
    r = runner.Runner(target, {"l2_bytes": 1 << 20, "datasheet": None}, {"copy_gbps": 10.0, "tflops": {}},
                      cfg, out.append)
    r.run([Case("fused_moe", s, "bf16", ("torch",), (), "", None, 1, 1)])
    rec = out[0]
    assert rec["status"] == "ok", rec.get("reason")
    assert rec["inputs"]["experts_hit"] == moe.experts_hit(s) == len(torch.unique(a["topk_ids"]))
    assert rec["bytes"] == OP.nbytes(s, "bf16")
    assert "covers" not in rec          # the eager loop does not align: the roll-up counts moe_align
    r.run([Case("fused_moe", s, "bf16", ("triton",), (), "", None, 2, 2)])
    # the Triton kernel aligns inside: its record says so, and a model roll-up counts it there once
    assert out[1]["status"] == "checked" and out[1]["covers"] == ["moe_align"]


@pytest.mark.parametrize("shape,dtype,why", [
    ({"tokens": 1, "experts": 4, "topk": 5, "hidden": 64, "inter": 64}, "bf16", "topk 5 exceeds experts 4"),
    ({"tokens": 1, "experts": 4, "topk": 2, "hidden": 192, "inter": 128}, "fp8_e4m3", "multiples of 128"),
    ({"tokens": 1, "experts": 4, "topk": 2, "hidden": 64, "inter": 64, "shared": 2}, "bf16", "shared must be"),
])
def test_bad_shapes_are_named(shape, dtype, why):
    with pytest.raises(ValueError, match=why):
        OP.check_shape(OP.full_shape(shape), dtype)


def test_bf16_tolerance_is_the_dtype_one():
    assert OP.check is None and dtypes.elementwise("bf16") == (3.2e-2, 3.2e-2)
