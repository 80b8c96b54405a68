"""kernelmark/ops/sampling.py and sampling_check.py: the argmax op's exact check, the sampler's
statistical check (what it fails, what it passes, its bound), the inputs, and bad shapes."""
import math

import pytest
import torch

from kernelmark import cli
from kernelmark.ops.registry import get_op
from kernelmark.ops.sampling_check import MAX_BINS, check_samples, exact_distribution, tv_bound

CPU = torch.device("cpu")
SHAPE = {"batch": 4, "vocab": 1000, "top_k": 40, "top_p": 0.9, "temperature": 0.8, "draws": 256}


def _case(name, shape, dtype="fp32", seed=3):
    op = get_op(name)
    shape = op.full_shape(shape)
    op.check_shape(shape, dtype)
    x = op.make_inputs(shape, dtype, CPU, torch.Generator().manual_seed(seed))
    return op, x, op.reference(op.make_inputs(shape, dtype, CPU, torch.Generator().manual_seed(seed)))


def test_argmax_inputs_have_a_unique_maximum_and_a_wrong_row_fails():
    op, x, ref = _case("argmax_sampling", {"batch": 6, "vocab": 3000}, "bf16")
    logits = x["logits"].float()
    assert bool(((logits == logits.max(-1, keepdim=True).values).sum(-1) == 1).all())
    assert bool((logits[:, 0] == logits.min(-1).values).all())      # token 0 is never the answer
    out = op.backend("torch").run(x)
    assert op.compare(out, ref, "bf16").passed
    out[4] = (out[4] + 1) % 3000
    res = op.compare(out, ref, "bf16")
    assert not res.passed and "1 of 6 elements differ" in res.detail and "[4]" in res.detail


def test_honest_torch_sampler_passes_at_several_seeds_well_inside_the_bound():
    op, x, ref = _case("top_k_top_p_sampling", SHAPE)
    bound = tv_bound(1024, MAX_BINS)
    assert bound == pytest.approx(math.sqrt((16 * math.log(2) + math.log(1e6)) / 2048))
    tvs = []
    for seed in range(8):
        torch.manual_seed(seed)
        res = op.compare(op.backend("torch").run(x), ref, "fp32")
        assert res.passed, res.detail
        tvs.append(res.rel_l2)
    # An honest sampler's TV here averages about 0.043 (300 seeds: 99th percentile 0.065).
    assert res.tolerance == pytest.approx(bound) and sum(tvs) / len(tvs) < bound / 2


def test_honest_triton_sampler_passes():
    op, x, ref = _case("top_k_top_p_sampling", SHAPE, "bf16")
    res = op.compare(op.backend("triton").run(x), ref, "bf16")
    assert res.passed, res.detail
    assert "1024 draws" in res.detail


def test_greedy_biased_and_out_of_set_samplers_fail():
    op, x, ref = _case("top_k_top_p_sampling", SHAPE)
    torch.manual_seed(0)
    honest = op.backend("torch").run(x)
    greedy = x["logits"].argmax(-1, keepdim=True).expand_as(honest)
    res = op.compare(greedy, ref, "fp32")
    assert not res.passed and res.rel_l2 > 0.7 and "bin 0 (rank 0)" in res.detail
    # A quarter of the draws go to the most likely token: TV about 0.2, twice the bound.
    biased = torch.where(torch.rand(honest.shape, generator=torch.Generator().manual_seed(1)) < 0.25,
                         greedy, honest)
    res = op.compare(biased, ref, "fp32")
    assert not res.passed and res.rel_l2 > 1.5 * res.tolerance, res.detail
    # Biased to a less likely token of the set: caught in another bin.
    fifth = ref.order[:, 5:6].expand_as(honest)
    res = op.compare(torch.where(torch.rand(honest.shape) < 0.25, fifth, honest), ref, "fp32")
    assert not res.passed and "bin 5 (rank 5)" in res.detail
    # One draw outside the top k fails, however many draws are right.
    outside = honest.clone()
    outside[2, 17] = ref.order[2, 40]
    res = op.compare(outside, ref, "fp32")
    assert not res.passed and res.bad_elements == 1
    assert "outside the top-k/top-p set; first at [2, 17]" in res.detail and "rank 40" in res.detail


def test_ignoring_the_temperature_fails():
    op, x, ref = _case("top_k_top_p_sampling", {**SHAPE, "temperature": 0.5, "top_p": 1.0})
    torch.manual_seed(2)
    res = op.compare(op.backend("torch").run({**x, "temperature": 1.0}), ref, "fp32")
    assert not res.passed, res.detail


def test_check_refuses_malformed_outputs_and_says_when_too_few_draws_have_force():
    op, x, ref = _case("top_k_top_p_sampling", {**SHAPE, "draws": 1, "batch": 1})
    assert "expected (1, draws)" in check_samples(torch.zeros(2, 3, dtype=torch.int64), ref).detail
    assert "dtype torch.float32" in check_samples(torch.zeros(1, 3), ref).detail
    assert "not token ids in [0, 1000)" in check_samples(torch.tensor([[1000]]), ref).detail
    res = check_samples(op.backend("torch").run(x), ref)
    assert res.passed and "membership alone was checked" in res.detail


def test_tokens_on_the_top_p_boundary_are_allowed_and_widen_the_bound():
    # Probabilities 0.5, 0.3 (a little over), 0.2: the mass before the third token is
    # 0.8 + 1e-6 against top_p = 0.8, so it is out, by less than fp32 sums can tell.
    p = torch.tensor([[0.5, 0.3 + 1e-6, 0.2 - 1e-6]], dtype=torch.float64)
    ref = exact_distribution(p.log(), 3, 0.8, 1.0)
    assert ref.allowed.tolist() == [[True, True, True]]
    assert (ref.probs > 0).tolist() == [[True, True, False]]
    assert ref.ambiguous == pytest.approx(0.2 / 0.8, rel=1e-4)


def test_the_row_minimum_sits_in_column_zero():
    op, x, ref = _case("top_k_top_p_sampling", SHAPE)
    logits = x["logits"]
    assert bool((logits[:, 0] == logits.min(-1).values).all()) and not bool(ref.allowed[:, 0].any())
    assert x["row_of_draw"].tolist()[:3] == [0, 0, 0] and x["row_of_draw"].numel() == 4 * 256


@pytest.mark.parametrize("shape, match", [
    ({"top_k": 1001}, r"top_k must be an integer in \[1, vocab\]"),
    ({"top_p": 1.01}, r"top_p must be in \(0, 1\], got 1\.01"),
    ({"top_p": -0.5}, r"top_p must be in \(0, 1\]"),
    ({"temperature": -1.0}, "temperature must be > 0"),
    ({"top_p": "high"}, "top_p must be a number"),
])
def test_bad_sampling_shapes_name_the_value(shape, match):
    op = get_op("top_k_top_p_sampling")
    with pytest.raises(ValueError, match=match):
        op.check_shape(op.full_shape({**SHAPE, **shape}), "fp32")


def test_a_suite_with_top_p_above_one_exits_2_naming_file_and_line(tmp_path, capsys):
    bad = tmp_path / "sampling.toml"
    bad.write_text('name = "x"\n\n[[case]]\nop = "top_k_top_p_sampling"\n'
                   'shapes = [{batch = 2, vocab = 100, top_k = 10, top_p = 1.5}]\n')
    assert cli.main(["run", "--suite", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kernelmark: error: ") and "sampling.toml:3 (case 1)" in err and "top_p" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_library_backends_say_why_they_do_not_run_here():
    op = get_op("top_k_top_p_sampling")
    for name in ("flashinfer", "sgl-kernel"):
        b = op.backend(name)
        assert b.devices == ("cuda",) and b.dtypes == ("fp32",)
        why = b.available()
        if why is not None:
            assert "not installed" in why
    assert op.nbytes(op.full_shape(SHAPE), "bf16") == 4 * (1000 * 2 + 8 * 256)


def test_per_row_thresholds_torch_samples_each_rows_own_set_and_the_rest_say_unsupported():
    op = get_op("top_k_top_p_sampling")
    shape = op.full_shape({**SHAPE, "top_k": 50, "draws": 512})
    x = op.make_inputs(shape, "fp32", CPU, torch.Generator().manual_seed(5))
    x = op.use_given(x, {"top_k": torch.tensor([50, 3, 20, 1], dtype=torch.int32),
                         "top_p": torch.tensor([0.9, 1.0, 0.5, 1.0])})
    ref = op.reference(x)
    sizes = (ref.probs > 0).sum(-1).tolist()
    assert sizes[1] <= 3 and sizes[3] == 1 and sizes[0] > 3          # each row its own k (and p)
    out = op.backend("torch").run(x)
    assert op.compare(out, ref, "fp32").passed                       # membership and the TV bound
    same_k = get_op("top_k_top_p_sampling").backend("torch").run({**x, "top_k": 50})
    assert not op.compare(same_k, ref, "fp32").passed                # one k for all rows: row 1 escapes its top 3
    from kernelmark.ops.base import Unsupported
    with pytest.raises(Unsupported, match="per-row top_k/top_p: kernelmark's Triton sampler"):
        op.backend("triton").run(x)
    with pytest.raises(ValueError, match=r"given top_k has values 0..3, outside \[1, 1000\]"):
        op.use_given(x, {"top_k": torch.tensor([0, 3, 2, 1])})
