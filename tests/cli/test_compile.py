"""`kernelmark compile` end to end, on test kernels (tests/harness/aot_ops.py): a config with
a compile error is reported failed with its message while the rest goes on (exit 0); a kernel
over MI300's LDS limit is over_limit there and only there, and left out of tuning there only;
`compare` of two compile files fails on a config that stops compiling."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SUITE = """name = "aot"
[[case]]
op = "aot_test"
dtypes = ["fp32"]
shapes = [{n = 1024}]
"""


def _kernelmark(*args, cwd=ROOT, cache=None):
    env = dict(os.environ)      # TRITON_INTERPRET stays set, as the tests set it: the command must drop it
    env.update(PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests" / "harness")]),
               KERNELMARK_OP_MODULES="aot_ops", TRITON_DEFAULT_FP_FUSION="1")
    if cache:
        env["TRITON_CACHE_DIR"] = str(cache)
    return subprocess.run([sys.executable, "-m", "kernelmark", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=600)


def _main(capsys, *args):
    """The command in this process (what needs no compiling): (status, stdout, stderr)."""
    from kernelmark import cli
    status = cli.main(list(args))
    out, err = capsys.readouterr()
    return status, out, err


def _records(path):
    lines = [json.loads(ln) for ln in Path(path).read_text().splitlines()]
    return lines[0], [r for r in lines if r["type"] == "record"], lines[-1]


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    d = tmp_path_factory.mktemp("compile")
    (d / "aot.toml").write_text(SUITE)
    out = d / "c.jsonl"
    p = _kernelmark("compile", "--suite", str(d / "aot.toml"), "--target", "cuda:90,hip:gfx942", "--out", str(out),
                    cache=d / "cache")
    return d, p, out


def test_compile_error_is_a_result_and_the_rest_goes_on(compiled):
    _, p, out = compiled
    assert p.returncode == 0, p.stderr[-3000:]
    header, recs, footer = _records(out)
    assert header["kind"] == "compile" and footer["type"] == "footer" and footer["records"] == len(recs)
    by = {(r["target"], r["kernel"], r["config"]): r for r in recs}
    for t in ("cuda:90", "hip:gfx942"):
        bad = by[(t, "aot_row_sum", "BLOCK=48 w4 s3")]
        assert bad["status"] == "failed" and "arange's range must be a power of 2" in bad["error"]
        good = by[(t, "aot_row_sum", "BLOCK=64 w4 s3")]
        assert good["status"] == "compiled" and good["fits"] is True and good["registers"] > 0
        assert good["compile_s"] > 0 and good["shared_bytes"] is not None
        assert by[(t, "aot_scale", "")]["status"] == "compiled"     # the launch after the failing one
    assert "failed" in p.stdout and "arange's range must be a power of 2" in p.stdout


def test_over_lds_limit_is_flagged_and_left_out_on_that_target_only(compiled):
    _, p, out = compiled
    _, recs, footer = _records(out)
    by = {(r["target"], r["kernel"]): r for r in recs if r["kernel"] == "aot_transpose"}
    amd, nv = by[("hip:gfx942", "aot_transpose")], by[("cuda:90", "aot_transpose")]
    assert amd["status"] == "over_limit" and amd["fits"] is False and amd["shared_bytes"] > 64 * 1024
    assert "LDS" in amd["error"] and "hip:gfx942" in amd["error"]
    assert nv["status"] == "compiled" and nv["fits"] is True and nv["shared_bytes"] <= 227 * 1024
    # the failing config is left out of tuning on both targets, nothing else is
    assert footer["left_out"]["cuda:90"] == footer["left_out"]["hip:gfx942"][:1]
    assert all("BLOCK=48" in ln for ln in footer["left_out"]["cuda:90"])


def test_compare_two_compile_files_fails_on_a_config_that_stops_compiling(compiled, tmp_path, capsys):
    d, _, out = compiled
    header, recs, footer = _records(out)
    head = [dict(r) for r in recs]
    for r in head:
        if r["target"] == "cuda:90" and r["config"] == "BLOCK=64 w4 s3":
            r.update(status="failed", error="CompilationError: boom")
    head.append({**recs[0], "config": "BLOCK=32 w2 s1"})
    hp = tmp_path / "head.jsonl"
    hp.write_text("\n".join(json.dumps(x) for x in [header, *head, footer]) + "\n")
    status, stdout, err = _main(capsys, "compare", str(out), str(hp))
    assert status == 1, stdout + err
    assert "REGRESSION: cuda:90" in stdout and "BLOCK=64 w4 s3: compiled -> failed" in stdout
    assert "new: " in stdout and "BLOCK=32 w2 s1" in stdout
    status, stdout, _ = _main(capsys, "compare", str(out), str(out))
    assert status == 0 and "0 regression(s)" in stdout


def test_compare_refuses_a_compile_file_against_a_timing_run(compiled, tmp_path, capsys):
    _, _, out = compiled
    timing = tmp_path / "t.jsonl"
    timing.write_text(json.dumps({"type": "header", "schema": 1}) + "\n")
    status, _, err = _main(capsys, "compare", str(out), str(timing))
    assert status == 2 and err.startswith("kernelmark: error: refusing to compare")
    assert "compile file" in err


@pytest.mark.parametrize("args, needle", [
    (("--target", "cuda:91"), "unknown target(s) cuda:91"),
    (("--ops", "nope"), "unknown op(s) nope"),
    (("--suite", "nope"), "unknown suite"),
])
def test_bad_input_is_one_line_exit_2(args, needle, capsys):
    status, _, err = _main(capsys, "compile", *args)
    assert status == 2 and needle in err
    assert err.startswith("kernelmark: error:") and len(err.strip().splitlines()) == 1


# ---------------------------------------------------------------- report of a compile file (no compiling)

def _compile_file(path, records, targets=("cuda:90", "hip:gfx942")):
    header = {"type": "header", "kind": "compile", "triton": "3.9.0", "suite": {"name": "smoke"},
              "targets": [{"name": t} for t in targets], "started": "2026-12-01T12:00:00Z"}
    lines = [header, *({"type": "record", **r} for r in records), {"type": "footer", "records": len(records)}]
    Path(path).write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    return str(path)


CRAFTED = [
    {"op": "gemm", "backend": "triton", "case": "m=32 fp32", "kernel": "_gemm_kernel",
     "config": "BLOCK_M=64 BLOCK_N=64 BLOCK_K=64 GROUP_M=8 w4 s4", "target": "cuda:90", "status": "compiled",
     "compile_s": 0.5, "shared_bytes": 98304, "registers": 128, "spills": 0, "fits": True},
    {"op": "gemm", "backend": "triton", "case": "m=32 fp32", "kernel": "_gemm_kernel",
     "config": "BLOCK_M=32 BLOCK_N=128 BLOCK_K=128 GROUP_M=4 w4 s4", "target": "cuda:90", "status": "over_limit",
     "error": "shared memory 245760 B > 232448 B per block on cuda:90", "compile_s": 0.7,
     "shared_bytes": 245760, "registers": 168, "spills": 0, "fits": False},
    {"op": "rmsnorm", "backend": "triton", "case": "t=4 bf16", "kernel": "_rmsnorm_kernel", "config": "ROWS=4 w4 s3",
     "target": "hip:gfx942", "status": "failed", "error": "CompilationError: at 3:4: boom\x1b[31m|x"},
]


def test_report_prints_a_compile_files_table_and_what_tuning_leaves_out(tmp_path, capsys):
    path = _compile_file(tmp_path / "c.jsonl", CRAFTED)
    status, out, err = _main(capsys, "report", path)
    assert status == 0, err
    lines = out.splitlines()
    assert lines[0] == "compile check | triton 3.9.0 | suite smoke | targets cuda:90, hip:gfx942 | " \
                       "started 2026-12-01T12:00:00Z"
    row = next(ln for ln in lines if "BLOCK_M=32" in ln)
    assert row.split()[:2] == ["cuda:90", "gemm"] and "over_limit" in row and "245760 B" in row
    assert "cuda:90: 1 compiled, 1 over_limit" in lines and "hip:gfx942: 1 failed" in lines
    assert ("left out of autotuning on cuda:90: _gemm_kernel BLOCK_M=32 BLOCK_N=128 BLOCK_K=128 GROUP_M=4 w4 s4: "
            "shared memory 245760 B > 232448 B per block on cuda:90") in lines
    assert "\x1b" not in out                       # text from the file cannot drive the terminal
    status, md, _ = _main(capsys, "report", path, "--format", "md")
    assert status == 0 and "| target | op | kernel |" in md and "boom \\[31m\\|x" in md
    status, js, _ = _main(capsys, "report", path, "--format", "json")
    assert status == 0 and json.loads(js)["left_out"]["hip:gfx942"][0].startswith("_rmsnorm_kernel ROWS=4 w4 s3")
    status, csv_text, _ = _main(capsys, "report", path, "--format", "csv")
    assert status == 0 and csv_text.splitlines()[0].startswith("target,op,backend,case,kernel,config,status")


def test_report_refuses_compile_and_timing_runs_together_and_an_html_page(tmp_path, capsys):
    path = _compile_file(tmp_path / "c.jsonl", CRAFTED)
    timing = tmp_path / "t.jsonl"
    timing.write_text(json.dumps({"type": "header", "schema": 1}) + "\n")
    for args, needle in (((path, str(timing)), "cannot report compile runs and timing runs together"),
                         ((path, "--format", "html"), "--format html: a compile run has"),
                         ((path, "--baseline", "H100"), "--baseline: a compile run has no device")):
        status, _, err = _main(capsys, "report", *args)
        assert status == 2 and err.startswith("kernelmark: error:") and needle in err, err
        assert len(err.strip().splitlines()) == 1
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"type": "header", "kind": "compile"}) + "\n" + '{"type": "record"}\n')
    status, _, err = _main(capsys, "report", str(bad))
    assert status == 2 and "bad.jsonl:2: record has no 'kernel' string" in err


def test_compare_of_compile_files_a_config_that_stops_fitting_is_a_regression(tmp_path, capsys):
    base = _compile_file(tmp_path / "base.jsonl", CRAFTED)
    head = [dict(r) for r in CRAFTED]
    head[0].update(status="over_limit", fits=False, shared_bytes=262144,
                   error="shared memory 262144 B > 232448 B per block on cuda:90")
    head[1].update(status="compiled", fits=True, shared_bytes=196608, error=None)
    status, out, _ = _main(capsys, "compare", base, _compile_file(tmp_path / "head.jsonl", head))
    assert status == 1
    assert "REGRESSION: cuda:90 gemm/triton [m=32 fp32] _gemm_kernel BLOCK_M=64" in out
    assert "compiled -> over_limit" in out and "fixed: cuda:90" in out and "1 regression(s), 1 fixed" in out


def test_compare_of_compile_files_prints_no_terminal_controls_from_the_files(tmp_path, capsys):
    recs = [{**CRAFTED[0], "kernel": "k\x1b]0;owned\x07"}]
    head = [{**recs[0], "status": "failed", "error": "CompilationError: \x1b[2J"}]
    status, out, _ = _main(capsys, "compare", _compile_file(tmp_path / "b.jsonl", recs),
                           _compile_file(tmp_path / "h.jsonl", head))
    assert status == 1 and "REGRESSION" in out and "\x1b" not in out and "\x07" not in out
