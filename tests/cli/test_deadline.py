"""`kernelmark run --deadline` (kernelmark/cli/run.py): past the deadline no new case starts,
the cases not started are in the run file as skipped with a reason, and the run exits 0.
The clock is replaced by one that advances a fixed step per reading, so nothing here waits
on real time or asserts on it."""
import itertools

from kernelmark import cli, results
from kernelmark.cli import run as run_cmd

QUICK = ["run", "--suite", "smoke", "--ops", "gemm", "--dtypes", "fp32", "--budget", "0.01", "--no-history",
         "--quiet", "--isolation", "none", "--backends", "torch"]


def _fake_clock(monkeypatch, step):
    ticks = itertools.count()
    monkeypatch.setattr(run_cmd, "_clock", lambda: next(ticks) * step)


def test_cases_past_the_deadline_are_recorded_as_skipped(tmp_path, monkeypatch, capsys):
    # Reading 0 is the start; then one reading per case: cases at readings 1 and 2 (t = 10, 20 s)
    # start before a 25 s deadline, every later one (t >= 30 s) does not.
    _fake_clock(monkeypatch, 10.0)
    out = tmp_path / "r.jsonl"
    assert cli.main([*QUICK, "--deadline", "25", "--out", str(out)]) == 0
    run = results.load(str(out))
    statuses = [r["status"] for r in run.records]
    assert len(statuses) == 4                      # the smoke suite's 4 fp32 gemm cases
    assert statuses[:2] == ["ok", "ok"]
    assert statuses[2:] == ["skipped", "skipped"]
    assert all(r["reason"] == run_cmd.DEADLINE_REASON for r in run.records[2:])
    assert run.complete and run.footer["not_run"] == 2 and run.footer["deadline_s"] == 25


def test_a_deadline_not_reached_skips_nothing(tmp_path, monkeypatch):
    _fake_clock(monkeypatch, 0.001)
    out = tmp_path / "r.jsonl"
    assert cli.main([*QUICK, "--deadline", "3600", "--out", str(out)]) == 0
    run = results.load(str(out))
    assert [r["status"] for r in run.records] == ["ok"] * 4
    assert run.footer["not_run"] == 0


def test_a_bad_deadline_is_one_line_exit_2(tmp_path, capsys):
    assert cli.main([*QUICK, "--deadline", "-5", "--out", str(tmp_path / "r.jsonl")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kernelmark: error: --deadline must be a positive") and err.count("\n") == 1


def test_a_footer_with_a_wrong_not_run_is_refused(tmp_path):
    import json
    import pytest
    out = tmp_path / "r.jsonl"
    assert cli.main([*QUICK, "--out", str(out)]) == 0
    lines = out.read_text().splitlines()
    foot = json.loads(lines[-1])
    foot["not_run"] = "two"
    out.write_text("\n".join(lines[:-1] + [json.dumps(foot)]) + "\n")
    with pytest.raises(results.RunFileError, match="not_run"):
        results.load(str(out))
