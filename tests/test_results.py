import json
import sys
from pathlib import Path

import pytest

from kernelmark import results

sys.path.insert(0, str(Path(__file__).parent))
from runfile_outcome import outcome  # noqa: E402


def _header():
    return {"device": {"name": "x", "kind": "cpu"}, "peaks": {"copy_gbps": 1.0, "tflops": {}},
            "suite": {"name": "s"}, "started": "now"}


def _record(**kw):
    r = {"op": "gemm", "shape": {"m": 1}, "dtype": "fp32", "backend": "torch", "status": "ok",
         "timing": {"median_us": 1.0, "ci_rel": 0.01, "n": 5}}
    r.update(kw)
    return r


def test_round_trip(tmp_path, json_parser):
    p = tmp_path / "r.jsonl"
    w = results.RunWriter(str(p))
    w.header(_header())
    w.record(_record())
    w.record(_record(status="failed_check", timing=None, reason="off"))
    w.footer({"finished": "later"})
    w.close()
    run = results.load(str(p))
    assert run.header["schema"] == results.SCHEMA_VERSION
    assert [r["status"] for r in run.records] == ["ok", "failed_check"]
    assert run.complete and run.footer["records"] == 2


def test_truncated_last_line_is_dropped_with_a_warning(tmp_path, json_parser):
    p = tmp_path / "r.jsonl"
    w = results.RunWriter(str(p))
    w.header(_header())
    w.record(_record())
    w.close()
    with open(p, "a") as f:
        f.write('{"type": "record", "op": "ge')       # killed mid-write
    with pytest.warns(UserWarning, match="truncated last line"):
        run = results.load(str(p))
    assert len(run.records) == 1 and not run.complete


@pytest.mark.parametrize("content, match", [
    ("", "empty file"),
    ("hello\n", "not JSON .* not a kernelmark run file"),
    ('{"type": "record"}\n', "not a kernelmark run header"),
    ('{"type": "header", "schema": 99}\n', "schema version 99"),
    ('{"type": "header", "schema": 1}\n', "header lacks"),
])
def test_bad_files_are_refused_with_a_reason(tmp_path, json_parser, content, match):
    p = tmp_path / "r.jsonl"
    p.write_text(content)
    with pytest.raises(results.RunFileError, match=match):
        results.load(str(p))


def test_bad_records_are_refused_with_their_line(tmp_path, json_parser):
    p = tmp_path / "r.jsonl"
    lines = [{"type": "header", "schema": 1, **_header()}, {"type": "record", "op": "gemm"}]
    p.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    with pytest.raises(results.RunFileError, match=r"r\.jsonl:2: record lacks"):
        results.load(str(p))
    lines[1] = {"type": "record", **_record(status="fast")}
    p.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    with pytest.raises(results.RunFileError, match="unknown status 'fast'"):
        results.load(str(p))


def test_unwritable_path_is_an_error_before_anything(tmp_path):
    with pytest.raises(results.RunFileError, match="is a directory"):
        results.RunWriter(str(tmp_path))
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(results.RunFileError, match="cannot write"):
        results.RunWriter(str(blocker / "sub" / "r.jsonl"))


def test_missing_run_file():
    with pytest.raises(results.RunFileError, match="no such run file"):
        results.load("/no/such/run.jsonl")


def _energy_record(energy):
    return {"op": "gemm", "dtype": "fp32", "backend": "torch", "status": "checked", "shape": {}, "energy": energy}


@pytest.mark.parametrize("energy, message", [
    ({"status": "maybe"}, "unknown status"),
    ({"status": "unavailable"}, "needs a reason"),
    ({"status": "ok", "window_s": 2.0, "calls": 10}, "gross_j_per_call is missing"),
    ({"status": "ok", "gross_j_per_call": -1.0, "window_s": 2.0, "calls": 10}, "must be positive"),
    ({"status": "ok", "gross_j_per_call": "1", "window_s": 2.0, "calls": 10}, "wrong type"),
    # fields the reports add up into per-token figures: a word or a negative bound is refused
    ({"status": "ok", "gross_j_per_call": 1.0, "window_s": 2.0, "calls": 10, "net_uncertainty_rel": "5%"},
     "net_uncertainty_rel has the wrong type"),
    ({"status": "ok", "gross_j_per_call": 1.0, "window_s": 2.0, "calls": 10, "update_interval_s": -0.1},
     "update_interval_s is -0.1, outside 0"),
    ({"status": "ok", "gross_j_per_call": 1.0, "window_s": 2.0, "calls": 10, "idle_w": -3},
     "idle_w is -3, outside 0"),
])
def test_energy_field_is_validated(energy, message):
    with pytest.raises(results.RunFileError, match=message):
        results.check_record(_energy_record(energy), "run.jsonl:2")


def test_energy_field_valid_forms_pass():
    results.check_record(_energy_record({"status": "unavailable", "reason": "no counter"}), "x")
    results.check_record(_energy_record({"status": "ok", "gross_j_per_call": 0.1, "net_j_per_call": 0.05,
                                          "window_s": 2.0, "calls": 20, "counter": "rapl"}), "x")


PRUNED = {"kernel": "_gemm_kernel", "config": "BLOCK_M=16 BLOCK_N=64 BLOCK_K=256 GROUP_M=1 w4 s4",
          "why": "shared memory 245760 B > 232448 B per block on cuda:90"}


@pytest.mark.parametrize("pruned, message", [
    ({"kernel": "k"}, "pruned has the wrong type"),
    (["BLOCK=64"], r"pruned\[0\] has the wrong type"),
    ([{**PRUNED, "why": ""}], r"pruned\[0\]\.why must be a non-empty string"),
    ([PRUNED, {"kernel": "k", "config": 64, "why": "w"}], r"pruned\[1\]\.config must be"),
])
def test_pruned_field_is_validated(pruned, message):
    with pytest.raises(results.RunFileError, match=message):
        results.check_record({**_energy_record({"status": "unavailable", "reason": "x"}), "pruned": pruned}, "x")


def test_pruned_field_valid_forms_pass():
    for pruned in ([], [PRUNED]):
        results.check_record({"op": "gemm", "dtype": "fp32", "backend": "triton", "status": "checked", "shape": {},
                              "pruned": pruned}, "x")


# ---------------------------------------------------------------- crafted files are refused

def _write_lines(p, objs, raw_record=None):
    text = json.dumps({"type": "header", "schema": 1, **_header()}) + "\n"
    text += "".join(json.dumps({"type": "record", **o}) + "\n" for o in objs)
    if raw_record is not None:
        text += raw_record + "\n"
    p.write_text(text)
    return str(p)


def _timing(**kw):
    t = {"median_us": 1.0, "ci_rel": 0.01, "n": 3, "samples_us": [1.0, 1.1, 0.9], "ci_low_us": 0.9,
         "ci_high_us": 1.1}
    t.update(kw)
    return t


NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize("record, match", [
    (_record(timing=_timing(samples_us=[1.0, NAN, 1.0])), "samples_us holds nan"),
    (_record(timing=_timing(samples_us=[NAN] * 3)), "samples_us holds nan"),
    (_record(timing=_timing(samples_us=[1.0, INF])), "samples_us holds inf"),
    (_record(timing=_timing(samples_us=[1.0, 0.0])), "samples_us holds 0.0"),
    (_record(timing=_timing(samples_us=[1.0, True])), "samples_us must be numbers"),
    (_record(timing=_timing(samples_us=[1.0, "1"])), "samples_us must be numbers"),
    (_record(timing=_timing(median_us=INF)), "timing.median_us is inf"),
    (_record(timing=_timing(median_us=-INF)), "timing.median_us is -inf"),
    (_record(timing=_timing(median_us=NAN)), "timing.median_us is nan"),
    (_record(timing=_timing(median_us=1e13)), "median_us is 1e.13, outside"),
    (_record(timing=_timing(ci_low_us="abc")), "ci_low_us has the wrong type .str"),
    (_record(timing=_timing(ci_low_us=None)), "ci_low_us has the wrong type .NoneType"),
    (_record(timing=_timing(ci_rel=NAN)), "timing.ci_rel is nan"),
    (_record(timing=_timing(n=0)), "n is 0, outside"),
    (_record(timing=_timing(groups=[2, "1"])), "groups must be positive sample counts"),
    (_record(tflops=NAN), "tflops is nan"),
    (_record(gbps=-1.0), "gbps is -1, outside"),
    (_record(flops=2 ** 64), "flops is an integer beyond 64 bits"),
    (_record(shape={"m": -2 ** 70}), "shape.m is an integer beyond 64 bits"),
    (_record(health={"throttle_reasons": [1]}), "throttle_reasons must be words"),
    (_record(health={"x": {"y": [[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]}}), "nests deeper than 16"),
    (_record(status="failed_check", check={"passed": False, "rel_l2": [1]}), "rel_l2 has the wrong type"),
])
def test_crafted_records_are_refused_naming_the_line(tmp_path, json_parser, record, match):
    path = _write_lines(tmp_path / "r.jsonl", [_record(), record])
    with pytest.raises(results.RunFileError, match=r"r\.jsonl:3.*" + match):
        results.load(path)


@pytest.mark.parametrize("raw, match", [
    ('{"type": "record", "op": "gemm", "shape": {"m": 1}, "dtype": "fp32", "backend": "torch", '
     '"status": "ok", "flops": ' + "9" * 5000 + ', "timing": {"median_us": 1, "ci_rel": 0}}',
     "a number of more than 4300 digits"),
    ('{"type": "record", "label": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested too deeply"),
    ('{"type": "record", "op": "gemm", "shape": {"m": 1}, "dtype": "fp32", "backend": "torch", '
     '"status": "ok", "tflops": 1e999, "timing": {"median_us": 1, "ci_rel": 0}}', "tflops is inf"),
    ('{"type": "record", "op": "gemm", "shape": {"m": 1}, "dtype": "fp32", "backend": "torch", '
     '"status": "ok", "timing": {"median_us": NaN, "ci_rel": 0}}', "timing.median_us is nan"),
])
def test_crafted_lines_are_refused_naming_the_line(tmp_path, json_parser, raw, match):
    path = _write_lines(tmp_path / "r.jsonl", [_record()], raw_record=raw)
    with pytest.raises(results.RunFileError, match=r"r\.jsonl:3: " + match):
        results.load(path)


@pytest.mark.parametrize("change, match", [
    (lambda h: h["peaks"].update(copy_gbps=NAN), "peaks.copy_gbps is nan"),
    (lambda h: h["peaks"].update(copy_gbps=None), "copy_gbps has the wrong type"),
    (lambda h: h["peaks"].update(tflops={"bf16": -1}), "tflops.bf16 is not a non-negative number"),
    (lambda h: h["device"].update(datasheet={"name": "X", "tflops": {}}), "copy_gbps is missing"),
])
def test_crafted_headers_are_refused(tmp_path, json_parser, change, match):
    h = {"type": "header", "schema": 1, **_header()}
    change(h)
    p = tmp_path / "r.jsonl"
    p.write_text(json.dumps(h) + "\n")
    with pytest.raises(results.RunFileError, match=r"r\.jsonl:1.*" + match):
        results.load(str(p))


def test_a_line_past_the_size_limit_is_refused_without_reading_it_whole(tmp_path, monkeypatch):
    monkeypatch.setattr(results, "MAX_LINE_BYTES", 1000)
    path = _write_lines(tmp_path / "r.jsonl", [_record(), _record(label="x" * 2000)])
    with pytest.raises(results.RunFileError, match=r"r\.jsonl:3: a line longer than"):
        results.load(path)


def test_check_values_are_kept_as_text_where_they_were_not_finite(tmp_path):
    """A failed check's inf/nan errors are stored as "inf"/"nan" by design (ops/base.py)."""
    rec = _record(status="failed_check", timing=None, check={"passed": False, "rel_l2": "nan", "max_abs": "inf"})
    run = results.load(_write_lines(tmp_path / "r.jsonl", [rec]))
    assert run.records[0]["check"]["rel_l2"] == "nan"


# ---------------------------------------------------------------- reading lazily

def test_reader_gives_the_records_load_gives_one_at_a_time(tmp_path, json_parser):
    recs = [_record(shape={"m": i}, timing=_timing(median_us=1.0 + i)) for i in range(5)]
    recs.insert(2, _record(status="skipped", timing=None, reason="no"))
    path = _write_lines(tmp_path / "r.jsonl", recs)
    with open(path, "a") as f:
        f.write(json.dumps({"type": "footer", "records": 6}) + "\n")
    whole = results.load(path)
    with results.RunReader(path) as reader:
        assert reader.header == whole.header and reader.footer is None
        it = reader.records(where=True)
        first_place, first = next(it)
        assert first == whole.records[0] and reader.footer is None      # nothing read ahead
        rest = list(it)
        assert [first] + [r for _, r in rest] == whole.records and reader.footer == whole.footer
        assert reader.record_at(rest[3][0]) == whole.records[4]
        assert reader.record_at(first_place) == whole.records[0]
        assert list(reader.records()) == whole.records                   # again, from the start
    slim = results.load(path, keep_samples=False)
    assert all("samples_us" not in (r.get("timing") or {}) for r in slim.records)
    assert [r["timing"]["median_us"] for r in slim.records if r["status"] == "ok"] == [1, 2, 3, 4, 5]


def test_reader_drops_a_torn_last_line_with_a_warning(tmp_path, json_parser):
    path = _write_lines(tmp_path / "r.jsonl", [_record()])
    with open(path, "a") as f:
        f.write('{"type": "record", "op": "ge')
    with results.RunReader(path) as reader:
        assert len(list(reader.records())) == 1
        assert reader.warnings == [f"{path}:3: truncated last line dropped (run interrupted mid-write?)"]


def test_reader_says_when_the_file_changed_under_it(tmp_path, json_parser):
    path = _write_lines(tmp_path / "r.jsonl", [_record(), _record(shape={"m": 2})])
    with results.RunReader(path) as reader:
        places = [w for w, _ in reader.records(where=True)]
        with open(path, "r+b") as f:
            f.seek(places[1][0])
            f.write(b"garbage")
        with pytest.raises(results.RunFileError, match=r"r\.jsonl:3:"):
            reader.record_at(places[1])


# ---------------------------------------------------------------- strict JSON out

def _strict_loads(text):
    def refuse(token):
        raise AssertionError(f"non-standard JSON token {token}")
    return json.loads(text, parse_constant=refuse)


def test_strict_json_writes_no_nan_or_infinity():
    text = results.strict_json({"a": [1.0, NAN, {"b": INF, "c": -INF}], "d": (2, "x")}, indent=1)
    assert _strict_loads(text) == {"a": [1.0, None, {"b": None, "c": None}], "d": [2, "x"]}
    assert results.strict_json({"p": Path("/x")}) == '{"p": "/x"}'


# ---------------------------------------------------------------- orjson and Python's json read alike

_GOOD = json.dumps({"type": "record", **_record(timing=_timing())})
EDGE_LINES = [
    # integers at and past 64 bits: orjson reads those beyond 2**64 (and below -2**63) as floats
    _GOOD.replace('"m": 1', '"m": 9223372036854775807'), _GOOD.replace('"m": 1', '"m": 9223372036854775808'),
    _GOOD.replace('"m": 1', '"m": 18446744073709551616'), _GOOD.replace('"m": 1', '"m": -9223372036854775809'),
    _GOOD.replace('"m": 1', '"m": ' + "7" * 25), _GOOD.replace('"m": 1', '"m": 1e19'),
    _GOOD.replace('"m": 1', '"m": -0'), _GOOD.replace('"m": 1', '"m": 1E400'),
    _GOOD.replace('"samples_us": [1.0', '"samples_us": [' + "3" * 25),
    _GOOD.replace('"samples_us": [1.0', '"samples_us": [18446744073709551616'),
    _GOOD.replace('"samples_us": [1.0', '"samples_us": [Infinity'),
    _GOOD[:-1] + ', "label": "\\ud800"}',                          # a lone surrogate: orjson refuses it
    _GOOD[:-1] + ', "label": "a", "label": "b"}',                # a key twice: the last one, both ways
    _GOOD[:-1] + ', "health": ' + "[" * 17 + "]" * 17 + "}", _GOOD[:-1] + ', "label": ' + "[" * 2000 + "]" * 2000 + "}",
    "\ufeff" + _GOOD, _GOOD.replace("1.1", "1.1000000000000000000000000000000001"), "[1, 2]", "3", "",
    _GOOD[:-1] + ', "label": "\x01"}', _GOOD[:-1] + ', "reason": "caf\\u00e9 \\ud83d\\ude00"}',
]


def test_orjson_and_pythons_json_give_the_same_records_and_refusals(tmp_path, monkeypatch):
    pytest.importorskip("orjson")
    paths = [str(p) for p in sorted((Path(__file__).parents[1] / "published").glob("*/*.jsonl"))]
    for i, line in enumerate(EDGE_LINES):
        p = tmp_path / f"edge{i}.jsonl"
        with open(_write_lines(p, [_record()]), "a") as f:
            f.write(line + "\n" + ("" if i % 2 else '{"type": "footer", "records": 2}\n'))
        paths.append(str(p))
    paths.append(_write_lines(tmp_path / "torn.jsonl", [_record()], raw_record='{"type": "record", "op": "ge'))
    (tmp_path / "torn.jsonl").write_text((tmp_path / "torn.jsonl").read_text().rstrip("\n"))
    fast = [outcome(p) for p in paths]
    monkeypatch.setattr(results, "FAST_LOADS", None)
    assert fast == [outcome(p) for p in paths]
    refused = [x for x in fast if x.startswith("refused")]
    assert 8 <= len(refused) < len(fast) - 6          # both kinds of outcome are compared
    assert any("beyond 64 bits" in x for x in refused) and any(":3: not JSON" in x for x in refused)


def _read_with_arrays(path):
    try:
        with results.RunReader(path, sample_arrays=True) as reader:
            return list(reader.records())
    except results.RunFileError as e:
        return "refused: " + str(e)


def test_samples_as_arrays_are_the_lists_and_refused_alike(tmp_path, json_parser):
    """compare reads the samples as numpy arrays, checked by numpy: the same values, and the
    same refusals (NaN, infinities, zero, beyond the time range, ints too large for a float)."""
    import numpy as np
    good = [_record(timing=_timing(samples_us=[1.0, 2, 3.5, 1e12, 1e-6])), _record(shape={"m": 2}, timing=_timing()),
            _record(status="skipped", timing=None, reason="no")]
    path = _write_lines(tmp_path / "good.jsonl", good)
    got, want = _read_with_arrays(path), results.load(path).records
    assert type(got[0]["timing"]["samples_us"]) is np.ndarray and got[0]["timing"]["samples_us"].dtype == float
    assert [r["timing"]["samples_us"].tolist() for r in got[:2]] == [r["timing"]["samples_us"] for r in want[:2]]
    for bad in ([1.0, NAN], [NAN, 1.0], [1.0, INF], [-INF, 1.0], [1.0, 0.0], [1.0, 2e12], [1.0, 10 ** 400], [1, True]):
        p = _write_lines(tmp_path / "bad.jsonl", [_record(timing=_timing(samples_us=bad))])
        refused = _read_with_arrays(p)
        with pytest.raises(results.RunFileError) as e:
            results.load(p)
        assert refused == "refused: " + str(e.value) and "samples_us" in refused
