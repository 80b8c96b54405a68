"""kernelmark/suites/model_config.py: models from their config.json."""
import json

import pytest

from kernelmark.suites import model_config as mc

SHIPPED = ("llama-3.2-1b", "llama-3.1-8b", "llama-3.1-70b", "llama-3.1-405b", "qwen3-8b", "qwen3-32b",
           "qwen3-30b-a3b", "mixtral-8x7b", "deepseek-v3", "gpt-oss-120b")


def test_every_shipped_model_parses():
    assert set(SHIPPED) <= set(mc.known())
    for name in SHIPPED:
        cfg = mc.load(name)
        assert cfg.layers > 0 and cfg.hidden > 0 and cfg.vocab > 0


def test_dense_fields_and_the_head_dim_default():
    c = mc.load("llama-3.1-8b")
    assert (c.family, c.layers, c.hidden, c.q_heads, c.kv_heads, c.head_dim) == ("dense", 32, 4096, 32, 8, 128)
    assert c.rope_scaling == "llama3" and not c.tie_embeddings and c.moe is None
    assert mc.load("llama-3.2-1b").tie_embeddings and mc.load("llama-3.2-1b").head_dim == 64
    assert mc.load("qwen3-8b").qk_norm and not c.qk_norm


def test_moe_and_mla_fields():
    ds = mc.load("deepseek-v3")
    assert ds.moe.experts == 256 and ds.moe.shared == 1 and ds.moe.dense_layers == 3
    assert (ds.moe.n_group, ds.moe.topk_group, ds.moe.scale, ds.moe.rule) == (8, 4, "2.5", "sigmoid_grouped")
    assert (ds.mla.q_lora_rank, ds.mla.kv_lora_rank, ds.mla.qk_rope_head_dim) == (1536, 512, 64)
    q = mc.load("qwen3-30b-a3b")
    assert (q.moe.experts, q.moe.topk, q.moe.inter, q.kv_heads) == (128, 8, 768, 4)
    assert mc.load("mixtral-8x7b").moe.inter == 14336
    g = mc.load("gpt-oss-120b")
    assert (g.moe.experts, g.moe.topk, g.sliding_layers, g.sliding_window) == (128, 4, 18, 128)


def test_names_without_dashes_and_paths(tmp_path):
    assert mc.load("llama3.2-1b").name == "llama-3.2-1b"
    p = tmp_path / "mine.json"
    p.write_text(mc.CONFIG_DIR.joinpath("qwen3-8b.json").read_text())
    assert mc.load(str(p)).hidden == 4096


def _base():
    return json.loads(mc.CONFIG_DIR.joinpath("llama-3.1-8b.json").read_text())


def test_unknown_architecture_is_named():
    d = _base()
    d["architectures"] = ["FalconForCausalLM"]
    with pytest.raises(mc.ConfigError, match="unknown architecture 'FalconForCausalLM'"):
        mc.parse(d, "x", where="x.json")


@pytest.mark.parametrize("field", ["hidden_size", "num_hidden_layers", "vocab_size", "intermediate_size"])
def test_missing_field_is_named(field):
    d = _base()
    del d[field]
    with pytest.raises(mc.ConfigError, match=f"x.json: missing field '{field}'"):
        mc.parse(d, "x", where="x.json")


def test_missing_moe_or_mla_field_is_named():
    d = json.loads(mc.CONFIG_DIR.joinpath("deepseek-v3.json").read_text())
    del d["kv_lora_rank"]
    with pytest.raises(mc.ConfigError, match="missing field 'kv_lora_rank'"):
        mc.parse(d, "ds")


def test_bad_values_and_files(tmp_path):
    d = _base()
    d["num_attention_heads"] = 0
    with pytest.raises(mc.ConfigError, match="num_attention_heads must be a positive integer"):
        mc.parse(d, "x")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(mc.ConfigError, match="not a readable JSON config"):
        mc.load(str(bad))
    with pytest.raises(mc.ConfigError, match="unknown model 'gpt-5'"):
        mc.load("gpt-5")
