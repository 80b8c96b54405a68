"""kernelmark/reports/history.py and `kernelmark history`: idempotent ingest, filters, step
changes, and the `run` hook that records every run."""
import json
import sqlite3
import time

import pytest

from kernelmark import cli, results
from kernelmark.reports import history

HEADER = {"kernelmark": "0.1.0", "command": ["test"], "suite": {"name": "t", "path": "t.toml", "sha256": "0"},
          "device": {"kind": "cpu", "name": "Test CPU", "arch": "x86_64", "git": {"commit": None, "dirty": False}},
          "peaks": {}, "timing": {}}


def write_run(path, medians: dict, started: str, commit: str, run_id="auto", device="Test CPU"):
    """A run file with one ok record per (m: median) in ``medians``."""
    h = json.loads(json.dumps(HEADER))
    h["device"]["git"]["commit"] = commit
    h["device"]["name"] = device
    h["started"] = started
    if run_id is not None:
        h["run_id"] = path.stem if run_id == "auto" else run_id
    w = results.RunWriter(str(path))
    w.header(h)
    for m, med in medians.items():
        w.record({"op": "gemm", "shape": {"m": m, "n": 8, "layout": "nt"}, "dtype": "fp32", "backend": "torch",
                  "status": "ok", "timing": {"n": 15, "median_us": med, "ci_low_us": med * 0.99,
                                             "ci_high_us": med * 1.01, "ci_rel": 0.01, "method": "cpu_perf_counter"}})
    w.record({"op": "gemm", "shape": {"m": 1, "n": 8, "layout": "nt"}, "dtype": "fp32", "backend": "triton",
              "status": "checked"})
    w.footer({"finished": started, "wall_s": 1.0})
    w.close()
    return results.load(str(path))


def series(tmp_path, values, start_day=1, device="Test CPU"):
    runs = []
    for i, v in enumerate(values):
        runs.append(write_run(tmp_path / f"{device[:4]}{i}.jsonl", {64: v, 128: 50.0},
                              f"2026-10-{start_day + i:02d}T12:00:00+0000", f"{i:040x}", device=device))
    return runs


def test_ingesting_the_same_run_twice_changes_nothing(tmp_path):
    conn = history.connect(tmp_path / "h.sqlite")
    run = write_run(tmp_path / "a.jsonl", {64: 10.0, 128: 20.0}, "2026-10-01T00:00:00+0000", "a" * 40)
    assert history.ingest(conn, run) == (3, 0)
    assert history.ingest(conn, run) == (0, 3)
    assert history.ingest(conn, results.load(run.path)) == (0, 3)
    assert conn.execute("SELECT COUNT(*) FROM measurements").fetchone()[0] == 3
    assert conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 1
    # A run file without a run_id is keyed by its header: still idempotent.
    old = write_run(tmp_path / "old.jsonl", {64: 11.0}, "2026-10-02T00:00:00+0000", "b" * 40, run_id=None)
    assert history.ingest(conn, old) == (2, 0) and history.ingest(conn, old) == (0, 2)


def test_step_change_is_flagged_at_the_commit_that_made_it(tmp_path):
    conn = history.connect(tmp_path / "h.sqlite")
    for run in series(tmp_path, [10.0, 10.1, 9.9, 10.05, 12.0, 12.1, 11.9]):
        history.ingest(conn, run)
    cases = {c.shape["m"]: c for c in history.query(conn)}
    assert set(cases) == {64, 128}                            # the untimed triton record is not a series
    step = cases[64].step
    assert step is not None and step.at == 4 and step.commit == f"{4:040x}"
    assert step.ratio == pytest.approx(12.0 / 10.025, rel=0.01)
    assert cases[128].step is None
    assert list(cases[64].shape) == ["m", "n", "layout"]      # shown in the op's parameter order


@pytest.mark.parametrize("values", [
    [10.0, 10.8, 9.6, 10.9, 9.7, 10.7],       # noisy, no level change
    [10.0, 10.1, 9.9, 10.0, 10.1, 13.0],      # one odd last run is not (yet) a step
    [10.0, 10.1, 10.2, 10.3, 10.4, 10.5],     # slow creep, no jump beyond the threshold
])
def test_no_step_where_there_is_none(tmp_path, values):
    assert history.find_step([history.Point("r", "t", "c", False, v, None, None) for v in values], 0.05) is None


def test_filters(tmp_path):
    conn = history.connect(tmp_path / "h.sqlite")
    for run in series(tmp_path, [10, 10, 10]) + series(tmp_path, [5, 5], start_day=20, device="Other GPU"):
        history.ingest(conn, run)
    assert len(history.query(conn)) == 4
    assert {c.device for c in history.query(conn, device="other")} == {"Other GPU"}
    assert len(history.query(conn, op=["attention"])) == 0
    since = history.parse_since("2026-10-15")
    assert {c.device for c in history.query(conn, since=since)} == {"Other GPU"}
    assert history.parse_since("7d") == pytest.approx(time.time() - 7 * 86400, abs=5)
    with pytest.raises(ValueError, match="expected an ISO date"):
        history.parse_since("last tuesday")


def test_history_command(tmp_path, capsys):
    runs = series(tmp_path, [10.0, 10.1, 9.9, 12.0, 12.1])
    db = str(tmp_path / "h.sqlite")
    assert cli.main(["history", "--db", db, "--ingest", *[r.path for r in runs], "--points"]) == 0
    cap = capsys.readouterr()
    assert cap.err.count(": 3 measurements added") == 5
    assert "1 with a step change" in cap.out and "+20.5% at 0000000000" in cap.out
    assert "2026-10-04T12:00:00+0000" in cap.out                     # --points lists the runs
    assert cli.main(["history", "--db", db, "--ingest", runs[0].path]) == 0
    assert "0 measurements added, 3 already in the history" in capsys.readouterr().err
    assert cli.main(["history", "--db", db, "--format", "json", "--op", "gemm"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert len(doc) == 2 and len(doc[0]["points"]) == 5
    assert cli.main(["history", "--db", str(tmp_path / "none.sqlite")]) == 2
    assert "no history database" in capsys.readouterr().err
    assert cli.main(["history", "--db", db, "--since", "someday"]) == 2
    (tmp_path / "not.sqlite").write_text("not a database at all, but long enough to look like one" * 20)
    assert cli.main(["history", "--db", str(tmp_path / "not.sqlite")]) == 2


def test_run_adds_itself_to_the_history(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("KERNELMARK_DATA_DIR", str(tmp_path / "data"))
    args = ["run", "--suite", "smoke", "--ops", "gemm", "--dtypes", "fp32", "--backends", "torch",
            "--budget", "0.01", "--quiet", "--format", "csv", "--isolation", "none"]
    assert cli.main(args + ["--out", str(tmp_path / "a.jsonl")]) == 0
    default_db = tmp_path / "data" / "history.sqlite"
    assert history.default_path() == default_db and default_db.exists()
    assert cli.main(args + ["--out", str(tmp_path / "b.jsonl"), "--db", str(tmp_path / "other.sqlite")]) == 0
    assert cli.main(args + ["--out", str(tmp_path / "c.jsonl"), "--no-history"]) == 0
    monkeypatch.setenv("KERNELMARK_NO_HISTORY", "1")
    assert cli.main(args + ["--out", str(tmp_path / "d.jsonl")]) == 0
    count = lambda db: sqlite3.connect(db).execute("SELECT COUNT(*) FROM runs").fetchone()[0]  # noqa: E731
    assert count(default_db) == 1 and count(tmp_path / "other.sqlite") == 1
    run_id = results.load(str(tmp_path / "a.jsonl")).header["run_id"]
    assert sqlite3.connect(default_db).execute("SELECT run_id FROM runs").fetchone()[0] == run_id
    # A history that cannot be written warns; the run still succeeds.
    monkeypatch.delenv("KERNELMARK_NO_HISTORY")
    (tmp_path / "blocker").write_text("a file where a folder should be")
    capsys.readouterr()
    assert cli.main(args + ["--out", str(tmp_path / "e.jsonl"), "--db", str(tmp_path / "blocker" / "h.sqlite")]) == 0
    assert "was not added to the history" in capsys.readouterr().err
