"""The decode-ops suite (sampling and fp8 block-scaled part) and the model shapes it is built
from: every op at every model's sizes on a GPU, tiny cases on a CPU, and the config.json
values the shapes come from."""
import pytest

from kernelmark.suites import loader, models

OPS = ("argmax_sampling", "top_k_top_p_sampling", "fp8_group_quant", "gemm_fp8_blockwise")


def test_decode_ops_has_every_op_at_every_model_size_and_a_cpu_block():
    cases = loader.load("decode-ops").cases
    gpu = [c for c in cases if c.runs_on("cuda")]
    for op in OPS:
        assert any(c.runs_on("cpu") for c in cases if c.op == op), op
        vocabs = {c.shape["vocab"] for c in gpu if c.op == op and "vocab" in c.shape}
        if op in ("argmax_sampling", "top_k_top_p_sampling"):
            assert vocabs == {128256, 151936, 129280}, (op, vocabs)      # Llama 3 (8B and 70B), Qwen3, DeepSeek-V3
            assert {c.shape["batch"] for c in gpu if c.op == op} >= {1, 256}
    gemm = [c for c in gpu if c.op == "gemm_fp8_blockwise"]
    labels = {c.label.split(".")[0] for c in gemm}
    assert labels >= {"llama3-8b", "llama3-70b", "qwen3-32b", "deepseek-v3"}
    assert {c.shape["m"] for c in gemm} >= {1, 8192} and any(c.shape["m"] % 16 for c in gemm)   # M tails
    quant = {c.label.split(".")[0] for c in gpu if c.op == "fp8_group_quant"}
    assert quant >= {"llama3-8b", "llama3-70b", "qwen3-32b", "deepseek-v3"}
    # The dense fp8 roof sits beside the block-scaled GEMMs at the same shapes.
    dense = {(c.shape["m"], c.shape["n"], c.shape["k"]) for c in gpu if c.op == "gemm" and c.dtype == "fp8_e4m3"}
    assert (4096, 576, 7168) in dense and (4096, 4096, 4096) in dense


def test_deepseek_v3_linear_layers_from_its_config():
    shapes = dict((label, (s["n"], s["k"])) for label, s in models.block_fp8_gemm_shapes("deepseek-v3", m=1))
    assert shapes["deepseek-v3.q_a"] == (1536, 7168) and shapes["deepseek-v3.kv_a"] == (576, 7168)
    assert shapes["deepseek-v3.q_b"] == (24576, 1536) and shapes["deepseek-v3.kv_b"] == (32768, 512)
    assert shapes["deepseek-v3.o"] == (7168, 16384) and shapes["deepseek-v3.expert_down"] == (7168, 2048)
    assert dict(models.block_fp8_gemm_shapes("qwen3-32b", m=1))["qwen3-32b.qkv"] == {"m": 1, "n": 10240, "k": 5120}
    widths = [s["hidden"] for _, s in models.group_quant_shapes("deepseek-v3", tokens=1)]
    assert widths == [512, 1536, 2048, 7168, 16384, 18432]


def test_sampling_shape_sets_and_their_errors():
    (label, shape), = models.top_k_top_p_shapes("deepseek-v3", batch=8, top_k="vocab", top_p=0.95)
    assert shape == {"batch": 8, "vocab": 129280, "top_k": 129280, "top_p": 0.95, "temperature": 1.0, "draws": 1}
    assert models.argmax_shapes("qwen3-32b", batch=1) == [("qwen3-32b.vocab", {"batch": 1, "vocab": 151936})]
    with pytest.raises(ValueError, match="no vocabulary size for 'gpt5'"):
        models.argmax_shapes("gpt5")
    with pytest.raises(ValueError, match="deepseek-v3 has no linear layer 'qkv'"):
        models.block_fp8_gemm_shapes("deepseek-v3", layers=["qkv"])
