"""kernelmark/prefetch.py: a run file read by a second process gives what reading it here
gives -- records, their places, footer, warnings, a refusal after the records before it --
and a reader process that stops early leaves the rest to this one, with a warning."""
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from kernelmark import cli, prefetch, results

sys.path.insert(0, str(Path(__file__).parent))
import repeated_run  # noqa: E402


@pytest.fixture
def always(monkeypatch):
    """Every file read ahead, whatever its size or this machine's CPUs; the files read
    ahead are counted, to be sure they were."""
    monkeypatch.setattr(prefetch, "PREFETCH_BYTES", 0)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.delenv("KERNELMARK_PREFETCH", raising=False)
    started, real = [], prefetch.child_command
    monkeypatch.setattr(prefetch, "child_command", lambda *a: started.append(a) or real(*a))
    return started


def _read(path, pf: bool, **kw):
    """(place, record) of every record (arrays as lists), the footer and the warnings, or
    the refusal with the records read before it."""
    got = []
    with results.RunReader(str(path), prefetch=pf, **kw) as reader:
        try:
            for place, rec in reader.records(where=True):
                s = (rec.get("timing") or {}).get("samples_us")
                if isinstance(s, np.ndarray):
                    rec["timing"]["samples_us"] = ("array", s.tolist())
                got.append((place, rec))
        except results.RunFileError as e:
            return got, "refused: " + str(e)
        return got, reader.footer, reader.warnings


@pytest.fixture
def run_file(tmp_path):
    path = tmp_path / "big.jsonl"
    repeated_run.write(path, 3)
    with open(path, "a") as f:
        f.write(json.dumps({"type": "footer", "wall_s": 1.0, "not_run": 0}) + "\n")
    return path


@pytest.mark.parametrize("kw", [{"sample_arrays": True}, {"keep_samples": False}, {}])
def test_read_ahead_is_read_here(always, run_file, kw):
    ahead = _read(run_file, True, **kw)
    assert len(always) == 1
    assert len(ahead[0]) > 300 and ahead[1] is not None and ahead[2] == []
    assert ahead == _read(run_file, False, **kw)
    assert len(always) == 1


def test_a_torn_last_line_and_a_refusal_come_as_here(always, run_file):
    text = run_file.read_text().splitlines(keepends=True)
    torn = run_file.with_name("torn.jsonl")
    torn.write_text("".join(text[:-1]) + text[-2][:40])
    assert _read(torn, True, sample_arrays=True) == _read(torn, False, sample_arrays=True)
    assert "truncated last line" in _read(torn, True, sample_arrays=True)[2][0]
    bad = run_file.with_name("bad.jsonl")
    rec = json.loads(text[200])
    rec["timing"] = {"median_us": float("nan")} if rec.get("timing") else {"x": 1}
    rec["status"] = "ok"
    bad.write_text("".join(text[:200]) + json.dumps(rec) + "\n" + "".join(text[201:]))
    ahead = _read(bad, True, sample_arrays=True)
    assert ahead == _read(bad, False, sample_arrays=True)
    assert len(ahead[0]) == 199 and ahead[1].startswith("refused: ") and ":201:" in ahead[1]


def test_a_reader_process_that_stops_leaves_the_rest_to_this_one(always, run_file, monkeypatch):
    stops = ("import os, sys\n"
             "from kernelmark import prefetch, prefetch_child\n"
             "real, sent = prefetch._samples_out, []\n"
             "def once(batch):\n"
             "    sent.append(1)\n"
             "    if len(sent) > 2:\n"
             "        sys.stdout.flush(); os._exit(9)\n"
             "    return real(batch)\n"
             "prefetch._samples_out, prefetch.BATCH = once, 5\n"
             "sys.exit(prefetch_child.main(sys.argv[1:]))\n")
    monkeypatch.setattr(prefetch, "child_command", lambda path, keep, arrays: [
        sys.executable, "-c", stops, os.path.abspath(path), str(int(keep)), str(int(arrays))])
    here = _read(run_file, False, sample_arrays=True)
    ahead = _read(run_file, True, sample_arrays=True)
    assert ahead[0] == here[0] and ahead[1] == here[1]
    assert len(ahead[2]) == 1 and "stopped (exit status 9)" in ahead[2][0]
    monkeypatch.setattr(prefetch, "child_command", lambda *a: [sys.executable, "-c", "raise SystemExit(3)"])
    ahead = _read(run_file, True, sample_arrays=True)
    assert ahead[0] == here[0] and "exit status 3" in ahead[2][0]
    garbage = "import sys, time\nsys.stdout.buffer.write(bytes(range(200)) * 50); sys.stdout.flush(); time.sleep(60)\n"
    monkeypatch.setattr(prefetch, "child_command", lambda *a: [sys.executable, "-c", garbage])
    ahead = _read(run_file, True, sample_arrays=True)
    assert ahead[0] == here[0] and "stopped" in ahead[2][0]
    monkeypatch.setattr(prefetch, "child_command", lambda *a: [str(run_file.with_name("no-python-here"))])
    ahead = _read(run_file, True, sample_arrays=True)
    assert ahead[0] == here[0] and "could not start a process" in ahead[2][0]


def test_a_reader_left_early_stops_its_process(always, run_file):
    with results.RunReader(str(run_file), prefetch=True, sample_arrays=True) as reader:
        it = reader.records()
        next(it)
        it.close()              # waits for the child: hangs here if it were left blocked


def test_compare_and_report_read_ahead_print_what_they_print_otherwise(always, run_file, tmp_path, capsys,
                                                                        monkeypatch):
    head = tmp_path / "head.jsonl"
    lines = run_file.read_text().splitlines(keepends=True)
    head.write_text("".join(lines[:1] + lines[1:][::-1]))       # HEAD in another order: partners read late
    out = {}
    for pf in ("1", "0"):
        monkeypatch.setenv("KERNELMARK_PREFETCH", pf)
        codes = (cli.main(["compare", str(run_file), str(head)]),
                 cli.main(["report", str(run_file), "--format", "csv"]))
        out[pf] = codes, capsys.readouterr()
        assert len(always) == 3         # BASE, HEAD and the csv's file read ahead; with "0", none
    assert out["1"] == out["0"]


def test_when_it_reads_ahead(monkeypatch, run_file):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(prefetch, "PREFETCH_BYTES", 1 << 10)
    monkeypatch.delenv("KERNELMARK_PREFETCH", raising=False)
    assert prefetch.wanted(str(run_file))
    monkeypatch.setenv("KERNELMARK_PREFETCH", "0")
    assert not prefetch.wanted(str(run_file))
    monkeypatch.delenv("KERNELMARK_PREFETCH")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    assert not prefetch.wanted(str(run_file))               # one CPU: it would only wait
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(prefetch, "PREFETCH_BYTES", 1 << 40)
    assert not prefetch.wanted(str(run_file))               # small: not worth a process
