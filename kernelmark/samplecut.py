"""A record's samples read straight into a float64 array, for the readers that want them so
(compare) or only checked (report): where pysimdjson is installed, results.RunReader cuts
the samples out of the line's text, reads the rest with orjson and the samples with
simdjson, which writes them to a buffer of doubles without making a Python float of each
(a timed record of 1,000 samples is nearly all numbers: its samples are read in 43 ns each,
where a Python float each and their conversion to an array took 100 to 140).

It only ever reads a line faster, never differently. It takes a line only when the reading
of both parts is the reading of the whole, and leaves every other line to the usual path,
which decides and names what is wrong:
- the key "samples_us" is written once in the line, plainly, and nowhere as an escape of
  plain characters (``\\u0073``; writers escape only what is not plain ASCII), so no other
  key of the line is "samples_us" and the cut one is the timing's;
- the cut text is one flat array of numbers (simdjson refuses anything else: strings, null,
  true, a nested array, NaN, a number past a double's range, an integer past 64 bits);
- the rest, with ``[]`` in the samples' place, is a record of a layout that passed the full
  checks before (kernelmark/layoutcheck.py), and every sample is a time in TIME_RANGE_US.
Both parsers round each number to the nearest double, so the array is the one the usual
path makes. tests/test_samplecut.py reads ordinary and crafted lines both ways.
"""

from __future__ import annotations

import re
from typing import Optional

from kernelmark import layoutcheck, runcheck

try:
    import simdjson
except ImportError:             # pragma: no cover (tested by setting AVAILABLE = False)
    simdjson = None

AVAILABLE = simdjson is not None
_KEY = b'"samples_us": ['                   # as json.dumps writes it (the run writer does)
_NAME = b'"samples_us"'
_PLAIN_ESCAPE = re.compile(rb"\\u00[2-7][0-9A-Fa-f]")      # a plain ASCII character, escaped
_LOW, _HIGH = runcheck.TIME_RANGE_US


class Reader:
    """One simdjson parser, reused line after line (as simdjson is meant to be)."""

    def __init__(self, loads):
        import numpy         # here, not on import: results (which imports this) needs no numpy
        self.loads, self.np = loads, numpy
        self.parser = simdjson.Parser()

    def record(self, raw: bytes) -> Optional[dict]:
        """The checked record of line ``raw``, its samples a float64 array; None: read it
        the usual way."""
        i = raw.find(_KEY)
        if i < 0 or raw.count(_NAME) != 1:
            return None
        j = i + len(_KEY) - 1               # the samples' "["
        k = raw.find(b"]", j)               # the end of a flat array (what else it ends, simdjson refuses)
        if k < 0:
            return None
        rest = raw[:j + 1] + raw[k:]
        if b"\\u" in rest and _PLAIN_ESCAPE.search(rest):
            return None
        try:
            obj = self.loads(rest)
        except ValueError:                  # orjson.JSONDecodeError is one
            return None
        if type(obj) is not dict:
            return None
        t = obj.get("timing")
        if type(t) is not dict or type(t.get("samples_us")) is not list or t["samples_us"]:
            return None
        lay = layoutcheck.layout(obj)
        if lay is None or not layoutcheck.check(obj, lay, False):
            return None
        try:
            a = self.np.frombuffer(self.parser.parse(raw[j:k + 1]).as_buffer(of_type="d"), dtype=self.np.float64)
        except Exception:                   # simdjson's refusals: ValueError, TypeError, RuntimeError
            return None
        if a.size:
            if not (_LOW <= a.min() and a.max() <= _HIGH):
                return None
            t["samples_us"] = a
        return obj
