"""kernelmark/ops/moe_route.py: moe_route and moe_align, checked exactly; a kernel that
breaks ties the other way or loses a pair must fail."""
import pytest
import torch

from kernelmark.ops.registry import get_op

CPU = torch.device("cpu")


def _x(op, shape, dtype, seed=0):
    return op.make_inputs(shape, dtype, CPU, torch.Generator().manual_seed(seed))


ROUTE_SHAPES = [
    ({"tokens": 9, "experts": 12, "topk": 3}, "bf16"),                     # Mixtral-like, E not a power of 2
    ({"tokens": 6, "experts": 10, "topk": 4, "renorm": 0}, "fp32"),
    ({"tokens": 7, "experts": 64, "topk": 8, "rule": "sigmoid_grouped", "n_group": 8, "topk_group": 4,
      "scale": "2.5"}, "bf16"),                                            # DeepSeek-V3's rule, fewer experts
]


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("shape,dtype", ROUTE_SHAPES)
def test_route_backends_match_the_reference_exactly(shape, dtype, backend):
    op = get_op("moe_route")
    shape = op.full_shape(shape)
    op.check_shape(shape, dtype)
    ref = op.reference(_x(op, shape, dtype))
    res = op.compare(op.backend(backend).run(_x(op, shape, dtype)), ref, dtype)
    assert res.passed, res.detail


def test_inputs_plant_ties_and_the_lower_expert_id_wins():
    op = get_op("moe_route")
    shape = op.full_shape({"tokens": 4, "experts": 16, "topk": 2})
    x = _x(op, shape, "fp32")
    ids, _ = op.reference(x)
    for t in (0, 2):                             # every other row has a tie for first place
        a, b = ids[t].tolist()
        assert x["logits"][t, a] == x["logits"][t, b] and a < b


@pytest.mark.parametrize("rule", ["softmax", "sigmoid_grouped"])
def test_a_router_that_breaks_ties_the_other_way_fails(rule):
    op = get_op("moe_route")
    extra = {"rule": rule, "n_group": 1, "topk_group": 1} if rule != "softmax" else {}
    shape = op.full_shape({"tokens": 8, "experts": 16, "topk": 4, **extra})
    x = _x(op, shape, "fp32")
    ref = op.reference(x)
    e = shape["experts"]
    # The same router on the experts in reverse order: ties now go to the higher id.
    flipped = {**x, "logits": x["logits"].flip(1), "bias": x["bias"].flip(0)}
    ids, w = op.backend("torch").run(flipped)
    res = op.compare(((e - 1) - ids, w), ref, "fp32")
    assert not res.passed and res.detail.startswith("expert ids")


def test_route_weights_are_checked_element_by_element():
    op = get_op("moe_route")
    shape = op.full_shape({"tokens": 64, "experts": 16, "topk": 2})
    ref = op.reference(_x(op, shape, "fp32"))
    ids, w = op.backend("torch").run(_x(op, shape, "fp32"))
    w[5, 1] *= 1.01
    assert not op.compare((ids, w), ref, "fp32").passed


@pytest.mark.parametrize("shape,why", [
    ({"tokens": 4, "experts": 4, "topk": 5}, "topk 5 exceeds experts"),
    ({"tokens": 4, "experts": 8, "topk": 2, "rule": "top1"}, "rule must be one of"),
    ({"tokens": 4, "experts": 8, "topk": 2, "n_group": 2}, "for the sigmoid_grouped rule"),
    ({"tokens": 4, "experts": 12, "topk": 2, "rule": "sigmoid_grouped", "n_group": 8}, "power of two dividing"),
    ({"tokens": 4, "experts": 8, "topk": 2, "scale": "x"}, "scale must be a number"),
])
def test_route_bad_shapes_are_named(shape, why):
    op = get_op("moe_route")
    with pytest.raises(ValueError, match=why):
        op.check_shape(op.full_shape(shape), "fp32")


ALIGN_SHAPES = [{"tokens": 7, "experts": 10, "topk": 3, "block": 4},
                {"tokens": 70, "experts": 16, "topk": 4, "block": 16}]   # two chunks of pairs


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("shape", ALIGN_SHAPES)
def test_align_backends_match_the_reference(shape, backend):
    op = get_op("moe_align")
    shape = op.full_shape(shape)
    ref = op.reference(_x(op, shape, "bf16"))
    out = op.backend(backend).run(_x(op, shape, "bf16"))
    res = op.compare(out, ref, "bf16")
    assert res.passed, res.detail
    assert torch.equal(out[0], ref[0])        # ours are stable: exact, order included


def test_align_layout_is_what_a_grouped_gemm_needs():
    op = get_op("moe_align")
    shape = op.full_shape({"tokens": 5, "experts": 6, "topk": 2, "block": 4})
    x = _x(op, shape, "bf16")
    sorted_ids, expert_ids, npp, counts = op.reference(x)
    flat = x["topk_ids"].view(-1)
    n = flat.numel()
    assert int(counts.sum()) == n and int(npp) % 4 == 0
    for blk in range(int(npp) // 4):
        for p in sorted_ids[blk * 4:(blk + 1) * 4].tolist():
            assert p == n or int(flat[p]) == int(expert_ids[blk])
    assert sorted(p for p in sorted_ids.tolist() if p < n) == list(range(n))
    assert (expert_ids[int(npp) // 4:] == -1).all()


def test_align_order_within_a_run_is_free_but_a_lost_pair_fails():
    op = get_op("moe_align")
    shape = op.full_shape({"tokens": 16, "experts": 4, "topk": 2, "block": 8})
    ref = op.reference(_x(op, shape, "bf16"))
    s, e, npp, c = (t.clone() for t in ref)
    first_run = int(c[0])
    s[:first_run] = s[:first_run].flip(0)          # what atomics-based library kernels do
    assert op.compare((s, e, npp, c), ref, "bf16").passed
    s[1] = s[0]                                    # one pair written twice, another lost
    res = op.compare((s, e, npp, c), ref, "bf16")
    assert not res.passed and "sorted_ids" in res.detail
