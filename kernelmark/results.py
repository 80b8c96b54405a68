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
     "detail": what the backend chose (an autotuned Triton kernel's config),
     "pruned": [{kernel, config, why}, ...] the autotune configs tuning left out on this device
     before compiling (over its shared-memory limit; kernelmark/kernels/autotune_prune.py): on a
     GPU in every Triton record ([]: none), elsewhere only when not empty, "health": {NVML state
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

import io
import json
import math
import os
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional

from kernelmark import jsonindent, layoutcheck, samplecut
from kernelmark.errors import RunFileError  # noqa: F401  (results.RunFileError, as it always was)
from kernelmark.runcheck import (STATUSES, WIDE, WideNumber, check_footer, check_header,  # noqa: F401 (STATUSES)
                                 check_record, check_values)

# Reading: orjson where it is installed (setup.cfg), five times Python's json on a run file's
# lines, which are nearly all numbers. It only ever reads a line faster, never differently:
# a line it refuses, or that a check refuses, or that holds a float of 2**63 or more (orjson
# makes an integer beyond 64 bits a float; Python's json keeps it an int, which the checks
# refuse) is read again by Python's json and checked again, so what is refused and the
# message saying why are those of Python's json (tests/test_results.py runs every refusal
# both ways). The machines we measure on may lack orjson: then Python's json reads it all.
try:
    from orjson import JSONDecodeError as _FastJSONError
    from orjson import loads as FAST_LOADS
except ImportError:             # pragma: no cover (the fallback is tested by setting FAST_LOADS = None)
    FAST_LOADS = None
    _FastJSONError = ValueError

SCHEMA_VERSION = 1


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


def strict_json(obj, **kw) -> str:
    """JSON that every parser reads (RFC 8259): no NaN or Infinity tokens, which Python's json
    writes by default. A non-finite float becomes null, the JSON for "no number"; reports hold
    none (run files are refused with one, and what reports compute from finite times is
    finite), so this is a last guard. Other values json cannot write (a set, a path) as str."""
    try:
        return _dumps(obj, **kw)
    except ValueError:          # a NaN or an infinity somewhere: only then walk the whole object
        return _dumps(_finite_only(obj), **kw)


def _dumps(obj, **kw) -> str:
    if kw.get("indent") is None:
        return json.dumps(obj, allow_nan=False, default=str, **kw)
    if set(kw) == {"indent"}:
        # Python's indenting encoder is Python code: kernelmark/jsonindent.py writes the same
        # text several times faster, where it can (Unusual: only Python's encoder can).
        try:
            return jsonindent.dumps(obj, kw["indent"])
        except jsonindent.Unusual:
            pass
    # Indented JSON is made by Python's encoder, which json.dumps gathers into a list of every
    # small piece before joining them: for compare's 100,000 pairs, half a gigabyte. The same
    # text, written piece by piece into one buffer.
    buf = io.StringIO()
    for piece in json.JSONEncoder(allow_nan=False, default=str, **kw).iterencode(obj):
        buf.write(piece)
    return buf.getvalue()


def _finite_only(x):
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _finite_only(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite_only(v) for v in x]
    return x


def _jsonable(x):
    import math
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    if isinstance(x, (set, tuple)):
        return list(x)
    return str(x)


_REQUIRED_HEADER = ("schema", "device", "peaks", "suite", "started")
_REQUIRED_RECORD = ("op", "shape", "dtype", "backend", "status")
MAX_LINE_BYTES = 64 << 20       # a record with 1000 samples is about 10 kB: a longer line is not ours


class RunReader:
    """A run file read lazily, for files too large to hold in memory.

    The header is read and checked on opening; ``records()`` reads the records one at a
    time, each checked as it is read, and ``record_at(where)`` reads one again from the
    place ``records(where=True)`` gave for it. ``footer`` is known once ``records()`` has
    run to the end of the file. ``keep_samples=False`` drops ``timing.samples_us`` from each
    record once it has been checked, for readers that never look at the samples;
    ``sample_arrays`` gives them as float64 numpy arrays (compare), not lists.
    """

    def __init__(self, path: str, keep_samples: bool = True, sample_arrays: bool = False,
                 prefetch: bool = False):
        self.path = str(path)
        self.keep_samples, self.sample_arrays = keep_samples, sample_arrays
        self.prefetch = prefetch        # read by a second process, if large (kernelmark/prefetch.py)
        self._check = _check_body_line_arrays if sample_arrays and keep_samples else _check_body_line
        # Samples wanted as arrays, or not at all: read by simdjson where it is installed
        # (kernelmark/samplecut.py), never differently.
        self._cut = (samplecut.Reader(FAST_LOADS) if FAST_LOADS is not None and samplecut.AVAILABLE
                     and (sample_arrays or not keep_samples) else None)
        self.footer: Optional[dict] = None
        self.warnings: list = []
        self._random = None
        try:
            # A 1 MiB buffer: with the default 8 KiB, every line of 1,000 samples (10 kB) is
            # longer than the buffer, and readline took 4x as long.
            self._f = open(path, "rb", buffering=1 << 20)
        except FileNotFoundError:
            raise RunFileError(f"{path}: no such run file") from None
        except IsADirectoryError:
            raise RunFileError(f"{path}: is a directory, not a run file") from None
        except OSError as e:
            raise RunFileError(f"{path}: cannot read it as a run file ({e.strerror or e})") from None
        raw = self._readline(1)
        if not raw:
            self.close()
            raise RunFileError(f"{path}: empty file, not a run file")
        try:
            header = self._parse(raw, 1, _check_header_line)
            if header is None:
                raise RunFileError(f"{path}: no complete line")
        except RunFileError:
            self.close()
            raise
        self.header = header
        self._body = self._f.tell()

    @property
    def device(self) -> dict:
        return self.header["device"]

    @property
    def complete(self) -> bool:
        return self.footer is not None

    def records(self, where: bool = False, resume: Optional[tuple] = None,
                prefetch: Optional[bool] = None) -> Iterator:
        """Each record, checked; with ``where``, (place, record) pairs for record_at.
        ``resume``: (offset, line) of the line to start at (the header's end otherwise);
        ``prefetch``: read by a second process where the file is large (the reader's own
        setting unless given)."""
        from kernelmark import prefetch as second
        if (self.prefetch if prefetch is None else prefetch) and resume is None and second.wanted(self.path):
            yield from second.records(self, where)
            return
        offset, line = resume or (self._body, 1)
        self._f.seek(offset)
        footer = None
        while True:
            offset = self._f.tell()
            raw = self._readline(line + 1)
            if not raw:
                break
            line += 1
            obj = self._parse(raw, line, self._check)
            if obj is None:         # a torn last line: the run was killed mid-write
                break
            if obj["type"] == "record":
                rec = self._slim(obj)
                yield ((offset, len(raw), line), rec) if where else rec
            else:
                footer = obj
        self.footer = footer

    def record_at(self, where: tuple) -> dict:
        """The record at a place records(where=True) gave, read and checked again."""
        offset, size, line = where
        if self._random is None:
            self._random = open(self.path, "rb")
        self._random.seek(offset)
        raw = self._random.read(size)
        obj = self._parse(raw, line, self._check) if len(raw) == size and raw.endswith(b"\n") else None
        if obj is None or obj.get("type") != "record":
            raise RunFileError(f"{self.path}:{line}: the file changed while it was being read")
        return self._slim(obj)

    def _slim(self, rec: dict) -> dict:
        if not self.keep_samples and isinstance(rec.get("timing"), dict):
            rec["timing"].pop("samples_us", None)
        return rec

    def _readline(self, line: int) -> bytes:
        raw = self._f.readline(MAX_LINE_BYTES + 1)
        if len(raw) > MAX_LINE_BYTES:
            raise RunFileError(f"{self.path}:{line}: a line longer than {MAX_LINE_BYTES >> 20} MiB: "
                               "not a kernelmark run file line")
        return raw

    def _parse(self, raw: bytes, line: int, check) -> Optional[dict]:
        """The line's JSON object, checked (``check(obj, where)`` after check_values); None for
        a torn last line (with a warning)."""
        if self._cut is not None and check is not _check_header_line:
            obj = self._cut.record(raw)
            if obj is not None:
                return obj
        where = f"{self.path}:{line}"
        if FAST_LOADS is not None:
            try:
                obj = FAST_LOADS(raw)
                if type(obj) is dict:
                    return self._checked(obj, where, check, WIDE)
            except (_FastJSONError, RunFileError, WideNumber):
                pass            # read again below: refused, if at all, as Python's json reads it
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise RunFileError(f"{where}: cannot read it as a run file (not UTF-8 text: byte {e.start} "
                               f"of the line)") from None
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            if not raw.endswith(b"\n"):       # the last line, and no newline: cut short
                self.warnings.append(f"{where}: truncated last line dropped (run interrupted mid-write?)")
                return None
            raise RunFileError(f"{where}: not JSON ({e.msg})" +
                               (" -- this is not a kernelmark run file" if line == 1 else "")) from None
        except RecursionError:
            raise RunFileError(f"{where}: nested too deeply to be a run file line") from None
        except ValueError:          # an int past Python's digit limit (sys.get_int_max_str_digits)
            raise RunFileError(f"{where}: a number of more than {sys.get_int_max_str_digits()} digits: "
                               "not a measurement") from None
        if not isinstance(obj, dict):
            raise RunFileError(f"{where}: expected a JSON object")
        return self._checked(obj, where, check, math.inf)

    @staticmethod
    def _checked(obj: dict, where: str, check, wide: float) -> dict:
        """``obj`` once checked: a record of a layout that passed before by its values, in one
        loop (kernelmark/layoutcheck.py); anything else by every check (check_values, with
        ``wide`` for the parser that read it, then ``check``)."""
        lay = layoutcheck.layout(obj) if check is not _check_header_line else None
        if lay is not None and layoutcheck.check(obj, lay, check is _check_body_line_arrays):
            return obj
        check_values(obj, where, wide=wide)
        check(obj, where)
        layoutcheck.learn(lay)
        return obj

    def close(self) -> None:
        for f in (self._f, self._random):
            if f is not None:
                f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def load(path: str, keep_samples: bool = True) -> Run:
    """Read and validate a whole run file. A truncated last line (a run killed mid-write) is
    dropped with a warning; anything else malformed raises RunFileError."""
    with RunReader(path, keep_samples) as reader:
        records = list(reader.records())
        for w in reader.warnings:
            warnings.warn(w)
        return Run(reader.path, reader.header, records, reader.footer, reader.warnings)


def _check_body_line(obj: dict, where: str, arrays: bool = False) -> None:
    """A line after the header: a record or the footer."""
    kind = obj.get("type")
    if kind == "record":
        miss = [k for k in _REQUIRED_RECORD if k not in obj]
        if miss:
            raise RunFileError(f"{where}: record lacks {', '.join(miss)}")
        check_record(obj, where, arrays)
    elif kind == "footer":
        check_footer(obj, where)
    else:
        raise RunFileError(f"{where}: unknown line type {kind!r}")


def _check_body_line_arrays(obj: dict, where: str) -> None:
    _check_body_line(obj, where, arrays=True)


def _check_header_line(header: dict, where: str) -> None:
    if header.get("type") != "header":
        raise RunFileError(f"{where}: first line is not a kernelmark run header")
    schema = header.get("schema")
    if schema != SCHEMA_VERSION:
        raise RunFileError(f"{where}: run file schema version {schema!r}; this kernelmark reads version "
                           f"{SCHEMA_VERSION}")
    missing = [k for k in _REQUIRED_HEADER if k not in header]
    if missing:
        raise RunFileError(f"{where}: header lacks {', '.join(missing)}")
    check_header(header, where)


def slug(s: str) -> str:
    """A name fit for a run file's name: letters, digits and dashes, at most 40 characters."""
    import re
    return re.sub(r"[^A-Za-z0-9]+", "-", s).strip("-").lower()[:40] or "device"
