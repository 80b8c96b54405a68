"""kernelmark/suites/models.py, MoE part: model data as shape sets, slices and CPU cuts labelled."""
import pytest

from kernelmark.ops.registry import get_op
from kernelmark.suites import loader, models


def test_deepseek_layer_and_its_ep_slice():
    (label, s), = models.moe_shapes("deepseek-v3", tokens=1)
    assert s == {"tokens": 1, "experts": 256, "topk": 8, "hidden": 7168, "inter": 2048, "shared": 1}
    (label, s), = models.moe_shapes("deepseek-v3", tokens=1, ep=8)
    assert s["experts"] == 32 and s["topk"] == 1 and "ep8" in label


def test_fewer_experts_say_so_in_the_label():
    (label, s), = models.moe_shapes("qwen3-30b-a3b", tokens=4, experts=16)
    assert s["experts"] == 16 and "16 of 128 experts" in label


def test_bad_slices_are_named():
    with pytest.raises(ValueError, match="tp 3 must divide inter"):
        models.moe_shapes("mixtral-8x7b", tp=3)
    with pytest.raises(ValueError, match="unknown MoE model"):
        models.moe_shapes("mixtral-8x22b")


def test_route_shapes_are_valid_for_the_op():
    op = get_op("moe_route")
    for name in models.MOE_MODELS:
        for _, s in models.moe_route_shapes(name, tokens=1):
            op.check_shape(op.full_shape(s), "fp32")


def test_moe_suite_covers_every_model_and_op():
    cases = loader.load("moe").cases
    assert {c.op for c in cases} == {"moe_route", "moe_align", "fused_moe"}
    labels = " ".join(c.label for c in cases if c.op == "fused_moe")
    for name in models.MOE_MODELS:
        assert f"{name}.experts" in labels
