"""`kernelmark run` and its run file (kernelmark/cli/run.py): the file is claimed before any
work, never overwritten, never shared by two runs, and a write that fails is one line, exit 2."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kernelmark import cli, results

ROOT = Path(__file__).resolve().parents[2]
QUICK = ["run", "--suite", "smoke", "--ops", "gemm", "--dtypes", "fp32", "--budget", "0.01", "--no-history",
         "--quiet", "--isolation", "none"]


def test_out_never_overwrites_an_existing_file(tmp_path, capsys):
    notes = tmp_path / "notes.txt"
    notes.write_text("precious\n")
    assert cli.main([*QUICK, "--out", str(notes)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"kernelmark: error: the run file {notes} already exists") and err.count("\n") == 1
    assert notes.read_text() == "precious\n"


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_a_full_device_is_one_line_and_exit_2(capsys):
    assert cli.main([*QUICK, "--out", "/dev/full"]) == 2
    err = capsys.readouterr().err
    assert err == "kernelmark: error: cannot write the run file /dev/full: No space left on device\n"


def _lines_written(path: Path, proc, n: int, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if path.exists() and path.read_text().count("\n") >= n:
            return
        time.sleep(0.05)
    raise AssertionError(f"the first run wrote fewer than {n} lines (exit {proc.poll()})")


def test_a_second_run_to_the_same_out_is_refused_while_the_first_writes(tmp_path, capsys, chaos_ops):
    out = tmp_path / "r.jsonl"
    suite = tmp_path / "hang.toml"      # one record, then a backend that sleeps until it is interrupted
    suite.write_text('name = "hang"\n[[case]]\nop = "chaos"\nbackends = ["good"]\nshapes = [{n = 8}]\n'
                     '[[case]]\nop = "chaos"\nbackends = ["hang"]\nshapes = [{n = 8}]\n')
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "tests")])
    first = subprocess.Popen([sys.executable, "-m", "kernelmark", "run", "--suite", str(suite), "--quiet",
                              "--no-history", "--isolation", "none", "--budget", "0.01", "--out", str(out)],
                             env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                             # SIGINT as a terminal gives it, even where the tests run with it ignored
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        _lines_written(out, first, 2)        # header and the first record: now in the hang
        assert cli.main([*QUICK, "--out", str(out)]) == 2
        assert "another kernelmark run is writing it now" in capsys.readouterr().err
        assert cli.main(["run", "--resume", str(out), "--quiet", "--no-history"]) == 2
        assert "is being written by another kernelmark run" in capsys.readouterr().err
    finally:
        first.send_signal(signal.SIGINT)
        _, err = first.communicate(timeout=120)
    assert first.returncode == 130, err
    lines = out.read_text().splitlines()        # the first run's lines and nothing of the others
    assert [json.loads(line)["type"] for line in lines] == ["header", "record"]


def test_compile_check_file_is_read_before_any_work(tmp_path, capsys):
    from kernelmark.cli import run
    bad = tmp_path / "timing.jsonl"
    bad.write_text(json.dumps({"type": "header", "schema": 1}) + "\n")
    out = tmp_path / "r.jsonl"
    assert cli.main([*QUICK, "--backends", "torch", "--compile-check", str(bad), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kernelmark: error: --compile-check: ") and "not a compile run file" in err
    assert err.count("\n") == 1 and not out.exists()
    check = tmp_path / "c.jsonl"
    recs = [{"type": "record", "op": "gemm", "backend": "triton", "case": "m=32 n=48 k=64 layout=nn fp32",
             "kernel": "_gemm_kernel", "config": "BLOCK_M=32 BLOCK_N=128 BLOCK_K=128 GROUP_M=4 w4 s4",
             "target": "cuda:90", "status": s, "error": "shared memory 245760 B > 232448 B per block"}
            for s in ("over_limit", "compiled")]
    check.write_text("\n".join(json.dumps(x) for x in ({"type": "header", "kind": "compile", "triton": "3.9.0"},
                                                       *recs)) + "\n")
    entries, about = run._compile_check(str(check))
    assert about == {"path": str(check), "triton": "3.9.0", "left_out": 1}     # what the run header records
    assert entries == ({"target": "cuda:90", "op": "gemm", "backend": "triton", "case": "m=32 n=48 k=64 layout=nn fp32",
                        "kernel": "_gemm_kernel", "config": "BLOCK_M=32 BLOCK_N=128 BLOCK_K=128 GROUP_M=4 w4 s4",
                        "why": "compile check c.jsonl: over_limit: shared memory 245760 B > 232448 B per block"},)
