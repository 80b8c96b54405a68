"""kernelmark/jsonindent.py writes what Python's indenting json encoder writes, byte for byte,
and leaves to it what it cannot write so (results.strict_json then uses Python's)."""
import json
from collections import OrderedDict
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernelmark import jsonindent, results

scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-2**70, max_value=2**70),
                    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=12),
                    st.sampled_from(["µs", "\u2028", "\x00\x1f\x7f", "caf\u00e9 \U0001f600", '"\\/', "\ud800"]))
docs = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.lists(inner, max_size=3).map(tuple),
    st.dictionaries(st.text(max_size=6), inner, max_size=4)), max_leaves=30)


def _python(obj, indent) -> str:
    return "".join(json.JSONEncoder(allow_nan=False, indent=indent).iterencode(obj))


@settings(max_examples=300, deadline=None, database=None)
@given(docs, st.sampled_from([0, 1, 2, 4, "\t", ""]))
def test_the_same_text_as_pythons_encoder(doc, indent):
    assert jsonindent.dumps(doc, indent) == _python(doc, indent)


def test_a_comparison_document_as_python_writes_it():
    pair = {"op": "gemm", "shape": {"m": 1, "layout": "nn", "causal": True, "x": -0.0}, "dtype": "fp32",
            "ratio": 1.0200000000000002, "ci_low": 1e-05, "ci_high": 1e16, "p": 5e-324, "base_n": 1001,
            "note": "stalls: 115.6 µs", "empty": {}, "none": [], "head_us": None}
    doc = {"base": {"path": "a.jsonl"}, "pairs": [pair, dict(pair, op="attention")], "counts": {"unchanged": 2}}
    assert results.strict_json(doc, indent=1) == json.dumps(doc, indent=1)


@pytest.mark.parametrize("value", [
    Path("/x"), {1: "int key"}, OrderedDict(a=1), type("S", (str,), {})("sub"), {"a": {3.5}},
    type("F", (float,), {})(1.5), b"bytes",
])
def test_what_it_cannot_write_exactly_is_left_to_python(value):
    with pytest.raises(jsonindent.Unusual):
        jsonindent.dumps({"v": [value]}, 1)
    # strict_json writes it as it always has, with Python's encoder (default=str)
    assert results.strict_json({"v": [value]}, indent=1) == json.dumps({"v": [value]}, indent=1, default=str)


def test_deep_and_circular_documents_are_left_to_python():
    deep = []
    for _ in range(jsonindent.MAX_DEPTH + 5):
        deep = [deep]
    with pytest.raises(jsonindent.Unusual):
        jsonindent.dumps(deep, 1)
    assert results.strict_json(deep, indent=1) == json.dumps(deep, indent=1)
    loop: list = [1]
    loop.append(loop)
    with pytest.raises(jsonindent.Unusual):        # Python's encoder then says it is circular
        jsonindent.dumps(loop, 1)


def test_non_finite_numbers_are_refused_and_strict_json_writes_null():
    for bad in (float("nan"), float("inf"), -float("inf")):
        with pytest.raises(ValueError):
            jsonindent.dumps({"a": [1.0, bad]}, 1)
        assert results.strict_json({"a": [1.0, bad]}, indent=1) == json.dumps({"a": [1.0, None]}, indent=1)
