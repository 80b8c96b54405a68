"""kernelmark/pytest_plugin.py: a project's own test suite benchmarks its kernel with
kernelmark's timing engine and gets run files that `kernelmark compare` reads."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kernelmark import cli, results

ROOT = Path(__file__).resolve().parent.parent

USER_TESTS = '''
import torch


def my_scale(x, factor):
    return x * factor


def test_scale(kernelmark_bench):
    x = torch.randn(4096)
    rec = kernelmark_bench(my_scale, x, factor=2.0, name="my_scale", shape={"n": 4096},
                           flops=4096, bytes=2 * 4096 * 4)
    assert rec["status"] == "ok" and rec["timing"]["median_us"] > 0
    assert rec["dtype"] == "fp32" and rec["gbps"] > 0


def test_second(kernelmark_bench):
    a = torch.randn(32, 32)
    kernelmark_bench(torch.matmul, a, a, flops=2 * 32 ** 3, shape={"m": 32, "n": 32, "k": 32},
                     backend="torch")
'''


# The entry point setup.cfg is to declare (its name equals the module's, so that
# `-p kernelmark.pytest_plugin` on top of the installed entry point is not a second copy).
ENTRY_POINTS = "[pytest11]\nkernelmark.pytest_plugin = kernelmark.pytest_plugin\n"


def _pytest(tmp_path, *args, plugin_arg=True, site=None):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTEST_ADDOPTS", "PYTEST_PLUGINS")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + ([str(site)] if site else []))
    env["OMP_NUM_THREADS"] = "1"
    plugin = ["-p", "kernelmark.pytest_plugin"] if plugin_arg else []
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *plugin, *args],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


def test_plugin_writes_a_run_file_that_compare_reads(tmp_path, capsys):
    (tmp_path / "test_user.py").write_text(USER_TESTS)
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    out = tmp_path / "bench.jsonl"
    p = _pytest(tmp_path, "--kernelmark-out", str(out), "--kernelmark-budget", "0.02")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "my_scale n=4096 fp32 pytest:" in p.stdout and f"run file: {out}" in p.stdout
    run = results.load(str(out))
    assert run.complete and run.header["suite"]["name"] == "pytest"
    assert run.header["device"]["git"] == {"commit": None, "dirty": None}     # the project's repo, no commit yet
    assert [(r["op"], r["backend"], r["status"]) for r in run.records] == \
        [("my_scale", "pytest", "ok"), ("test_second", "torch", "ok")]
    first, second = run.records
    assert first["label"] == "test_user.py::test_scale" and first["shape"] == {"n": 4096}
    assert first["timing"]["method"] == "cpu_perf_counter" and first["timing"]["samples_us"]
    assert first["gbps"] * 1e9 * first["timing"]["median_us"] * 1e-6 == pytest.approx(2 * 4096 * 4, rel=1e-9)
    assert second["flops"] == 2 * 32 ** 3 and second["tflops"] > 0
    # The same records any run has: compare, report and export read them.
    assert cli.main(["compare", str(out), str(out), "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    # A run against itself is never a change; with few noisy CPU samples it may read `noisy`.
    assert len(doc["pairs"]) == 2
    assert all(p_["verdict"] in ("unchanged", "noisy") for p_ in doc["pairs"]), doc["pairs"]
    assert cli.main(["report", str(out)]) == 0


def test_entry_point_loads_it_and_without_an_output_path_nothing_is_written(tmp_path):
    """A stand-in for the installed package's metadata declares the pytest11 entry point;
    the plugin is then found without -p, and -p on top of it does no harm."""
    site = tmp_path / "site"
    info = site / "kernelmark_entry_point_test-0.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: kernelmark-entry-point-test\nVersion: 0.0\n")
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    work = tmp_path / "work"
    work.mkdir()
    (work / "test_user.py").write_text(USER_TESTS)
    both = _pytest(work, "--kernelmark-budget", "0.01", "-k", "second", site=site)
    assert both.returncode == 0, both.stdout + both.stderr
    p = _pytest(work, "--kernelmark-budget", "0.01", plugin_arg=False, site=site)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "run file:" not in p.stdout and not list(work.glob("*.jsonl"))
    assert "my_scale n=4096 fp32 pytest:" in p.stdout          # the terminal summary still lists it
