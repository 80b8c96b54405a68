import pytest
import torch

from kernelmark.kernels import paged
from kernelmark.kernels.kv_gather import kv_gather

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def _case(lens, layout, dt, ps=4, h=2, d=32, spare=3, seed=0):
    """A cache whose unmapped blocks and unused page tails are NaN: a gather that reads
    anything the block table does not map leaves NaN in its output."""
    g = torch.Generator().manual_seed(seed)
    nb = sum(paged.blocks_needed(n, ps) for n in lens) + spare
    kc = torch.randn(paged.cache_shape(layout, nb, ps, h, d), generator=g).to(dt)
    vc = torch.randn(paged.cache_shape(layout, nb, ps, h, d), generator=g).to(dt)
    table = paged.random_block_table(lens, ps, nb, g)
    used = set(table[table >= 0].tolist())
    for blk in set(range(nb)) - used:
        kc[blk] = vc[blk] = float("nan")
    for s, n in enumerate(lens):
        if n % ps:
            tail = (table[s, n // ps], slice(n % ps, None)) if layout == "NHD" else \
                   (table[s, n // ps], slice(None), slice(n % ps, None))
            kc[tail] = vc[tail] = float("nan")
    cu = torch.zeros(len(lens) + 1, dtype=torch.int32)
    cu[1:] = torch.tensor(lens).cumsum(0)
    return kc, vc, table, cu


def _reference(kc, vc, table, lens, layout):
    return (torch.cat([paged.gather_pages(kc, table[s], n, layout) for s, n in enumerate(lens)]),
            torch.cat([paged.gather_pages(vc, table[s], n, layout) for s, n in enumerate(lens)]))


@pytest.mark.parametrize("name", list(DTYPES))
@pytest.mark.parametrize("layout", paged.LAYOUTS)
def test_gather_packs_each_sequence_in_order(name, layout):
    lens = [9, 1, 4, 6]
    kc, vc, table, cu = _case(lens, layout, DTYPES[name])
    k, v = kv_gather(kc, vc, table, cu, max(lens), layout)
    rk, rv = _reference(kc, vc, table, lens, layout)
    assert torch.equal(k, rk) and torch.equal(v, rv)      # torch.equal fails on any NaN read


@pytest.mark.parametrize("layout", paged.LAYOUTS)
def test_gather_into_preallocated_outputs_with_an_empty_sequence(layout):
    lens = [5, 0, 7]
    kc, vc, table, cu = _case(lens, layout, torch.bfloat16, h=3, d=40, ps=3)
    out = (torch.full((12, 3, 40), 7.0, dtype=torch.bfloat16), torch.full((12, 3, 40), 7.0, dtype=torch.bfloat16))
    k, v = kv_gather(kc, vc, table.long(), cu.long(), 16, layout, out=out)   # max_seq_len may exceed the longest
    assert k is out[0] and v is out[1]
    rk, rv = _reference(kc, vc, table, lens, layout)
    assert torch.equal(k, rk) and torch.equal(v, rv)


def _args(**change):
    lens = [5, 3]
    kc, vc, table, cu = _case(lens, "NHD", torch.float16, spare=0)
    args = {"k_cache": kc, "v_cache": vc, "block_table": table, "cu_seqlens": cu, "max_seq_len": 5}
    args.update(change)
    return args


@pytest.mark.parametrize("change, message", [
    ({"block_table": torch.tensor([[0, 9], [2, -1]], dtype=torch.int32)}, r"block_table\[0, 1\] = 9 is outside the cache"),
    ({"block_table": torch.tensor([[0], [2]], dtype=torch.int32)}, "needs 2 pages of 4 tokens, but its block table holds only 1"),
    ({"cu_seqlens": torch.tensor([1, 5, 8], dtype=torch.int32)}, r"cu_seqlens\[0\] must be 0"),
    ({"cu_seqlens": torch.tensor([0, 5, 4], dtype=torch.int32)}, "must not decrease"),
    ({"cu_seqlens": torch.tensor([0, 5], dtype=torch.int32)}, "cu_seqlens must have batch \\+ 1 = 3 entries"),
    ({"max_seq_len": 4}, "sequence 0 has 5 tokens, more than max_seq_len = 4"),
    ({"max_seq_len": 5.0}, "max_seq_len must be a non-negative host int"),
    ({"out": (torch.empty(7, 2, 32, dtype=torch.float16), torch.empty(7, 2, 32, dtype=torch.float16))},
     r"cu_seqlens\[-1\] = 8 tokens but the output holds 7"),
    ({"out": (torch.empty(8, 2, 32), torch.empty(8, 2, 32))}, "out k is torch.float32 but the cache is torch.float16"),
    ({"block_table": torch.tensor([0.0, 1.0])}, "block_table must be 2-D"),
])
def test_bad_input_is_a_value_error_naming_it(change, message):
    with pytest.raises(ValueError, match=message):
        kv_gather(**_args(**change))
