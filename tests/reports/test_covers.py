"""A component done inside another's kernel is counted there once (record "covers")."""

import pytest

from kernelmark import runcheck
from kernelmark.reports import modelstep, rollup

EXPERTS = rollup.Need("experts", "fused_moe", {"tokens": 1}, {}, 2, 1, dtype="bf16", family="moe")
ALIGN = rollup.Need("align", "moe_align", {"tokens": 1}, {}, 2, 1, dtype="int32", family="moe")
QKV = rollup.Need("qkv", "gemm", {"m": 1}, {}, 2, 1, dtype="bf16", family="gemm")


def _rec(op, backend, us, dtype="bf16", covers=None, **shape):
    r = {"op": op, "backend": backend, "dtype": dtype, "status": "ok", "shape": {"tokens": 1, "m": 1, **shape},
         "timing": {"median_us": us}}
    if covers:
        r["covers"] = covers
    return r


def _estimate(recs):
    found = modelstep.settle_covers([rollup.find(n, recs, "bf16") for n in (QKV, ALIGN, EXPERTS)], recs, "bf16")
    return rollup.Estimate("dev", "bf16", "decode", 1, found), {f.need.name: f for f in found}


def test_a_kernel_that_aligns_inside_is_not_given_a_second_align():
    recs = [_rec("gemm", "torch", 5.0), _rec("moe_align", "torch", 3.0, dtype="int32"),
            _rec("fused_moe", "torch", 10.0), _rec("fused_moe", "triton", 12.0, covers=["moe_align"])]
    est, f = _estimate(recs)
    # triton's 12 µs does the align too: 12 < 10 + 3, so it is picked and the align not added
    assert f["experts"].rec["backend"] == "triton"
    assert f["align"].covered and f["align"].rec is None and "inside experts (triton)" in f["align"].why
    assert est.complete and est.total_us == pytest.approx(2 * (5.0 + 12.0))
    rows = rollup.breakdown_rows([est])
    assert [r for r in rows if r[1] == "align"][0][-1].startswith("done inside experts")


def test_the_covering_backend_is_weighed_against_the_others_plus_what_they_leave():
    recs = [_rec("gemm", "torch", 5.0), _rec("moe_align", "torch", 3.0, dtype="int32"),
            _rec("fused_moe", "torch", 10.0), _rec("fused_moe", "triton", 14.0, covers=["moe_align"])]
    est, f = _estimate(recs)
    # 14 µs against 10 + 3: the torch loop, and its align counted (before, triton was simply
    # dropped for being slower than 10 alone; with both counted, 14 + 3 was the double count)
    assert f["experts"].rec["backend"] == "torch" and not f["align"].covered
    assert est.total_us == pytest.approx(2 * (5.0 + 3.0 + 10.0))


def test_an_align_not_measured_is_not_missing_when_the_picked_kernel_covers_it():
    recs = [_rec("gemm", "torch", 5.0), _rec("fused_moe", "triton", 12.0, covers=["moe_align"])]
    est, f = _estimate(recs)
    assert f["align"].covered and est.complete and est.total_us == pytest.approx(2 * 17.0)
    # without a covering record the align is missing, and the phase incomplete
    est2, f2 = _estimate([_rec("gemm", "torch", 5.0), _rec("fused_moe", "torch", 10.0)])
    assert not f2["align"].covered and not est2.complete


@pytest.mark.parametrize("covers", ["moe_align", [1], {"op": "x"}])
def test_covers_in_a_run_file_must_be_op_names(covers):
    rec = {"op": "fused_moe", "backend": "triton", "dtype": "bf16", "status": "checked", "shape": {"tokens": 1},
           "label": "", "case_index": 0, "covers": covers}
    with pytest.raises(runcheck.RunFileError, match="covers must be a list of op names"):
        runcheck.check_record(rec, "run.jsonl:2")
