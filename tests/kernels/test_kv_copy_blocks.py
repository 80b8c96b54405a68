import pytest
import torch

from kernelmark.kernels import paged
from kernelmark.kernels.kv_copy_blocks import CHUNK_ELEMENTS, kv_copy_blocks

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def _case(layout, dt, nb=10, ps=4, h=2, d=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    shape = paged.cache_shape(layout, nb, ps, h, d)
    return torch.randn(shape, generator=g).to(dt), torch.randn(shape, generator=g).to(dt)


def _reference(kc, vc, mapping):
    rk, rv = kc.clone(), vc.clone()
    for s, d in mapping.tolist():
        rk[d], rv[d] = kc[s], vc[s]
    return rk, rv


@pytest.mark.parametrize("name", list(DTYPES))
@pytest.mark.parametrize("layout", paged.LAYOUTS)
def test_copy_blocks_copies_whole_blocks(name, layout):
    kc, vc = _case(layout, DTYPES[name])
    mapping = torch.tensor([[0, 7], [3, 1], [0, 9]])           # one source shared by two copies
    rk, rv = _reference(kc, vc, mapping)
    kv_copy_blocks(kc, vc, mapping)
    assert torch.equal(kc, rk) and torch.equal(vc, rv)


def test_block_larger_than_a_chunk_and_not_a_power_of_two():
    kc, vc = _case("NHD", torch.bfloat16, nb=5, ps=16, h=2, d=160)   # 5120 elements: two chunks
    assert 16 * 2 * 160 > CHUNK_ELEMENTS
    mapping = torch.tensor([[4, 0], [1, 2]], dtype=torch.int32)
    rk, rv = _reference(kc, vc, mapping)
    kv_copy_blocks(kc, vc, mapping)
    assert torch.equal(kc, rk) and torch.equal(vc, rv)
    kc, vc = _case("HND", torch.float16, nb=4, ps=3, h=3, d=40)      # 360 elements
    mapping = torch.tensor([[2, 3]])
    rk, rv = _reference(kc, vc, mapping)
    kv_copy_blocks(kc, vc, mapping)
    assert torch.equal(kc, rk) and torch.equal(vc, rv)


def test_no_pairs_is_a_no_op():
    kc, vc = _case("NHD", torch.float32)
    before = kc.clone()
    kv_copy_blocks(kc, vc, torch.empty(0, 2, dtype=torch.int64))
    assert torch.equal(kc, before)


@pytest.mark.parametrize("mapping, message", [
    (torch.tensor([[0, 10]]), r"block_mapping\[0, 1\] = 10 is outside the cache \(num_blocks = 10\)"),
    (torch.tensor([[-1, 2]]), r"block_mapping\[0, 0\] = -1 is outside the cache"),
    (torch.tensor([[0, 2], [1, 2]]), "block 2 is the destination of more than one pair"),
    (torch.tensor([[0, 2], [2, 3]]), "block 2 is both a source and a destination"),
    (torch.tensor([[0, 2, 3]]), r"block_mapping must be \[pairs, 2\]"),
    (torch.tensor([[0.0, 2.0]]), "block_mapping must be int32 or int64"),
])
def test_bad_mapping_is_a_value_error_naming_it(mapping, message):
    kc, vc = _case("NHD", torch.float16)
    with pytest.raises(ValueError, match=message):
        kv_copy_blocks(kc, vc, mapping)


def test_caches_must_match_and_blocks_be_contiguous():
    kc, vc = _case("NHD", torch.float16)
    m = torch.tensor([[0, 1]])
    with pytest.raises(ValueError, match="k_cache is torch.float16 but v_cache torch.float32"):
        kv_copy_blocks(kc, vc.float(), m)
    with pytest.raises(ValueError, match="each cache block must be contiguous"):
        kv_copy_blocks(kc.transpose(1, 2), vc.transpose(1, 2), m)
