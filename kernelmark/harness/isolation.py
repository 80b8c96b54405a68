"""The supervisor: runs cases in a worker process and survives whatever happens there.

A segfault, an illegal memory access (which poisons the whole CUDA context) or any fatal
error kills only the worker: the backend in flight is recorded as ``crashed`` with the
signal and the tail of the worker's stderr, a fresh worker is started, and the run goes
on with the case's remaining backends. A stage that outlives ``timeout_s`` gets its
worker killed and is recorded as ``timeout``.

One worker serves every case until it dies (isolation "process"): starting a worker
costs an interpreter, torch and (on a GPU) a CUDA context, a few seconds, so one per
case would dominate short suites; per-case isolation is available for suspects
("case").
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from typing import Iterator, Optional

from kernelmark import childenv
from kernelmark.suites.loader import Case

PACKAGE_ROOT = childenv.PACKAGE_ROOT
STARTUP_TIMEOUT_S = 600.0


class WorkerStartError(RuntimeError):
    pass


class _Died(Exception):
    pass


class _TimedOut(Exception):
    pass


class Supervisor:
    def __init__(self, init: dict, timeout_s: float = 600.0, per_case: bool = False):
        self.init, self.timeout_s, self.per_case = init, timeout_s, per_case
        self.proc: Optional[subprocess.Popen] = None
        self.starts = 0
        self.startup_s: list = []
        self._cwd: Optional[tempfile.TemporaryDirectory] = None

    # ------------------------------------------------------------------ process

    def _start(self) -> None:
        t0 = time.perf_counter()
        if self._cwd is None:
            self._cwd = tempfile.TemporaryDirectory(prefix="kernelmark-worker-")
        r, w = os.pipe()
        self._err = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            worker_command(w), cwd=self._cwd.name, env=worker_env(),
            stdin=subprocess.PIPE, stdout=self._err, stderr=self._err, pass_fds=(w,),
            start_new_session=True)   # Ctrl-C reaches the supervisor only; it ends the worker
        os.close(w)
        self._fd, self._buf = r, b""
        self._sel = selectors.DefaultSelector()
        self._sel.register(r, selectors.EVENT_READ)
        self._send({**self.init, "sys_path_tail": op_module_dirs()})
        self.starts += 1
        try:
            msg = self._read(STARTUP_TIMEOUT_S)
        except (_Died, _TimedOut) as e:
            tail = self._stderr_tail()
            self._kill()
            raise WorkerStartError(f"the worker process did not start ({e}); its stderr:\n{tail}") from None
        if msg.get("event") != "ready":
            raise WorkerStartError(f"unexpected first message from the worker: {msg}")
        self.startup_s.append(time.perf_counter() - t0)

    def _send(self, obj: dict) -> None:
        self.proc.stdin.write((json.dumps(obj, default=str) + "\n").encode())
        self.proc.stdin.flush()

    def _read(self, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise _TimedOut(f"no answer in {timeout:g} s")
            if not self._sel.select(min(left, 1.0)):
                if self.proc.poll() is not None and not self._sel.select(0):
                    raise _Died(self._exit_text())
                continue
            chunk = os.read(self._fd, 1 << 16)
            if not chunk:
                self.proc.wait()
                raise _Died(self._exit_text())
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return json.loads(line)

    def _exit_text(self) -> str:
        rc = self.proc.wait()
        if rc < 0:
            try:
                return f"killed by signal {signal.Signals(-rc).name}"
            except ValueError:
                return f"killed by signal {-rc}"
        return f"exited with status {rc}"

    def _stderr_tail(self, n: int = 1500) -> str:
        try:
            self._err.seek(0, os.SEEK_END)
            size = self._err.tell()
            self._err.seek(max(0, size - n))
            return self._err.read().decode("utf-8", "replace").strip()
        except (OSError, ValueError):
            return ""

    def _kill(self) -> None:
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait()
        self._sel.close()
        os.close(self._fd)
        self._err.close()
        self.proc = None

    def close(self) -> None:
        if self.proc is not None:
            try:
                self.proc.stdin.close()
                self.proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                pass
            self._kill()
        if self._cwd is not None:
            self._cwd.cleanup()
            self._cwd = None

    # ------------------------------------------------------------------ cases

    def run_case(self, case: Case) -> Iterator[dict]:
        remaining = list(case.backends)
        while remaining:
            if self.proc is None:
                self._start()
            self._send({"case": {**case.__dict__, "backends": remaining}})
            stage = None
            try:
                while True:
                    msg = self._read(self.timeout_s if stage else STARTUP_TIMEOUT_S)
                    ev = msg.get("event")
                    if ev == "start":
                        stage = msg["stage"]
                    elif ev == "record":
                        rec = msg["record"]
                        remaining.remove(rec["backend"])
                        stage = None
                        yield rec
                    elif ev == "done":
                        break
                if self.per_case:
                    self.close()
                return
            except (_Died, _TimedOut) as e:
                status = "timeout" if isinstance(e, _TimedOut) else "crashed"
                if status == "timeout":
                    self._kill()
                    why = f"no result after {self.timeout_s:g} s while {_stage_text(stage)}; worker killed"
                else:
                    tail = self._stderr_tail()
                    self._kill()
                    why = f"worker {e} while {_stage_text(stage)}" + (f"; stderr: {tail[-600:]}" if tail else "")
                # The reference (or an unknown stage) failing dooms every remaining backend.
                victims = [stage] if stage in remaining else list(remaining)
                for b in victims:
                    remaining.remove(b)
                    yield _failure_record(case, b, status, why)


# ------------------------------------------------------------------ how a worker starts
# Isolated from the directory it is started from: `python -m` puts the current directory
# first on sys.path, so an argparse.py (or torch/, json.py, ...) there would run inside the
# worker. The worker runs in an empty private directory, with -P (Python 3.11+: no script
# or current directory on sys.path), and finds kernelmark through PYTHONPATH, which names
# the directory holding this kernelmark first. Not -I: it also drops the user's site
# packages and every PYTHON* variable, where a torch may be installed or configured.

def worker_command(fd: int) -> list:
    safe_path = ["-P"] if sys.version_info >= (3, 11) else []
    return [sys.executable, *safe_path, "-m", "kernelmark.harness.worker", "--fd", str(fd)]


def worker_env(environ: Optional[dict] = None) -> dict:
    """The supervisor's environment, PYTHONPATH naming this kernelmark first (childenv.env)."""
    return childenv.env(environ)


def op_module_dirs() -> list:
    """Where this process found the KERNELMARK_OP_MODULES modules: the worker appends these
    to the end of its sys.path, so a project's op module that was importable here from the
    current directory still imports there, without that directory shadowing anything."""
    import importlib.util
    dirs = []
    for name in os.environ.get("KERNELMARK_OP_MODULES", "").split(","):
        top = name.strip().split(".")[0]
        if not top:
            continue
        try:
            spec = importlib.util.find_spec(top)
        except (ImportError, ValueError):
            continue            # the registry names it when it fails to import
        if spec is None or not spec.has_location or not spec.origin:
            continue            # built in, frozen, or a namespace package: nothing to add
        where = os.path.dirname(os.path.abspath(spec.origin))
        dirs.append(os.path.dirname(where) if spec.submodule_search_locations else where)
    return list(dict.fromkeys(dirs))


def _stage_text(stage: Optional[str]) -> str:
    if stage is None:
        return "preparing the case"
    if stage == "reference":
        return "computing the reference"
    return f"running backend {stage}"


def _failure_record(case: Case, backend: str, status: str, reason: str) -> dict:
    rec = {"op": case.op, "label": case.label, "shape": case.shape, "dtype": case.dtype,
           "case_index": case.index, "suite_line": case.line, "backend": backend,
           "status": status, "reason": reason}
    if case.meta:
        rec["trace"] = case.meta
    return rec
