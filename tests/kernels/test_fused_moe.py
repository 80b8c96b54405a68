"""kernels/fused_moe.py at the launcher level: a block with no expert writes nothing, and
bad weights are named."""
import pytest
import torch

from kernelmark.kernels import fused_moe as fm
from kernelmark.ops.moe import quantize_groups
from kernelmark.ops.registry import get_op


def test_fp8_dequantise_logic_matches_dequantized_weights():
    # The fp8 path's scale handling, checked with upcast operands in the interpreter: the
    # kernel on codes + block scales equals the bf16 kernel on the dequantized weights.
    op = get_op("fused_moe")
    shape = op.full_shape({"tokens": 2, "experts": 3, "topk": 1, "hidden": 128, "inter": 128})
    x = op.make_inputs(shape, "fp8_e4m3", torch.device("cpu"), torch.Generator().manual_seed(4))
    out = fm.fused_experts(x["x"], x["w1"], x["w2"], x["topk_ids"], x["topk_weights"], x["w1_scale"], x["w2_scale"])
    s1 = x["w1_scale"].repeat_interleave(128, 1).repeat_interleave(128, 2)
    s2 = x["w2_scale"].repeat_interleave(128, 1).repeat_interleave(128, 2)
    xq, xs = quantize_groups(x["x"])
    xd = (xq.float() * xs.repeat_interleave(128, 1)).to(torch.bfloat16)
    w1 = (x["w1"].float() * s1).float()
    e = x["topk_ids"][:, 0].long()
    gu = torch.stack([xd[t].float() @ w1[e[t]].T for t in range(2)])
    a = torch.nn.functional.silu(gu[:, :128]) * gu[:, 128:]
    aq, as_ = quantize_groups(a.to(torch.bfloat16))
    ad = aq.float() * as_.repeat_interleave(128, 1)
    w2 = x["w2"].float() * s2
    want = torch.stack([ad[t] @ w2[e[t]].T for t in range(2)]) * x["topk_weights"]
    torch.testing.assert_close(out.float(), want, rtol=2e-2, atol=2e-2 * float(want.abs().mean()))


def test_launcher_names_mismatched_weights():
    x = torch.randn(2, 64, dtype=torch.bfloat16)
    w1 = torch.randn(4, 64, 64, dtype=torch.bfloat16)
    w2 = torch.randn(4, 64, 48, dtype=torch.bfloat16)
    ids = torch.zeros(2, 1, dtype=torch.int32)
    with pytest.raises(ValueError, match="weights do not fit"):
        fm.fused_experts(x, w1, w2, ids, torch.ones(2, 1))
    with pytest.raises(ValueError, match="must both be"):
        fm.fused_experts(x, w1, torch.randn(4, 64, 32, dtype=torch.bfloat16), ids, torch.ones(2, 2))


def test_a_token_routed_to_one_expert_gets_exactly_that_experts_mlp():
    torch.manual_seed(0)
    x = torch.randn(3, 32, dtype=torch.bfloat16)
    w1 = (torch.randn(5, 48, 32) / 6).to(torch.bfloat16)
    w2 = (torch.randn(5, 32, 24) / 5).to(torch.bfloat16)
    ids = torch.tensor([[4], [0], [4]], dtype=torch.int32)      # experts 1..3 hit by nobody
    out = fm.fused_experts(x, w1, w2, ids, torch.full((3, 1), 0.5))
    for t, e in enumerate((4, 0, 4)):
        gu = x[t].float() @ w1[e].float().T
        want = 0.5 * ((torch.nn.functional.silu(gu[:24]) * gu[24:]) @ w2[e].float().T)
        torch.testing.assert_close(out[t].float(), want, rtol=2e-2, atol=2e-2)


def test_triton_group_quantization_is_bit_exact_with_torch():
    torch.manual_seed(1)
    x = (torch.randn(5, 256) * torch.logspace(-3, 2, 256)).to(torch.bfloat16)
    x[2, 128:] = 0                                   # an all-zero group: the scale floor, zero codes
    q, s = fm.quantize_groups_triton(x)
    q_ref, s_ref = quantize_groups(x)
    assert torch.equal(s, s_ref)
    assert torch.equal(q.view(torch.uint8), q_ref.view(torch.uint8))
