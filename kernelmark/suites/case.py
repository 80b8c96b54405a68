"""A suite and its cases: what the loader of any suite format produces and the runner reads."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional


@dataclass(frozen=True)
class Case:
    op: str
    shape: dict
    dtype: str
    backends: tuple
    devices: tuple
    label: str
    budget_s: Optional[float]
    index: int          # the [[case]] block, 1-based
    line: int           # its line in the suite file
    # Where the case came from, copied into its records as "trace" (a FlashInfer-Trace
    # workload's definition, uuid, tags, notes). meta["unsupported"]: the reason the case
    # cannot be run; the runner records it and runs nothing.
    meta: Optional[dict] = field(default=None, compare=False, hash=False)

    def runs_on(self, kind: str) -> bool:
        return (not self.devices or kind in self.devices
                or ("gpu" in self.devices and kind in ("cuda", "rocm")))


@dataclass(frozen=True)
class Suite:
    name: str
    description: str
    path: str
    sha256: str
    cases: tuple

    def as_header(self) -> dict:
        return {"name": self.name, "path": self.path, "sha256": self.sha256, "cases": len(self.cases)}
