"""The environment of the Python processes kernelmark starts (the harness's workers, the
run-file reader of kernelmark/prefetch.py): this one's, with PYTHONPATH naming the directory
that holds this kernelmark first, then the entries the user set, made absolute (a relative
one meant the parent's directory, and a worker runs elsewhere). Empty entries, which mean
"the current directory", are dropped. Light to import: compare starts readers with it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent)


def env(environ: Optional[dict] = None) -> dict:
    out = dict(os.environ if environ is None else environ)
    entries = [PACKAGE_ROOT] + [os.path.abspath(p) for p in out.get("PYTHONPATH", "").split(os.pathsep) if p]
    out["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(entries))
    return out
