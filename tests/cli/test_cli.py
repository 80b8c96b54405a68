"""`kernelmark` end to end on the CPU, as a user types it."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kernelmark import cli, results

ROOT = Path(__file__).resolve().parents[2]


def _kernelmark(*args, env_extra=None):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}   # kernelmark must set it itself
    env["PYTHONPATH"] = str(ROOT)
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "kernelmark", *args], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=600)


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "smoke.jsonl"
    # Budget 0.02 s a case (57 timed of 221 records): what is checked here is what the run
    # records and prints, not the timings' precision.
    p = _kernelmark("run", "--suite", "smoke", "--out", str(out), "--budget", "0.02")
    assert p.returncode == 0, p.stderr
    return p, results.load(str(out))


def test_smoke_run_header_holds_device_and_environment(smoke_run):
    _, run = smoke_run
    h = run.header
    assert h["schema"] == results.SCHEMA_VERSION and run.complete
    d = h["device"]
    assert d["kind"] == "cpu" and d["versions"]["torch"] and d["versions"]["python"]
    assert "commit" in d["git"] and d["cpu"]["torch_threads"] >= 1
    # The thread count is chosen for the CPUs this process can get, and the choice says why.
    th = d["cpu"]["threads"]
    assert th["chosen"] == d["cpu"]["torch_threads"] and th["reason"]
    if th["source"] == "default":
        assert th["chosen"] <= max(1, th["cpus_available"] - 1)
    assert isinstance(d["cpu"]["isa"], list) == os.path.exists("/proc/cpuinfo") and "torch_capability" in d["cpu"]
    assert h["peaks"]["copy_gbps"] > 0 and h["peaks"]["tflops"]["fp32"] > 0
    assert h["suite"]["name"] == "smoke" and len(h["suite"]["sha256"]) == 64
    assert h["command"][:2] == ["kernelmark", "run"]


def test_smoke_run_records(smoke_run):
    proc, run = smoke_run
    recs = run.records
    assert recs and {r["op"] for r in recs} >= {"gemm"}
    gemm = [r for r in recs if r["op"] == "gemm"]
    torch_ok = [r for r in gemm if r["backend"] == "torch"]
    assert torch_ok and all(r["status"] == "ok" for r in torch_ok)
    for r in torch_ok:
        sec = r["timing"]["median_us"] * 1e-6
        assert r["tflops"] == pytest.approx(r["flops"] / sec / 1e12, rel=1e-9)
        assert r["gbps"] == pytest.approx(r["bytes"] / sec / 1e9, rel=1e-9)
        assert r["check"]["passed"] and r["timing"]["samples_us"]
    # Triton kernels ran in the interpreter: checked against the reference, never timed.
    tri = [r for r in gemm if r["backend"] == "triton"]
    assert tri and all(r["status"] == "checked" and r["check"]["passed"] and "timing" not in r for r in tri)
    # Every Triton kernel the smoke suite has was checked honestly (no failure hidden).
    assert not [r for r in recs if r["status"] in ("failed_check", "error")], \
        [(r["op"], r["backend"], r.get("reason")) for r in recs if r["status"] in ("failed_check", "error")]
    # The table: one row per case, a column group per backend; the Triton cells say checked.
    assert "\ngemm\n" in proc.stdout and "device:" in proc.stdout and "±95% CI" not in proc.stdout
    assert "checked: a Triton kernel checked in the interpreter, not timed" in proc.stdout
    assert f"CPU threads: {run.header['device']['cpu']['torch_threads']} (" in proc.stdout


def test_run_long_prints_one_row_per_case_and_backend(tmp_path, capsys):
    out = tmp_path / "long.jsonl"
    assert cli.main(["run", "--suite", "smoke", "--ops", "gemm", "--backends", "torch", "--dtypes", "fp32",
                     "--budget", "0.01", "--quiet", "--no-history", "--isolation", "none", "--out", str(out),
                     "--long"]) == 0
    text = capsys.readouterr().out
    assert "±95% CI" in text and "backend" in text
    rows = [line for line in text.splitlines() if line.startswith("gemm ")]
    assert len(rows) == len(results.load(str(out)).records)


def test_report_rebuilds_the_table_from_the_run_file(smoke_run, capsys):
    _, run = smoke_run
    assert cli.main(["report", run.path, "--format", "csv"]) == 0
    csv_text = capsys.readouterr().out
    assert csv_text.startswith("device,op,label,shape") and csv_text.count("\n") == len(run.records) + 1


@pytest.mark.parametrize("argv, message", [
    (["run", "--ops", "conv2d"], "unknown op(s) conv2d; known:"),
    (["run", "--backends", "cutlass"], "unknown backend(s) cutlass; known:"),
    (["run", "--dtypes", "fp64"], "unknown dtype(s) fp64; known:"),
    (["run", "--suite", "nosuch"], "unknown suite 'nosuch'"),
    (["run", "--device", "cuda"], "no GPU is visible"),
    (["run", "--device", "tpu"], "unknown device 'tpu'"),
    (["run", "--budget", "0"], "--budget must be a positive"),
])
def test_usage_errors_exit_2_with_a_message(argv, message, capsys):
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err


def test_malformed_suite_names_file_and_line(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\n[[case]]\nop = "gemm"\nshapes = [{m = 1, n = 1, k = }]\n')
    assert cli.main(["run", "--suite", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "bad.toml" in err and "line 4" in err


def test_unwritable_output_fails_before_any_work(tmp_path, capsys):
    blocker = tmp_path / "f"
    blocker.write_text("")
    assert cli.main(["run", "--suite", "smoke", "--out", str(blocker / "x" / "r.jsonl")]) == 2
    err = capsys.readouterr().err
    assert "cannot write the run file" in err and "measuring" not in err


def test_list_and_env(capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    assert "smoke" in out and "gemm" in out and "triton" in out
    assert cli.main(["env", "--json"]) == 0
    env = json.loads(capsys.readouterr().out)
    assert env["device"]["kind"] == "cpu" and env["peaks"]["copy_gbps"] > 0


def test_report_of_a_file_that_is_not_a_run(tmp_path, capsys):
    p = tmp_path / "x.jsonl"
    p.write_text("not json\n")
    assert cli.main(["report", str(p)]) == 2
    assert "not a kernelmark run file" in capsys.readouterr().err
