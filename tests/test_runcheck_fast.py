"""The fast checks of a line and the checks that name what is wrong pass and refuse alike:
the samples checked by one numpy conversion where it can vouch for them
(runcheck._usual_samples), by the list checks otherwise, giving the same records and
refusals (an ordinary run file goes the fast way); check_values' walk without names
(runcheck._values_fine) passes exactly what the named walk passes."""
import json
import math
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from kernelmark import results, runcheck, samplecut

PUBLISHED = sorted((Path(__file__).parents[1] / "published").glob("*/*.jsonl"))


def _file(tmp_path, samples) -> str:
    header = {"type": "header", "schema": 1, "device": {"name": "x", "kind": "cpu"},
              "peaks": {"copy_gbps": 1.0, "tflops": {}}, "suite": {"name": "s"}, "started": "now"}
    rec = {"type": "record", "op": "gemm", "shape": {"m": 1}, "dtype": "fp32", "backend": "torch",
           "status": "ok", "timing": {"median_us": 1.5, "ci_rel": 0.01, "n": 3, "samples_us": samples}}
    p = tmp_path / "r.jsonl"
    # Python's json writes NaN and Infinity tokens, as a damaged or crafted file may hold
    p.write_text(json.dumps(header) + "\n" + json.dumps(rec) + "\n")
    return str(p)


def _read(path, **kw):
    """The records as repr (1 and 1.0, True told apart; arrays as their values and dtype),
    or the refusal."""
    try:
        with results.RunReader(path, **kw) as reader:
            recs = list(reader.records())
    except results.RunFileError as e:
        return "refused: " + str(e)
    for r in recs:
        s = (r.get("timing") or {}).get("samples_us")
        if isinstance(s, np.ndarray):
            r["timing"]["samples_us"] = ("array", str(s.dtype), s.tolist())
    return repr(recs)


samples = st.lists(st.one_of(
    st.floats(min_value=1e-6, max_value=1e12), st.floats(), st.sampled_from([1.0, 0.0, -0.0, 1e-6, 1e12, 1e12 + 1]),
    st.integers(min_value=-5, max_value=10 ** 13), st.sampled_from([2 ** 63, 2 ** 64, 10 ** 400, True, False]),
    st.sampled_from(["1.5", None, [1.0], {}])), max_size=6)


@settings(max_examples=300, deadline=None, database=None)
@given(samples)
def test_the_fast_check_and_the_list_checks_give_the_same(tmp_path_factory, s):
    path = _file(tmp_path_factory.mktemp("s"), s)
    for kw in ({}, {"sample_arrays": True}, {"keep_samples": False}):
        fast = _read(path, **kw)
        real = runcheck._usual_samples
        runcheck._usual_samples = lambda *a: False          # the list checks alone, as before
        try:
            slow = _read(path, **kw)
        finally:
            runcheck._usual_samples = real
        assert fast == slow, (s, kw)


def test_what_the_fast_check_leaves_to_the_list_checks(tmp_path):
    """A bool is 1.0 to numpy, so samples with a 1.0 go the list way; so do ints alone (an
    int64 array), and anything not a time."""
    usual = [2.5, 3.0, 1e-6, 1e12, 7]
    assert runcheck._usual_samples({}, usual, False)
    for s in ([2.5, True], [2.5, 1.0], [2, 3], [2.5, False], [2.5, 0.0], [2.5, math.nan], [2.5, "3"], [2.5, None],
              [2.5, [3.0]], [2.5, 2 ** 64], [2.5, 10 ** 400], [2.5, 1e12 + 1]):
        assert not runcheck._usual_samples({}, s, False), s
    assert _read(_file(tmp_path, [2.5, True])).endswith("samples_us must be numbers")
    assert "'samples_us': [2.5, 1.0]" in _read(_file(tmp_path, [2.5, 1.0]))


def test_an_ordinary_run_file_takes_the_fast_check(monkeypatch):
    """Every timed record of the published runs is vouched for by numpy: none goes the list
    way (a regression to it shows here, not only on a clock). Without simdjson, which reads
    most of them otherwise (tests/test_samplecut.py)."""
    monkeypatch.setattr(samplecut, "AVAILABLE", False)
    seen = []
    real = runcheck._usual_samples
    monkeypatch.setattr(runcheck, "_usual_samples", lambda t, s, arrays: seen.append(real(t, s, arrays)) or seen[-1])
    timed = 0
    for path in PUBLISHED:
        for kw in ({"sample_arrays": True}, {"keep_samples": False}):
            with results.RunReader(str(path), **kw) as reader:
                timed += sum(bool((r.get("timing") or {}).get("n")) for r in reader.records())
    assert seen and all(seen) and len(seen) == timed


values = st.recursive(
    st.one_of(st.floats(), st.integers(min_value=-2 ** 64, max_value=2 ** 64), st.booleans(), st.none(), st.text(max_size=3),
              st.sampled_from([2.0 ** 63, -2.0 ** 63, 2 ** 63 - 1, -2 ** 63, 2 ** 63])),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=3), inner, max_size=3)),
    max_leaves=25)


@settings(max_examples=400, deadline=None, database=None)
@given(st.dictionaries(st.sampled_from(["timing", "shape", "a", "b"]), values, max_size=4), st.integers(0, 20),
       st.sampled_from([math.inf, runcheck.WIDE]))
def test_the_walk_without_names_passes_exactly_what_the_named_walk_passes(obj, nest, wide):
    for _ in range(nest):                   # deep enough, at times, to pass MAX_DEPTH
        obj = {"a": [obj]} if nest % 2 else {"a": obj}
    timing = obj.get("timing")
    flat = id(timing.get("samples_us")) if isinstance(timing, dict) else None
    try:
        runcheck._check_values_named(obj, "f:1", wide, flat)
        named = True
    except (results.RunFileError, runcheck.WideNumber):
        named = False
    assert runcheck._values_fine(obj, flat, wide) is named


field_values = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.floats(-1.0, 2e12), st.text(max_size=2),
                         st.just({}), st.just([]))


def _outcome(f, obj, spec):
    try:
        f(obj, spec, "f:1")
        return "passed"
    except results.RunFileError as e:
        return str(e)


@settings(max_examples=400, deadline=None, database=None)
@given(st.lists(st.tuples(st.sampled_from([k for k, *_ in runcheck._TIMING_FIELDS] + ["x"]), field_values), max_size=8),
       st.lists(st.floats(-1.0, 2e12), min_size=1, max_size=3))
def test_fields_of_a_layout_seen_before_pass_and_refuse_as_the_full_check(items, later_values):
    """_fields remembers the layouts (keys, their types) that passed and then compares only
    the bounds: a second record of one layout, with other values, gets the full check's
    outcome (and message)."""
    spec = runcheck._TIMING_FIELDS
    obj = dict(items)
    assert _outcome(runcheck._fields, obj, spec) == _outcome(runcheck._fields_named, obj, spec)
    for v in later_values:                       # the same layout, other numbers in the floats
        again = {k: (v if type(x) is float else x) for k, x in obj.items()}
        assert _outcome(runcheck._fields, again, spec) == _outcome(runcheck._fields_named, again, spec)
