"""kernelmark/ops/paged_prefill.py: a chunk of queries per sequence against its paged cache,
causal bottom-right; its work counts, its mask, and its torch backend against the reference."""
import pytest
import torch

from kernelmark.kernels import paged
from kernelmark.ops.registry import get_op

OP = get_op("paged_prefill_attention")
CPU = torch.device("cpu")


def _x(causal=1, q_len=5, context=21, dtype="fp32"):
    s = OP.full_shape({"batch": 3, "q_len": q_len, "context": context, "q_heads": 4, "kv_heads": 2,
                       "head_dim": 16, "page_size": 4, "causal": causal})
    OP.check_shape(s, dtype)
    return s, OP.make_inputs(s, dtype, CPU, torch.Generator().manual_seed(2))


@pytest.mark.parametrize("causal,dtype", [(1, "fp32"), (0, "fp32"), (1, "bf16")])
def test_torch_backend_passes_the_check_and_a_wrong_element_fails(causal, dtype):
    s, x = _x(causal, dtype=dtype)
    ref = OP.reference(x)
    out = OP.backend("torch-gather-sdpa").run(x)
    assert OP.compare(out, ref, dtype).passed
    out[7, 1, 3] += 1.0
    assert not OP.compare(out, ref, dtype).passed


def test_mask_is_bottom_right_query_j_sees_the_prefix_and_the_chunk_up_to_itself():
    s, x = _x()
    n, ql, ps = 21, 5, 4
    ref = OP.reference(x)
    # Sequence 0's first query sees keys 0 .. n - ql; changing key n - ql + 1 leaves it, key n - ql moves it.
    for key, moves in ((n - ql + 1, False), (n - ql, True)):
        y = {**x, "k_cache": x["k_cache"].clone()}
        block = int(x["block_table"][0, key // ps])
        y["k_cache"][block, key % ps] += 3.0
        for r in (OP.reference(y), OP.backend("torch-gather-sdpa").run(y)):
            assert (not torch.allclose(r[0].double(), ref[0].double(), atol=1e-5)) == moves, (key, moves)
    # A chunk of one query is decode: it attends over the whole context.
    s1, x1 = _x(q_len=1)
    k = paged.gather_pages(x1["k_cache"], x1["block_table"][0], 21).double()
    v = paged.gather_pages(x1["v_cache"], x1["block_table"][0], 21).double()
    q = x1["q"][0].double().view(2, 2, 16)
    p = torch.softmax(torch.einsum("hgd,nhd->hgn", q, k) * x1["scale"], -1)
    assert torch.allclose(OP.reference(x1)[0].double(), torch.einsum("hgn,nhd->hgd", p, v).reshape(4, 16))


def test_flops_count_the_unmasked_pairs_and_bytes_every_input_once():
    for causal in (0, 1):
        s, x = _x(causal)
        n, ql = 21, 5
        allowed = torch.arange(n)[None, :] <= torch.arange(ql)[:, None] + (n - ql) if causal else torch.ones(ql, n)
        assert OP.flops(s) == 4 * 3 * 4 * 16 * int(allowed.sum())
    s, _ = _x()
    assert OP.nbytes(s, "fp32") == 3 * 21 * 2 * 16 * 2 * 4 + 2 * 3 * 5 * 4 * 16 * 4 + 4 * 3 * 6 + 4 * 4 + 4 * 3


def test_a_chunk_longer_than_its_context_is_refused_by_name():
    with pytest.raises(ValueError, match="q_len 8 exceeds context 6"):
        OP.check_shape(OP.full_shape({"batch": 1, "q_len": 8, "context": 6, "q_heads": 2, "kv_heads": 2,
                                      "head_dim": 16}), "fp32")
