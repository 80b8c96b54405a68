"""FlashInfer-Trace `moe` definitions onto fused_moe: the one form it computes exactly is
mapped, every other form is one unsupported row naming the definition and the field."""
import copy
import sys
from pathlib import Path

import pytest

from kernelmark.suites import loader

sys.path.insert(0, str(Path(__file__).parent))
from fitrace_data import MOE_BF16 as BF16, MOE_DS_FP8 as DS_FP8, const, t, write_definition  # noqa: E402

def _one(tmp_path, name, spec):
    write_definition(tmp_path, name, spec)
    return loader.load(str(tmp_path)).cases


def test_pre_routed_bf16_experts_map_to_fused_moe_with_notes(tmp_path):
    cases = _one(tmp_path, "moe_bf16_topk2_e8_h64_i32", BF16)
    assert [c.op for c in cases] == ["fused_moe", "fused_moe"]          # one case per workload
    c = cases[0]
    assert c.dtype == "bf16" and c.shape == {"tokens": 3, "experts": 8, "topk": 2, "hidden": 64, "inter": 32,
                                             "shared": 0}
    assert cases[1].shape["tokens"] == 5
    assert c.meta["definition"] == "moe_bf16_topk2_e8_h64_i32" and c.meta["model"] == "toy-moe"
    notes = " | ".join(c.meta["notes"])
    # The captured routing is not fed, and the row says so; so is the absent blob.
    assert "captured topk_ids not fed" in notes and "safetensors blob/moe.safetensors absent" in notes
    assert "routing: kernelmark's own" in notes
    assert "gating_output given beside topk_ids" in notes and "silu(gate)" in notes
    assert "captured" not in " ".join(cases[1].meta["notes"])       # random ids: nothing captured to skip


def test_deepseek_fp8_routed_ep_definition_is_one_row_naming_each_field(tmp_path):
    name = "moe_fp8_block_scale_ds_routing_topk8_ng8_kg4_e4_h256_i128"
    cases = _one(tmp_path, name, DS_FP8)
    assert len(cases) == 1                                              # 2 workloads, one row
    why = cases[0].meta["unsupported"]
    assert why.startswith(f"op_type moe ({name}): ")
    for field in ("hidden_states float8_e4m3fn", "hidden_states_scale", "routing_logits: routes inside the op "
                  "(DeepSeek's grouped sigmoid)", "num_experts 16, gemm1_weights for 4: expert parallelism",
                  "local_expert_offset 4", "routing_bias", "gemm1_weights_scale", "routed_scaling_factor"):
        assert field in why, field


def _edit(spec, drop=(), **inputs):
    s = copy.deepcopy(spec)
    for k in drop:
        s["inputs"].pop(k)
    s["inputs"].update(inputs)
    for axes, ins in s["workloads"]:
        for k in drop:
            ins.pop(k, None)
    return s


@pytest.mark.parametrize("spec, field", [
    # routing inside the op, even in bf16: fused_moe takes routed ids
    (_edit(BF16, drop=("topk_ids", "topk_weights")), "gating_output: routes inside the op"),
    (_edit(BF16, drop=("topk_weights",)), "topk_ids without topk_weights"),
    (_edit(BF16, drop=("topk_ids", "topk_weights", "gating_output")), "no topk_ids and no routing logits"),
    (_edit(BF16, w1=t(["num_experts", "gemm1_out_size", "hidden_size"], "float8_e4m3fn")),
     "w1 float8_e4m3fn with bfloat16 hidden_states"),
    (_edit(BF16, w2=t(["num_experts", "hidden_size", "intermediate_size"], "float32")), "w2 float32"),
    (_edit(BF16, w1=t(["num_experts", "hidden_size", "gemm1_out_size"])), "w1 [8, 64, 64], w2 [8, 64, 32]"),
    (_edit(BF16, w1_bias=t(["num_experts", "gemm1_out_size"])), "w1_bias: no counterpart in fused_moe"),
    (_edit(BF16, drop=("w2",)), "no w2 or gemm2_weights input"),
])
def test_forms_fused_moe_does_not_compute_are_unsupported_naming_the_field(tmp_path, spec, field):
    cases = _one(tmp_path, "moe_x", spec)
    assert len(cases) == 1 and cases[0].meta["unsupported"].startswith("op_type moe (moe_x): ")
    assert field in cases[0].meta["unsupported"]


def test_top_k_over_the_experts_or_no_tokens_is_unsupported_saying_why(tmp_path):
    spec = copy.deepcopy(BF16)
    spec["axes"]["top_k"] = const(9)                                    # more than the 8 experts
    assert "top_k 9 exceeds the 8 experts" in _one(tmp_path / "a", "moe_k9", spec)[0].meta["unsupported"]
    spec = copy.deepcopy(BF16)
    spec["workloads"] = [({"seq_len": 0}, {})]                         # the op's own check, with the line
    why = _one(tmp_path / "b", "moe_t0", spec)[0].meta["unsupported"]
    assert "moe_t0.jsonl:1:" in why and "tokens" in why
