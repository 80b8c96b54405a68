"""kernelmark/suites/reference_decoder.py: the decode step it runs is the step the roll-up
sums (every op call one component, none counted twice), and it computes a real model."""
import math

import pytest
import torch

from kernelmark.suites import model_config as mc, step
from kernelmark.suites.reference_decoder import (Call, DecoderUnsupported, ReferenceDecoder, accounting,
                                                 weight_bytes)

TINY = {"architectures": ["LlamaForCausalLM"], "hidden_size": 64, "intermediate_size": 96,
        "num_attention_heads": 4, "num_key_value_heads": 2, "num_hidden_layers": 2, "vocab_size": 320,
        "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "max_position_embeddings": 512}


def tiny(**over):
    return mc.parse({**TINY, **over}, "tiny")


CONFIGS = {"llama": tiny(), "qwen3 (q/k norms)": tiny(architectures=["Qwen3ForCausalLM"], rms_norm_eps=1e-6),
           "untied, llama3 rope": tiny(tie_word_embeddings=False,
                                       rope_scaling={"rope_type": "llama3", "factor": 8.0,
                                                     "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                                     "original_max_position_embeddings": 256}),
           "mixtral (moe)": tiny(architectures=["MixtralForCausalLM"], num_local_experts=4, num_experts_per_tok=2),
           "qwen3-moe": tiny(architectures=["Qwen3MoeForCausalLM"], num_experts=8, num_experts_per_tok=3,
                             moe_intermediate_size=32, norm_topk_prob=False)}


@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("batch, context", [(1, 16), (3, 40)])
def test_every_op_the_decoder_runs_is_one_component_and_none_is_counted_twice(name, batch, context):
    cfg = CONFIGS[name]
    calls = ReferenceDecoder(cfg, batch, context, "fp32").record_step()
    comps = step.components(cfg, batch, context, "fp32")
    assert accounting(calls, comps) == []
    # and the totals agree: as many kernel calls a step as the roll-up's counts add up to
    assert len(calls) == sum(c.count for c in comps)
    assert {c.op for c in calls} == {c.op for c in comps}


@pytest.mark.parametrize("name", ["qwen3 (q/k norms)", "qwen3-moe"])
def test_a_dropped_or_duplicated_component_is_caught(name):
    cfg = CONFIGS[name]
    calls = ReferenceDecoder(cfg, 2, 24, "fp32").record_step()
    comps = step.components(cfg, 2, 24, "fp32")
    for i, c in enumerate(comps):
        dropped = comps[:i] + comps[i + 1:]
        problems = accounting(calls, dropped)
        assert problems and c.op in problems[0] and "the roll-up counts" in problems[0], c.name
        assert accounting(calls, comps + [c]), f"{c.name} counted twice went unnoticed"
    # a call the roll-up has no component for (an op the decoder ran once more) is caught too
    extra = calls + [Call("rmsnorm", "fp32", {"tokens": 2, "hidden": 64, "eps": 1e-6})]
    assert accounting(extra, comps)
    # a shape off by one is not the same case
    off = [Call(c.op, c.dtype, {**c.shape, "m": c.shape["m"] + 1}) if c.op == "gemm" else c for c in calls]
    assert accounting(off, comps)


def test_free_shape_parameters_do_not_matter_but_fixed_ones_do():
    calls = [Call("kv_append", "fp32", {"tokens": 1, "seq_tokens": 1, "kv_heads": 2, "head_dim": 16,
                                        "page_size": 32, "num_blocks": 7, "layout": "HND", "padding": 0})]
    comp = step.Component("kv_append", "kv_cache", "kv_append",
                          {"tokens": 1, "seq_tokens": 1, "kv_heads": 2, "head_dim": 16, "page_size": 16,
                           "num_blocks": 99, "layout": "NHD", "padding": 0}, "fp32", 1)
    assert accounting(calls, [comp]) == []
    assert accounting(calls, [step.Component("kv_append", "kv_cache", "kv_append", {**comp.shape, "tokens": 2},
                                             "fp32", 1)])


def _plain_step(d: ReferenceDecoder) -> torch.Tensor:
    """The same model written out in float64 with nothing of kernelmark's ops: the logits."""
    c, b, L = d.cfg, d.batch, d.context
    qh, kvh, hd = c.q_heads, c.kv_heads, c.head_dim

    def norm(x, w):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + c.rms_eps) * w.double()

    pos = L - 1
    cs = d.cos_sin_cache.double()[pos]
    cos, sin = cs[: hd // 2], cs[hd // 2:]

    def rope(t):
        a, bb = t[..., : hd // 2], t[..., hd // 2:]
        return torch.cat((a * cos - bb * sin, bb * cos + a * sin), -1)

    h = d.embed.double()[d.ids]
    for layer, (k_cache, v_cache) in zip(d.layers, d.caches):
        x = norm(h, layer["in_norm"])
        q, k, v = (x @ layer["qkv"].double().T).split([qh * hd, kvh * hd, kvh * hd], -1)
        q, k, v = q.view(b, qh, hd), k.view(b, kvh, hd), v.view(b, kvh, hd)
        if c.qk_norm:
            q, k = norm(q, layer["q_norm"]), norm(k, layer["k_norm"])
        q, k = rope(q), rope(k)
        outs = []
        for i in range(b):
            blocks = d.block_table[i].long()
            kc = k_cache.double()[blocks].flatten(0, 1)[:L].clone()
            vc = v_cache.double()[blocks].flatten(0, 1)[:L].clone()
            kc[pos], vc[pos] = k[i], v[i]           # the token this step appends
            kk = kc.repeat_interleave(qh // kvh, dim=1)
            vv = vc.repeat_interleave(qh // kvh, dim=1)
            s = torch.einsum("hd,thd->ht", q[i], kk) / math.sqrt(hd)
            outs.append(torch.einsum("ht,thd->hd", s.softmax(-1), vv))
        h = h + torch.stack(outs).reshape(b, qh * hd) @ layer["o"].double().T
        x = norm(h, layer["post_norm"])
        if "down" in layer:
            g, u = (x @ layer["gate_up"].double().T).chunk(2, -1)
            h = h + (torch.nn.functional.silu(g) * u) @ layer["down"].double().T
            continue
        # MoE: softmax top-k, (re)normalised; each expert's MLP on the bf16-rounded input
        p = torch.softmax(x @ layer["router"].double().T, -1)
        w, ids = p.topk(c.moe.topk, -1)
        if c.moe.renorm:
            w = w / w.sum(-1, keepdim=True)
        xe = x.to(layer["w1"].dtype).double()
        y = torch.zeros_like(h)
        for t in range(b):
            for j, e in enumerate(ids[t].tolist()):
                g, u = (xe[t] @ layer["w1"][e].double().T).chunk(2, -1)
                y[t] += w[t, j] * ((torch.nn.functional.silu(g) * u) @ layer["w2"][e].double().T)
        h = h + y
    return norm(h, d.final_norm) @ d.lm_head.double().T


@pytest.mark.parametrize("name", ["llama", "qwen3 (q/k norms)"])
def test_the_step_computes_the_model(name):
    # before the step (it writes this token's k/v into the cache, so the plain form goes first)
    d = ReferenceDecoder(CONFIGS[name], 3, 37, "fp32", seed=1)
    logits = _plain_step(d)
    assert torch.isfinite(logits).all() and logits.std() > 0
    got = d.step()
    assert torch.equal(got, logits.argmax(-1))
    assert torch.allclose(d.logits.double(), logits, rtol=1e-4, atol=1e-4)
    assert torch.equal(d.step(), got)           # every step the same work: same slots, same positions
    d.resize(2, 20)                             # the same weights, a new cache
    logits = _plain_step(d)
    assert torch.equal(d.step(), logits.argmax(-1)) and d.caches[0][0].shape[0] == 2 * 2 + 1


@pytest.mark.parametrize("name", ["mixtral (moe)", "qwen3-moe"])
def test_the_moe_step_computes_the_model(name):
    d = ReferenceDecoder(CONFIGS[name], 4, 21, "fp32", seed=2)
    logits = _plain_step(d)
    d.step()
    assert d.layers[0]["w1"].dtype == torch.bfloat16       # fused_moe is measured in bf16, not fp32
    # the experts' bf16 GEMMs round where the float64 form does not: close, not equal
    assert torch.allclose(d.logits.double(), logits, rtol=0.02, atol=0.02 * logits.abs().max().item())
    assert (d.logits.double() - logits).abs().max() > 0


def test_unsupported_architectures_and_inputs_are_named():
    with pytest.raises(DecoderUnsupported, match="deepseek-v3 uses multi-head latent attention"):
        ReferenceDecoder(mc.load("deepseek-v3"), 1, 16, "fp32")
    with pytest.raises(DecoderUnsupported, match="gpt-oss-120b has sliding-window layers"):
        ReferenceDecoder(mc.load("gpt-oss-120b"), 1, 16, "fp32")
    with pytest.raises(DecoderUnsupported, match="fp8"):
        ReferenceDecoder(tiny(), 1, 16, "fp8")
    with pytest.raises(ValueError, match="context 513 is beyond"):
        ReferenceDecoder(tiny(), 1, 513, "fp32")


def test_weight_bytes_is_what_it_allocates():
    for cfg in (tiny(), tiny(tie_word_embeddings=False), CONFIGS["qwen3 (q/k norms)"], CONFIGS["qwen3-moe"]):
        d = ReferenceDecoder(cfg, 1, 16, "fp32")
        ws = [d.embed, d.final_norm] + ([] if cfg.tie_embeddings else [d.lm_head])
        ws += [t for layer in d.layers for t in layer.values()]
        assert weight_bytes(cfg, "fp32") == sum(t.numel() * t.element_size() for t in ws), cfg.name
    # Llama-3.2-1B: 1.24 billion parameters (tied embeddings)
    assert 1.23e9 < weight_bytes(mc.load("llama-3.2-1b"), "bf16") / 2 < 1.25e9


def test_it_runs_the_backend_it_is_given_where_a_step_can_run_it():
    seen = []

    def backend_for(op, dtype, shape):
        seen.append((op, dtype))
        # the Triton interpreter, a GPU-only compile, a name no op has: the eager backend runs instead
        return {"rmsnorm": "triton", "silu_and_mul": "torch-compile", "rope": "no-such-backend",
                "gemm": "torch"}.get(op)

    d = ReferenceDecoder(tiny(), 2, 16, "fp32", backend_for=backend_for)
    d.step()
    assert {op for op, _ in seen} == {c.op for c in step.components(tiny(), 2, 16, "fp32")}
    assert d.backends_used["paged_decode_attention"] == {"torch-gather-sdpa"}
    assert d.backends_used["rmsnorm"] == {"torch"} and d.backends_used["rope"] == {"torch"}
    assert d.substituted == {"rmsnorm triton": "torch", "silu_and_mul torch-compile": "torch",
                             "rope no-such-backend": "torch"}


def test_a_fused_moe_backend_that_aligns_inside_gets_no_second_align(monkeypatch):
    import dataclasses
    cfg = CONFIGS["mixtral (moe)"]
    orig = ReferenceDecoder._backend

    def aligning(self, op, name):     # the eager loop, declared to align inside as Triton's kernel does
        b = orig(self, op, name)
        return dataclasses.replace(b, covers=("moe_align",)) if op == "fused_moe" else b

    monkeypatch.setattr(ReferenceDecoder, "_backend", aligning)
    calls = ReferenceDecoder(cfg, 2, 16, "fp32").record_step()
    comps = step.components(cfg, 2, 16, "fp32")
    assert "moe_align" not in {c.op for c in calls}
    assert accounting(calls, [c for c in comps if c.op != "moe_align"]) == []
    assert any("moe_align" in p for p in accounting(calls, comps))      # the roll-up must not count it either


def test_time_ops_in_step_adds_up():
    d = ReferenceDecoder(tiny(), 2, 16, "fp32")
    got = d.time_ops_in_step(3)
    assert 0 < got["ops_us"] < got["step_us"]
    assert sum(got["by_key"].values()) == pytest.approx(got["ops_us"])
    assert {k[0] for k in got["by_key"]} == {c.op for c in step.components(tiny(), 2, 16, "fp32")}
    assert d.op_times is None           # the next step is not timed call by call
