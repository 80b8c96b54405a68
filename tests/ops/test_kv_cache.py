"""The KV-cache op definitions: every backend that runs here passes its op's check on
inputs from make_inputs, corrupted results fail it, byte counts match their closed
forms, and bad shapes are refused. (Called directly: op.make_inputs / op.reference /
backend.run / op.compare, as the runner does.)"""

import pytest
import torch

from kernelmark import dtypes
from kernelmark.kernels import paged
from kernelmark.ops import kv_inputs
from kernelmark.suites import loader
from kernelmark.ops.registry import all_ops

KV_OPS = ("kv_append", "rope_kv_append", "kv_gather", "kv_copy_blocks", "kv_swap_out", "kv_swap_in",
          "kv_quantize", "kv_dequantize")
CACHE = {"kv_heads": 2, "head_dim": 32, "page_size": 4, "num_blocks": 24}
APPEND = [{"tokens": 7, "seq_tokens": s, "layout": lay, "padding": p, **CACHE}
          for s, lay, p in [(1, "NHD", 0), (3, "HND", 2), (7, "NHD", 3), (2, "HND", 0)]]
SHAPES = {
    "kv_append": APPEND,
    "rope_kv_append": APPEND,
    "kv_gather": [{"batch": 3, "seq_len": 9, "layout": lay, **CACHE} for lay in paged.LAYOUTS],
    "kv_copy_blocks": [{"pairs": 5, **CACHE}],
    "kv_swap_out": [{"pairs": 5, "host_blocks": 8, **CACHE}],
    "kv_swap_in": [{"pairs": 5, "host_blocks": 8, **CACHE}],
    "kv_quantize": [{"tokens": 5, "kv_heads": 3, "head_dim": 40, "qformat": q, "granularity": g}
                    for q in ("fp8_e4m3", "int8") for g in ("tensor", "head", "token_head")],
}
SHAPES["kv_dequantize"] = SHAPES["kv_quantize"]
CPU = torch.device("cpu")


def _gen(seed=7):
    return torch.Generator().manual_seed(seed)


def _cases():
    ops = all_ops()
    for name in KV_OPS:
        op = ops[name]
        for shape in SHAPES[name]:
            for dtype in op.dtypes:
                yield pytest.param(name, shape, dtype, id=f"{name}-{'-'.join(map(str, shape.values()))}-{dtype}")


def test_the_registry_finds_every_kv_op():
    assert set(KV_OPS) <= set(all_ops())
    assert all_ops()["kv_swap_out"].memory_peak == "d2h" and all_ops()["kv_swap_in"].memory_peak == "h2d"


@pytest.mark.parametrize("name, shape, dtype", list(_cases()))
def test_every_backend_that_runs_here_passes_the_check(name, shape, dtype):
    op = all_ops()[name]
    shape = op.full_shape(shape)
    op.check_shape(shape, dtype)
    ref = op.reference(op.make_inputs(shape, dtype, CPU, _gen()))
    ran = []
    for b in op.backends:
        if b.available() is not None:
            continue             # an optional library that is not installed
        # Swap backends are marked GPU-only (pinned memory, a host link); their index
        # logic runs on CPU tensors all the same, so it is checked here.
        if b.supports and b.supports(shape, dtype, "cpu", None):
            continue
        out = b.run(op.make_inputs(shape, dtype, CPU, _gen()))
        res = op.compare(out, ref, dtype)
        assert res.passed, f"{b.name}: {res.detail}"
        ran.append(b.name)
    assert len(ran) >= 2, ran


def test_make_inputs_is_deterministic_fresh_and_never_zero():
    for name in KV_OPS:
        op = all_ops()[name]
        shape = op.full_shape(SHAPES[name][0])
        a, b = (op.make_inputs(shape, "bf16", CPU, _gen(3)) for _ in range(2))
        tensors = [k for k, v in a.items() if isinstance(v, torch.Tensor)]
        assert tensors, name
        for k in tensors:
            assert a[k] is not b[k] and a[k].data_ptr() != b[k].data_ptr(), (name, k)
            assert torch.equal(a[k], b[k]), (name, k)
            if a[k].is_floating_point() and a[k].numel() > 1:
                assert a[k].float().count_nonzero() > 0.9 * a[k].numel(), (name, k)


def _corrupt(out, how):
    outs = [o.clone() for o in (out if isinstance(out, tuple) else (out,))]
    t = outs[0].view(torch.uint8).view(-1) if how == "bits" else outs[0].view(-1)
    if how == "bits":
        t[t.numel() // 2] ^= 0x10
    else:
        t[t.numel() // 2] += 0.5 * t.abs().max().to(t.dtype)
    return tuple(outs) if isinstance(out, tuple) else outs[0]


@pytest.mark.parametrize("name, shape", [(n, SHAPES[n][0]) for n in KV_OPS] + [
    ("kv_quantize", SHAPES["kv_quantize"][4]), ("kv_append", APPEND[1])])
def test_a_corrupted_result_fails_the_check(name, shape):
    op = all_ops()[name]
    shape = op.full_shape(shape)
    ref = op.reference(op.make_inputs(shape, "bf16", CPU, _gen()))
    assert op.compare(ref, ref, "bf16").passed
    bad = op.compare(_corrupt(ref, "bits"), ref, "bf16")
    assert not bad.passed and bad.detail
    if name != "kv_quantize":
        assert not op.compare(_corrupt(ref, "value"), ref, "bf16").passed


def test_quantize_check_refuses_an_off_by_one_code_and_a_wrong_scale():
    op = all_ops()["kv_quantize"]
    shape = op.full_shape({"tokens": 4, "kv_heads": 2, "head_dim": 16, "qformat": "int8", "granularity": "token_head"})
    codes, scale = op.reference(op.make_inputs(shape, "fp16", CPU, _gen()))
    off = codes.clone()
    off[0, 0, 0] += 1 if off[0, 0, 0] < 127 else -1
    res = op.compare((off, scale), (codes, scale), "fp16")
    assert not res.passed and "1 of 128 bytes differ" in res.detail
    res = op.compare((codes, scale * (1 + 2 ** -20)), (codes, scale), "fp16")
    assert not res.passed and "scale" in res.detail


def test_rope_check_is_per_element_not_diluted_by_the_cache():
    # One unrotated row in a cache of 4096 blocks: a relative-L2 test at bf16's tolerance
    # lets it through; the per-element ulp test does not.
    op = all_ops()["rope_kv_append"]
    shape = op.full_shape({"tokens": 1, **CACHE, "num_blocks": 4096})
    x = op.make_inputs(shape, "bf16", CPU, _gen())
    k, v = op.reference(x)
    b, o = divmod(int(x["slot_mapping"][0]), 4)
    wrong = k.clone()
    wrong[b, o] = x["key"][0]                 # written, but not rotated
    res = op.compare((wrong, v), (k, v), "bf16")
    assert not res.passed and res.rel_l2 < dtypes.tolerance("bf16")


S = 2  # bf16 bytes


@pytest.mark.parametrize("name, shape, expected", [
    ("kv_append", {"tokens": 16, "kv_heads": 8, "head_dim": 128, "page_size": 16, "num_blocks": 64, "padding": 2},
     4 * 14 * 8 * 128 * S + 8 * 16),
    ("rope_kv_append", {"tokens": 16, "kv_heads": 8, "head_dim": 128, "page_size": 16, "num_blocks": 64, "padding": 2},
     4 * 14 * 8 * 128 * S + 16 * 16 + 4 * 14 * 128),
    # lens 8 and 6 (8 - 8 // 4): 14 tokens, 2 + 2 pages of 4
    ("kv_gather", {"batch": 2, "seq_len": 8, "kv_heads": 2, "head_dim": 64, "page_size": 4, "num_blocks": 8},
     4 * 14 * 2 * 64 * S + 4 * 4 + 4 * 3),
    ("kv_copy_blocks", {"pairs": 3, "kv_heads": 8, "head_dim": 128, "page_size": 16, "num_blocks": 64},
     4 * 3 * 16 * 8 * 128 * S + 16 * 3),
    ("kv_swap_out", {"pairs": 3, "kv_heads": 8, "head_dim": 128, "page_size": 16, "num_blocks": 64, "host_blocks": 8},
     2 * 3 * 16 * 8 * 128 * S),
    ("kv_quantize", {"tokens": 10, "kv_heads": 8, "head_dim": 128, "qformat": "int8", "granularity": "token_head"},
     10 * 8 * 128 * (S + 1) + 4 * 10 * 8),
    ("kv_dequantize", {"tokens": 10, "kv_heads": 8, "head_dim": 128, "qformat": "fp8_e4m3", "granularity": "head"},
     10 * 8 * 128 * (S + 1) + 4 * 8),
    ("kv_quantize", {"tokens": 10, "kv_heads": 8, "head_dim": 128, "qformat": "fp8_e4m3", "granularity": "tensor"},
     10 * 8 * 128 * (S + 1) + 4),
])
def test_bytes_match_the_closed_forms(name, shape, expected):
    op = all_ops()[name]
    assert op.nbytes(op.full_shape(shape), "bf16") == expected


def test_flops_are_zero_for_copies_and_count_the_rotation():
    ops = all_ops()
    for name in ("kv_append", "kv_gather", "kv_copy_blocks", "kv_swap_in", "kv_quantize"):
        assert ops[name].flops(ops[name].full_shape(SHAPES[name][0])) == 0
    rope = ops["rope_kv_append"]
    assert rope.flops(rope.full_shape(APPEND[1])) == 3 * (7 - 2) * 2 * 32


@pytest.mark.parametrize("name, shape, message", [
    ("kv_append", {"tokens": 64, "seq_tokens": 1, **CACHE}, "may need 64 pages, more than num_blocks = 24"),
    ("kv_append", {"tokens": 4, "padding": 5, **CACHE}, "padding must be an integer in"),
    ("kv_append", {"tokens": 4, "layout": "NDH", **CACHE}, "layout must be one of NHD, HND"),
    ("rope_kv_append", {"tokens": 4, **{**CACHE, "head_dim": 33}}, "even head_dim"),
    ("kv_gather", {"batch": 8, "seq_len": 16, **CACHE}, "the sequences need .* pages, more than num_blocks = 24"),
    ("kv_copy_blocks", {"pairs": 13, **CACHE}, "13 pairs need 2·pairs distinct blocks"),
    ("kv_swap_in", {"pairs": 9, "host_blocks": 8, **CACHE}, "9 pairs need that many distinct blocks"),
    ("kv_quantize", {"tokens": 4, "kv_heads": 2, "head_dim": 8, "qformat": "int4"}, "qformat must be one of"),
    ("kv_dequantize", {"tokens": 4, "kv_heads": 2, "head_dim": 8, "granularity": "row"}, "granularity must be one of"),
])
def test_bad_shapes_are_refused(name, shape, message):
    op = all_ops()[name]
    with pytest.raises(ValueError, match=message):
        op.check_shape(op.full_shape(shape), op.dtypes[-1])


@pytest.mark.parametrize("per_seq, pad", [(1, 0), (5, 3), (40, 0)])
def test_append_batch_is_a_consistent_allocation(per_seq, pad):
    shape = {"tokens": 40, "seq_tokens": per_seq, "page_size": 16, "num_blocks": 64, "padding": pad}
    b = kv_inputs.append_batch(shape, _gen())
    slots = b["slot_mapping"]
    real = slots[slots >= 0]
    assert int((slots == -1).sum()) == pad and real.unique().numel() == real.numel()
    assert int(real.max()) < 64 * 16
    # A sequence continues its context: the offset in the page follows the position.
    keep = slots >= 0
    assert torch.equal(slots[keep] % 16, b["positions"][keep] % 16)
    assert int(b["positions"].max()) < kv_inputs.MAX_POSITION
    # FlashInfer's description of the batch addresses the same slots.
    p, s = b["page_positions"].long(), b["batch_indices"].long()
    fi = b["kv_indices"].long()[b["kv_indptr"].long()[s] + p // 16] * 16 + p % 16
    assert torch.equal(fi[keep], slots[keep])
    last = b["kv_indptr"][1:] - b["kv_indptr"][:-1]
    assert bool((b["kv_last_page_len"] >= 1).all() and (b["kv_last_page_len"] <= 16).all()) and bool((last >= 1).all())


def _suite_cases(name):
    return loader.load(name).cases


def test_kvcache_suite_fits_in_minutes_and_a_few_gib_per_case():
    cases = _suite_cases("kvcache")
    ops = all_ops()
    gpu = [c for c in cases if c.runs_on("cuda") and not c.runs_on("cpu")]
    assert 20 <= len(gpu) <= 60
    assert {c.op for c in gpu} == set(KV_OPS)
    for c in gpu:
        shape = c.shape
        if "num_blocks" in shape:
            cache = 2 * shape["num_blocks"] * kv_inputs.cache_block_bytes(shape, c.dtype)
            assert 256 << 20 <= cache <= 1 << 30, (c.op, shape)
        ops[c.op].check_shape(shape, c.dtype)


def test_smoke_kv_cases_are_small_enough_for_the_interpreter():
    from kernelmark.harness import runner
    cases = [c for c in _suite_cases("smoke") if c.op in KV_OPS]
    assert {c.op for c in cases} == set(KV_OPS)
    for c in cases:
        assert all_ops()[c.op].nbytes(c.shape, c.dtype) <= runner.INTERPRETER_MAX_BYTES // 16, c
