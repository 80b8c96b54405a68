"""Python's cyclic garbage collector paused while a large run file is read and reported.

The collector walks every live object at each full collection, and a collection comes
after every few hundred allocations: compare of two 100,000-record files holds 100,000
pairs and makes millions of small dicts and lists (each record's), so the walks cost 2.6 s
of its 32 s of CPU. Those objects hold no reference cycles (JSON is a tree; the pairs point
at their records' fields), so reference counting frees each as before, and memory is what
it was; the collector is switched back on afterwards.
"""

from __future__ import annotations

import gc
from contextlib import contextmanager


@contextmanager
def paused():
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()
