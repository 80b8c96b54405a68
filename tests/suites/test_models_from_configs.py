"""kernelmark/suites/models.py takes every model number from the shipped configs
(model_configs/*.json): no second copy of a model's shapes to drift from the first."""
import ast
import json
from pathlib import Path

from kernelmark.suites import model_config as mc, models

FIELDS = ("hidden_size", "intermediate_size", "vocab_size", "moe_intermediate_size", "q_lora_rank",
          "kv_lora_rank", "max_position_embeddings")


def test_models_py_holds_no_number_of_a_shipped_config():
    numbers = set()
    for path in mc.known().values():
        data = json.loads(path.read_text())
        numbers |= {data[f] for f in FIELDS if isinstance(data.get(f), int)}
    # powers of two are token counts and batch sizes as often as model sizes: left out
    distinctive = {n for n in numbers if n & (n - 1)}
    assert {14336, 128256, 151936, 7168} <= distinctive
    tree = ast.parse(Path(models.__file__).read_text())
    found = sorted({n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and n.value in distinctive
                    and isinstance(n.value, int) and not isinstance(n.value, bool)})
    assert not found, f"models.py repeats config numbers {found}: derive them from model_config instead"


def test_the_views_are_the_configs():
    c = mc.load("llama-3.1-70b")
    m = models.LLAMA3_70B
    assert (m.layers, m.hidden, m.intermediate, m.q_heads, m.kv_heads, m.head_dim, m.vocab) == \
        (c.layers, c.hidden, c.intermediate, c.q_heads, c.kv_heads, c.head_dim, c.vocab)
    ds = mc.load("deepseek-v3")
    moe = models.MOE_MODELS["deepseek-v3"]
    assert (moe.experts, moe.topk, moe.inter, moe.shared, moe.n_group, moe.scale) == \
        (ds.moe.experts, ds.moe.topk, ds.moe.inter, ds.moe.shared, ds.moe.n_group, ds.moe.scale)
    s = models.STEP_SIZES["qwen3-32b"]
    q = mc.load("qwen3-32b")
    assert s.other_norms == (("q_norm", q.head_dim, q.q_heads), ("k_norm", q.head_dim, q.kv_heads))
    assert models.BLOCK_FP8_LINEARS["deepseek-v3"]["q_b"] == (ds.q_heads * 192, ds.mla.q_lora_rank)
