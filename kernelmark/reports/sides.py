"""How `compare` reads its two runs: both once, front to back, side by side.

A run file can hold 100,000 records of 1,000 samples each (half a gigabyte): held whole, two
of them took 6.7 GB. compare goes through BASE a record at a time, in its order (the order
its verdicts and its seeded bootstrap have always followed), and reads HEAD forward only as
far as it must to find each BASE record's partner (``Ahead``). When both runs measured their
cases in the same order, the usual case, each partner is the next HEAD record and nothing is
held but the record in hand. What HEAD passes on the way is kept as a small summary (what
every verdict but a timed-against-timed one needs) with its place in the file, until it is
paired; the last FRESH of them whole, and an older one timed on both sides is read again
from its place.
A run already in memory (``results.Run``, as `kernelmark ab` pools them) goes the same way,
its records kept by reference.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Iterator

from kernelmark import results

FRESH = 512
# What compare_records reads of a record, samples (and their process groups) aside.
_KEEP = ("op", "shape", "dtype", "backend", "label", "status", "reason")
_KEEP_TIMING = ("median_us", "n", "method", "ci_rel")


def summary(rec: dict) -> dict:
    out = {k: rec[k] for k in _KEEP if k in rec}
    t = rec.get("timing")
    if isinstance(t, dict):
        out["timing"] = {k: t[k] for k in _KEEP_TIMING if k in t}
    return out


def _records(run) -> Iterator:
    """(place, record) of a RunReader's records, or (None, record) of a loaded run's."""
    if isinstance(run, results.RunReader):
        return run.records(where=True)
    return ((None, r) for r in run.records)


def first_records(run, name: str, key: Callable, notes: list, dtypes: set) -> Iterator:
    """(key, record) of each key's first record, in the run's order; a key measured twice is
    said in ``notes``; every record's dtype goes into ``dtypes``."""
    seen = set()
    for _, rec in _records(run):
        dtypes.add(rec["dtype"])
        k = key(rec)
        if k in seen:
            notes.append(f"{name} measures {rec['op']} {rec['dtype']} {rec['backend']} twice: "
                         "the first record is used")
            continue
        seen.add(k)
        yield k, rec


class Ahead:
    """A run read forward only as far as lookups need: ``get(key)`` reads on until the key's
    first record is found (or the end), ``full(key)`` gives that record whole."""

    def __init__(self, run, name: str, key: Callable, notes: list):
        self.run, self.name, self.key, self.notes = run, name, key, notes
        self.entries: dict = {}             # key -> (summary, or the record of a loaded run; place)
        self.dtypes: set = set()
        self.read_again = 0                 # records read a second time (a partner found late)
        self._fresh: OrderedDict = OrderedDict()
        self._it = _records(run)
        self._lazy = isinstance(run, results.RunReader)

    def _advance(self) -> bool:
        try:
            place, rec = next(self._it)
        except StopIteration:
            return False
        self.dtypes.add(rec["dtype"])
        k = self.key(rec)
        if k in self.entries:
            self.notes.append(f"{self.name} measures {rec['op']} {rec['dtype']} {rec['backend']} twice: "
                              "the first record is used")
        elif self._lazy:
            self.entries[k] = (summary(rec), place)
            self._fresh[k] = rec
            if len(self._fresh) > FRESH:
                self._fresh.popitem(last=False)
        else:
            self.entries[k] = (rec, None)
        return True

    def get(self, k):
        """The first record (or its summary) of ``k``; None when the run has none."""
        while k not in self.entries and self._advance():
            pass
        e = self.entries.get(k)
        return e and e[0]

    def full(self, k) -> dict:
        """The whole first record of ``k`` (after get found it), samples included."""
        rec = self._fresh.pop(k, None)
        if rec is not None:
            return rec
        held, place = self.entries[k]
        if place is None:
            return held
        self.read_again += 1
        return self.run.record_at(place)

    def done_with(self, k) -> None:
        """``k`` has been paired: its summary is no longer needed (the key is kept, in order)."""
        if k in self.entries:
            self.entries[k] = _PAIRED
            self._fresh.pop(k, None)

    def unpaired(self) -> list:
        """Read to the end; the first record (or summary) of each key never paired, in order."""
        while self._advance():
            pass
        self._fresh.clear()
        return [held for held, _ in (e for e in self.entries.values() if e is not _PAIRED)]


_PAIRED = (None, None)
