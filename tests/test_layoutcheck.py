"""kernelmark/layoutcheck.py never lets through what runcheck refuses: every field of the
published runs' records (and of a GPU-like one) is spoiled, every element of their lists
too, and each spoiled record that the layout check passes must pass runcheck's own checks,
giving the same record. And an ordinary run file is read the fast way."""
import copy
import json
import sys
import math
from pathlib import Path

import numpy as np
import pytest

from kernelmark import layoutcheck, results, runcheck

sys.path.insert(0, str(Path(__file__).parent))
import repeated_run  # noqa: E402

PUBLISHED = repeated_run.PUBLISHED

SPOILERS = [None, True, False, 0, -1, 1, 0.0, -0.0, 1e-300, -1.5, 2.5, 1e-6, math.nextafter(1e-6, 0), 1e12,
            math.nextafter(1e12, math.inf), 2 ** 63 - 1, 2 ** 63, 2 ** 64 - 1, -2 ** 63, -2 ** 63 - 1,
            float(2 ** 63), math.nextafter(float(2 ** 63), 0), -float(2 ** 63), 1.5e300, math.inf, math.nan,
            "x", "", "ok", "fp32", [], [1.0], ["x"], [2.5, 3.5], [1, 2], [0], {}, {"a": 1}, {"a": [1, {"b": 2}]}]


def _gpu_like() -> dict:
    return {"type": "record", "op": "gemm", "label": "l", "shape": {"m": 64, "n": 80, "layout": "nt", "tp": True},
            "dtype": "bf16", "case_index": 3, "suite_line": 12, "flops": 1e9, "bytes": 4096, "intensity": 2.5,
            "seed": 7, "backend": "triton",
            "check": {"passed": True, "rel_l2": 1e-3, "max_abs": "inf", "max_rel": None, "tolerance": 0.016,
                      "detail": "", "elementwise": {"rtol": 0.016, "atol_rms": 0.01}},
            "timing": {"method": "cuda_graph", "inner": 20, "n": 4, "median_us": 5.5, "mean_us": 5.6,
                       "min_us": 5.4, "max_us": 5.9, "iqr_us": 0.1, "ci_low_us": 5.45, "ci_high_us": 5.6,
                       "ci_rel": 0.01, "converged": True, "stall": None, "groups": [2, 2],
                       "waited": {"method": "schedstat run delay", "samples_waited": 0, "median_share": 0.0},
                       "samples_us": [5.4, 5.5, 5.6, 5.9]},
            "health": {"throttled": False, "below_app_clocks": None, "throttle_reasons": ["none"], "sm_mhz": 1980},
            "noisy": False, "tflops": 180.5, "gbps": None, "pct_of_peak": 18.2, "status": "ok"}


def _records() -> list:
    out = [_gpu_like()]
    for p in PUBLISHED:
        with open(p) as f:
            lines = [json.loads(x) for x in f]
        out += [x for x in lines if x.get("type") == "record"]
    # one of each status and set of dicts and lists (each op's shape has its own layout: one will do)
    seen, picked = set(), []
    for r in out:
        kind = (r["status"], tuple(k for k in r if isinstance(r[k], (dict, list))),
                tuple(k for k, v in (r.get("timing") or {}).items() if isinstance(v, (dict, list))))
        if kind not in seen:
            seen.add(kind)
            picked.append(r)
            if (r.get("timing") or {}).get("samples_us"):
                r["timing"]["samples_us"] = r["timing"]["samples_us"][:5]     # copied thousands of times
    return picked


def _mutations(r: dict):
    """Copies of ``r`` with one field, or one element of a list, spoiled (or removed)."""
    places = [(None, k) for k in r] + [(k, j) for k in layoutcheck._NESTED if isinstance(r.get(k), dict)
                                        for j in r[k]]
    places += [((k, j), i) for k, inner in layoutcheck._INNER.items() for j in inner
               if isinstance(r.get(k), dict) and isinstance(r[k].get(j), dict) for i in r[k][j]]
    for where, key in places:
        for v in SPOILERS + ["<gone>"]:
            m = copy.deepcopy(r)
            d = m if where is None else m[where] if isinstance(where, str) else m[where[0]][where[1]]
            if v == "<gone>":
                del d[key]
            else:
                d[key] = copy.deepcopy(v)
            yield m
    for where, key in layoutcheck._LISTS:
        lst = (r.get(where) or {}).get(key) if isinstance(r.get(where), dict) else None
        if not isinstance(lst, list) or not lst:
            continue
        for i in (0, len(lst) - 1):
            for v in SPOILERS:
                m = copy.deepcopy(r)
                m[where][key][i] = copy.deepcopy(v)
                yield m


def _slow(r: dict, arrays: bool):
    """runcheck's verdict on ``r`` (a copy): the checked record, or None if refused."""
    r = copy.deepcopy(r)
    try:
        runcheck.check_values(r, "x:2", wide=runcheck.WIDE)
        results._check_body_line(r, "x:2", arrays)
    except (results.RunFileError, runcheck.WideNumber):
        return None
    return r


def _plain(r: dict) -> str:
    r = copy.deepcopy(r)
    s = (r.get("timing") or {}).get("samples_us") if isinstance(r.get("timing"), dict) else None
    if isinstance(s, np.ndarray):
        r["timing"]["samples_us"] = ("array", str(s.dtype), s.tolist())
    return repr(r)


@pytest.mark.parametrize("arrays", [False, True])
def test_the_layout_check_passes_only_what_runcheck_passes(arrays, monkeypatch):
    monkeypatch.setattr(layoutcheck, "_PLANS", {})
    muts = [m for r in _records() for m in _mutations(r)]
    assert len(muts) > 3000
    # First as a reader meets them: what runcheck passes, the layout check learns...
    for m in muts:
        if _slow(m, arrays) is not None:
            layoutcheck.learn(layoutcheck.layout(m))
    assert len(layoutcheck._PLANS) > 50
    # ...then every spoiled record again, each layout now known where runcheck passed one.
    passed = 0
    for m in muts:
        lay = layoutcheck.layout(m)
        mine = copy.deepcopy(m)
        if lay is not None and layoutcheck.check(mine, lay, arrays):
            passed += 1
            theirs = _slow(m, arrays)
            assert theirs is not None, m
            assert _plain(mine) == _plain(theirs)
        else:
            assert _plain(mine) == _plain(m), "a record the layout check gives back must be as it was read"
    assert passed > 1000          # and the check does pass the good ones


def test_a_layout_with_parts_it_does_not_know_is_not_learned(monkeypatch):
    monkeypatch.setattr(layoutcheck, "_PLANS", {})
    for extra in ({"inputs": {"a": [1]}}, {"inputs": {"a": {"b": 1}}}, {"pruned": []},
                  {"energy": {"status": "unavailable", "reason": "r"}}):
        r = {**_gpu_like(), **extra}
        assert _slow(r, False) is not None
        layoutcheck.learn(layoutcheck.layout(r))
        assert not layoutcheck.check(copy.deepcopy(r), layoutcheck.layout(r), False), extra
    r = _gpu_like()
    r["check"]["nested"] = {"a": 1}
    layoutcheck.learn(layoutcheck.layout(r))
    assert not layoutcheck.check(r, layoutcheck.layout(r), False)
    assert layoutcheck.layout({"type": "record", "status": ["ok"]}) is None


def test_an_ordinary_run_file_is_read_the_fast_way(monkeypatch, tmp_path):
    """Of a run whose cases repeat with other sizes (as a large run's do), only the first
    record of each layout gets the full checks (a regression to them shows here, not only on
    a clock)."""
    monkeypatch.setattr(layoutcheck, "_PLANS", {})
    full = []
    real = results.check_record
    monkeypatch.setattr(results, "check_record", lambda r, *a, **k: (full.append(1), real(r, *a, **k))[1])
    path = tmp_path / "big.jsonl"
    recs = repeated_run.write(path, 4)
    with results.RunReader(str(path), sample_arrays=True) as reader:
        got = list(reader.records())
    layouts = {layoutcheck.layout({**r, "shape": {**r["shape"], "i": 0}}) for r in recs}
    assert len(got) == 4 * len(recs)
    assert len(full) == len(layouts), (len(full), len(layouts))
