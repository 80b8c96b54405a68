"""kernelmark/reports/crossdevice.py and `kernelmark report` over several runs."""
import csv
import io
import json

import pytest

from kernelmark import cli, results
from kernelmark.reports import crossdevice


@pytest.fixture
def two_devices(smoke_run, other_device, tmp_path):
    fast = other_device(smoke_run, tmp_path / "h100.jsonl", "NVIDIA H100 80GB HBM3", speed=4.0)
    return smoke_run, fast


def test_rows_per_case_and_backend_with_a_column_group_per_device(two_devices):
    runs = [results.load(p) for p in two_devices]
    ct = crossdevice.build(runs)
    assert [d.label for d in ct.devices] == ["AMD EPYC (CPU)", "NVIDIA H100 80GB HBM3"] or \
        ct.devices[1].label == "NVIDIA H100 80GB HBM3"
    assert ct.baseline == ct.devices[0].label
    assert len(ct.rows) == len(runs[0].records)
    for row in ct.rows:
        assert set(row.cells) == {d.label for d in ct.devices}
        if row.cells[ct.baseline]["status"] == "ok":
            assert crossdevice.speedup(row.cells[ct.baseline], row.cells["NVIDIA H100 80GB HBM3"]) == \
                pytest.approx(4.0)
    s = crossdevice.summary(ct)
    assert len(s) == 1 and s[0]["geomean"] == pytest.approx(4.0) and s[0]["rows"] > 0


def test_baseline_choice_flips_the_speedups(two_devices):
    runs = [results.load(p) for p in two_devices]
    ct = crossdevice.build(runs, baseline="h100")
    assert ct.baseline == "NVIDIA H100 80GB HBM3"
    assert crossdevice.summary(ct)[0]["geomean"] == pytest.approx(0.25)
    with pytest.raises(ValueError, match="matches no device"):
        crossdevice.build(runs, baseline="MI300X")


def test_one_unit_per_case_whatever_the_backend(two_devices):
    ct = crossdevice.build([results.load(p) for p in two_devices])
    by_case = {}
    for r in ct.rows:
        by_case.setdefault((r.op, json.dumps(r.shape, sort_keys=True), r.dtype), set()).add(r.unit)
    assert all(len(u) == 1 for u in by_case.values())


def test_runs_of_one_device_merge_and_the_later_run_wins(smoke_run, other_device, tmp_path):
    early = other_device(smoke_run, tmp_path / "a.jsonl", "GPU X", started="2026-01-01T00:00:00+0000")
    late = other_device(smoke_run, tmp_path / "b.jsonl", "GPU X", speed=2.0, started="2026-02-01T00:00:00+0000")
    devs = crossdevice.group_by_device([results.load(late), results.load(early)])
    assert len(devs) == 1 and len(devs[0].runs) == 2
    rec = next(r for r in devs[0].records.values() if r["status"] == "ok")
    orig = next(r for r in results.load(early).records if crossdevice.case_key(r) == crossdevice.case_key(rec))
    assert rec["timing"]["median_us"] == pytest.approx(orig["timing"]["median_us"] / 2)
    assert "later run" in devs[0].notes[0]


def test_same_gpu_on_two_hosts_stays_apart(smoke_run, other_device, tmp_path):
    a = other_device(smoke_run, tmp_path / "a.jsonl", "NVIDIA H100", host="cloud-a")
    b = other_device(smoke_run, tmp_path / "b.jsonl", "NVIDIA H100", host="cloud-b")
    labels = [d.label for d in crossdevice.group_by_device([results.load(a), results.load(b)])]
    assert labels == ["NVIDIA H100 @ cloud-a", "NVIDIA H100 @ cloud-b"]


def test_cpus_of_one_name_with_different_matmul_isa_stay_apart(smoke_run, runlines, tmp_path):
    read, write = runlines

    def as_cpu(dst, isa, host="runner"):
        objs = read(smoke_run)
        d = objs[0]["device"]
        d["name"], d["kind"], d["host"]["hostname"] = "AMD EPYC", "cpu", host
        if isa is None:
            d["cpu"].pop("isa", None)
        else:
            d["cpu"]["isa"] = isa
        return results.load(write(tmp_path / dst, objs))

    avx2, bf16 = as_cpu("a.jsonl", ["avx2", "fma"]), as_cpu("b.jsonl", ["avx2", "fma", "avx512f", "avx512_bf16"])
    labels = [d.label for d in crossdevice.group_by_device([avx2, bf16])]
    assert labels == ["AMD EPYC (CPU) [avx2]", "AMD EPYC (CPU) [avx512_bf16]"]
    # A run file from before the ISA was recorded joins its host's one known CPU...
    devs = crossdevice.group_by_device([as_cpu("old.jsonl", None), avx2])
    assert len(devs) == 1 and len(devs[0].runs) == 2
    # ... unless it measured another matmul speed there: the host name outlived its machine
    objs = read(str(tmp_path / "old.jsonl"))
    objs[0]["peaks"] = {**(objs[0].get("peaks") or {}), "tflops": {**avx2.header["peaks"]["tflops"]}}
    objs[0]["peaks"]["tflops"]["fp32"] = 3 * avx2.header["peaks"]["tflops"]["fp32"]
    other = results.load(write(tmp_path / "other.jsonl", objs))
    labels = [d.label for d in crossdevice.group_by_device([other, avx2])]
    assert labels == ["AMD EPYC (CPU) [ISA unknown]", "AMD EPYC (CPU) [avx2]"]


def test_report_cli_csv_is_long_form_with_speedups(two_devices, capsys):
    assert cli.main(["report", *two_devices, "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    h100 = [r for r in rows if r["device"] == "NVIDIA H100 80GB HBM3" and r["status"] == "ok"]
    assert h100 and all(float(r["speedup_vs_baseline"]) == pytest.approx(4.0) for r in h100)
    assert {r["baseline"] for r in rows} == {"AMD EPYC (CPU)"}


def test_report_cli_table_md_json_and_out(two_devices, tmp_path, capsys):
    assert cli.main(["report", *two_devices]) == 0
    text = capsys.readouterr().out
    assert "geometric-mean speed-up ×4.00" in text and "×4.00" in text
    assert cli.main(["report", *two_devices, "--format", "json", "--baseline", "H100"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["baseline"] == "NVIDIA H100 80GB HBM3" and len(data["devices"]) == 2
    out = tmp_path / "sub" / "cross.md"
    assert cli.main(["report", *two_devices, "--format", "md", "--out", str(out)]) == 0
    md = out.read_text()
    assert md.startswith("> kernelmark cross-device table") and "| op " in md


def test_bad_baseline_is_a_usage_error(two_devices, capsys):
    assert cli.main(["report", *two_devices, "--baseline", "TPU"]) == 2
    assert "matches no device" in capsys.readouterr().err


def test_other_schema_version_leaves_a_partial_report(smoke_run, runlines, tmp_path, capsys):
    read, write = runlines
    objs = read(smoke_run)
    objs[0]["schema"] = 2
    v2 = write(tmp_path / "v2.jsonl", objs)
    assert cli.main(["report", smoke_run, v2]) == 0
    cap = capsys.readouterr()
    assert "schema version 2" in cap.err and "not included:" in cap.out and "AMD EPYC" in cap.out
    assert cli.main(["report", v2]) == 2
    assert "no run file could be read" in capsys.readouterr().err


def test_empty_run_and_only_failed_cases(smoke_run, runlines, tmp_path, capsys):
    read, write = runlines
    objs = read(smoke_run)
    header_only = write(tmp_path / "empty.jsonl", objs[:1])
    assert cli.main(["report", header_only]) == 0
    cap = capsys.readouterr()
    assert "no records" in cap.out and "holds no records" in cap.err
    failed = [objs[0]]
    for r in objs[1:]:
        if r.get("type") == "record":
            r = {k: v for k, v in r.items() if k not in ("timing", "tflops", "gbps", "pct_of_peak")}
            r.update(status="failed_check", check={"passed": False, "detail": "relative L2 error 1 exceeds 0.01"})
        failed.append(r)
    failed[0]["device"]["name"] = "Broken GPU"
    bad = write(tmp_path / "failed.jsonl", failed)
    assert cli.main(["report", smoke_run, bad]) == 0
    cap = capsys.readouterr()
    assert "no case was timed" in cap.err and "FAILED check" in cap.out
    assert "no row timed on both" in cap.out
    tiny = tmp_path / "zero.jsonl"
    tiny.write_text("")
    assert cli.main(["report", str(tiny)]) == 2
    assert "empty file" in capsys.readouterr().err
