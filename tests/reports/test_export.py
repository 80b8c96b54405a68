"""kernelmark/reports/export.py and `kernelmark export`: pytest-benchmark JSON that
pytest-benchmark itself loads and compares."""
import json
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from kernelmark import cli, results


def _console_script(name):
    path = Path(sys.executable).with_name(name)
    return str(path) if path.exists() else shutil.which(name)


PYTEST_BENCHMARK = _console_script("pytest-benchmark") or _console_script("py.test-benchmark")


@pytest.fixture(scope="module")
def real_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "run.jsonl"
    assert cli.main(["run", "--suite", "smoke", "--ops", "gemm", "--dtypes", "fp32", "--budget", "0.01",
                     "--out", str(out), "--quiet", "--no-history", "--format", "csv", "--isolation", "none"]) == 0
    return results.load(str(out))


def test_export_fields_match_pytest_benchmark(real_run, tmp_path, capsys):
    out = tmp_path / "pb.json"
    assert cli.main(["export", "--format", "pytest-benchmark", real_run.path, "-o", str(out)]) == 0
    ok = [r for r in real_run.records if r["status"] == "ok"]
    assert f"wrote {len(ok)} benchmarks" in capsys.readouterr().err
    doc = json.loads(out.read_text())
    assert set(doc) >= {"machine_info", "commit_info", "benchmarks", "datetime", "version"}
    assert doc["commit_info"]["id"] == real_run.header["device"]["git"]["commit"]
    assert len(doc["benchmarks"]) == len(ok) and len({b["fullname"] for b in doc["benchmarks"]}) == len(ok)
    for b, r in zip(doc["benchmarks"], ok):
        st, t = b["stats"], r["timing"]
        assert set(st) >= {"min", "max", "mean", "stddev", "rounds", "median", "iqr", "q1", "q3", "iqr_outliers",
                           "stddev_outliers", "outliers", "ld15iqr", "hd15iqr", "ops", "total", "data",
                           "iterations"}
        data_us = [x * 1e6 for x in st["data"]]                      # seconds, as pytest-benchmark stores
        assert data_us == pytest.approx(t["samples_us"], rel=1e-9)
        assert st["median"] == pytest.approx(t["median_us"] * 1e-6, rel=1e-4)     # stored samples are rounded
        assert st["mean"] == pytest.approx(statistics.mean(st["data"]), rel=1e-9)
        assert st["ops"] == pytest.approx(1 / st["mean"], rel=1e-9) and st["rounds"] == len(st["data"])
        assert st["iterations"] == t["inner"] and st["q1"] <= st["median"] <= st["q3"]
        assert b["fullname"].endswith(f"{r['op']}[m={r['shape']['m']} n=48 k=64 {r['shape']['layout']} fp32 torch]")


@pytest.mark.skipif(PYTEST_BENCHMARK is None, reason="the pytest-benchmark console script is not installed")
def test_pytest_benchmark_compare_loads_the_export(real_run, tmp_path):
    a, b = tmp_path / "0001_base.json", tmp_path / "0002_head.json"
    assert cli.main(["export", real_run.path, "-o", str(a)]) == 0
    assert cli.main(["export", real_run.path, "-o", str(b)]) == 0
    p = subprocess.run([PYTEST_BENCHMARK, "compare", str(a), str(b), "--columns", "min,median,mean,ops,rounds",
                        "--group-by", "name"], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "Failed to load" not in p.stdout + p.stderr
    names = [bb["name"] for bb in json.loads(a.read_text())["benchmarks"]]
    for name in names:
        assert name in p.stdout
    assert "0001_base" in p.stdout and "0002_head" in p.stdout


def test_export_of_a_bad_file_is_a_usage_error(tmp_path, capsys):
    bad = tmp_path / "x.jsonl"
    bad.write_text("hello\n")
    assert cli.main(["export", str(bad), "-o", str(tmp_path / "o.json")]) == 2
    assert "not a kernelmark run file" in capsys.readouterr().err
