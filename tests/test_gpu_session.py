"""The GPU-session script rehearsed on the CPU (scripts/gpu-session.sh --device cpu), so it
cannot rot before a GPU shows up; and its peak check (scripts/check_peaks.py)."""
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from kernelmark import cli, results

ROOT = Path(__file__).resolve().parents[1]
SUMMARIES = ("session.log", "env.json", "do_bench.txt", "peaks-check.txt", "report.md")


def test_the_session_script_rehearses_on_the_cpu(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "PYTHON": sys.executable, "KM_SESSION_S": "150",
           "PYTHONPATH": str(ROOT)}
    env.pop("KM_SESSION_INNER", None)
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "gpu-session.sh"), "--device", "cpu"],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=200)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    files = sorted(p.name for p in out.iterdir())
    assert len(files) <= 8, files
    for name in SUMMARIES:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert "[gpu-session" in proc.stdout            # progress is printed as it goes
    assert "skipped" in (out / "do_bench.txt").read_text()
    assert json.loads((out / "env.json").read_text())["device"]["kind"] == "cpu"
    with tarfile.open(out / "runs.tar.gz") as tar:
        tar.extractall(tmp_path / "runs", filter="data")
    run = results.load(str(tmp_path / "runs" / "first-light.jsonl"))
    assert run.complete and run.header["suite"]["name"] == "first-light"
    assert any(r["status"] == "ok" for r in run.records)
    assert "first-light" in (out / "report.md").read_text()


def _load_check_peaks():
    import importlib.util
    spec = importlib.util.spec_from_file_location("check_peaks", ROOT / "scripts" / "check_peaks.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class _Proc:
    def __init__(self, returncode, stdout):
        self.returncode, self.stdout, self.stderr = returncode, stdout, ""


def _check(path):
    """scripts/check_peaks.py on one run file, in this process (its exit status and output)."""
    import contextlib
    import io
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = _load_check_peaks().main([str(path)])
    return _Proc(rc, buf.getvalue())


@pytest.fixture(scope="module")
def _measured(tmp_path_factory):
    out = tmp_path_factory.mktemp("peaks") / "r.jsonl"
    assert cli.main(["run", "--suite", "smoke", "--ops", "gemm", "--dtypes", "fp32", "--backends", "torch",
                     "--budget", "0.01", "--no-history", "--quiet", "--isolation", "none",
                     "--out", str(out)]) == 0
    return out.read_text()


@pytest.fixture
def _run_file(_measured, tmp_path):
    def make(_tmp=None):
        path = tmp_path / "r.jsonl"
        path.write_text(_measured)
        return path
    return make


def _rewrite(path, pct, tflops_sheet):
    """The run file as if its device were in the datasheet table, its first timed row at ``pct``."""
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    lines[0]["device"]["datasheet"] = {"name": "Test card", "copy_gbps": 1e6, "tflops": {"fp32": tflops_sheet}}
    first = next(x for x in lines if x.get("type") == "record" and x["status"] == "ok")
    first["pct_of_datasheet"] = pct
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))


def test_a_rate_above_the_datasheet_is_a_failed_row(_run_file, capsys):
    path = _run_file()
    _rewrite(path, 150.0, 1e6)
    proc = _check(path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert any(line.startswith("FAILED gemm fp32 torch") and "150.0% of the datasheet" in line
               for line in proc.stdout.splitlines()), proc.stdout


def test_rates_within_the_datasheet_pass_and_a_measured_peak_above_it_fails(_run_file, capsys):
    path = _run_file()
    _rewrite(path, 40.0, 1e6)
    proc = _check(path)
    assert proc.returncode == 0 and "FAILED" not in proc.stdout, proc.stdout
    _rewrite(path, 40.0, 1e-9)          # a measured matmul peak above this datasheet figure
    proc = _check(path)
    assert proc.returncode == 1 and "FAILED measured matmul fp32" in proc.stdout, proc.stdout


def test_the_peak_check_says_where_there_is_no_datasheet(_run_file, capsys):
    proc = _check(_run_file())
    assert proc.returncode == 0 and "not in the datasheet table" in proc.stdout


def test_the_peak_check_counts_what_a_first_run_is_read_for(_run_file, capsys):
    path = _run_file()
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    recs = [x for x in lines if x.get("type") == "record"]
    recs[0]["timing"]["note"] = "graph replay not used (RuntimeError: capture failed); timed with events"
    recs[1].update(status="skipped", reason="deadline reached: not started")
    recs[1].pop("timing", None)
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    out = _check(path).stdout
    assert "1 (case, backend) pairs not started: the deadline was reached" in out, out
    assert f"{len(recs) - 1} timed rows: 1 with graph replay not used" in out, out
