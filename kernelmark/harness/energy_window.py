"""The energy window of `kernelmark run --energy`: after a (case, backend) is timed, the same
call repeated back to back for at least the window's length between two reads of the
device's energy counter (kernelmark.harness.energy has the counters and the arithmetic).

The window never overlaps the timing: it starts after the timing (and its NVML sampler) has
finished, so turning it off leaves the timing as it was. On a GPU the calls are replayed
from a CUDA graph (a graph of calls rotating over the timing's input sets, sized to about
``GRAPH_TARGET_S``) so launch gaps do not dilute the power; where capture fails they are
issued eagerly, and the record says which. No L2 flush runs in the window (its energy would
be counted as the kernel's): calls rotate over the same input sets as the timing did.

One ``Session`` per process: it finds the counter, checks it against power x time, and
measures the idle power once over an idle window of the same length, before any case.
"""

from __future__ import annotations

import math
import time
from typing import Callable, Optional

import torch

from kernelmark.harness import energy

GRAPH_TARGET_S = 0.01       # one replayed graph: about this long
BATCH_TARGET_S = 0.05       # calls between two synchronisations in the window
MAX_GRAPH_CALLS = 2000


def _nvml_handle(index: int):
    from kernelmark.harness import device as dev
    return dev._nvml_handle(index)


def find_counter(kind: str, index: Optional[int]) -> tuple:
    """(counter, None) or (None, why there is none) for a device of this kind."""
    if kind == "cuda":
        pynvml, h = _nvml_handle(index or 0)
        if h is None:
            return None, "NVML is not available (install the nvml extra: pip install nvidia-ml-py)"
        c = energy.NvmlEnergy(pynvml, h)
        why = c.available()
        if why is None:
            return c, None
        p = energy.PowerIntegral(lambda: pynvml.nvmlDeviceGetPowerUsage(h) / 1000.0)
        why2 = p.available()
        if why2 is None:
            return p.start(), None
        return None, f"{why}; {why2}"
    if kind == "rocm":
        try:
            import amdsmi
            amdsmi.amdsmi_init()
            h = amdsmi.amdsmi_get_processor_handles()[index or 0]
        except Exception as e:
            return None, f"amdsmi is not usable ({type(e).__name__}: {e})"
        c = energy.AmdSmiEnergy(amdsmi, h)
        why = c.available()
        return (c, None) if why is None else (None, why)
    c = energy.RaplEnergy()
    why = c.available()
    return (c, None) if why is None else (None, f"no CPU energy counter: {why}")


def method_text(counter, on_gpu: bool, graphed: bool) -> str:
    how = ("calls replayed from a CUDA graph" if graphed else "calls issued eagerly") if on_gpu else \
        "calls run back to back on the CPU"
    extra = "" if on_gpu else "; RAPL counts the whole CPU package, other processes included"
    return (f"{counter.name} read before and after a window of {how}, synchronised at both ends; "
            "idle power from an idle window of the same length, once per process; "
            f"uncertainty (resolution + avg power x update interval) / energy{extra}")


def _clocks(state: Optional[dict]) -> tuple:
    if not state:
        return None, None
    return state.get("temperature_c"), {k: state[k] for k in ("sm_clock_mhz", "mem_clock_mhz") if k in state} or None


def _run_n_eager(fn, sets) -> Callable[[int], None]:
    pos = [0]

    def run_n(n: int) -> None:
        for _ in range(n):
            fn(sets[pos[0] % len(sets)])
            pos[0] += 1
    return run_n


def _run_n_graph(fn, sets, device, call_s: float):
    """A graph of k calls (rotating over the sets) and a run_n that replays it n // k times;
    returns (run_n, calls per replay)."""
    k = int(min(max(math.ceil(GRAPH_TARGET_S / max(call_s, 1e-7)), 1), MAX_GRAPH_CALLS))
    stream = torch.cuda.Stream(device)
    stream.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(stream):      # warm the allocator on the capture stream
        fn(sets[0])
    torch.cuda.current_stream(device).wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=stream):
        for i in range(k):
            fn(sets[i % len(sets)])

    def run_n(n: int) -> None:
        for _ in range(max(1, n // k)):
            graph.replay()
    return run_n, k


class Session:
    """The counter of this process, its sanity check, and the idle power."""

    def __init__(self, kind: str, index: Optional[int], window_s: float,
                 counter=None, why: Optional[str] = None,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep):
        self.kind, self.window_s, self.clock = kind, window_s, clock
        if counter is None and why is None:
            counter, why = find_counter(kind, index)
        self.counter, self.why = counter, why
        self.sanity = None
        self.idle_w: Optional[float] = None
        if self.counter is not None:
            try:
                self.sanity = energy.sanity_check(self.counter, clock=clock, sleep=sleep)
                self.idle_w = energy.idle_power(self.counter, window_s, clock=clock, sleep=sleep)
            except energy.CounterError as e:
                self.counter, self.why = None, f"counter refused: {e}"

    def unavailable(self) -> dict:
        return {"status": "unavailable", "reason": self.why}

    def measure(self, fn, sets, device: torch.device, call_s: float,
                health: Callable[[], Optional[dict]]) -> dict:
        """The energy dict of one timed (case, backend); ``call_s`` is its timed median."""
        if self.counter is None:
            return self.unavailable()
        on_gpu = device.type == "cuda"
        graphed, note = False, None
        run_n, per = _run_n_eager(fn, sets), 1
        if on_gpu:
            try:
                run_n, per = _run_n_graph(fn, sets, device, call_s)
                graphed = True
            except Exception as e:    # some calls cannot be captured: issue them eagerly
                note = f"graph capture failed ({type(e).__name__}: {str(e)[:160]}); calls issued eagerly"
                torch.cuda.synchronize(device)
        sync = (lambda: torch.cuda.synchronize(device)) if on_gpu else (lambda: None)
        batch = max(per, int(math.ceil(BATCH_TARGET_S / max(call_s, 1e-9) / per)) * per)
        temp0, clk0 = _clocks(health())
        try:
            w = energy.measure_window(self.counter, run_n, sync, self.window_s, batch, clock=self.clock)
            out = energy.per_call(w, self.idle_w, self.counter.resolution_j, self.counter.update_interval_s)
        except energy.CounterError as e:
            return {"status": "unavailable", "reason": str(e), "counter": self.counter.name}
        temp1, clk1 = _clocks(health())
        out.update({"status": "ok", "reason": None, "counter": self.counter.name,
                    "temp_c_before": temp0, "temp_c_after": temp1,
                    "clocks_before": clk0, "clocks_after": clk1, "sanity": self.sanity,
                    "method": method_text(self.counter, on_gpu, graphed)})
        if note:
            out["note"] = note
        return out
