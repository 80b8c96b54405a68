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
     median_us, mean_us, min_us, max_us, iqr_us, ci_low_us, ci_high_us, ci_rel, samples_us},
     "tflops", "gbps", "bound", "pct_of_peak", "pct_of_datasheet", "noisy", "case_index", "suite_line",
     "detail": what the backend chose (an autotuned Triton kernel's config), "health": {NVML state}}
    {"type": "footer", "finished": ISO time, "records": int, "wall_s": float}

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
import math
import os
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional

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
    """Appends lines to a run file, each flushed and fsynced before the next case."""

    def __init__(self, path: str, append: bool = False, count: int = 0):
        """``append``: continue an interrupted run file (a torn last line is cut off first)."""
        self.path = Path(path)
        if self.path.is_dir():
            raise RunFileError(f"output path {self.path} is a directory")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if append:
                _cut_torn_tail(self.path)
            self._f = open(self.path, "a" if append else "w", encoding="utf-8")
        except OSError as e:
            raise RunFileError(f"cannot write the run file {self.path}: {e.strerror or e}") from None
        self.count = count

    def _write(self, obj: dict) -> None:
        self._f.write(json.dumps(obj, allow_nan=False, default=_jsonable) + "\n")
        self._f.flush()
        os.fsync(self._f.fileno())

    def header(self, header: dict) -> None:
        self._write({"type": "header", "schema": SCHEMA_VERSION, **header})

    def record(self, rec: dict) -> None:
        self._write({"type": "record", **rec})
        self.count += 1

    def footer(self, footer: dict) -> None:
        self._write({"type": "footer", "records": self.count, **footer})

    def close(self) -> None:
        self._f.close()


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
        return json.dumps(obj, allow_nan=False, default=str, **kw)
    except ValueError:          # a NaN or an infinity somewhere: only then walk the whole object
        return json.dumps(_finite_only(obj), allow_nan=False, default=str, **kw)


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

# What a line of a run file may be, beyond its field types (checked below). The writer
# stays far inside every bound; they are there so that a crafted or damaged file is refused
# with its line number instead of breaking whatever reads it later.
MAX_LINE_BYTES = 64 << 20       # a record with 1000 samples is about 10 kB
MAX_DEPTH = 16                  # the schema nests 4 deep (header.device.datasheet.tflops)
INT_BOUND = 2 ** 63             # ints must fit 64 bits (the history database stores them so)
TIME_RANGE_US = (1e-6, 1e12)    # a femtosecond to 11.6 days: anything outside was not measured


class RunReader:
    """A run file read lazily, for files too large to hold in memory.

    The header is read and checked on opening; ``records()`` reads the records one at a
    time, each checked as it is read, and ``record_at(where)`` reads one again from the
    place ``records(where=True)`` gave for it. ``footer`` is known once ``records()`` has
    run to the end of the file. ``keep_samples=False`` drops ``timing.samples_us`` from each
    record once it has been checked, for readers that never look at the samples.
    """

    def __init__(self, path: str, keep_samples: bool = True):
        self.path = str(path)
        self.keep_samples = keep_samples
        self.footer: Optional[dict] = None
        self.warnings: list = []
        self._random = None
        try:
            self._f = open(path, "rb")
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
            header = self._parse(raw, 1)
            if header is None:
                raise RunFileError(f"{path}: no complete line")
            _check_header_line(header, f"{path}:1")
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

    def records(self, where: bool = False) -> Iterator:
        """Each record, checked; with ``where``, (place, record) pairs for record_at."""
        self._f.seek(self._body)
        line, footer = 1, None
        while True:
            offset = self._f.tell()
            raw = self._readline(line + 1)
            if not raw:
                break
            line += 1
            obj = self._parse(raw, line)
            if obj is None:         # a torn last line: the run was killed mid-write
                break
            kind = obj.get("type")
            if kind == "record":
                rec = self._record(obj, line)
                yield ((offset, len(raw), line), rec) if where else rec
            elif kind == "footer":
                footer = obj
            else:
                raise RunFileError(f"{self.path}:{line}: unknown line type {kind!r}")
        self.footer = footer

    def record_at(self, where: tuple) -> dict:
        """The record at a place records(where=True) gave, read and checked again."""
        offset, size, line = where
        if self._random is None:
            self._random = open(self.path, "rb")
        self._random.seek(offset)
        raw = self._random.read(size)
        obj = self._parse(raw, line) if len(raw) == size and raw.endswith(b"\n") else None
        if obj is None or obj.get("type") != "record":
            raise RunFileError(f"{self.path}:{line}: the file changed while it was being read")
        return self._record(obj, line)

    def _record(self, obj: dict, line: int) -> dict:
        where = f"{self.path}:{line}"
        miss = [k for k in _REQUIRED_RECORD if k not in obj]
        if miss:
            raise RunFileError(f"{where}: record lacks {', '.join(miss)}")
        _check_record(obj, where)
        if not self.keep_samples and isinstance(obj.get("timing"), dict):
            obj["timing"].pop("samples_us", None)
        return obj

    def _readline(self, line: int) -> bytes:
        raw = self._f.readline(MAX_LINE_BYTES + 1)
        if len(raw) > MAX_LINE_BYTES:
            raise RunFileError(f"{self.path}:{line}: a line longer than {MAX_LINE_BYTES >> 20} MiB: "
                               "not a kernelmark run file line")
        return raw

    def _parse(self, raw: bytes, line: int) -> Optional[dict]:
        """The line's JSON object; None for a torn last line (with a warning)."""
        where = f"{self.path}:{line}"
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
        _check_values(obj, where)
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
    _check_header(header, where)


def _check_values(obj: dict, where: str) -> None:
    """Every number finite and every int within 64 bits, at most MAX_DEPTH levels deep.
    Walks without recursion; the samples (flat lists of numbers) are checked on their own."""
    timing = obj.get("timing")
    flat = id(timing.get("samples_us")) if isinstance(timing, dict) else None
    stack = [(obj, "", 1)]
    while stack:
        node, prefix, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise RunFileError(f"{where}: {prefix.rstrip('.') or 'the line'} nests deeper than {MAX_DEPTH} levels")
        items = node.items() if type(node) is dict else enumerate(node)
        for k, v in items:
            t = type(v)
            if t is float:
                if not math.isfinite(v):
                    raise RunFileError(f"{where}: {_name(prefix, k)} is {v}: a run file holds finite numbers only")
            elif t is int:
                if not -INT_BOUND <= v < INT_BOUND:
                    raise RunFileError(f"{where}: {_name(prefix, k)} is an integer beyond 64 bits")
            elif (t is dict or t is list) and id(v) != flat:
                stack.append((v, _name(prefix, k) + ("." if t is dict else ""), depth + 1))


def _name(prefix: str, key) -> str:
    return f"{prefix.rstrip('.')}[{key}]" if isinstance(key, int) else f"{prefix}{key}"


# ---------------------------------------------------------------- field types
# Reports trust what load() returns, so every field they read is type-checked here, and
# every timing is a positive, finite time in TIME_RANGE_US (a NaN median would compare as
# unchanged; an infinite one would give a ratio of 1).

_NUM = (int, float)
_OPT_NUM = (int, float, type(None))
_OPT_STR = (str, type(None))
_OPT_DICT = (dict, type(None))
_OPT_BOOL = (bool, type(None))
_TIMES = ("median_us", "mean_us", "min_us", "max_us", "ci_low_us", "ci_high_us")
_RATES = ("flops", "bytes", "intensity", "tflops", "gbps", "pct_of_peak", "pct_of_datasheet")


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


def _at_least(obj: dict, key: str, low: float, where: str, high: float = math.inf) -> None:
    """A number (or null) within [low, high], when present."""
    _expect(obj, key, _OPT_NUM, where)
    v = obj.get(key)
    if v is not None and not low <= v <= high:
        raise RunFileError(f"{where}: {key} is {v:g}, outside {low:g} to {high:g}")


def _check_header(h: dict, where: str) -> None:
    for key in ("device", "peaks", "suite"):
        _expect(h, key, dict, where, required=True)
    _expect(h, "started", str, where, required=True)
    for key in ("kernelmark", "run_id"):
        _expect(h, key, _OPT_STR, where)
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
        ds = d["datasheet"]
        _check_peaks(ds, f"{where} device datasheet")
        _expect(ds, "name", str, f"{where} device datasheet", required=True)
        _expect(ds, "copy_gbps", _NUM, f"{where} device datasheet", required=True)
        _expect(ds, "tflops", dict, f"{where} device datasheet", required=True)
    _check_peaks(h["peaks"], f"{where} peaks")
    _expect(h["peaks"], "copy_gbps", _NUM, f"{where} peaks")
    _expect(h["suite"], "name", _OPT_STR, f"{where} suite")


def _check_peaks(p: dict, where: str) -> None:
    for key in ("copy_gbps", "h2d_gbps", "d2h_gbps"):
        _at_least(p, key, 0, where)
    _expect(p, "tflops", _OPT_DICT, where)
    for k, v in (p.get("tflops") or {}).items():
        if isinstance(v, bool) or not isinstance(v, _NUM) or v < 0:
            raise RunFileError(f"{where}: tflops.{k} is not a non-negative number")


def _check_record(r: dict, where: str) -> None:
    for key in ("op", "dtype", "backend", "status"):
        _expect(r, key, str, where, required=True)
    if r["status"] not in STATUSES:
        raise RunFileError(f"{where}: unknown status {r['status']!r}")
    _expect(r, "shape", dict, where, required=True)
    for k, v in r["shape"].items():
        if not isinstance(v, (int, float, str, bool)):
            raise RunFileError(f"{where}: shape parameter {k} has the wrong type")
    for key in ("label", "reason", "bound", "detail"):
        _expect(r, key, _OPT_STR, where)
    for key in ("case_index", "seed", "suite_line"):
        _expect(r, key, (int, type(None)), where)
    for key in _RATES:
        _at_least(r, key, 0, where)
    _expect(r, "noisy", _OPT_BOOL, where)
    for key in ("check", "health"):
        _expect(r, key, _OPT_DICT, where)
    if r.get("check") is not None:
        c = r["check"]
        _expect(c, "detail", _OPT_STR, f"{where} check")
        _expect(c, "passed", _OPT_BOOL, f"{where} check")
        for key in ("rel_l2", "max_abs", "max_rel", "tolerance"):     # "inf" / "nan" as text by design
            _expect(c, key, (int, float, str, type(None)), f"{where} check")
    if r.get("health") is not None:
        h = r["health"]
        _expect(h, "throttle_reasons", list, f"{where} health")
        if not all(isinstance(x, str) for x in h.get("throttle_reasons", [])):
            raise RunFileError(f"{where} health: throttle_reasons must be words")
        for key in ("throttled", "below_app_clocks"):
            _expect(h, key, _OPT_BOOL, f"{where} health")
    if r["status"] == "ok":
        _expect(r, "timing", dict, where, required=True)
    if isinstance(r.get("timing"), dict):
        _check_timing(r["timing"], r["status"] == "ok", f"{where} timing")
    else:
        _expect(r, "timing", _OPT_DICT, where)


def _check_timing(t: dict, timed: bool, where: str) -> None:
    low, high = TIME_RANGE_US
    for key in ("median_us", "ci_rel"):
        _expect(t, key, _NUM, where, required=timed)
    for key in _TIMES:
        _expect(t, key, _NUM, where)        # a number when present: export and history read them
        _at_least(t, key, low, where, high)
    _at_least(t, "iqr_us", 0, where, high)
    _at_least(t, "ci_rel", 0, where)
    _at_least(t, "wall_s", 0, where)
    for key in ("n", "inner"):
        _expect(t, key, int, where)
        _at_least(t, key, 1, where)
    for key in ("method", "cache", "note"):
        _expect(t, key, _OPT_STR, where)
    _expect(t, "converged", _OPT_BOOL, where)
    _expect(t, "samples_us", list, where)
    _expect(t, "groups", (list, type(None)), where)
    if not all(type(g) is int and g > 0 for g in t.get("groups") or ()):
        raise RunFileError(f"{where}: groups must be positive sample counts")
    s = t.get("samples_us")
    if s:
        # One pass in C for the common case; the slow path only finds what to name.
        if not set(map(type, s)) <= {int, float}:
            raise RunFileError(f"{where}: samples_us must be numbers")
        if not (math.isfinite(sum(s)) and low <= min(s) and max(s) <= high):
            bad = next(x for x in s if not (math.isfinite(x) and low <= x <= high))
            raise RunFileError(f"{where}: samples_us holds {bad}, not a time of {low:g} to {high:g} µs")


def slug(s: str) -> str:
    """A name fit for a run file's name: letters, digits and dashes, at most 40 characters."""
    import re
    return re.sub(r"[^A-Za-z0-9]+", "-", s).strip("-").lower()[:40] or "device"
