"""The checks of a record whose layout has been seen before: what runcheck decides from
values alone, for the lines of a large run file (most of its records share a few dozen
layouts).

A record's *layout*: its keys and their values' types, its "type" and "status" (a record
that is "ok" must have its timing, whatever its types), and the same keys and types of
each dict in it (shape, inputs, check, timing, health) and of the two in those (the check's
elementwise bounds, the timing's waits). Every check runcheck makes of a record is either
decided by its layout (presence, types, nesting) or by a value it can name: a number's
bounds (a field's range; an int within 64 bits; a float below WIDE, past which
results.RunReader reads the line again with Python's json), what a list holds (samples,
groups, throttle reasons, covered ops). So a record whose layout passed runcheck once needs
only those values compared, in one loop: 9 µs a record on the development machine, against
19 for runcheck's checks (the samples aside). Anything else -- a value out of its bounds, a
layout never seen, a layout with lists or dicts this module does not know (energy, pruned, a
list among the inputs) -- goes to runcheck's own checks, which decide and name what is
wrong. tests/test_layoutcheck.py spoils every field of real records and checks this module
never lets through what runcheck refuses.
"""

from __future__ import annotations

import math

from kernelmark import runcheck

_NESTED = ("shape", "inputs", "check", "timing", "health")
# The lists a known layout may hold, and what each must hold (samples: runcheck's own check)
_LISTS = {("timing", "samples_us"), ("timing", "groups"), ("health", "throttle_reasons"), (None, "covers")}
# The dicts a known layout may hold inside those (of numbers, words and flags only)
_INNER = {"check": ("elementwise",), "timing": ("waited",)}
_INT_LO, _INT_HI = -runcheck.INT_BOUND, runcheck.INT_BOUND - 1
_FLOAT_HI = math.nextafter(runcheck.WIDE, 0.0)       # v <= _FLOAT_HI: v < WIDE
_BOUNDS = {None: {k: b for k, _, b, _ in runcheck._RECORD_FIELDS if b is not None},
           "timing": {k: b for k, _, b, _ in runcheck._TIMING_FIELDS if b is not None}}

_PLANS: dict = {}
_PLANS_HELD = 4096      # cleared when full: a crafted file of ever-new layouts


def layout(r: dict):
    """The record's layout (a tuple, hashable), or None for a line that is not a record."""
    status = r.get("status")
    if r.get("type") != "record" or type(status) is not str:
        return None
    parts = [tuple(r), tuple(map(type, r.values())), status]
    for k in _NESTED:
        d = r.get(k)
        if type(d) is dict:
            parts += (k, tuple(d), tuple(map(type, d.values())))
            for j in _INNER.get(k, ()):
                e = d.get(j)
                if type(e) is dict:
                    parts += ((k, j), tuple(e), tuple(map(type, e.values())))
    return tuple(parts)


def check(r: dict, lay: tuple, arrays: bool) -> bool:
    """True when ``r``, of layout ``lay``, passes runcheck's checks (with ``arrays``, its
    samples are then a float64 array, as runcheck makes them); False when this cannot say,
    for runcheck to decide."""
    plan = _PLANS.get(lay)
    if plan is None:
        return False
    timing = None
    for where, numbers, lists in plan:
        d = r if where is None else r[where] if type(where) is str else r[where[0]][where[1]]
        for key, lo, hi in numbers:
            if not lo <= d[key] <= hi:
                return False
        for key in lists:
            v = d[key]
            if key == "samples_us":
                timing = d
            elif key == "groups":
                if not all(type(g) is int and 0 < g <= _INT_HI for g in v):
                    return False
            elif not all(type(x) is str for x in v):     # throttle_reasons, covers
                return False
    # The samples last: with ``arrays`` they become an array once they pass, and a record
    # given back to runcheck must be as it was read.
    s = timing["samples_us"] if timing is not None else None
    return not s or runcheck._usual_samples(timing, s, arrays)


def learn(lay: tuple) -> None:
    """Remember the values to compare for records of layout ``lay``, which just passed
    runcheck's checks; layouts with parts this module does not know are not remembered."""
    if lay is None or lay in _PLANS:
        return
    top_keys, top_types = lay[0], lay[1]
    levels = [(None, top_keys, top_types)]
    for i in range(3, len(lay), 3):
        levels.append((lay[i], lay[i + 1], lay[i + 2]))
    nested = {where for where, _, _ in levels[1:]}
    plan = []
    for where, keys, types in levels:
        numbers, lists = [], []
        for key, t in zip(keys, types):
            if t is int or t is float:
                lo, hi = (_INT_LO, _INT_HI) if t is int else (-_FLOAT_HI, _FLOAT_HI)
                b = _BOUNDS.get(where, {}).get(key)
                if b is not None:
                    lo, hi = max(lo, b[0]), min(hi, b[1])
                numbers.append((key, lo, hi))
            elif t is list:
                if (where, key) not in _LISTS:
                    return
                lists.append(key)
            elif t is dict:
                if not (where is None and key in nested or type(where) is str and (where, key) in nested):
                    return
            elif t not in (str, bool, type(None)):
                return
        plan.append((where, tuple(numbers), tuple(lists)))
    if len(_PLANS) >= _PLANS_HELD:
        _PLANS.clear()
    _PLANS[lay] = tuple(plan)
