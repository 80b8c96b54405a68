"""The device's own energy counter, and the arithmetic of joules per call.

Counters (each a cumulative reading in joules, never an estimate):
  * NVIDIA: ``nvmlDeviceGetTotalEnergyConsumption``, mJ since the driver was loaded (Volta and
    newer). It updates about every 100 ms; its unit is 1 mJ.
  * NVIDIA without that counter: ``nvmlDeviceGetPowerUsage`` (mW) sampled by a thread every
    20 ms and integrated by the trapezoid rule. The board's power reading is itself an
    average over its own update period (about 100 ms), which is what limits it.
  * AMD: ``amdsmi_get_energy_count``: ``energy_accumulator`` x ``counter_resolution`` (µJ).
    The accumulator is 64-bit (no wrap in practice). Its update period is not documented;
    100 ms is assumed, which can only overstate the uncertainty.
  * CPU: RAPL through ``/sys/class/powercap/intel-rapl:N/energy_uj`` (or ``amd-rapl:N``), the
    package zones summed (their sub-zones are parts of them and are not added again). Each
    zone wraps at ``max_energy_range_uj``; a reading below the last one is a wrap and adds
    that range. RAPL updates about every 1 ms; the file's unit is 1 µJ.

Sanity check (as Zeus does): where a counter has an independent power reading, the energy
it counts over a short probe is compared with the mean power times the time; a counter that
disagrees by more than 10x either way, or that goes backwards, is refused.

The arithmetic of one window (``per_call``). A window repeats the call back to back for
``dt`` seconds between two synchronised reads of the counter, ``dE`` joules apart, ``calls``
calls in all; an idle window of the same length (device idle) gives the idle power ``P_idle``.

    gross J/call = dE / calls
    avg power P  = dE / dt
    net J/call   = (dE - P_idle * dt) / calls        (what the calls cost above idle)

Uncertainty. A counter that updates every ``u`` seconds reports, when read at time t, the
energy up to the last update before t. Both reads are late by less than ``u``, so the
counted interval differs from ``dt`` by less than ``u`` and the counted energy from the true
one by less than ``P * u``; the counter's unit ``r`` adds up to one unit. So

    uncertainty_rel = (r + P * u) / dE  =  r / dE + u / dt   (as dE = P * dt)

Worked example, an H100 at 700 W over a 2 s window, NVML counter (r = 1 mJ, u = 100 ms):
dE = 1400 J; (0.001 + 700 * 0.1) / 1400 = 70.001 / 1400 = 5.0%. A 10 s window: 1.0%.
The net figure subtracts an idle energy with its own error (r + P_idle * u), so

    net_uncertainty_rel = (2 r + (P + P_idle) * u) / (dE - P_idle * dt)

which grows large when the calls add little above idle: the record says so rather than
hiding it.
"""

from __future__ import annotations

import math
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Protocol

SANITY_RATIO = 10.0            # refuse a counter off by more than this from power x time
SANITY_PROBE_S = 0.5
POWERCAP_ENV = "KERNELMARK_POWERCAP_ROOT"   # tests point the RAPL reader at a fake tree
POWERCAP_ROOT = "/sys/class/powercap"


class CounterError(RuntimeError):
    """The counter misbehaved (went backwards, disagreed with power): its figures are refused."""


class EnergyCounter(Protocol):
    name: str                  # e.g. "nvml_total_energy"
    resolution_j: float        # the unit of one reading
    update_interval_s: float   # how often the reading changes

    def available(self) -> Optional[str]:
        """Why this counter cannot be read here, or None."""

    def read_j(self) -> float:
        """Cumulative energy in joules (monotonic; wrap-around already handled)."""

    def power_w(self) -> Optional[float]:
        """An independent instantaneous power reading, or None where there is none."""


# ------------------------------------------------------------------ NVIDIA

class NvmlEnergy:
    name = "nvml_total_energy"
    resolution_j = 1e-3
    update_interval_s = 0.1

    def __init__(self, pynvml, handle):
        self.nv, self.h = pynvml, handle

    def available(self) -> Optional[str]:
        try:
            self.nv.nvmlDeviceGetTotalEnergyConsumption(self.h)
        except Exception as e:
            return f"nvmlDeviceGetTotalEnergyConsumption failed ({type(e).__name__}: {e}; needs Volta or newer)"
        return None

    def read_j(self) -> float:
        return self.nv.nvmlDeviceGetTotalEnergyConsumption(self.h) / 1000.0

    def power_w(self) -> Optional[float]:
        try:
            return self.nv.nvmlDeviceGetPowerUsage(self.h) / 1000.0
        except Exception:
            return None


class PowerIntegral:
    """Energy as the integral of a sampled power reading (trapezoid rule), for a device with
    power but no energy counter. ``power()`` returns watts; a thread samples it."""
    name = "power_integral"
    resolution_j = 0.0

    def __init__(self, power: Callable[[], float], interval_s: float = 0.02, update_interval_s: float = 0.1,
                 clock: Callable[[], float] = time.monotonic):
        self.power, self.interval_s, self.clock = power, interval_s, clock
        # The sampling period adds to the reading's own averaging period.
        self.update_interval_s = update_interval_s + interval_s
        self._lock = threading.Lock()
        self._joules, self._last = 0.0, None
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def available(self) -> Optional[str]:
        try:
            p = float(self.power())
        except Exception as e:
            return f"no power reading either ({type(e).__name__}: {e})"
        return None if math.isfinite(p) and p >= 0 else f"the power reading is not a power ({p})"

    def sample(self) -> None:
        """Take one sample and add the trapezoid since the previous one."""
        t, p = self.clock(), float(self.power())
        with self._lock:
            if self._last is not None:
                t0, p0 = self._last
                self._joules += 0.5 * (p0 + p) * (t - t0)
            self._last = (t, p)

    def start(self) -> "PowerIntegral":
        self.sample()
        self._thread = threading.Thread(target=self._poll, name="kernelmark-power", daemon=True)
        self._thread.start()
        return self

    def _poll(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.sample()
            except Exception:       # a missed sample widens one trapezoid
                pass

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)

    def read_j(self) -> float:
        self.sample()
        with self._lock:
            return self._joules

    def power_w(self) -> Optional[float]:
        return None     # the only power reading is the one integrated: no independent check


# ------------------------------------------------------------------ AMD

class AmdSmiEnergy:
    name = "amdsmi_energy_count"
    resolution_j = 0.0          # set from the counter's own resolution on first read
    update_interval_s = 0.1     # not documented; assumed (overstates the uncertainty if shorter)

    def __init__(self, amdsmi, handle):
        self.amd, self.h = amdsmi, handle

    def _raw(self) -> tuple:
        c = self.amd.amdsmi_get_energy_count(self.h)
        acc = c.get("energy_accumulator", c.get("power"))   # older amdsmi named it "power"
        return float(acc), float(c["counter_resolution"]) * 1e-6

    def available(self) -> Optional[str]:
        try:
            _, res = self._raw()
        except Exception as e:
            return f"amdsmi_get_energy_count failed ({type(e).__name__}: {e})"
        self.resolution_j = res
        return None

    def read_j(self) -> float:
        acc, res = self._raw()
        return acc * res

    def power_w(self) -> Optional[float]:
        try:
            info = self.amd.amdsmi_get_power_info(self.h)
        except Exception:
            return None
        for key in ("current_socket_power", "average_socket_power", "socket_power"):
            v = info.get(key)
            if isinstance(v, (int, float)) and v > 0:
                return float(v)
        return None


# ------------------------------------------------------------------ CPU RAPL

_PACKAGE_ZONE = re.compile(r"^(intel-rapl|amd-rapl):\d+$")


def powercap_root() -> Path:
    return Path(os.environ.get(POWERCAP_ENV) or POWERCAP_ROOT)


class RaplEnergy:
    """The package zones under a powercap tree, summed, each with its wrap-around handled."""
    name = "rapl"
    resolution_j = 1e-6
    update_interval_s = 0.001

    def __init__(self, root: Optional[Path] = None):
        self.root = Path(root) if root is not None else powercap_root()
        self.zones = sorted(p for p in self.root.glob("*") if _PACKAGE_ZONE.match(p.name)) \
            if self.root.is_dir() else []
        self._last: dict = {}
        self._total_uj = 0

    def available(self) -> Optional[str]:
        if not self.root.is_dir():
            return f"no {self.root} on this machine (no RAPL powercap driver, or a container without it)"
        if not self.zones:
            return f"no intel-rapl:N or amd-rapl:N package zone under {self.root}"
        for z in self.zones:
            try:
                int((z / "energy_uj").read_text())
            except PermissionError:
                return (f"{z / 'energy_uj'} is not readable by this user (Linux restricts RAPL to root "
                        "since CVE-2020-8694)")
            except (OSError, ValueError) as e:
                return f"{z / 'energy_uj'} cannot be read ({type(e).__name__}: {e})"
        return None

    def _range_uj(self, z: Path) -> Optional[int]:
        try:
            return int((z / "max_energy_range_uj").read_text())
        except (OSError, ValueError):
            return None

    def read_j(self) -> float:
        for z in self.zones:
            raw = int((z / "energy_uj").read_text())
            last = self._last.get(z)
            if last is not None:
                step = raw - last
                if step < 0:
                    # One wrap past max_energy_range_uj (262 kJ on most parts: over ten
                    # minutes at full power, far longer than a window). Without a range
                    # nothing explains the step: the counter went backwards.
                    rng = self._range_uj(z)
                    if not rng or raw > rng or last > rng:
                        raise CounterError(f"{z.name} went backwards ({last} -> {raw} µJ) and "
                                           "max_energy_range_uj does not explain it as a wrap")
                    step += rng
                self._total_uj += step
            self._last[z] = raw
        return self._total_uj * 1e-6

    def power_w(self) -> Optional[float]:
        return None


# ------------------------------------------------------------------ checks and arithmetic

def sanity_check(counter: EnergyCounter, probe_s: float = SANITY_PROBE_S, reads: int = 6,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> str:
    """Compare what the counter counts over ``probe_s`` with mean power x time. Returns what
    was checked, in words; raises CounterError for a counter that is off by more than
    SANITY_RATIO either way or goes backwards."""
    if counter.power_w() is None:
        return "not checked against power (no independent power reading)"
    e0, t0 = counter.read_j(), clock()
    powers = []
    for _ in range(reads):
        p = counter.power_w()
        if p is not None:
            powers.append(p)
        sleep(probe_s / reads)
    e1, t1 = counter.read_j(), clock()
    de, dt = e1 - e0, t1 - t0
    if de < 0:
        raise CounterError(f"the {counter.name} counter went backwards ({e0:.6g} J -> {e1:.6g} J)")
    if not powers:
        return "not checked against power (no independent power reading)"
    expected = sum(powers) / len(powers) * dt
    if expected <= 0:
        return "not checked against power (the power reading was 0)"
    ratio = de / expected
    if not (1 / SANITY_RATIO <= ratio <= SANITY_RATIO):
        raise CounterError(f"the {counter.name} counter disagrees with power x time: {de:.4g} J counted, "
                           f"{expected:.4g} J from {len(powers)} power readings over {dt:.3g} s "
                           f"(ratio {ratio:.3g}, allowed 1/{SANITY_RATIO:g}..{SANITY_RATIO:g})")
    return f"counter/power ratio {ratio:.3g} over a {dt:.2g} s probe (allowed 1/{SANITY_RATIO:g}..{SANITY_RATIO:g})"


def uncertainty_rel(de_j: float, dt_s: float, resolution_j: float, update_interval_s: float) -> float:
    """(r + P u) / dE with P = dE / dt: see the module docstring."""
    if de_j <= 0:
        return math.inf
    return (resolution_j + de_j / dt_s * update_interval_s) / de_j


@dataclass(frozen=True)
class Window:
    calls: int
    dt_s: float
    de_j: float


def per_call(w: Window, idle_w: Optional[float], resolution_j: float, update_interval_s: float) -> dict:
    """The figures of one window (see the module docstring for each formula)."""
    if w.calls <= 0 or w.dt_s <= 0:
        raise ValueError(f"a window needs calls > 0 and time > 0 (got {w.calls} calls, {w.dt_s} s)")
    if w.de_j < 0:
        raise CounterError(f"the counter went backwards over the window ({w.de_j:.6g} J)")
    if w.de_j == 0:
        raise CounterError(f"the counter did not advance over the {w.dt_s:.3g} s window "
                           f"({w.de_j:.6g} J): it updates too rarely for a window this short")
    avg_w = w.de_j / w.dt_s
    out = {"gross_j_per_call": w.de_j / w.calls, "avg_w": avg_w, "window_s": w.dt_s, "calls": w.calls,
           "energy_j": w.de_j, "resolution_j": resolution_j, "update_interval_s": update_interval_s,
           "uncertainty_rel": uncertainty_rel(w.de_j, w.dt_s, resolution_j, update_interval_s),
           "idle_w": idle_w, "net_j_per_call": None, "net_uncertainty_rel": None}
    if idle_w is not None:
        net_j = w.de_j - idle_w * w.dt_s
        out["net_j_per_call"] = net_j / w.calls
        err = 2 * resolution_j + (avg_w + idle_w) * update_interval_s
        out["net_uncertainty_rel"] = err / net_j if net_j > 0 else None
    return out


def measure_window(counter: EnergyCounter, run_n: Callable[[int], None], sync: Callable[[], None],
                   window_s: float, batch: int, clock: Callable[[], float] = time.monotonic) -> Window:
    """Repeat the call back to back for at least ``window_s`` seconds, ``batch`` calls at a
    time, synchronised before the first read and after the last batch (so every call counted
    has finished on the device before the counter is read again)."""
    sync()
    e0, t0 = counter.read_j(), clock()
    calls = 0
    while True:
        run_n(batch)
        calls += batch
        sync()                      # the time checked is the device's, not the queue's
        if clock() - t0 >= window_s:
            break
    e1, t1 = counter.read_j(), clock()
    return Window(calls, t1 - t0, e1 - e0)


def idle_power(counter: EnergyCounter, window_s: float, clock: Callable[[], float] = time.monotonic,
               sleep: Callable[[float], None] = time.sleep) -> float:
    """Mean power over ``window_s`` with the device left idle."""
    e0, t0 = counter.read_j(), clock()
    sleep(window_s)
    e1, t1 = counter.read_j(), clock()
    if e1 < e0:
        raise CounterError(f"the {counter.name} counter went backwards during the idle window")
    return (e1 - e0) / (t1 - t0)
