import pytest
import torch

from kernelmark.kernels import paged
from kernelmark.kernels.rope_kv_append import rope_kv_append
from kernelmark.ops import kv_inputs
from kernelmark.ops.rope_kv_append import ROPE_THETA, cos_sin_table, rotate

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def _case(layout, dt, tokens=6, nb=8, ps=4, h=2, d=32, seed=0, max_pos=8192):
    g = torch.Generator().manual_seed(seed)
    kc = torch.randn(paged.cache_shape(layout, nb, ps, h, d), generator=g).to(dt)
    vc = torch.randn(paged.cache_shape(layout, nb, ps, h, d), generator=g).to(dt)
    key = torch.randn(tokens, h, d, generator=g).to(dt)
    value = torch.randn(tokens, h, d, generator=g).to(dt)
    slots = torch.randperm(nb * ps, generator=g)[:tokens]
    slots[1] = -1
    positions = torch.randint(0, max_pos, (tokens,), generator=g)
    positions[0] = 0                  # the identity rotation
    return key, value, kc, vc, slots, positions, cos_sin_table(max_pos, d, "cpu")


def _hf_llama_rope(key, positions, d):
    """Hugging Face's Llama rotary embedding, written independently: fp32 angles of
    cat(freqs, freqs), q·cos + rotate_half(q)·sin."""
    inv_freq = 1.0 / (ROPE_THETA ** (torch.arange(0, d, 2, dtype=torch.int64).float() / d))
    freqs = positions.float()[:, None] * inv_freq[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos()[:, None, :], emb.sin()[:, None, :]
    x = key.float()
    rotated_half = torch.cat((-x[..., d // 2:], x[..., : d // 2]), dim=-1)
    return x * cos + rotated_half * sin


@pytest.mark.parametrize("name", list(DTYPES))
@pytest.mark.parametrize("layout", paged.LAYOUTS)
def test_rope_append_matches_hf_llama_rope_then_write(name, layout):
    dt = DTYPES[name]
    key, value, kc, vc, slots, pos, table = _case(layout, dt)
    rk, rv = kc.clone(), vc.clone()
    kv_inputs.write_rows(rk, rv, _hf_llama_rope(key, pos, key.shape[-1]).to(dt), value, slots, 4, layout)
    rope_kv_append(key, value, kc, vc, slots, pos, table, layout)
    assert torch.equal(vc, rv)                                   # V as is
    ok, detail, *_ = kv_inputs.within_ulps(kc, rk, "k_cache", 1.0, 2.0 ** -16)
    assert ok, detail
    # Position 0 rotates by nothing: that row is K itself, bit for bit.
    b, o = divmod(int(slots[0]), 4)
    assert torch.equal(kc[b, o] if layout == "NHD" else kc[b, :, o], key[0])


def test_rope_really_rotates_and_keeps_pair_norms():
    key, value, kc, vc, slots, pos, table = _case("NHD", torch.float32)
    rope_kv_append(key, value, kc, vc, slots, pos, table, "NHD")
    t = 2
    b, o = divmod(int(slots[t]), 4)
    out, k = kc[b, o], key[t]
    half = k.shape[-1] // 2
    assert not torch.allclose(out, k)
    pair_norm = lambda x: x[..., :half] ** 2 + x[..., half:] ** 2
    assert torch.allclose(pair_norm(out), pair_norm(k), rtol=1e-5, atol=1e-6)
    assert torch.allclose(out, rotate(key[t:t + 1], table[pos[t:t + 1]])[0], rtol=1e-6, atol=1e-6)


def test_rope_odd_heads_and_non_power_of_two_half():
    # head_dim 48: halves of 24 elements, masked inside a 32-wide tile.
    key, value, kc, vc, slots, pos, table = _case("HND", torch.bfloat16, h=3, d=48, ps=5)
    rk, rv = kc.clone(), vc.clone()
    kv_inputs.write_rows(rk, rv, rotate(key, table[pos]).to(torch.bfloat16), value, slots, 5, "HND")
    rope_kv_append(key, value, kc, vc, slots, pos, table, "HND")
    ok, detail, *_ = kv_inputs.within_ulps(kc, rk, "k_cache", 1.0, 2.0 ** -16)
    assert ok, detail
    assert torch.equal(vc, rv)


@pytest.mark.parametrize("change, message", [
    (lambda a: {"positions": a["positions"].index_fill(0, torch.tensor([3]), 8192)},
     r"positions\[3\] = 8192 is outside cos_sin_cache"),
    (lambda a: {"positions": a["positions"][:2]}, "positions has 2 entries for 6 tokens"),
    (lambda a: {"cos_sin_cache": a["cos_sin_cache"].half()}, "cos_sin_cache must be float32"),
    (lambda a: {"cos_sin_cache": a["cos_sin_cache"][:, :16]}, r"cos_sin_cache must be \[max_position, head_dim=32\]"),
    (lambda a: {"slot_mapping": a["slot_mapping"].index_fill(0, torch.tensor([0]), 10 ** 6)}, "outside the cache"),
])
def test_bad_input_is_a_value_error_naming_it(change, message):
    key, value, kc, vc, slots, pos, table = _case("NHD", torch.float16)
    args = {"key": key, "value": value, "k_cache": kc, "v_cache": vc, "slot_mapping": slots,
            "positions": pos, "cos_sin_cache": table}
    args.update(change(args))
    with pytest.raises(ValueError, match=message):
        rope_kv_append(**args)


def test_odd_head_dim_is_refused():
    key, value, kc, vc, slots, pos, _ = _case("NHD", torch.float16, d=33)
    with pytest.raises(ValueError, match="even head_dim"):
        rope_kv_append(key, value, kc, vc, slots, pos, torch.zeros(16, 33), "NHD")
