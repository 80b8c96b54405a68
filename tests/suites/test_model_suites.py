"""The llama3 suites hold every case `kernelmark model` needs at its defaults, so a GPU run
of the suite gives a complete roll-up (no 'not in the run')."""
import pytest

from kernelmark.reports import rollup
from kernelmark.suites import loader


@pytest.mark.parametrize("model, tp", [("llama3-8b", 1), ("llama3-70b", 1), ("llama3-70b", 8)])
def test_model_suite_covers_the_roll_up(model, tp):
    cases = [c for c in loader.load(model).cases if c.runs_on("cuda") and c.dtype == "bf16"]
    needs = [n for b in (1, 8, 32) for n in rollup.decode_needs(model, b, 4096, tp)]
    needs += rollup.prefill_needs(model, 4096, 4096, tp)
    missing = []
    for need in needs:
        if not any(c.op == need.op and all(c.shape.get(k) == v for k, v in need.fixed.items()) for c in cases):
            missing.append(rollup.case_text(need, "bf16"))
    assert not missing, missing


# ---- the decode-ops suite: norms, activations, RoPE, embedding at four models' sizes

STEP_OPS = ("rmsnorm", "fused_add_rmsnorm", "silu_and_mul", "rope", "embedding")


def test_decode_ops_has_every_model_and_op_from_1_to_8192_tokens_on_gpus():
    from kernelmark.suites import models
    cases = loader.load("decode-ops").cases
    gpu = [c for c in cases if c.runs_on("cuda")]
    assert not any(c.runs_on("cpu") for c in gpu)
    for model in models.STEP_SIZES:
        for op in STEP_OPS:
            mine = [c for c in gpu if c.op == op and c.label.startswith(model + ".")]
            tokens = {c.shape["tokens"] for c in mine if c.label in (f"{model}.norm", f"{model}.rope",
                                                                      f"{model}.embedding", f"{model}.mlp")}
            assert mine, (model, op)
            if tokens:
                assert min(tokens) == 1 and max(tokens) == 8192, (model, op, tokens)
    assert {c.op for c in cases if c.runs_on("cpu")} >= set(STEP_OPS) | {"gelu_tanh_and_mul"}


def test_step_sizes_agree_with_the_llama3_models():
    from kernelmark.suites import models
    for step, model in (("llama3.1-8b", models.LLAMA3_8B), ("llama3.1-70b", models.LLAMA3_70B)):
        s = models.STEP_SIZES[step]
        assert (s.hidden, s.q_heads, s.k_heads, s.head_dim, s.vocab, s.rope_theta) == (
            model.hidden, model.q_heads, model.kv_heads, model.head_dim, model.vocab, model.rope_theta)
        assert s.mlps == (("mlp", model.intermediate, 1),)


def test_qwen3_qk_norms_and_deepseek_expert_rows_scale_with_tokens():
    from kernelmark.suites import models
    qk = {lbl: s for lbl, s in models.rmsnorm_shapes("qwen3-32b", tokens=4)}
    assert qk["qwen3-32b.q_norm"] == {"tokens": 4 * 64, "hidden": 128, "eps": 1e-6}
    assert qk["qwen3-32b.k_norm"]["tokens"] == 4 * 8
    mlp = {lbl: s for lbl, s in models.silu_and_mul_shapes("deepseek-v3", tokens=4)}
    assert mlp["deepseek-v3.routed_experts"] == {"tokens": 32, "intermediate": 2048}
    with pytest.raises(ValueError, match="unknown model 'gpt5'"):
        models.rope_shapes("gpt5")


def test_cpu_cases_of_the_step_ops_are_small_for_the_interpreter():
    from kernelmark.harness import runner
    from kernelmark.ops.registry import get_op
    for suite in ("smoke", "default", "decode-ops"):
        cases = [c for c in loader.load(suite).cases if c.runs_on("cpu") and c.op in STEP_OPS + ("gelu_tanh_and_mul",)]
        assert {c.op for c in cases} == set(STEP_OPS) | {"gelu_tanh_and_mul"}, suite
        for c in cases:      # the Triton backends are checked on every one of them, not skipped
            assert get_op(c.op).nbytes(c.shape, c.dtype) <= runner.INTERPRETER_MAX_BYTES // 16, (suite, c)
