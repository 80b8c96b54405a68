"""The run file: JSON lines, one header then one record per (case, backend).

Schema version 1::

    {"type": "header", "schema": 1, "kernelmark": "0.1.0", "command": [...],
     "suite": {"name", "path", "sha256"}, "device": {device profile, see kernelmark.harness.device},
     "peaks": {"copy_gbps", "h2d_gbps", "d2h_gbps", "tflops": {dtype: TFLOP/s}, "method", ...},
     "timing": {TimingConfig fields}, "started": ISO time, "run_id": str}
    {"type": "record", "op", "label", "shape": {param: value}, "dtype", "backend",
     "status": "ok" | "checked" | "failed_check" | "unsupported" | "skipped" | "error",
     "reason": str (why not ok), "seed": int, "check": {passed, rel_l2, max_abs, max_rel, tolerance, detail},
     "flops", "bytes", "intensity", "timing": {method, inner, cache, converged, wall_s, note, n,
     median_us, mean_us, min_us, max_us, iqr_us, ci_low_us, ci_high_us, ci_rel, samples_us,
     stall: why the median is not the call's time (stalls; absent or null if none seen),
     waited: {method, samples_waited, median_share} (CPU: waits for a CPU during the samples);
     on a GPU also device_wait_us, host_call_us, estimate_us, dropped_samples, and flush_us
     where a graph's flush time was subtracted},
     "tflops", "gbps", "bound", "pct_of_peak", "pct_of_datasheet",
     "roof_dtype": the dtype whose matmul rate was the compute roof, where not the record's own,
     "noisy": CI target missed or stalls, "case_index", "suite_line",
     "detail": what the backend chose (an autotuned Triton kernel's config), "health": {NVML state
     before and after, "during": what the sampler saw while timing, throttled, throttle_reasons,
     below_app_clocks},
     "inputs": what the byte count rests on beyond the shape (fused_moe: {experts_hit, ...}), optional}
    {"type": "footer", "finished": ISO time, "records": int, "wall_s": float,
     with --deadline also "deadline_s": float and "not_run": int (the (case, backend) pairs
     recorded as skipped, reason "deadline reached: not started")}

``status``: ``ok`` checked and timed; ``checked`` passed its check but was not timed (a
Triton kernel under the CPU interpreter); ``failed_check`` differs from the reference
(never timed); ``unsupported`` the backend does not implement this dtype/shape/device;
``skipped`` the backend cannot run here (a library missing, too large for the
interpreter); ``error`` it raised; ``oom`` it ran out of memory (the reason says how much
it asked for); ``crashed`` its worker process died (signal and stderr tail in the
reason); ``timeout`` it ran past the per-case time limit and its worker was killed.
Only ``ok`` records carry timing and rates.

Records are appended and flushed to disk as they are produced, so an interrupted run
keeps everything measured before the interruption (the footer is then missing).
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

SCHEMA_VERSION = 1
STATUSES = ("ok", "checked", "failed_check", "unsupported", "skipped", "error", "oom", "crashed", "timeout")


class RunFileError(ValueError):
    """A run file that cannot be read: names the file and the line."""


@dataclass
class Run:
    path: str
    header: dict
    records: list
    footer: Optional[dict] = None
    warnings: list = field(default_factory=list)

    @property
    def device(self) -> dict:
        return self.header["device"]

    @property
    def complete(self) -> bool:
        return self.footer is not None


class RunWriter:
    """Appends lines to a run file, each flushed and fsynced before the next case.

    The file is claimed when the writer is made, before any work: a new run file is
    created exclusively (an existing file is never overwritten, unless ``replace``), and an
    advisory lock (flock) is held until close(), so a second run writing to the same path
    is refused instead of interleaving its lines. A write that fails (a full disk,
    /dev/full) raises RunFileError naming the file. Paths that are not regular files
    (/dev/null, a FIFO) are written as they are, without a lock.
    """

    def __init__(self, path: str, append: bool = False, count: int = 0, replace: bool = False):
        """``append``: continue an interrupted run file (a torn last line is cut off first,
        once the lock is held). ``replace``: truncate an existing file instead of refusing it."""
        self.path = Path(path)
        self.count = count
        self._wrote = False
        self._created = False
        if self.path.is_dir():
            raise RunFileError(f"output path {self.path} is a directory")
        regular = not self.path.exists() or self.path.is_file()
        # O_APPEND always: every line lands at the end, also after a truncation under the lock.
        flags = os.O_WRONLY | os.O_APPEND
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if append or not regular:
                fd = os.open(self.path, flags)
            elif replace:
                fd = os.open(self.path, flags | os.O_CREAT, 0o666)
            else:
                fd = os.open(self.path, flags | os.O_CREAT | os.O_EXCL, 0o666)
                self._created = True
        except FileExistsError:
            busy = " (another kernelmark run is writing it now)" if _locked(self.path) else ""
            raise RunFileError(f"the run file {self.path} already exists{busy}: kernelmark does not overwrite "
                               "a run file; give another --out, remove it, or continue it with --resume") from None
        except OSError as e:
            raise RunFileError(f"cannot write the run file {self.path}: {e.strerror or e}") from None
        self._f = os.fdopen(fd, "a", encoding="utf-8")
        self._regular = regular
        if regular and not _lock(fd):
            self._f.close()
            raise RunFileError(f"the run file {self.path} is being written by another kernelmark run; "
                               "wait for it to finish (or stop it) first")
        try:
            if replace and regular:
                os.ftruncate(fd, 0)
            if append:
                _cut_torn_tail(self.path)
        except OSError as e:
            self._f.close()
            raise RunFileError(f"cannot write the run file {self.path}: {e.strerror or e}") from None

    def _write(self, obj: dict) -> None:
        line = json.dumps(obj, allow_nan=False, default=_jsonable) + "\n"
        try:
            self._f.write(line)
            self._f.flush()
            if self._regular:       # fsync of a device such as /dev/null fails with EINVAL
                os.fsync(self._f.fileno())
        except OSError as e:
            raise RunFileError(f"cannot write the run file {self.path}: {e.strerror or e}") from None
        self._wrote = True

    def header(self, header: dict) -> None:
        self._write({"type": "header", "schema": SCHEMA_VERSION, **header})

    def record(self, rec: dict) -> None:
        self._write({"type": "record", **rec})
        self.count += 1

    def footer(self, footer: dict) -> None:
        self._write({"type": "footer", "records": self.count, **footer})

    def close(self) -> None:
        """Release the file. One this writer created and never wrote a line to is removed,
        so a run stopped before its header (bad input, Ctrl-C) leaves nothing in the way."""
        try:
            self._f.close()
        except OSError:
            pass        # what a failed write left in the buffer: the failure was already raised
        if self._created and not self._wrote:
            try:
                self.path.unlink()
            except OSError:
                pass


def _lock(fd: int) -> bool:
    """Take an exclusive advisory lock without waiting; False when another process holds it."""
    try:
        import fcntl
    except ImportError:         # not a POSIX system: no lock, as before
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError:             # a file system without flock support: write unlocked
        return True
    return True


def _locked(path: Path) -> bool:
    """Whether another process holds the lock of an existing run file."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        return not _lock(fd)
    finally:
        os.close(fd)


def _cut_torn_tail(path: Path) -> None:
    """Drop a last line that a killed run left half-written."""
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with open(path, "r+b") as f:
            f.truncate(data.rfind(b"\n") + 1)


def record_key(rec: dict) -> tuple:
    """What identifies a (case, backend) within a run: used to resume and to compare."""
    return (rec.get("case_index"), rec["op"], json.dumps(rec["shape"], sort_keys=True), rec["dtype"],
            rec["backend"])


def _jsonable(x):
    import math
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    if isinstance(x, (set, tuple)):
        return list(x)
    return str(x)


_REQUIRED_HEADER = ("schema", "device", "peaks", "suite", "started")
_REQUIRED_RECORD = ("op", "shape", "dtype", "backend", "status")


def load(path: str) -> Run:
    """Read and validate a run file. A truncated last line (a run killed mid-write) is
    dropped with a warning; anything else malformed raises RunFileError."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RunFileError(f"{path}: no such run file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise RunFileError(f"{path}: cannot read it as a run file ({e})") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if not lines:
        raise RunFileError(f"{path}: empty file, not a run file")
    run_warnings = []
    objs = []
    for i, line in enumerate(lines, 1):
        try:
            obj = json.loads(line)
        except ValueError as e:
            if i == len(lines) and not text.endswith("\n"):
                run_warnings.append(f"{path}:{i}: truncated last line dropped (run interrupted mid-write?)")
                warnings.warn(run_warnings[-1])
                break
            raise RunFileError(f"{path}:{i}: not JSON ({e.msg})" +
                               (" -- this is not a kernelmark run file" if i == 1 else "")) from None
        if not isinstance(obj, dict):
            raise RunFileError(f"{path}:{i}: expected a JSON object")
        objs.append((i, obj))
    if not objs:
        raise RunFileError(f"{path}: no complete line")
    _, header = objs[0]
    if header.get("type") != "header":
        raise RunFileError(f"{path}:1: first line is not a kernelmark run header")
    schema = header.get("schema")
    if schema != SCHEMA_VERSION:
        raise RunFileError(f"{path}:1: run file schema version {schema!r}; this kernelmark reads version "
                           f"{SCHEMA_VERSION}")
    missing = [k for k in _REQUIRED_HEADER if k not in header]
    if missing:
        raise RunFileError(f"{path}:1: header lacks {', '.join(missing)}")
    _check_header(header, f"{path}:1")
    records, footer = [], None
    for i, obj in objs[1:]:
        kind = obj.get("type")
        if kind == "record":
            miss = [k for k in _REQUIRED_RECORD if k not in obj]
            if miss:
                raise RunFileError(f"{path}:{i}: record lacks {', '.join(miss)}")
            _check_record(obj, f"{path}:{i}")
            records.append(obj)
        elif kind == "footer":
            _check_footer(obj, f"{path}:{i}")
            footer = obj
        else:
            raise RunFileError(f"{path}:{i}: unknown line type {kind!r}")
    return Run(str(p), header, records, footer, run_warnings)


# ---------------------------------------------------------------- field types
# Reports trust what load() returns, so every field they read is type-checked here.

_NUM = (int, float)
_OPT_NUM = (int, float, type(None))
_OPT_STR = (str, type(None))
_OPT_DICT = (dict, type(None))


def _expect(obj: dict, key: str, types, where: str, required: bool = False) -> None:
    if key not in obj:
        if required:
            raise RunFileError(f"{where}: {key} is missing")
        return
    v = obj[key]
    if isinstance(v, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        raise RunFileError(f"{where}: {key} has the wrong type (bool)")
    if not isinstance(v, types):
        raise RunFileError(f"{where}: {key} has the wrong type ({type(v).__name__})")


def _check_header(h: dict, where: str) -> None:
    for key in ("device", "peaks", "suite"):
        _expect(h, key, dict, where, required=True)
    _expect(h, "started", str, where, required=True)
    _expect(h, "kernelmark", _OPT_STR, where)
    _expect(h, "command", list, where)
    d = h["device"]
    for key in ("name", "kind", "arch", "driver", "torch_device"):
        _expect(d, key, _OPT_STR, f"{where} device")
    for key in ("versions", "git", "datasheet", "health", "cpu", "host", "env"):
        _expect(d, key, _OPT_DICT, f"{where} device")
    for key in ("versions", "git"):
        for k, v in (d.get(key) or {}).items():
            if not isinstance(v, (str, bool, type(None))):
                raise RunFileError(f"{where}: device {key}.{k} has the wrong type")
    if d.get("datasheet") is not None:
        _check_peaks(d["datasheet"], f"{where} device datasheet")
        _expect(d["datasheet"], "name", str, f"{where} device datasheet", required=True)
    _check_peaks(h["peaks"], f"{where} peaks")
    _expect(h["suite"], "name", _OPT_STR, f"{where} suite")


def _check_peaks(p: dict, where: str) -> None:
    for key in ("copy_gbps", "h2d_gbps", "d2h_gbps"):
        _expect(p, key, _OPT_NUM, where)
    _expect(p, "tflops", _OPT_DICT, where)
    for k, v in (p.get("tflops") or {}).items():
        if isinstance(v, bool) or not isinstance(v, _NUM):
            raise RunFileError(f"{where}: tflops.{k} is not a number")


def _check_footer(f: dict, where: str) -> None:
    _expect(f, "wall_s", _OPT_NUM, f"{where} footer")
    _expect(f, "deadline_s", _OPT_NUM, f"{where} footer")
    _expect(f, "not_run", int, f"{where} footer")
    if f.get("not_run") is not None and f["not_run"] < 0:
        raise RunFileError(f"{where} footer: not_run must not be negative")


def _check_record(r: dict, where: str) -> None:
    for key in ("op", "dtype", "backend", "status"):
        _expect(r, key, str, where, required=True)
    if r["status"] not in STATUSES:
        raise RunFileError(f"{where}: unknown status {r['status']!r}")
    _expect(r, "shape", dict, where, required=True)
    for k, v in r["shape"].items():
        if not isinstance(v, (int, float, str, bool)):
            raise RunFileError(f"{where}: shape parameter {k} has the wrong type")
    for key in ("label", "reason", "bound", "detail", "roof_dtype"):
        _expect(r, key, _OPT_STR, where)
    for key in ("flops", "bytes", "intensity", "tflops", "gbps", "pct_of_peak", "pct_of_datasheet"):
        _expect(r, key, _OPT_NUM, where)
    for key in ("check", "health", "inputs"):
        _expect(r, key, _OPT_DICT, where)
    if r.get("check") is not None:
        _expect(r["check"], "detail", _OPT_STR, f"{where} check")
    if r.get("health") is not None:
        _expect(r["health"], "throttle_reasons", list, f"{where} health")
    if r["status"] == "ok":
        _expect(r, "timing", dict, where, required=True)
        t = r["timing"]
        for key in ("median_us", "ci_rel"):
            _expect(t, key, _NUM, f"{where} timing", required=True)
        _expect(t, "n", int, f"{where} timing")
        _expect(t, "method", _OPT_STR, f"{where} timing")
        _expect(t, "stall", _OPT_STR, f"{where} timing")
        _expect(t, "samples_us", list, f"{where} timing")
        if not all(isinstance(x, _NUM) and not isinstance(x, bool) for x in t.get("samples_us", [])):
            raise RunFileError(f"{where}: timing samples must be numbers")
        if t["median_us"] <= 0:
            raise RunFileError(f"{where}: timing median_us must be positive")
    _check_energy(r, where)


ENERGY_STATUSES = ("ok", "unavailable", "error")


def _check_energy(r: dict, where: str) -> None:
    """The "energy" dict of `run --energy` (kernelmark.harness.energy_window): a status; an
    "ok" one carries positive per-call joules and window."""
    if "energy" not in r:
        return
    _expect(r, "energy", dict, where)
    e, w = r["energy"], f"{where} energy"
    if e.get("status") not in ENERGY_STATUSES:
        raise RunFileError(f"{w}: unknown status {e.get('status')!r}")
    for key in ("reason", "counter", "method"):
        _expect(e, key, _OPT_STR, w)
    for key in ("gross_j_per_call", "net_j_per_call", "idle_w", "avg_w", "window_s", "uncertainty_rel",
                "resolution_j", "temp_c_before", "temp_c_after"):
        _expect(e, key, _OPT_NUM, w)
    if e["status"] == "ok":
        for key in ("gross_j_per_call", "window_s", "calls"):
            _expect(e, key, _NUM, w, required=True)
            if e[key] <= 0:
                raise RunFileError(f"{w}: {key} must be positive (got {e[key]})")
    elif not e.get("reason"):
        raise RunFileError(f"{w}: status {e['status']} needs a reason")


def slug(s: str) -> str:
    """A name fit for a run file's name: letters, digits and dashes, at most 40 characters."""
    import re
    return re.sub(r"[^A-Za-z0-9]+", "-", s).strip("-").lower()[:40] or "device"
