"""kernelmark/samplecut.py reads a line as the usual path does, or leaves it to it: ordinary
and crafted lines (escaped and repeated keys, samples elsewhere, anything but numbers among
the samples) give the same records, arrays and refusals with it and without it; and an
ordinary run file's timed records are read by it."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernelmark import layoutcheck, results, samplecut

sys.path.insert(0, str(Path(__file__).parent))
import repeated_run  # noqa: E402

pytestmark = pytest.mark.skipif(not samplecut.AVAILABLE, reason="pysimdjson is not installed")

HEADER = {"type": "header", "schema": 1, "device": {"name": "x", "kind": "cpu"},
          "peaks": {"copy_gbps": 1.0, "tflops": {}}, "suite": {"name": "s"}, "started": "now"}
MODES = ({"sample_arrays": True}, {"keep_samples": False})


def _record(samples, i=0) -> dict:
    return {"type": "record", "op": "gemm", "shape": {"m": i}, "dtype": "fp32", "backend": "torch",
            "status": "ok", "note": "µs", "timing": {"median_us": 1.5, "ci_rel": 0.01, "n": 3, "samples_us": samples}}


WARM = {"type": "record", "op": "gemm", "shape": {"m": 0}, "dtype": "fp32", "backend": "torch", "status": "ok",
        "timing": {"median_us": 1.5, "ci_rel": 0.01, "samples_us": [2.5, 3.5]}}


def _write(tmp_path, lines, warm=WARM) -> str:
    """A run file of the header, a record of the lines' layout (so that the layout is known),
    then ``lines`` (text, or dicts written as json.dumps writes them)."""
    p = tmp_path / "r.jsonl"
    body = [json.dumps(HEADER), json.dumps(warm)]
    body += [x if isinstance(x, str) else json.dumps(x) for x in lines]
    p.write_text("\n".join(body) + "\n")
    return str(p)


def _read(path, cut: bool, **kw):
    """The records as repr (arrays as their dtype and values), or the refusal."""
    saved = samplecut.AVAILABLE
    samplecut.AVAILABLE = cut
    try:
        with results.RunReader(path, **kw) as reader:
            recs = list(reader.records())
    except results.RunFileError as e:
        return "refused: " + str(e)
    finally:
        samplecut.AVAILABLE = saved
    for r in recs:
        s = (r.get("timing") or {}).get("samples_us")
        if isinstance(s, np.ndarray):
            r["timing"]["samples_us"] = ("array", str(s.dtype), s.tolist())
    return repr(recs)


def _same_both_ways(path):
    for kw in MODES:
        assert _read(path, True, **kw) == _read(path, False, **kw), kw


samples = st.lists(st.one_of(
    st.floats(min_value=1e-6, max_value=1e12), st.floats(), st.sampled_from([1.0, 0.0, -0.0, 1e-6, 1e12, 1e12 + 1]),
    st.integers(min_value=-5, max_value=10 ** 13), st.sampled_from([2 ** 63, 2 ** 64, 10 ** 400, True, False]),
    st.sampled_from(["1.5", None, [1.0], {}, "]"])), max_size=6)


@settings(max_examples=200, deadline=None, database=None)
@given(samples)
def test_samples_of_any_kind_read_the_same(tmp_path_factory, s):
    _same_both_ways(_write(tmp_path_factory.mktemp("s"), [_record(s, 1)], _record([2.5, 3.5])))


CRAFTED = [
    # the key escaped: a second "samples_us" the cut cannot see
    '{"type": "record", "op": "gemm", "shape": {"m": 1}, "dtype": "fp32", "backend": "torch", "status": "ok", '
    '"timing": {"median_us": 1.5, "ci_rel": 0.01, "samples_us": [2.5, 3.5], "samples_\\u0075s": []}}',
    '{"type": "record", "op": "gemm", "shape": {"m": 1}, "dtype": "fp32", "backend": "torch", "status": "ok", '
    '"timing": {"median_us": 1.5, "ci_rel": 0.01, "samples_\\u0075s": [9.5], "samples_us": [2.5, 3.5]}}',
    # twice, plainly
    '{"type": "record", "op": "gemm", "shape": {"m": 1}, "dtype": "fp32", "backend": "torch", "status": "ok", '
    '"timing": {"median_us": 1.5, "ci_rel": 0.01, "samples_us": [2.5, 3.5], "samples_us": []}}',
    # the cut key is not the timing's
    '{"type": "record", "op": "gemm", "shape": {"m": 1}, "dtype": "fp32", "backend": "torch", "status": "ok", '
    '"samples_us": [2.5, 3.5], "timing": {"median_us": 1.5, "ci_rel": 0.01, "samples_\\u0075s": []}}',
    '{"type": "record", "op": "gemm", "shape": {"m": 1, "x\\"samples_us": [2.5]}, "dtype": "fp32", '
    '"backend": "torch", "status": "ok", "timing": {"median_us": 1.5, "ci_rel": 0.01, "samples_us":[]}}',
    # not a flat array of numbers
    '{"type": "record", "op": "gemm", "shape": {"m": 1}, "dtype": "fp32", "backend": "torch", "status": "ok", '
    '"timing": {"median_us": 1.5, "ci_rel": 0.01, "samples_us": [[2.5], [3.5]]}}',
    '{"type": "record", "op": "gemm", "shape": {"m": 1}, "dtype": "fp32", "backend": "torch", "status": "ok", '
    '"timing": {"median_us": 1.5, "ci_rel": 0.01, "samples_us": [2.5, 1e400]}}',
    '{"type": "record", "op": "gemm", "shape": {"m": 1}, "dtype": "fp32", "backend": "torch", "status": "ok", '
    '"timing": {"median_us": 1.5, "ci_rel": 0.01, "samples_us": [2.5, NaN]}}',
    '{"type": "record", "op": "gemm", "shape": {"m": 1}, "dtype": "fp32", "backend": "torch", "status": "ok", '
    '"timing": {"median_us": 1.5, "ci_rel": 0.01, "samples_us": [2.5, 3.5,]}}',
    '{"type": "record", "op": "gemm", "shape": {"m": 1}, "dtype": "fp32", "backend": "torch", "status": "ok", '
    '"timing": {"median_us": 1.5, "ci_rel": 0.01, "samples_us": [2.5, 123456789012345678901234567890]}}',
    # the rest spoiled, the samples fine
    '{"type": "record", "op": "gemm", "shape": {"m": 1}, "dtype": "fp32", "backend": "torch", "status": "ok", '
    '"timing": {"median_us": -1.5, "ci_rel": 0.01, "samples_us": [2.5, 3.5]}}',
    '{"type": "record", "op": "gemm", "shape": {"m": 1}, "dtype": "fp32", "backend": "torch", "status": "ok", '
    '"timing": {"median_us": 1.5, "ci_rel": 0.01, "samples_us": [2.5, 3.5]}',
    '{"type": "record", "op": "gemm", "shape": {"m": 1}, "dtype": "fp32", "backend": "torch", "status": "ok", '
    '"timing": {"median_us": 1.5, "ci_rel": 0.01, "samples_us": [2.5, 3.5]}} x',
    '[{"type": "record", "op": "gemm", "shape": {"m": 1}, "dtype": "fp32", "backend": "torch", "status": "ok", '
    '"timing": {"median_us": 1.5, "ci_rel": 0.01, "samples_us": [2.5, 3.5]}}]',
    # fine: ints among the samples, an empty list, the key written without the space
    '{"type": "record", "op": "gemm", "shape": {"m": 2}, "dtype": "fp32", "backend": "torch", "status": "ok", '
    '"timing": {"median_us": 1.5, "ci_rel": 0.01, "samples_us": [2, 3.5]}}',
    '{"type": "record", "op": "gemm", "shape": {"m": 3}, "dtype": "fp32", "backend": "torch", "status": "ok", '
    '"timing": {"median_us": 1.5, "ci_rel": 0.01, "samples_us": []}}',
    '{"type": "record", "op": "gemm", "shape": {"m": 4}, "dtype": "fp32", "backend": "torch", "status": "ok", '
    '"timing": {"median_us": 1.5, "ci_rel": 0.01, "samples_us":[2.5, 3.5]}}',
]


@pytest.mark.parametrize("line", CRAFTED)
def test_crafted_lines_read_the_same(tmp_path, line):
    _same_both_ways(_write(tmp_path, [line]))


def test_the_crafted_lines_that_are_fine_are_read_by_the_cut(monkeypatch):
    monkeypatch.setattr(layoutcheck, "_PLANS", {})
    reader = samplecut.Reader(results.FAST_LOADS)
    assert reader.record(json.dumps(WARM).encode()) is None         # a layout not seen yet
    layoutcheck.learn(layoutcheck.layout(WARM))
    got = [reader.record(x.encode()) for x in CRAFTED]
    # all but the last three are refused, by the cut or the usual path; the last, written
    # without the space, is left to the usual path
    assert [g is not None for g in got] == [False] * (len(CRAFTED) - 3) + [True, True, False]
    assert got[-3]["timing"]["samples_us"].tolist() == [2.0, 3.5]
    assert got[-2]["timing"]["samples_us"] == []


def test_an_ordinary_run_file_is_read_by_the_cut(monkeypatch, tmp_path):
    """Each timed record after the first of its layout: read by simdjson, giving the arrays
    the usual path gives (a regression to the usual path shows here, not only on a clock)."""
    monkeypatch.setattr(layoutcheck, "_PLANS", {})
    taken = []
    real = samplecut.Reader.record
    monkeypatch.setattr(samplecut.Reader, "record", lambda self, raw: taken.append(real(self, raw)) or taken[-1])
    path = tmp_path / "big.jsonl"
    recs = repeated_run.write(path, 3)
    _same_both_ways(str(path))
    timed = sum(1 for r in recs if (r.get("timing") or {}).get("samples_us"))
    cut = sum(1 for x in taken if x is not None)
    assert timed > 20 and cut >= 2 * 2 * timed, (cut, timed)       # two modes, the 2nd and 3rd copies
