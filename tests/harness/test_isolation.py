"""Runs that survive: crashes, hangs, OOM, kill -9 and --resume (CPU, worker processes).

Where the test is about the workers or the run file, not the `kernelmark` process itself, the
run is `cli.main` in this process (its workers are still real processes): each `python -m
kernelmark` costs a torch import. kill -9, Ctrl-C and `python -P` need a real process."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kernelmark import cli, results

ROOT = Path(__file__).resolve().parents[2]
TESTS = Path(__file__).resolve().parents[1]


def _env():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(TESTS)])
    env["KERNELMARK_OP_MODULES"] = "chaos_ops"
    return env


def _suite(tmp_path, body):
    p = tmp_path / "chaos.toml"
    p.write_text('name = "chaos"\n' + body)
    return str(p)


def _main(capsys, *args):
    """`kernelmark run --quiet ARGS` in this process: (status, stdout, stderr)."""
    status = cli.main(["run", "--quiet", *args])
    out, err = capsys.readouterr()
    return status, out, err


def test_crash_hang_exit_and_oom_cost_only_their_own_backend(tmp_path, capsys, chaos_ops):
    suite = _suite(tmp_path, '[[case]]\nop = "chaos"\nshapes = [{n = 256}]\n')
    out = tmp_path / "r.jsonl"
    status, stdout, err = _main(capsys, "--suite", suite, "--out", str(out), "--timeout", "4", "--budget", "0.02")
    assert status == 0, err
    run = results.load(str(out))
    st = {r["backend"]: r for r in run.records}
    assert set(st) == {"good", "segfault", "hang", "exit", "oom", "good_too"}
    assert st["good"]["status"] == "ok" and st["good_too"]["status"] == "ok"
    assert st["segfault"]["status"] == "crashed" and "SIGSEGV" in st["segfault"]["reason"]
    assert st["exit"]["status"] == "crashed" and "status 3" in st["exit"]["reason"]
    assert st["hang"]["status"] == "timeout" and "4 s" in st["hang"]["reason"]
    assert st["oom"]["status"] == "oom" and "20.00 GiB" in st["oom"]["reason"]
    assert run.footer["worker_starts"] == 4        # first, after segfault, after hang, after exit
    for word in ("crashed", "timeout", "oom"):
        assert word in stdout


@pytest.mark.skipif(sys.version_info < (3, 11), reason="the test's own process needs -P (Python 3.11+)")
def test_the_worker_ignores_modules_in_the_directory_it_is_started_from(tmp_path):
    # An argparse.py where the user stands: the worker must not import it. PYTHONPATH is
    # relative to that directory, as from a checkout (PYTHONPATH=.): the worker, which runs
    # elsewhere, must still find kernelmark and the op module through it.
    here = tmp_path / "project"
    here.mkdir()
    marker = tmp_path / "argparse-ran"
    (here / "argparse.py").write_text(f"open({str(marker)!r}, 'w').close()\nraise SystemExit(5)\n")
    suite = _suite(tmp_path, '[[case]]\nop = "chaos"\nbackends = ["good"]\nshapes = [{n = 64}]\n')
    env = _env()
    env["PYTHONPATH"] = os.pathsep.join(os.path.relpath(p, here) for p in (ROOT, TESTS))
    p = subprocess.run([sys.executable, "-P", "-m", "kernelmark", "run", "--quiet", "--suite", suite, "--out",
                        str(tmp_path / "r.jsonl"), "--budget", "0.02", "--no-history"],
                       capture_output=True, text=True, env=env, cwd=here, timeout=300)
    assert p.returncode == 0, p.stderr
    assert not marker.exists()
    assert [r["status"] for r in results.load(str(tmp_path / "r.jsonl")).records] == ["ok"]


def test_worker_environment_and_op_module_dirs(monkeypatch, tmp_path):
    from kernelmark.harness import isolation
    monkeypatch.chdir(tmp_path)
    env = isolation.worker_env({"PYTHONPATH": os.pathsep.join([".", "", "lib", isolation.PACKAGE_ROOT])})
    assert env["PYTHONPATH"].split(os.pathsep) == [isolation.PACKAGE_ROOT, str(tmp_path), str(tmp_path / "lib")]
    cmd = isolation.worker_command(7)
    assert cmd[-4:] == ["-m", "kernelmark.harness.worker", "--fd", "7"] and ("-P" in cmd) == (sys.version_info >= (3, 11))
    monkeypatch.syspath_prepend(str(TESTS))
    monkeypatch.setenv("KERNELMARK_OP_MODULES", "chaos_ops, kernelmark.ops.gemm, no_such_module")
    assert isolation.op_module_dirs() == [str(TESTS), str(ROOT)]


def _keys(run):
    return [results.record_key(r) for r in run.records]


def test_kill_9_then_resume_holds_every_case_exactly_once(tmp_path, capsys, chaos_ops):
    suite = _suite(tmp_path, '[[case]]\nop = "chaos"\nbackends = ["good", "good_too"]\n'
                             '[case.grid]\nn = [64, 128, 256, 512, 1024, 2048]\nslow_ms = 400\n')
    out = tmp_path / "r.jsonl"
    cmd = [sys.executable, "-m", "kernelmark", "run", "--quiet", "--suite", suite, "--out", str(out),
           "--budget", "0.02"]
    proc = subprocess.Popen(cmd, env=_env(), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:
        if out.exists() and out.read_text().count('"type": "record"') >= 3:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = results.load(str(out))
    assert 3 <= len(partial.records) < 12 and not partial.complete
    # --force: the environment check is tested below; here, only that nothing is lost or doubled.
    # The resume runs here, with the killed run's own isolation (a worker process).
    status, _, err = _main(capsys, "--resume", str(out), "--force")
    assert status == 0, err
    final = results.load(str(out))
    keys = _keys(final)
    assert len(keys) == 12 and len(set(keys)) == 12
    assert final.complete and all(r["status"] == "ok" for r in final.records)
    assert final.records[:len(partial.records)] == partial.records


def test_resume_refuses_a_changed_suite(tmp_path, capsys, chaos_ops):
    suite = _suite(tmp_path, '[[case]]\nop = "chaos"\nbackends = ["good"]\nshapes = [{n = 64}]\n')
    out = tmp_path / "r.jsonl"
    # No worker: the refusal comes before any case runs.
    assert _main(capsys, "--suite", suite, "--out", str(out), "--budget", "0.02", "--isolation", "none")[0] == 0
    # Make it look interrupted, then change the suite under it.
    lines = out.read_text().splitlines()
    out.write_text("\n".join(lines[:-2]) + "\n")
    Path(suite).write_text(Path(suite).read_text() + "\n# edited\n")
    status, _, err = _main(capsys, "--resume", str(out))
    assert status == 2 and "suite" in err and "changed" in err
    assert err.startswith("kernelmark: error: ") and "Traceback" not in err


def test_resume_of_a_complete_run_says_so(tmp_path, capsys, chaos_ops):
    suite = _suite(tmp_path, '[[case]]\nop = "chaos"\nbackends = ["good"]\nshapes = [{n = 64}]\n')
    out = tmp_path / "r.jsonl"
    assert _main(capsys, "--suite", suite, "--out", str(out), "--budget", "0.02", "--isolation", "none")[0] == 0
    status, _, err = _main(capsys, "--resume", str(out))
    assert status == 2 and "nothing to resume" in err


def test_health_flags_mark_throttling():
    from kernelmark.harness.runner import health_flags
    calm = {"throttle_reasons": ["gpu_idle"], "sm_clock_mhz": 1980, "sm_app_clock_mhz": 1980}
    hot = {"throttle_reasons": ["sw_thermal_slowdown"], "sm_clock_mhz": 1500, "sm_app_clock_mhz": 1980}
    assert not health_flags(calm, calm)["throttled"] and not health_flags(calm, calm)["below_app_clocks"]
    f = health_flags(calm, hot)
    assert f["throttled"] and f["throttle_reasons"] == ["sw_thermal_slowdown"] and f["below_app_clocks"]


def _default_sigint():
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_stops_cleanly_keeping_what_it_has(tmp_path):
    suite = _suite(tmp_path, '[[case]]\nop = "chaos"\nbackends = ["good"]\n'
                             '[case.grid]\nn = [64, 128, 256, 512, 1024, 2048]\nslow_ms = 500\n')
    out = tmp_path / "r.jsonl"
    cmd = [sys.executable, "-m", "kernelmark", "run", "--quiet", "--suite", suite, "--out", str(out),
           "--budget", "0.02"]
    # SIGINT as a terminal gives it: a shell running the tests in the background (nohup, &)
    # starts them with SIGINT ignored, and Python keeps an ignored SIGINT ignored
    proc = subprocess.Popen(cmd, env=_env(), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_default_sigint)
    deadline = time.time() + 120
    while time.time() < deadline:
        if out.exists() and out.read_text().count('"type": "record"') >= 2:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "--resume" in stderr
    run = results.load(str(out))
    assert len(run.records) >= 2 and not run.complete
    assert "chaos" in stdout          # the table of what was measured is still printed
