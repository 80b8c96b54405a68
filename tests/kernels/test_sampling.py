"""kernelmark/kernels/sampling.py in the Triton interpreter: argmax against torch.argmax,
ties and the two-stage split path; the top-k/top-p sampler against the exact allowed set,
its thresholds (ties, top_k = 1, top-p alone), its draws and its refusals.

Vocabularies are not multiples of the kernels' blocks (1024 elements a loop step in the
interpreter), so every loop has a tail."""
import math

import pytest
import torch

from kernelmark.kernels import sampling
from kernelmark.ops.sampling_check import check_samples, exact_distribution


def _logits(b, v, seed, dtype=torch.float32, std=2.0):
    return (torch.randn(b, v, generator=torch.Generator().manual_seed(seed)) * std).to(dtype)


# ---------------------------------------------------------------- argmax

@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_argmax_matches_torch_with_a_tail(dtype):
    x = _logits(5, 2500, 0, dtype)
    assert torch.equal(sampling.argmax(x), torch.argmax(x, dim=-1))


def test_argmax_ties_go_to_the_lowest_index_across_blocks_and_segments():
    x = torch.zeros(4, 3000)
    x[0, [7, 1500, 2999]] = 5.0           # one lane's later copy, another block, the tail
    x[1, [1030, 6]] = 5.0                 # the later one comes first in its lane's scan order
    x[2, [2047, 2048]] = 5.0              # adjacent, across a block edge
    x[3] = float("-inf")                  # nothing finite: index 0, as torch.argmax
    want = torch.tensor([7, 6, 2047, 0])
    assert torch.equal(sampling.argmax(x), want)
    # Split into segments (the GPU path at small batch), reduced by the second kernel.
    assert torch.equal(sampling.argmax(x, splits=3, block=256), want)
    y = _logits(3, 2500, 1)
    assert torch.equal(sampling.argmax(y, splits=4, block=128), torch.argmax(y, dim=-1))


@pytest.mark.parametrize("bad, match", [
    (torch.zeros(10), "2-D tensor"),
    (torch.zeros(2, 10, dtype=torch.int32), "dtype torch.int32 is not supported"),
    (torch.zeros(2, 0), "must not be empty"),
    (torch.zeros(10, 4).t(), "must be contiguous"),
    (torch.zeros(1, 1).expand(1, 2 ** 24 + 1), "vocab 16777217 is larger than the 16777216"),
])
def test_argmax_rejects_what_it_does_not_support(bad, match):
    with pytest.raises(ValueError, match=match):
        sampling.argmax(bad)
    with pytest.raises(ValueError, match="splits must be a positive integer"):
        sampling.argmax(torch.zeros(2, 8), splits=0)


# ---------------------------------------------------------------- top-k / top-p

def _assert_in_set(out, x, top_k, top_p, temperature):
    ref = exact_distribution(x, top_k, top_p, temperature)
    res = check_samples(out, ref)
    inside = ref.allowed.gather(-1, out)
    assert bool(inside.all()), res.detail
    return ref, res


@pytest.mark.parametrize("top_k, top_p, temperature", [(30, 1.0, 1.0), (1500, 0.6, 0.7), (40, 0.9, 0.8)])
def test_every_draw_is_in_the_exact_top_k_top_p_set(top_k, top_p, temperature):
    x = _logits(2, 1500, 2)
    out = sampling.top_k_top_p_sample(x, top_k, top_p, temperature, draws=40, seed=5)
    assert out.shape == (2, 40) and out.dtype == torch.int64
    _, res = _assert_in_set(out, x, top_k, top_p, temperature)
    assert res.passed, res.detail


def test_bf16_logits_and_draws_over_several_draw_blocks_pass_the_statistical_check():
    # 4 rows x 300 draws: 64 a block, so 4 full blocks and a tail of 44.
    x = _logits(4, 600, 3, torch.bfloat16)
    out = sampling.top_k_top_p_sample(x, 25, 0.9, 0.8, draws=300, seed=11)
    ref, res = _assert_in_set(out, x, 25, 0.9, 0.8)
    assert res.passed, res.detail
    assert res.tolerance < 0.12          # N = 1200: the bound has force
    # Every allowed token of a row is drawn now and then: no token is cut off.
    sizes = (ref.probs > 0).sum(-1)
    seen = torch.tensor([len(set(r.tolist())) for r in out])
    assert bool((seen >= sizes - 4).all()), (seen, sizes)


def test_thresholds_keep_ties_and_greedy_limits_are_exact():
    x = torch.full((2, 1100), -3.0)
    x[:, 5], x[:, 900], x[:, 1050], x[:, 1060] = 4.0, 2.0, 2.0, 2.0     # three tied at the 2nd place
    out = sampling.top_k_top_p_sample(x, 2, 1.0, 1.0, draws=64, seed=1)
    assert set(out.unique().tolist()) == {5, 900, 1050, 1060}           # every tie with the k-th stays
    # top_k = 1 and a tiny top_p are greedy; -inf logits (padding of the vocabulary) are never drawn.
    y = _logits(2, 1200, 4)
    y[:, 1100:] = float("-inf")
    best = y.argmax(-1, keepdim=True).expand(-1, 16)
    assert torch.equal(sampling.top_k_top_p_sample(y, 1, 1.0, 1.0, draws=16, seed=2), best)
    assert torch.equal(sampling.top_k_top_p_sample(y, 1200, 1e-6, 1.0, draws=16, seed=2), best)
    free = sampling.top_k_top_p_sample(y, 1200, 1.0, 1.0, draws=64, seed=3)
    assert int(free.max()) < 1100


def test_the_seed_fixes_the_draws():
    x = _logits(1, 700, 6)
    a = sampling.top_k_top_p_sample(x, 50, 0.95, 1.0, draws=32, seed=123)
    b = sampling.top_k_top_p_sample(x, 50, 0.95, 1.0, draws=32, seed=123)
    c = sampling.top_k_top_p_sample(x, 50, 0.95, 1.0, draws=32, seed=124)
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("kw, match", [
    ({"top_k": 0}, r"top_k must be an integer in \[1, vocab = 100\].*got 0"),
    ({"top_k": 101}, "got 101"),
    ({"top_k": True}, "got True"),
    ({"top_p": 0.0}, r"top_p must be in \(0, 1\], got 0.0"),
    ({"top_p": 1.5}, "got 1.5"),
    ({"top_p": math.nan}, "top_p must be a finite number"),
    ({"temperature": 0.0}, "temperature must be > 0"),
    ({"draws": 0}, "draws must be a positive integer"),
    ({"seed": -1}, "seed must be a non-negative integer"),
])
def test_sampler_rejects_bad_parameters_before_any_launch(kw, match):
    args = {"top_k": 10, "top_p": 0.9, "temperature": 1.0, "draws": 1, **kw}
    with pytest.raises(ValueError, match=match):
        sampling.top_k_top_p_sample(torch.zeros(2, 100), **args)
