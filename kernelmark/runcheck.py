"""What each line of a run file may hold: the checks results.RunReader makes of every line it
reads, so that reports can trust what they are given.

Beyond field types, the bounds: every number finite (Python's json reads NaN, Infinity and
1e999), ints within 64 bits, at most MAX_DEPTH levels of nesting, timings within
TIME_RANGE_US. The writer stays far inside every bound; they are there so that a crafted or
damaged file is refused with its line and field, instead of comparing as `unchanged` (a NaN
median), as a ratio of 1 (an infinite one), or breaking whatever reads it later.
"""

from __future__ import annotations

import math

from kernelmark.errors import RunFileError

STATUSES = ("ok", "checked", "failed_check", "unsupported", "skipped", "error", "oom", "crashed", "timeout")
MAX_DEPTH = 16                  # the schema nests 4 deep (header.device.datasheet.tflops)
INT_BOUND = 2 ** 63             # ints must fit 64 bits (the history database stores them so)
TIME_RANGE_US = (1e-6, 1e12)    # a femtosecond to 11.6 days: anything outside was not measured


class WideNumber(Exception):
    """A float of magnitude 2**63 or more, found by check_values(..., wide=WIDE): what a JSON
    parser that turns integers beyond 64 bits into floats (orjson) gives for one. Not a
    refusal: results.RunReader reads the line again with Python's json, which keeps it an
    int, for this module to refuse it (or the float to pass) as it always has."""


WIDE = float(INT_BOUND)


def check_values(obj: dict, where: str, wide: float = math.inf) -> None:
    """Every number finite and every int within 64 bits, at most MAX_DEPTH levels deep.
    Walks without recursion; the samples (flat lists of numbers) are checked on their own.
    ``wide``: a finite float of that magnitude or more raises WideNumber."""
    timing = obj.get("timing")
    flat = id(timing.get("samples_us")) if isinstance(timing, dict) else None
    if _values_fine(obj, flat, wide):
        return
    _check_values_named(obj, where, wide, flat)


def _values_fine(obj: dict, flat, wide: float) -> bool:
    """check_values' walk without the names it needs only to say what is wrong: True when
    it would pass (a third faster: most lines pass); False, and it walks again, naming."""
    stack = [(obj, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            return False
        for v in (node.values() if type(node) is dict else node):
            t = type(v)
            if t is float:
                if not -wide < v < wide:
                    return False
            elif t is int:
                if not -INT_BOUND <= v < INT_BOUND:
                    return False
            elif (t is dict or t is list) and id(v) != flat:
                stack.append((v, depth + 1))
    return True


def _check_values_named(obj: dict, where: str, wide: float, flat) -> None:
    stack = [(obj, "", 1)]
    while stack:
        node, prefix, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise RunFileError(f"{where}: {prefix.rstrip('.')} nests deeper than {MAX_DEPTH} levels")
        items = node.items() if type(node) is dict else enumerate(node)
        for k, v in items:
            t = type(v)
            if t is float:
                if not -wide < v < wide:        # with wide = inf: not finite (NaN fails both)
                    if math.isfinite(v):
                        raise WideNumber(where)
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


def check_header(h: dict, where: str) -> None:
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


# Per field of a record and of its timing: (key, the JSON types it may have, the range a
# number must be in or None, whether it must be there). Checked in one loop per line: a
# 100,000-record file is checked in seconds.
_NONE = type(None)
_S, _SN, _I, _IN = frozenset({str}), frozenset({str, _NONE}), frozenset({int}), frozenset({int, _NONE})
_F, _FN = frozenset({int, float}), frozenset({int, float, _NONE})
_BN, _DN = frozenset({bool, _NONE}), frozenset({dict, _NONE})
_LOW, _HIGH = TIME_RANGE_US
_RECORD_FIELDS = (
    ("op", _S, None, True), ("dtype", _S, None, True), ("backend", _S, None, True), ("status", _S, None, True),
    ("shape", frozenset({dict}), None, True),
    *((k, _SN, None, False) for k in ("label", "reason", "bound", "detail", "roof_dtype")),
    *((k, _IN, None, False) for k in ("case_index", "seed", "suite_line")),
    *((k, _FN, (0, math.inf), False) for k in _RATES),
    ("noisy", _BN, None, False), ("check", _DN, None, False), ("health", _DN, None, False),
    ("timing", _DN, None, False),
)
_TIMING_FIELDS = (
    # a number when present, never null: export and history read them
    *((k, _F, (_LOW, _HIGH), False) for k in _TIMES),
    ("iqr_us", _FN, (0, _HIGH), False), ("ci_rel", _F, (0, math.inf), False), ("wall_s", _FN, (0, math.inf), False),
    ("n", _I, (1, math.inf), False), ("inner", _I, (1, math.inf), False),
    ("method", _SN, None, False), ("cache", _SN, None, False), ("note", _SN, None, False),
    ("converged", _BN, None, False), ("samples_us", frozenset({list}), None, False),
    ("groups", frozenset({list, _NONE}), None, False),
)
_ABSENT = object()


# Signatures that passed _fields: (the spec, a dict's keys in order, their values' types) ->
# the (key, low, high) whose values must still be within bounds. The type and presence
# checks depend on nothing else, and a run file's records have a few dozen layouts between
# them: a record of a layout seen before needs only its bounds compared (a third of the
# time). Cleared when it holds _SIGNATURES_HELD (a crafted file of ever-new layouts).
_SIGNATURES: dict = {}
_SIGNATURES_HELD = 4096


def _fields(obj: dict, spec: tuple, where: str) -> None:
    sig = (id(spec), tuple(obj), tuple(map(type, obj.values())))
    bounded = _SIGNATURES.get(sig)
    if bounded is not None:
        for key, low, high in bounded:
            if not low <= obj[key] <= high:
                break
        else:
            return
    _fields_named(obj, spec, where)         # says what is wrong, in the spec's order
    if bounded is None:
        if len(_SIGNATURES) >= _SIGNATURES_HELD:
            _SIGNATURES.clear()
        _SIGNATURES[sig] = tuple((key, bounds[0], bounds[1]) for key, _, bounds, _ in spec
                                 if bounds is not None and key in obj and obj[key] is not None)


def _fields_named(obj: dict, spec: tuple, where: str) -> None:
    for key, types, bounds, required in spec:
        v = obj.get(key, _ABSENT)
        if v is _ABSENT:
            if required:
                raise RunFileError(f"{where}: {key} is missing")
        elif type(v) not in types:
            raise RunFileError(f"{where}: {key} has the wrong type ({type(v).__name__})")
        elif bounds is not None and v is not None and not bounds[0] <= v <= bounds[1]:
            raise RunFileError(f"{where}: {key} is {v:g}, outside {bounds[0]:g} to {bounds[1]:g}")


def check_record(r: dict, where: str, arrays: bool = False) -> None:
    """``arrays``: the samples, once checked, become a float64 numpy array in the record
    (compare computes on them as arrays; numpy checks an array faster than Python a list)."""
    _fields(r, _RECORD_FIELDS, where)
    _expect(r, "inputs", _OPT_DICT, where)
    _check_energy(r, where)
    _check_pruned(r, where)
    if "covers" in r and not (type(r["covers"]) is list and all(type(x) is str for x in r["covers"])):
        raise RunFileError(f"{where}: covers must be a list of op names")
    if r["status"] not in STATUSES:
        raise RunFileError(f"{where}: unknown status {r['status']!r}")
    for k, v in r["shape"].items():
        if not isinstance(v, (int, float, str, bool)):
            raise RunFileError(f"{where}: shape parameter {k} has the wrong type")
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
    t = r.get("timing")
    if r["status"] == "ok" and t is None:
        raise RunFileError(f"{where}: timing is missing")
    if t is not None:
        _check_timing(t, r["status"] == "ok", f"{where} timing", arrays)


def _check_pruned(r: dict, where: str) -> None:
    """"pruned": the autotune configs left out of tuning, each {kernel, config, why} in words
    (reports print them in the notes under the table)."""
    if "pruned" not in r:
        return
    p = r["pruned"]
    if type(p) is not list:
        raise RunFileError(f"{where}: pruned has the wrong type ({type(p).__name__}); a list of "
                           "{kernel, config, why}")
    for i, x in enumerate(p):
        if type(x) is not dict:
            raise RunFileError(f"{where}: pruned[{i}] has the wrong type ({type(x).__name__})")
        for key in ("kernel", "config", "why"):
            if type(x.get(key)) is not str or not x[key].strip():
                raise RunFileError(f"{where}: pruned[{i}].{key} must be a non-empty string")


def _check_timing(t: dict, timed: bool, where: str, arrays: bool = False) -> None:
    if timed:
        for key in ("median_us", "ci_rel"):
            if key not in t:
                raise RunFileError(f"{where}: {key} is missing")
    _fields(t, _TIMING_FIELDS, where)
    _expect(t, "stall", _OPT_STR, where)
    if not all(type(g) is int and g > 0 for g in t.get("groups") or ()):
        raise RunFileError(f"{where}: groups must be positive sample counts")
    s = t.get("samples_us")
    if s:
        if _usual_samples(t, s, arrays):
            return
        # What _usual_samples does not vouch for: checked as a list, naming what is wrong.
        if not set(map(type, s)) <= {int, float}:
            raise RunFileError(f"{where}: samples_us must be numbers")
        if arrays and _as_array(t):
            return
        try:
            fine = math.isfinite(sum(s)) and _LOW <= min(s) and max(s) <= _HIGH
        except OverflowError:       # an int past a float's range (1e308) among the samples
            fine = False
        if not fine:
            bad = next(x for x in s if not _LOW <= x <= _HIGH)     # NaN fails both comparisons
            raise RunFileError(f"{where}: samples_us holds {bad}, not a time of {_LOW:g} to {_HIGH:g} µs")


def _usual_samples(t: dict, s: list, arrays: bool) -> bool:
    """The usual samples, vouched for by numpy in one conversion: True when every sample is
    a number (an int or a float, not a bool) and a time in TIME_RANGE_US, and then, with
    ``arrays``, t["samples_us"] is their float64 array (what _as_array makes of them). False
    leaves them to the list checks, which decide and name what is wrong (half the cost of
    those on 1,000 samples; the list checks now only see what this does not take).

    numpy infers float64 for a list only of floats, ints within 64 bits and bools: a str,
    None, a list or a larger int give another dtype, or an error. A bool becomes 1.0 or 0.0
    there, so samples holding a 1.0 go the list way, which tells True from 1.0 (0.0 is not
    a time). Ints in range convert exactly, as in _as_array."""
    import numpy as np
    try:
        a = np.array(s)
    except (ValueError, TypeError, OverflowError):
        return False
    # min and max are NaN where any sample is NaN, and then fail the comparisons
    if a.dtype != np.float64 or a.ndim != 1 or not (_LOW <= a.min() and a.max() <= _HIGH) or (a == 1.0).any():
        return False
    if arrays:
        t["samples_us"] = a
    return True


def _as_array(t: dict) -> bool:
    """Replace the samples (numbers, already checked to be) by a float64 array if each is a
    time in TIME_RANGE_US; False, leaving the list, otherwise (the list check names the bad
    one) or when a sample is an int too large for a float."""
    import numpy as np
    try:
        a = np.array(t["samples_us"], dtype=float)
    except OverflowError:
        return False
    # min and max are NaN where any sample is NaN, and then fail the comparisons
    if not (_LOW <= a.min() and a.max() <= _HIGH):
        return False
    t["samples_us"] = a
    return True


def check_footer(f: dict, where: str) -> None:
    _expect(f, "wall_s", _OPT_NUM, f"{where} footer")
    _expect(f, "deadline_s", _OPT_NUM, f"{where} footer")
    _expect(f, "not_run", int, f"{where} footer")
    if f.get("not_run") is not None and f["not_run"] < 0:
        raise RunFileError(f"{where} footer: not_run must not be negative")


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
    for key in ("gross_j_per_call", "net_j_per_call", "window_s", "energy_j", "temp_c_before", "temp_c_after"):
        _expect(e, key, _OPT_NUM, w)
    # The reports add these up into per-token figures and their uncertainty: none may be
    # negative (a net J per call may: a call that costs less than the idle noise).
    for key in ("idle_w", "avg_w", "uncertainty_rel", "net_uncertainty_rel", "resolution_j", "update_interval_s",
                "calls"):
        _at_least(e, key, 0, w)
    if e["status"] == "ok":
        for key in ("gross_j_per_call", "window_s", "calls"):
            _expect(e, key, _NUM, w, required=True)
            if e[key] <= 0:
                raise RunFileError(f"{w}: {key} must be positive (got {e[key]})")
    elif not e.get("reason"):
        raise RunFileError(f"{w}: status {e['status']} needs a reason")
