"""`kernelmark run --energy` end to end on this CPU: unavailable where no counter can be read,
energy rows from a fake RAPL tree that a thread keeps counting, and no change to timings."""
import os
import threading
import time
from pathlib import Path

import pytest

from kernelmark import cli, results
from kernelmark.harness import energy

# In this process (the worker's path is covered by its own tests; energy_window_s travels in
# its init message): two small gemm cases.
ARGS = ("run", "--suite", "smoke", "--ops", "gemm", "--backends", "torch", "--dtypes", "fp32",
        "--budget", "0.05", "--isolation", "none", "--format", "csv")


def _kernelmark(monkeypatch, capsys, *args, powercap=None):
    monkeypatch.setenv(energy.POWERCAP_ENV, str(powercap))
    rc = cli.main([*ARGS, *args])
    return rc, capsys.readouterr().err


class FakeRapl:
    """A package zone counting 1 W of wall-clock time (a thread rewrites energy_uj every 2 ms),
    wrapping every 3 J so that a run crosses the wrap."""
    RANGE = 3_000_000
    START = RANGE - 100_000

    def __init__(self, root: Path):
        self.zone = root / "intel-rapl:0"
        self.zone.mkdir(parents=True)
        (self.zone / "max_energy_range_uj").write_text(f"{self.RANGE}\n")
        self.t0 = time.monotonic()
        self.uj = self.START
        self._write()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _write(self):
        tmp = self.zone / ".energy_uj"
        tmp.write_text(f"{self.uj}\n")
        os.replace(tmp, self.zone / "energy_uj")     # readers never see half a number

    def _run(self):
        while not self._stop.wait(0.002):
            self.uj = int(self.START + (time.monotonic() - self.t0) * 1e6) % self.RANGE
            self._write()

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()


def test_energy_unavailable_here_says_why_and_exits_0(tmp_path, monkeypatch, capsys):
    out = tmp_path / "r.jsonl"
    rc, err = _kernelmark(monkeypatch, capsys, "--energy", "--energy-window", "0.1", "--out", str(out),
                          powercap=tmp_path / "none")
    assert rc == 0, err
    assert "energy: unavailable" in err and "powercap" in err
    timed = [r for r in results.load(str(out)).records if r["status"] == "ok"]
    assert timed
    for r in timed:
        assert r["energy"]["status"] == "unavailable" and "no CPU energy counter" in r["energy"]["reason"]
        assert "gross_j_per_call" not in r["energy"]


def test_fake_rapl_run_records_energy_and_leaves_timings_alone(tmp_path, monkeypatch, capsys):
    with FakeRapl(tmp_path / "powercap"):
        on = tmp_path / "on.jsonl"
        rc, err = _kernelmark(monkeypatch, capsys, "--energy", "--energy-window", "0.2", "--out", str(on),
                              powercap=tmp_path / "powercap")
        assert rc == 0, err
        assert "energy measured for 4 of 4 timed rows" in err
    off = tmp_path / "off.jsonl"
    rc, err = _kernelmark(monkeypatch, capsys, "--out", str(off), powercap=tmp_path / "powercap")
    assert rc == 0, err
    ron, roff = results.load(str(on)).records, results.load(str(off)).records
    timed = [r for r in ron if r["status"] == "ok"]
    assert timed
    for r in timed:
        e = r["energy"]
        assert e["status"] == "ok", e
        assert e["counter"] == "rapl" and e["window_s"] >= 0.2 and e["calls"] > 0
        assert e["gross_j_per_call"] == pytest.approx(e["energy_j"] / e["calls"])
        assert e["avg_w"] == pytest.approx(e["energy_j"] / e["window_s"])
        assert e["idle_w"] > 0 and e["net_j_per_call"] is not None
        # The fake counts at most 1 W (its thread shares this process's GIL with the timed
        # calls, so its file can lag): a wrap not handled makes the window negative (refused),
        # one handled twice adds 3 J, 15 W over 0.2 s.
        assert 0 < e["avg_w"] < 4 and e["idle_w"] < 4
    # Turning energy off changes nothing else in a record: same keys, same kinds of timing.
    assert [sorted(set(r) - {"energy"}) for r in ron] == [sorted(r) for r in roff]
    assert [sorted(r.get("timing", {})) for r in ron] == [sorted(r.get("timing", {})) for r in roff]
    assert all("energy" not in r for r in roff)


@pytest.mark.parametrize("argv, message", [
    (("--energy-window", "1"), "--energy-window needs --energy"),
    (("--energy", "--energy-window", "0"), "--energy-window must be a positive number"),
    (("--energy", "--energy-window", "nan"), "--energy-window must be a positive number"),
])
def test_energy_usage_errors(argv, message, capsys):
    assert cli.main([*ARGS, *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kernelmark: error: ") and message in err and "Traceback" not in err
