"""`kernelmark report` and `model` (kernelmark/cli/reports.py): what a user sees of a damaged run file."""
from kernelmark import cli, results


def _run_file(path) -> str:
    w = results.RunWriter(str(path))
    w.header({"kernelmark": "0.1.0", "command": ["kernelmark", "run"], "suite": {"name": "s"}, "started": "now",
              "device": {"name": "Test CPU", "kind": "cpu"}, "peaks": {"copy_gbps": 1.0, "tflops": {}}})
    w.record({"op": "gemm", "shape": {"m": 1}, "dtype": "fp32", "backend": "triton", "status": "checked"})
    w.close()
    with open(path, "a") as f:
        f.write('{"type": "record", "op": "ge')       # killed mid-write
    return str(path)


def test_a_truncated_run_file_is_one_warning_line_in_report(tmp_path, capsys, recwarn):
    run = _run_file(tmp_path / "r.jsonl")
    assert cli.main(["report", run]) == 0
    err = capsys.readouterr().err
    assert f"kernelmark: warning: {run}:3: truncated last line dropped (run interrupted mid-write?)\n" in err
    assert "UserWarning" not in err and not [w for w in recwarn if "truncated" in str(w.message)]
