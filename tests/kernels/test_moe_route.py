"""kernels/moe_route.py and kernels/moe_align.py at the launcher level."""
import pytest
import torch

from kernelmark.kernels.moe_align import moe_align, padded_size
from kernelmark.kernels.moe_route import moe_route


def test_all_equal_logits_route_to_the_lowest_ids_in_order():
    ids, w = moe_route(torch.zeros(3, 8), 3)
    assert ids.tolist() == [[0, 1, 2]] * 3
    assert torch.allclose(w, torch.full((3, 3), 1 / 3))


def test_grouped_rule_keeps_only_the_best_groups():
    logits = torch.full((1, 8), -4.0)
    logits[0, 5] = 4.0                 # group 2 of 4 (experts 4, 5) holds the best expert...
    logits[0, 0] = 3.0                 # ...group 0 the second best
    ids, w = moe_route(logits, 2, "sigmoid_grouped", bias=torch.zeros(8), n_group=4, topk_group=1, scale=2.0)
    assert ids.tolist() == [[5, 4]]    # expert 0 is better than 4, but its group was not kept
    assert abs(float(w.sum()) - 2.0) < 1e-6


def test_launcher_errors_name_the_problem():
    with pytest.raises(ValueError, match="topk 9 must be in 1..8"):
        moe_route(torch.zeros(2, 8), 9)
    with pytest.raises(ValueError, match="needs a bias"):
        moe_route(torch.zeros(2, 8), 2, "sigmoid_grouped")
    with pytest.raises(ValueError, match="int32"):
        moe_align(torch.zeros(2, 2, dtype=torch.int64), 4, 16)
    with pytest.raises(ValueError, match="power of two"):
        moe_align(torch.zeros(2, 2, dtype=torch.int32), 4, 12)


def test_align_with_an_expert_hit_by_nobody_and_one_by_everybody():
    ids = torch.tensor([[2, 0], [2, 1], [2, 0]], dtype=torch.int32)
    sorted_ids, expert_ids, npp, counts = moe_align(ids, 4, 2)
    assert counts.tolist() == [2, 1, 3, 0]
    assert int(npp) == 2 + 2 + 4
    assert sorted_ids.tolist()[:8] == [1, 5, 3, 6, 0, 2, 4, 6]
    assert sorted_ids.numel() == padded_size(6, 4, 2)
    assert expert_ids.tolist()[:5] == [0, 1, 2, 2, -1]
