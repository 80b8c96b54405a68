"""`kernelmark run --resume` (kernelmark/cli/resume.py): the run's header is data. Only the
known `run` options are read from its command, checked; the command line cannot change them."""
import json
import shlex
from pathlib import Path

import pytest

from kernelmark import cli, results

QUICK = ["run", "--suite", "smoke", "--ops", "gemm", "--backends", "torch", "--dtypes", "fp32", "--budget", "0.01",
         "--isolation", "none"]


@pytest.fixture(scope="module")
def interrupted_run(tmp_path_factory):
    """The lines of a real run of this machine, cut as if killed after its second record."""
    out = tmp_path_factory.mktemp("resume") / "full.jsonl"
    assert cli.main([*QUICK, "--quiet", "--no-history", "--out", str(out)]) == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    return lines[:3]


def _write(path: Path, lines, tail: str = "") -> str:
    path.write_text("".join(json.dumps(o) + "\n" for o in lines) + tail)
    return str(path)


def _with_command(lines, command):
    header = dict(lines[0])
    if command is None:
        del header["command"]
    else:
        header["command"] = command
    return [header, *lines[1:]]


def test_the_header_command_cannot_choose_the_history_database(interrupted_run, tmp_path, capsys):
    evil, mine = tmp_path / "evil.db", tmp_path / "mine.db"
    cmd = interrupted_run[0]["command"]
    run = _write(tmp_path / "r.jsonl", _with_command(interrupted_run, [*cmd, "--db", str(evil)]))
    assert cli.main(["run", "--resume", run, "--quiet", "--db", str(mine)]) == 0, capsys.readouterr().err
    assert mine.exists() and not evil.exists()
    done = results.load(run)
    assert done.complete and len(done.records) > 2 and done.records[:2] == interrupted_run[1:]


@pytest.mark.parametrize("command, message", [
    (None, "its header has no command, not `kernelmark run ...`"),
    (["kernelmark", "report", "x.jsonl"], "its header was made by `kernelmark report x.jsonl`"),
    (["pytest", "-q"], "was made by `pytest -q`"),
    (["kernelmark", "run", "--suite", "smoke", "--bogus"], "has --bogus, which `kernelmark run` does not take"),
    (["kernelmark", "run", "--budget", "soon"], "is not a valid `kernelmark run` command: argument --budget"),
    (["kernelmark", "run", "--help"], "is not a valid `kernelmark run` command"),
    (["kernelmark", "run", "--suite", "smoke", "--budget", "-1"],
     "the options in its header: --budget must be a positive"),
    (["kernelmark", "run", "--suite", "nosuch"], "the options in its header: unknown suite 'nosuch'"),
])
def test_a_header_command_that_is_not_a_valid_run_is_refused(interrupted_run, tmp_path, capsys, command, message):
    run = _write(tmp_path / "r.jsonl", _with_command(interrupted_run, command))
    before = Path(run).read_text()
    assert cli.main(["run", "--resume", run, "--quiet", "--no-history"]) == 2
    out, err = capsys.readouterr()
    assert err.startswith(f"kernelmark: error: --resume {run}: ") and message in err, err
    assert "Traceback" not in err and "usage:" not in err + out
    assert Path(run).read_text() == before


@pytest.mark.parametrize("extra", [["--suite", "default"], ["--dtypes", "bf16"], ["--budget", "2"], ["--out", "x"],
                                   ["--sui", "smoke"]])
def test_options_the_run_decides_are_refused_on_the_command_line(interrupted_run, tmp_path, capsys, extra):
    run = _write(tmp_path / "r.jsonl", interrupted_run)
    assert cli.main(["run", "--resume", run, *extra, "--quiet", "--no-history"]) == 2
    err = capsys.readouterr().err
    name = "--suite" if extra[0] == "--sui" else extra[0]
    assert err.startswith("kernelmark: error: --resume takes the run's own options") and f"without {name}" in err


def test_a_truncated_run_file_is_one_warning_line(interrupted_run, tmp_path, capsys, recwarn):
    run = _write(tmp_path / "r.jsonl", interrupted_run, tail='{"type": "record", "op": "ge')
    assert cli.main(["run", "--resume", run, "--quiet", "--no-history"]) == 0
    err = capsys.readouterr().err
    assert f"kernelmark: warning: {run}:4: truncated last line dropped" in err
    assert "UserWarning" not in err and not [w for w in recwarn if "truncated" in str(w.message)]
    assert results.load(run).complete
