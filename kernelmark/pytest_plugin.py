"""A pytest plugin: benchmark your own kernel inside your test suite with kernelmark's
timing engine, and get kernelmark run files out.

Enable it with ``pytest -p kernelmark.pytest_plugin`` (or the ``pytest11`` entry point
when kernelmark is installed), then::

    def test_my_matmul(kernelmark_bench):
        a, b = torch.randn(512, 512), torch.randn(512, 512)
        rec = kernelmark_bench(my_matmul, a, b, flops=2 * 512**3, bytes=3 * 512 * 512 * 4,
                               name="my_matmul", shape={"m": 512, "n": 512, "k": 512})
        assert rec["timing"]["median_us"] > 0

``pytest --kernelmark-out run.jsonl`` writes every record to a run file (schema v1, the
format `kernelmark run` writes), so ``kernelmark compare``, ``report``, ``history --ingest``
and ``export`` read it. The header's ``device.git`` is the tested project's commit
(pytest's rootdir), since that is the code being measured. Peaks are not measured unless
``--kernelmark-peaks`` is given (then %-of-peak is filled in; cached as for `run`).

The fixture times ``fn(*args, **kwargs)`` with ``kernelmark.harness.timing.time_callable`` on the
device of the first tensor argument (else ``--kernelmark-device``, else the GPU if any),
and returns the record. It does not check correctness: assert on the result in the test.
This module imports nothing heavy until a benchmark runs, so having it installed costs
other test suites nothing.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import pytest


def pytest_addoption(parser) -> None:
    g = parser.getgroup("kernelmark", "kernelmark benchmarks")
    g.addoption("--kernelmark-out", metavar="PATH", help="write kernelmark_bench records to this run file")
    g.addoption("--kernelmark-budget", type=float, default=None, metavar="S",
                help="seconds of sampling per benchmark (default: the timing engine's, 1.0)")
    g.addoption("--kernelmark-device", metavar="DEV", help="device when no tensor argument says (cpu, cuda:N)")
    g.addoption("--kernelmark-peaks", action="store_true", help="measure the device's peaks for %% of peak")


class _Session:
    """Run-file state for one pytest session: one header, records as they come, a footer."""

    def __init__(self, config):
        self.config = config
        self.out: Optional[str] = config.getoption("kernelmark_out")
        self.writer = None
        self.records: list = []
        self.profiles: dict = {}
        self.t0 = time.time()

    def profile(self, target):
        from kernelmark.harness import device as dev
        from kernelmark.harness import peaks
        key = str(target.torch_device)
        if key not in self.profiles:
            prof = dev.profile(target)
            prof["kernelmark_git"] = prof.get("git")
            prof["git"] = _project_git(Path(str(self.config.rootpath)))
            pk = peaks.get(target, prof) if self.config.getoption("kernelmark_peaks") else \
                {"tflops": {}, "method": "not measured (pytest plugin; --kernelmark-peaks measures them)"}
            self.profiles[key] = (prof, pk)
        return self.profiles[key]

    def emit(self, rec: dict, prof: dict, pk: dict, cfg) -> None:
        from kernelmark import results
        self.records.append(rec)
        if not self.out:
            return
        if self.writer is None:
            import secrets

            import kernelmark
            # --kernelmark-out names the session's run file: each session writes it anew.
            self.writer = results.RunWriter(self.out, replace=True)
            self.writer.header({
                "kernelmark": kernelmark.__version__, "command": ["pytest", *self.config.invocation_params.args],
                "suite": {"name": "pytest", "path": str(self.config.rootpath), "sha256": None},
                "device": prof, "peaks": pk, "timing": cfg.__dict__, "budget_override_s": None,
                "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "run_id": secrets.token_hex(6)})
        self.writer.record(rec)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.footer({"finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                "wall_s": round(time.time() - self.t0, 2)})
            self.writer.close()
            self.writer = None


def _project_git(root: Path) -> dict:
    import subprocess

    def git(*args):
        try:
            p = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return p.stdout.strip() if p.returncode == 0 else None
    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def pytest_configure(config) -> None:
    config._kernelmark = _Session(config)


def pytest_unconfigure(config) -> None:
    s = getattr(config, "_kernelmark", None)
    if s is not None:
        s.close()


def pytest_terminal_summary(terminalreporter, config) -> None:
    s = getattr(config, "_kernelmark", None)
    if not s or not s.records:
        return
    from kernelmark.reports.table import shape_text
    terminalreporter.section("kernelmark")
    for r in s.records:
        t = r["timing"]
        terminalreporter.write_line(
            f"{r['op']} {shape_text(r['shape'])} {r['dtype']} {r['backend']}: {t['median_us']:.2f} µs "
            f"±{100 * t['ci_rel']:.1f}% (n={t['n']}, {t['method']})" + ("  NOISY" if r["noisy"] else ""))
    if s.out:
        terminalreporter.write_line(f"run file: {s.out}")


def _dtype_name(args) -> str:
    import torch

    from kernelmark import dtypes
    names = {v: k for k, v in dtypes._TORCH.items() if v is not None}
    for a in args:
        if isinstance(a, torch.Tensor):
            return names.get(a.dtype, str(a.dtype).replace("torch.", ""))
    return "none"


def _target(args, spec: Optional[str]):
    import torch

    from kernelmark.harness import device as dev
    for a in args:
        if isinstance(a, torch.Tensor):
            spec = str(a.device)
            break
    return dev.resolve(spec)


@pytest.fixture
def kernelmark_bench(request):
    """``kernelmark_bench(fn, *args, flops=None, bytes=None, name=None, shape=None, dtype=None,
    backend="pytest", **kwargs)`` times ``fn(*args, **kwargs)`` and returns the record."""
    session: _Session = request.config._kernelmark
    count = [0]

    def bench(fn, *args, flops: Optional[int] = None, bytes: Optional[int] = None, name: Optional[str] = None,
              shape: Optional[dict] = None, dtype: Optional[str] = None, backend: str = "pytest", **kwargs):
        from kernelmark.harness import device as dev
        from kernelmark.harness import runner, timing
        target = _target(args, request.config.getoption("kernelmark_device"))
        prof, pk = session.profile(target)
        budget = request.config.getoption("kernelmark_budget")
        cfg = timing.TimingConfig(**({"budget_s": budget} if budget else {}))
        t = timing.time_callable(lambda inputs: fn(*inputs, **kwargs), [args], target.torch_device, cfg,
                                 l2_bytes=dev.cache_bytes(prof))
        count[0] += 1
        flops_, bytes_ = int(flops or 0), int(bytes or 0)
        sec = t.summary.median_us * 1e-6
        rec = {"op": name or request.node.name, "label": request.node.nodeid, "shape": dict(shape or {}),
               "dtype": dtype or _dtype_name(args), "backend": backend, "status": "ok", "reason": "",
               "seed": None, "check": None, "flops": flops_, "bytes": bytes_,
               "intensity": flops_ / bytes_ if bytes_ else None, "timing": t.as_dict(),
               "tflops": flops_ / sec / 1e12 if flops_ else None, "gbps": bytes_ / sec / 1e9 if bytes_ else None,
               "bound": None, "pct_of_peak": None, "pct_of_datasheet": None, "noisy": t.noisy,
               "case_index": count[0], "suite_line": None}
        if pk.get("tflops") and bytes_:
            class _Work:        # the two numbers runner.metrics needs from an op
                memory_peak = "copy"
                flops = staticmethod(lambda shape: flops_)
                nbytes = staticmethod(lambda shape, dtype: bytes_)
            rec.update(runner.metrics(_Work, rec["shape"], rec["dtype"], t.summary.median_us, pk,
                                      prof.get("datasheet")))
        session.emit(rec, prof, pk, cfg)
        return rec

    return bench
