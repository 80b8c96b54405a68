"""Bad input, fuzzed: thousands of suite files and run files, valid, nearly valid and
garbage. Each either loads or fails with kernelmark's own error (SuiteError /
RunFileError); a run file that loads also renders in every format (JSON strict) and
exports. Never another exception."""
import json
import os
import sys
import tempfile
import warnings

import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kernelmark import results
from kernelmark.reports import export, table, wide
from kernelmark.suites import loader

sys.path.insert(0, os.path.dirname(__file__))
from runfile_outcome import outcome  # noqa: E402

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck), database=None)
_DIR = tempfile.mkdtemp(prefix="kernelmark-fuzz-")

KEYS = ["name", "description", "defaults", "case", "op", "label", "dtypes", "devices", "backends", "shapes",
        "grid", "shape_set", "params", "budget_s", "m", "n", "k", "layout", "batch", "seq", "tokens", "tp"]
WORDS = ["gemm", "nn", "nt", "bf16", "fp32", "fp16", "torch", "triton", "cpu", "gpu", "llama3-8b.gemm",
         "prefill_attention", "kv_append", "NHD", "qkv"]
scalars = st.one_of(st.integers(min_value=-2**70, max_value=2**70), st.floats(allow_nan=False),
                    st.booleans(), st.sampled_from(WORDS), st.text(max_size=20))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), inner, max_size=4)),
    max_leaves=12)
case = st.dictionaries(st.sampled_from(KEYS), values, max_size=6).map(lambda d: {"op": "gemm", **d}
                                                                        if len(d) % 3 else d)
suite_docs = st.fixed_dictionaries({}, optional={"name": values, "description": values,
                                                 "defaults": st.dictionaries(st.sampled_from(KEYS), values),
                                                 "case": st.lists(case, max_size=3)})


def _write(data: bytes, suffix: str) -> str:
    fd, path = tempfile.mkstemp(suffix=suffix, dir=_DIR)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return path


def _load_suite(data: bytes) -> None:
    path = _write(data, ".toml")
    try:
        loader.load(path)
    except loader.SuiteError as e:
        assert str(e)
    finally:
        os.unlink(path)


def _mutate(text: str, ops) -> str:
    for kind, pos, s in ops:
        i = pos % (len(text) + 1)
        if kind == 0:
            text = text[:i] + s + text[i:]
        elif kind == 1:
            text = text[:i] + text[i + len(s) + 1:]
        else:
            text = text[:i]
    return text


mutations = st.lists(st.tuples(st.integers(0, 2), st.integers(0, 10**6), st.text(max_size=6)), max_size=4)


# Drawing a structured suite (a recursive strategy) costs ~10x a mutated or garbage one: 250
# examples keep it near the others' time. The database is off, so each run draws new ones.
@settings(FUZZ, max_examples=250)
@given(suite_docs)
def test_structured_suites(doc):
    try:
        data = tomli_w.dumps(doc).encode()
    except (TypeError, ValueError):
        return
    _load_suite(data)


@FUZZ
@given(st.sampled_from(sorted(loader.builtin_suites())), mutations)
def test_mutated_builtin_suites(name, ops):
    _load_suite(_mutate(loader.builtin_suites()[name].read_text(), ops).encode("utf-8", "surrogatepass"))


@FUZZ
@given(st.binary(max_size=300) | st.text(max_size=300).map(lambda t: t.encode("utf-8", "surrogatepass")))
def test_garbage_suites(data):
    _load_suite(data)


# ---------------------------------------------------------------- run files

def _real_run() -> list:
    header = {"type": "header", "schema": 1, "kernelmark": "0.1.0", "command": ["kernelmark", "run"],
              "suite": {"name": "smoke", "sha256": "0" * 64}, "started": "2026-11-24T00:00:00",
              "device": {"name": "fuzz", "kind": "cpu", "versions": {}, "git": {}},
              "peaks": {"copy_gbps": 10.0, "tflops": {"fp32": 0.1}}}
    ok = {"type": "record", "op": "gemm", "label": "", "shape": {"m": 1, "n": 2, "k": 3, "layout": "nn"},
          "dtype": "fp32", "backend": "torch", "status": "ok", "flops": 12, "bytes": 44,
          "timing": {"median_us": 1.5, "ci_rel": 0.01, "n": 10, "method": "cpu_perf_counter",
                     "samples_us": [1.5] * 10},
          "tflops": 1e-5, "gbps": 0.03, "pct_of_peak": 1.0, "pct_of_datasheet": None, "bound": "memory"}
    bad = {"type": "record", "op": "gemm", "label": "", "shape": {"m": 1}, "dtype": "bf16", "backend": "triton",
           "status": "failed_check", "reason": "off", "check": {"passed": False, "detail": "off"}}
    return [header, ok, bad, {"type": "footer", "records": 2}]


def _load_run(data: bytes) -> None:
    path = _write(data, ".jsonl")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            run = results.load(path)
        for fmt in ("table", "md", "csv"):
            table.render(run.header, run.records, fmt)
            wide.render(run.header, run.records, fmt)
        json.loads(table.render(run.header, run.records, "json"), parse_constant=_refuse)
        json.loads(results.strict_json(export.to_pytest_benchmark(run)), parse_constant=_refuse)
    except results.RunFileError as e:
        assert str(e)
    finally:
        os.unlink(path)


def _refuse(token):
    raise AssertionError(f"non-standard JSON token {token}")


# NaN and the infinities too: a run file holding one must be refused, not reported.
json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() |
                           st.text(max_size=10),
                           lambda inner: st.lists(inner, max_size=3) |
                           st.dictionaries(st.text(max_size=10), inner, max_size=3), max_leaves=10)


TIMING_KEYS = ("median_us", "ci_rel", "ci_low_us", "ci_high_us", "samples_us", "groups", "n", "inner")


@FUZZ
@given(st.integers(0, 3), st.sampled_from(["op", "shape", "dtype", "backend", "status", "timing", "tflops",
                                           "label", "device", "peaks", "suite", "schema", "type", "check",
                                           "gbps", "pct_of_peak", "health", "reason", *TIMING_KEYS]),
       json_values)
def test_run_files_with_a_field_replaced(line, key, value):
    lines = _real_run()
    target = lines[line] if key not in TIMING_KEYS else lines[1]["timing"]
    target[key] = value
    _load_run(("\n".join(json.dumps(x) for x in lines) + "\n").encode())


@FUZZ
@given(mutations)
def test_mutated_run_files(ops):
    text = "\n".join(json.dumps(x) for x in _real_run()) + "\n"
    _load_run(_mutate(text, ops).encode("utf-8", "surrogatepass"))


@FUZZ
@given(st.binary(max_size=300))
def test_garbage_run_files(data):
    _load_run(data)


def _outcome(path: str, fast) -> str:
    """runfile_outcome.outcome with the parser ``fast`` (None: Python's json)."""
    real = results.FAST_LOADS
    results.FAST_LOADS = fast
    try:
        return outcome(path)
    finally:
        results.FAST_LOADS = real


@settings(FUZZ, max_examples=150)
@given(mutations, st.integers(0, 3), st.sampled_from(["flops", "tflops", "shape", "label", "timing", "health"]),
       json_values)
def test_orjson_reads_what_pythons_json_reads(ops, line, key, value):
    """The fast parser (orjson, where installed) gives the records and refusals of Python's json."""
    if results.FAST_LOADS is None:
        return
    lines = _real_run()
    lines[line][key] = value
    text = _mutate("\n".join(json.dumps(x) for x in lines) + "\n", ops)
    path = _write(text.encode("utf-8", "surrogatepass"), ".jsonl")
    try:
        assert _outcome(path, results.FAST_LOADS) == _outcome(path, None)
    finally:
        os.unlink(path)
