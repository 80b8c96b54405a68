"""ops/mla.py: mla_decode_attention's inputs, reference, minimum work, its check against
wrong kernels (a wrong page, one head dropped), and the library backends' reasons."""
import math

import pytest
import torch

from kernelmark.kernels import paged
from kernelmark.ops import mla
from kernelmark.ops.registry import get_op
from kernelmark.suites import models

CPU = torch.device("cpu")
OP = get_op("mla_decode_attention")


def _shape(**kw):
    return OP.full_shape({"batch": 2, "context": 40, "heads": 8, "page_size": 16, **kw})


def _inputs(shape, dtype="bf16", seed=0):
    return OP.make_inputs(shape, dtype, CPU, torch.Generator().manual_seed(seed))


def test_bytes_count_the_latent_cache_once_whatever_the_heads():
    s = _shape()
    # cache 2 x 40 rows of 576 bf16; q (576) + out (512) bf16 + lse fp32 per head; 3 pages each + lengths.
    assert OP.nbytes(s, "bf16") == 80 * 576 * 2 + 2 * 8 * (1088 * 2 + 4) + 4 * 6 + 4 * 2
    more_heads = OP.nbytes(_shape(heads=128), "bf16") - OP.nbytes(s, "bf16")
    assert more_heads == 2 * 120 * (1088 * 2 + 4)        # only q, out and lse grow with heads
    assert OP.flops(s) == 2 * 8 * 80 * (576 + 512)
    page1 = OP.nbytes(_shape(page_size=1), "bf16") - OP.nbytes(s, "bf16")
    assert page1 == 4 * (80 - 6)                          # a block table entry per token at page 1


def test_inputs_follow_the_shape_and_the_reference_expands_the_cache():
    s = _shape(ragged=1, page_size=1)
    x = _inputs(s)
    lens = x["context_lens_host"]
    assert len(set(lens)) > 1 and x["kv_cache"].shape[1:] == (1, 576) and x["q"].shape == (2, 8, 576)
    paged.check_block_table(x["block_table"], x["context_lens"], x["kv_cache"].shape[0], 1)
    o, lse = OP.reference(x)
    assert o.shape == (2, 8, 512) and lse.shape == (2, 8) and o.dtype == torch.float32
    # Head 3 of sequence 1 by hand, in fp64, over the rows its block table names.
    rows = torch.stack([x["kv_cache"][int(x["block_table"][1, t]), 0] for t in range(lens[1])]).double()
    sc = rows @ x["q"][1, 3].double() * 192 ** -0.5
    assert torch.allclose(o[1, 3].double(), torch.softmax(sc, 0) @ rows[:, :512], atol=1e-5)
    assert math.isclose(float(lse[1, 3]), float(torch.logsumexp(sc, 0)), rel_tol=1e-6)


@pytest.mark.parametrize("bad, match", [
    ({"page_size": 24}, "page_size must be a power of two"),
    ({"ragged": 2}, "ragged must be 0 or 1"),
    ({"heads": 0}, "heads must be a positive integer"),
])
def test_bad_shapes_are_named(bad, match):
    with pytest.raises(ValueError, match=match):
        OP.check_shape(_shape(**bad), "bf16")


def _triton_out(shape, dtype, x=None):
    b = OP.backend("triton")
    return b.run(b.setup(x if x is not None else _inputs(shape, dtype)))


def test_triton_and_eager_torch_pass_and_a_dropped_head_fails():
    s = _shape(ragged=1, heads=20)
    ref = OP.reference(_inputs(s))
    for name in ("triton", "torch-eager"):
        b = OP.backend(name)
        o, lse = b.run(_inputs(s))
        assert OP.compare((o, lse), ref, "bf16").passed, name
        if name == "triton":      # the record says how the context was split
            detail = OP.backend("triton").detail()
            assert "BLOCK_H: 16" in detail and "; num_splits: 1, split_tokens: 64" in detail
    o = o.clone()
    o[1, 17] = 0                        # one head's output never written
    res = OP.compare((o, lse), ref, "bf16")
    assert not res.passed and "first at [1, 17, " in res.detail


def test_a_kernel_reading_a_wrong_page_fails_the_check():
    s = _shape(context=48)
    x = _inputs(s, seed=3)
    ref = OP.reference(x)
    table = x["block_table"].clone()
    table[0, 1], table[1, 2] = x["block_table"][1, 2].item(), x["block_table"][0, 1].item()
    res = OP.compare(_triton_out(s, "bf16", {**x, "block_table": table}), ref, "bf16")
    assert not res.passed


def test_library_backends_say_why_they_cannot_run_here():
    for name, module in (("flash-mla", "flash"), ("flashinfer-mla", "flashinfer"), ("vllm-triton-mla", "vllm")):
        b = OP.backend(name)
        why = b.available()
        if why is not None:
            assert module in why.lower()
        assert b.devices is not None and "cpu" not in b.devices
    fm = OP.backend("flash-mla").supports
    assert fm(_shape(page_size=64), "bf16", "cuda", (9, 0)) is None
    assert "page_size 64" in fm(_shape(page_size=16), "bf16", "cuda", (9, 0))
    assert "9.0" in fm(_shape(page_size=64), "bf16", "cuda", (8, 0))


def test_the_deepseek_v3_shape_set_splits_heads_over_tp():
    rows = models.SHAPE_SETS["deepseek-v3.mla_decode"](tp=[1, 8, 16], batch=1, context=1024)
    assert [(label, s["heads"]) for label, s in rows] == [
        ("deepseek-v3.mla", 128), ("deepseek-v3.mla.tp8", 16), ("deepseek-v3.mla.tp16", 8)]
    assert models.DEEPSEEK_V3_MLA.kv_lora_rank + models.DEEPSEEK_V3_MLA.qk_rope_head_dim == mla.QK_DIM
    with pytest.raises(ValueError, match="128 heads do not split over tp=3"):
        models.mla_decode_shapes(tp=3)


@pytest.mark.parametrize("tp", [0, -2, "8", 2.0, True])
def test_a_bad_tp_degree_is_a_value_error_naming_it(tp):
    with pytest.raises(ValueError, match="tp must be a positive integer"):
        models.mla_decode_shapes(tp=tp)


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_the_plain_torch_backend_passes_its_check_on_many_draws(dtype):
    """The torch-eager backend rounds the scores to the input dtype before the softmax, as
    frameworks do: honest, and failed the dtype's elementwise bound in 3 of these 6 fp16 draws
    (a `make run` showed it FAILED). dtypes.ATTENTION_ELEMENTWISE passes every draw."""
    op = get_op("mla_decode_attention")
    eager = op.backend("torch-eager").run
    shape = op.full_shape({"batch": 2, "context": 100, "heads": 16, "page_size": 16, "ragged": 1})
    for seed in range(6):
        x = op.make_inputs(shape, dtype, torch.device("cpu"), torch.Generator().manual_seed(seed))
        res = op.compare(eager(x), op.reference(x), dtype)
        assert res.passed, (seed, res.detail)
