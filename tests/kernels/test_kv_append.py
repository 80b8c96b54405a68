import pytest
import torch

from kernelmark.kernels import kv_validate, paged
from kernelmark.kernels.kv_append import kv_append
from kernelmark.ops.kv_inputs import write_rows

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def _case(layout, dt, tokens=7, nb=8, ps=4, h=2, d=32, pad=(2,), seed=0):
    g = torch.Generator().manual_seed(seed)
    kc = torch.randn(paged.cache_shape(layout, nb, ps, h, d), generator=g).to(dt)
    vc = torch.randn(paged.cache_shape(layout, nb, ps, h, d), generator=g).to(dt)
    key = torch.randn(tokens, h, d, generator=g).to(dt)
    value = torch.randn(tokens, h, d, generator=g).to(dt)
    slots = torch.randperm(nb * ps, generator=g)[:tokens]
    for i in pad:
        slots[i] = -1
    return key, value, kc, vc, slots, ps


def _reference(key, value, kc, vc, slots, ps, layout):
    rk, rv = kc.clone(), vc.clone()
    write_rows(rk, rv, key, value, slots, ps, layout)
    return rk, rv


@pytest.mark.parametrize("name", list(DTYPES))
@pytest.mark.parametrize("layout", paged.LAYOUTS)
def test_append_writes_exactly_the_slots(name, layout):
    key, value, kc, vc, slots, ps = _case(layout, DTYPES[name])
    rk, rv = _reference(key, value, kc, vc, slots, ps, layout)
    kv_append(key, value, kc, vc, slots, layout)
    assert torch.equal(kc, rk) and torch.equal(vc, rv)


@pytest.mark.parametrize("layout", paged.LAYOUTS)
def test_append_row_lands_where_the_layout_says(layout):
    key, value, kc, vc, slots, ps = _case(layout, torch.float32, pad=())
    kv_append(key, value, kc, vc, slots, layout)
    t = 3
    b, o = divmod(int(slots[t]), ps)
    got = kc[b, o] if layout == "NHD" else kc[b, :, o]
    assert torch.equal(got, key[t])


def test_padding_tokens_write_nothing():
    key, value, kc, vc, slots, ps = _case("NHD", torch.bfloat16, pad=(0, 1, 2, 3, 4, 5, 6))
    before_k, before_v = kc.clone(), vc.clone()
    kv_append(key, value, kc, vc, slots, "NHD")
    assert torch.equal(kc, before_k) and torch.equal(vc, before_v)


@pytest.mark.parametrize("layout", paged.LAYOUTS)
def test_odd_head_dim_and_heads_and_strided_sources(layout):
    # head_dim 40 (not a power of two), 3 heads, K and V slices of a fused QKV projection.
    g = torch.Generator().manual_seed(3)
    t, h, d, nb, ps = 5, 3, 40, 6, 3
    qkv = torch.randn(t, (4 + 2 * h) * d, generator=g).to(torch.float16)
    key = qkv[:, 4 * d:(4 + h) * d].view(t, h, d)
    value = qkv[:, (4 + h) * d:].view(t, h, d)
    assert not key.is_contiguous()
    kc = torch.randn(paged.cache_shape(layout, nb, ps, h, d), generator=g).to(torch.float16)
    vc = torch.randn(paged.cache_shape(layout, nb, ps, h, d), generator=g).to(torch.float16)
    slots = torch.tensor([17, -1, 0, 5, 9], dtype=torch.int32)
    rk, rv = _reference(key, value, kc, vc, slots.long(), ps, layout)
    kv_append(key, value, kc, vc, slots, layout)
    assert torch.equal(kc, rk) and torch.equal(vc, rv)


def test_empty_batch_is_a_no_op():
    key, value, kc, vc, slots, ps = _case("NHD", torch.float32, tokens=0, pad=())
    before = kc.clone()
    kv_append(key, value, kc, vc, slots, "NHD")
    assert torch.equal(kc, before)


def _bad(**change):
    key, value, kc, vc, slots, _ = _case("NHD", torch.float16, pad=())
    args = {"key": key, "value": value, "k_cache": kc, "v_cache": vc, "slot_mapping": slots, "layout": "NHD"}
    args.update(change)
    return args


@pytest.mark.parametrize("change, message", [
    (lambda a: {"slot_mapping": a["slot_mapping"].index_fill(0, torch.tensor([2]), 8 * 4)},
     r"slot_mapping\[2\] = 32 is outside the cache"),
    (lambda a: {"slot_mapping": a["slot_mapping"].index_fill(0, torch.tensor([1]), -2)},
     r"slot_mapping\[1\] = -2 is outside the cache"),
    (lambda a: {"slot_mapping": a["slot_mapping"].index_fill(0, torch.tensor([4]), int(a["slot_mapping"][0]))},
     "is written by more than one token"),
    (lambda a: {"slot_mapping": a["slot_mapping"][:-1]}, "slot_mapping has 6 entries for 7 tokens"),
    (lambda a: {"slot_mapping": a["slot_mapping"].float()}, "slot_mapping must be int32 or int64"),
    (lambda a: {"key": a["key"].bfloat16()}, "key is torch.bfloat16 but the cache is torch.float16"),
    (lambda a: {"value": a["value"][:, :1]}, r"value has shape \(7, 1, 32\), expected \(7, 2, 32\)"),
    (lambda a: {"v_cache": a["v_cache"][:4]}, "v_cache has shape"),
    (lambda a: {"layout": "NDH"}, "unknown KV-cache layout 'NDH'"),
    (lambda a: {"key": a["key"].transpose(1, 2).contiguous().transpose(1, 2)}, "head_dim must be contiguous"),
    (lambda a: {"k_cache": a["k_cache"][0]}, "KV cache must be 4-D"),
])
def test_bad_input_is_a_value_error_naming_it(change, message):
    args = _bad()
    args.update(change(args))
    with pytest.raises(ValueError, match=message):
        kv_append(**args)


def test_slot_values_are_only_checked_when_asked():
    # check_indices=False is what the timed benchmark calls: no host copy of the slots.
    args = _bad()
    args["slot_mapping"] = args["slot_mapping"].clone()
    args["slot_mapping"][0] = args["slot_mapping"][1]        # duplicate: only a value check sees it
    with pytest.raises(ValueError, match="more than one token"):
        kv_append(**args)
    kv_append(**args, check_indices=False)


def test_rows_per_program_spreads_small_grids_over_the_sms(monkeypatch):
    cpu = torch.device("cpu")
    assert kv_validate.rows_per_program(8, 128, cpu) == 16          # interpreter: one full tile
    monkeypatch.setattr(kv_validate, "sm_count", lambda device: 132)
    assert kv_validate.rows_per_program(8, 128, cpu) == 4            # shrinks to the floor (512 elements)
    assert kv_validate.rows_per_program(8192 * 8, 128, cpu) == 16    # plenty of rows: full tiles
    assert kv_validate.rows_per_program(1024, 128, cpu) == 4         # 256 programs rather than 64
