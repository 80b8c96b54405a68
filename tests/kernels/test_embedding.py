"""kernels/embedding.py in the Triton interpreter: bit-exact rows for int32 and int64 ids at
sizes that are not multiples of its tile (2 rows x 64 columns there); ids outside the
table give zeros, or a ValueError when checked; a kernel that skips the last token
fails the exact check; bad input is a ValueError naming it before any launch."""
import pytest
import torch
import triton

from kernelmark.kernels import embedding as k
from kernelmark.ops.check import compare

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def _case(t, vocab, hidden, dt, ids_dtype=torch.int64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(0, vocab, (t,), generator=g).to(ids_dtype),
            torch.randn(vocab, hidden, generator=g).to(dt))


@pytest.mark.parametrize("name", list(DTYPES))
@pytest.mark.parametrize("ids_dtype", [torch.int32, torch.int64])
@pytest.mark.parametrize("t, vocab, hidden", [(7, 1000, 100), (1, 3, 64), (4, 50, 130)])
def test_embedding_rows_are_exact(name, ids_dtype, t, vocab, hidden):
    ids, table = _case(t, vocab, hidden, DTYPES[name], ids_dtype, seed=t + hidden)
    out = k.embedding(ids, table)
    assert torch.equal(out, table[ids.long()])


def test_ids_outside_the_table_give_zero_rows_unless_checked():
    ids, table = _case(5, 40, 70, torch.bfloat16)
    ids[1], ids[3] = -1, 40
    out = k.embedding(ids, table, check_ids=False)
    assert torch.equal(out[[1, 3]], torch.zeros(2, 70, dtype=torch.bfloat16))
    assert torch.equal(out[[0, 2, 4]], table[ids[[0, 2, 4]]])
    with pytest.raises(ValueError, match=r"ids\[1\] = -1 is outside the table \(vocab = 40\)"):
        k.embedding(ids, table)


def test_a_kernel_that_skips_the_last_token_fails_the_check():
    ids, table = _case(5, 100, 96, torch.bfloat16, seed=2)
    out = torch.randn(5, 96).bfloat16()
    k._embedding[lambda meta: (triton.cdiv(4, meta["ROWS"]), triton.cdiv(96, meta["BLOCK_N"]))](
        ids, table, out, 4, 96, 100, table.stride(0), out.stride(0))
    res = compare(out, table[ids], 0.0, exact=True)
    assert not res.passed and "first at [4, " in res.detail


class _NoLaunch:
    def __getitem__(self, grid):
        raise AssertionError("the kernel was launched")


@pytest.mark.parametrize("ids, table, message", [
    (torch.zeros(3, dtype=torch.int64), torch.zeros(0, 8), "vocab size 0 is not supported"),
    (torch.zeros(3, dtype=torch.int64), torch.zeros(8), "table must be 2-D"),
    (torch.zeros(3), torch.zeros(8, 4), "ids must be int32 or int64"),
    (torch.zeros(3, 1, dtype=torch.int64), torch.zeros(8, 4), "ids must be 1-D"),
    (torch.zeros(3, dtype=torch.int64), torch.zeros(8, 4, dtype=torch.float64), r"table has dtype torch\.float64"),
    (torch.zeros(3, dtype=torch.int64), torch.zeros(4, 8).t(), "rows must be contiguous"),
])
def test_bad_input_is_refused_before_any_launch(monkeypatch, ids, table, message):
    monkeypatch.setattr(k, "_embedding", _NoLaunch())
    with pytest.raises(ValueError, match=message):
        k.embedding(ids, table)


def test_prune_keeps_tiles_that_fit_the_row_the_batch_and_the_threads():
    cfgs = [triton.Config({"ROWS": r, "BLOCK_N": n}, num_warps=w)
            for r in (1, 2, 4, 8) for n in (256, 512, 1024, 2048, 4096) for w in (2, 4, 8)]
    table = torch.empty(4, 7168, dtype=torch.bfloat16)
    one = k.prune(cfgs, {"table_ptr": table, "M": 1, "N": 7168})
    assert one and {c.kwargs["ROWS"] for c in one} == {1}
    assert all(c.kwargs["BLOCK_N"] * 2 >= 16 * 32 * c.num_warps for c in one)
