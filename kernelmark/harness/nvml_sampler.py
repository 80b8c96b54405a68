"""What the GPU did while it was being measured: NVML sampled from a background thread.

Reading NVML only before and after a measurement sees an idle card: a clock that sagged
or a thermal slowdown in the middle of the run is missed. A thread reads the live state
(SM and memory clocks, temperature, power, throttle reasons) every ``interval_s`` while
the samples are taken, and ``stop()`` sums it up for the record. NVML reads are small
C calls that release the GIL; at 20 ms they cost the timing loop nothing it measures
(device times are taken on the device; see kernelmark.harness.gpu_wait).

Only GPU runs with NVML sample at all: the runner makes no sampler on a CPU, and where
NVML is missing or a read fails, there is simply no summary (never an error).
"""

from __future__ import annotations

import threading
from typing import Callable, Optional

DEFAULT_INTERVAL_S = 0.02


class Sampler:
    """``start()`` before a measurement, ``stop()`` after it: returns the summary (or None
    when no read succeeded). ``read()`` returns a dict as kernelmark.harness.device.nvml_reader's do."""

    def __init__(self, read: Callable[[], dict], interval_s: float = DEFAULT_INTERVAL_S):
        self.read, self.interval_s = read, interval_s
        self.samples: list = []
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def _poll(self) -> None:
        while True:
            try:
                s = self.read()
            except Exception:       # a failed read is a missing sample, not a failed run
                s = None
            if s:
                self.samples.append(s)
            if self._stop.wait(self.interval_s):
                return

    def start(self) -> "Sampler":
        self._thread = threading.Thread(target=self._poll, name="kernelmark-nvml", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> Optional[dict]:
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout=5.0)
        return summarize(self.samples)


def _range(samples: list, key: str, out: dict, name: str, want=("min", "max")) -> None:
    vals = [s[key] for s in samples if isinstance(s.get(key), (int, float))]
    if not vals:
        return
    if "min" in want:
        out[f"{name}_min"] = min(vals)
    if "max" in want:
        out[f"{name}_max"] = max(vals)
    if "median" in want:
        out[f"{name}_median"] = sorted(vals)[len(vals) // 2]


def summarize(samples: list) -> Optional[dict]:
    """min/max clocks (and the median SM clock), max temperature and power, and every
    throttle reason seen in any sample."""
    if not samples:
        return None
    out: dict = {"samples": len(samples)}
    _range(samples, "sm_clock_mhz", out, "sm_clock_mhz", ("min", "median", "max"))
    _range(samples, "mem_clock_mhz", out, "mem_clock_mhz")
    _range(samples, "temperature_c", out, "temperature_c", ("max",))
    _range(samples, "power_w", out, "power_w", ("max",))
    seen: list = []
    for s in samples:
        for r in s.get("throttle_reasons") or []:
            if r not in seen:
                seen.append(r)
    out["throttle_reasons"] = sorted(seen)
    return out
