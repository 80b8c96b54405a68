import json

import pytest

from kernelmark import results


def _header():
    return {"device": {"name": "x", "kind": "cpu"}, "peaks": {"copy_gbps": 1.0, "tflops": {}},
            "suite": {"name": "s"}, "started": "now"}


def _record(**kw):
    r = {"op": "gemm", "shape": {"m": 1}, "dtype": "fp32", "backend": "torch", "status": "ok",
         "timing": {"median_us": 1.0, "ci_rel": 0.01, "n": 5}}
    r.update(kw)
    return r


def test_round_trip(tmp_path):
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


def test_truncated_last_line_is_dropped_with_a_warning(tmp_path):
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
def test_bad_files_are_refused_with_a_reason(tmp_path, content, match):
    p = tmp_path / "r.jsonl"
    p.write_text(content)
    with pytest.raises(results.RunFileError, match=match):
        results.load(str(p))


def test_bad_records_are_refused_with_their_line(tmp_path):
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
])
def test_energy_field_is_validated(energy, message):
    with pytest.raises(results.RunFileError, match=message):
        results._check_record(_energy_record(energy), "run.jsonl:2")


def test_energy_field_valid_forms_pass():
    results._check_record(_energy_record({"status": "unavailable", "reason": "no counter"}), "x")
    results._check_record(_energy_record({"status": "ok", "gross_j_per_call": 0.1, "net_j_per_call": 0.05,
                                          "window_s": 2.0, "calls": 20, "counter": "rapl"}), "x")
