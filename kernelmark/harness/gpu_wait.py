"""A device-side wait before each timed launch, so that host time stays out of device times.

Why. CUDA events time what the device does between them. Event timing records the
start event, calls the Python launcher, records the end event; a Triton launcher spends
30-300 µs of host time before its kernel is queued. If the device reaches the start
event before the work is queued, it idles, and the idle time is counted as the kernel's
(a 5 µs decode kernel then reads as the launcher's 120 µs).

How. Right before the start event, enqueue a kernel that keeps the device busy for
longer than the launch takes: ``torch.cuda._sleep(cycles)``, a spin of a given number
of clock cycles. The start event and the work queue up behind it while the device
spins, so the device reaches the start event with the work already queued. nvbench's
"blocking kernel" does the same with a spin on a host flag; this one needs no flag.

Checked on every sample, from the device's side: right after the launcher returns, ask
whether the start event has completed (``Event.query()``). If it has not, every launch
of the call was queued before the device reached the start event: no idle time can be
in the sample. If it has, the sample may hold host time: it is dropped (and counted),
and when that is frequent the wait is doubled. A call that synchronises with the device
itself can never pass the check; once the wait reaches its cap such samples are kept and
the record says so.

The spin is sized in cycles from a calibration against events (the clock the spin counts
is not the one a datasheet quotes, and boost clocks move), once per device and process.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch

MIN_WAIT_US = 20.0
MAX_WAIT_US = 10_000.0
# A batch with more than this share of late samples doubles the wait.
GROW_ABOVE = 0.10
_CALIBRATION_CYCLES = 1 << 20      # about 0.5 ms at 2 GHz: long against any launch cost

_CYCLES_PER_US: dict = {}


def _sleep() -> Optional[Callable[[int], None]]:
    return getattr(torch.cuda, "_sleep", None)


def cycles_per_us(device: torch.device) -> Optional[float]:
    """Spin cycles per microsecond of device time, measured with events (None if this torch
    has no ``torch.cuda._sleep``). A first spin is queued before the start event so that the
    timed spin is queued before the device gets to it: the launch cost is not in it."""
    key = str(device)
    if key in _CYCLES_PER_US:
        return _CYCLES_PER_US[key]
    sleep = _sleep()
    if sleep is None:
        _CYCLES_PER_US[key] = None
        return None
    rates = []
    for _ in range(3):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        sleep(_CALIBRATION_CYCLES)
        start.record()
        sleep(_CALIBRATION_CYCLES)
        end.record()
        end.synchronize()
        us = start.elapsed_time(end) * 1e3
        if us > 0 and math.isfinite(us):
            rates.append(_CALIBRATION_CYCLES / us)
    rate = sorted(rates)[len(rates) // 2] if rates else None
    _CYCLES_PER_US[key] = rate
    return rate


def wait_for(host_us: float) -> float:
    """The wait that covers a launch of ``host_us`` of host time, with room for jitter."""
    return min(max(2.0 * host_us + MIN_WAIT_US, MIN_WAIT_US), MAX_WAIT_US)


@dataclass
class DeviceWait:
    """The wait queued before each start event, and what the per-sample check found."""
    cycles_per_us: Optional[float]   # None: no spin kernel here, no wait
    wait_us: float = 0.0
    dropped: int = 0                 # samples dropped: the device reached the start event first
    kept_late: int = 0               # such samples kept because the wait was at its cap

    @property
    def available(self) -> bool:
        return bool(self.cycles_per_us)

    def size_for(self, host_us: float) -> None:
        self.wait_us = wait_for(host_us) if self.available else 0.0

    def enqueue(self) -> None:
        if self.available and self.wait_us > 0:
            torch.cuda._sleep(int(self.wait_us * self.cycles_per_us))

    def launch_was_late(self, start: torch.cuda.Event) -> bool:
        """Call right after the launcher returns: True if the device had already passed
        ``start`` (so it may have idled waiting for the launch). Without a wait there is
        nothing to check against, and nothing is dropped."""
        return self.available and bool(start.query())

    def settle(self, samples: list, late: list) -> list:
        """Keep the samples that passed the check; grow the wait if too many did not."""
        n_late = sum(late)
        if not n_late:
            return samples
        if self.wait_us >= MAX_WAIT_US:
            self.kept_late += n_late
            return samples
        self.dropped += n_late
        if n_late > GROW_ABOVE * len(late):
            self.wait_us = min(2 * self.wait_us, MAX_WAIT_US)
        return [s for s, bad in zip(samples, late) if not bad]

    def note(self) -> str:
        if not self.available:
            return "no device-side wait (this torch has no torch.cuda._sleep): times may include host launch time"
        parts = []
        if self.dropped:
            parts.append(f"{self.dropped} samples dropped: the launcher outran the device-side wait")
        if self.kept_late:
            parts.append(f"{self.kept_late} samples kept although the device reached the start event before "
                         f"the launch was queued, with a {MAX_WAIT_US:.0f} µs wait (the call waits for the device?): "
                         "they include host time")
        return "; ".join(parts)
