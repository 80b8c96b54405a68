"""How one callable is timed on this device. The harness alone owns this; ops never time.

GPU (CUDA or HIP through torch.cuda), every sample a device-side time:
  * the first call (compilation, autotuning) and a warm-up outside all timing;
  * before every start event, a device-side wait (kernelmark.harness.gpu_wait): a spin
    kernel sized from the launcher's measured host cost, so the call is queued before the
    device reaches the start event and host time stays out; samples where the device got
    there first are dropped and counted ("dropped_samples"), the wait used is recorded
    ("device_wait_us", with "host_call_us", the launcher's host time it was sized for);
  * the warm-up's median with the wait in place ("estimate_us", device time) chooses the
    method. Kernels of at least ``short_kernel_us``: events around each call, with the L2
    flushed before it (a write of twice the L2 size), so a call never reads what the
    previous one left in cache ("cuda_event");
  * shorter kernels: a CUDA graph of ``inner`` calls is replayed between two events and the
    time divided by ``inner``, so per-launch costs are not what is measured ("cuda_graph").
    Caches stay cold one of two ways: the calls rotate over input sets that together exceed
    twice the L2 (the runner makes that many where it is cheap), or, for small ops, an L2
    flush captured before each call in the graph, whose own time (a graph of the flushes
    alone, replayed next to it) is subtracted per sample and recorded ("flush_us").
CPU: ``time.perf_counter_ns`` around a batch of ``inner`` calls (inner > 1 only when a
call is too short to time alone), rotating over the input sets ("cpu_perf_counter").

Stopping rule, the same everywhere: samples are taken in batches until the 95% CI of
the median is within ``target_ci_rel`` of the median (after at least ``min_samples``),
or the budget or ``max_samples`` is reached; then the timing is marked not converged.

Stalls: a converged timing can still be wrong, when most calls waited for a descheduled
thread (see kernelmark.harness.stats.stall_reason). On the CPU each sample also measures
how long this process's threads waited for a CPU (Linux schedstat run delay, else the
calling thread's time off the CPU); ``Timing.stall`` says why the samples are not trusted,
and such a timing is noisy however narrow its CI.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Optional

import torch

from kernelmark.harness import gpu_wait, stats


@dataclass(frozen=True)
class TimingConfig:
    budget_s: float = 1.0            # wall time allowed for sampling one (case, backend)
    target_ci_rel: float = 0.01      # stop when the median's 95% CI half-width is within this
    min_samples: int = 10
    max_samples: int = 5000
    short_kernel_us: float = 20.0    # below this, GPU kernels are timed by graph replay
    graph_target_us: float = 1000.0  # length of one replayed graph
    cpu_min_sample_us: float = 200.0  # on the CPU, batch calls until one sample lasts this
    use_graphs: bool = True


@dataclass
class Timing:
    summary: stats.Summary
    method: str          # cuda_event | cuda_graph | cpu_perf_counter
    inner: int           # calls per sample (the sample is the per-call time)
    cache: str           # what kept caches cold, in words
    converged: bool      # CI target reached
    wall_s: float        # wall time spent sampling
    note: str = ""
    # GPU only (left out of the record elsewhere): see the module docstring.
    device_wait_us: Optional[float] = None
    host_call_us: Optional[float] = None
    estimate_us: Optional[float] = None
    dropped_samples: Optional[int] = None
    flush_us: Optional[float] = None
    stall: Optional[str] = None   # why the median is not the call's time (stats.stall_reason)
    waited: Optional[dict] = None  # CPU: how the wait for a CPU was measured, and how often it hit

    @property
    def noisy(self) -> bool:
        """Not to be trusted as it stands: the CI target missed, or stalls in the samples."""
        return not self.converged or self.stall is not None

    def as_dict(self) -> dict:
        d = asdict(self)
        d.update(d.pop("summary"))
        for key in _GPU_ONLY:
            if d[key] is None:
                del d[key]
        return d


_GPU_ONLY = ("device_wait_us", "host_call_us", "estimate_us", "dropped_samples", "flush_us")


def _is_gpu(device: torch.device) -> bool:
    return device.type == "cuda"


_FLUSH: dict = {}


def _flush_buffer(device: torch.device, l2_bytes: int) -> torch.Tensor:
    nbytes = max(2 * int(l2_bytes or 0), 64 << 20)
    key = (str(device), nbytes)
    if key not in _FLUSH:
        _FLUSH.clear()
        _FLUSH[key] = torch.empty(nbytes // 4, dtype=torch.int32, device=device)
    return _FLUSH[key]


def _converged(samples: list, cfg: TimingConfig) -> bool:
    return len(samples) >= cfg.min_samples and stats.ci_relative_width(samples) <= cfg.target_ci_rel


def _sample_loop(take_batch: Callable[[int], list], cfg: TimingConfig, batch: int) -> tuple:
    """Call take_batch(k) -> k samples until converged, budget or cap. Returns (samples, converged, wall)."""
    samples: list = []
    t0 = time.perf_counter()
    while True:
        samples.extend(take_batch(batch))
        if _converged(samples, cfg):
            return samples, True, time.perf_counter() - t0
        # A GPU batch can come back empty (every sample dropped by the device-side wait's
        # check); the wait then grows until samples are kept, so this ends.
        if samples and (time.perf_counter() - t0 >= cfg.budget_s or len(samples) >= cfg.max_samples):
            return samples, False, time.perf_counter() - t0
        batch = min(batch * 2, 256)


def time_callable(fn: Callable[[Any], Any], input_sets: list, device: torch.device,
                  cfg: TimingConfig = TimingConfig(), l2_bytes: int = 0,
                  set_bytes: int = 0) -> Timing:
    """Time ``fn(inputs)``. ``input_sets`` are interchangeable input sets to rotate over.

    ``set_bytes`` is the size of one set (for the record's cache note).
    """
    if not input_sets:
        raise ValueError("time_callable needs at least one input set")
    if _is_gpu(device):
        return _time_gpu(fn, input_sets, device, cfg, l2_bytes, set_bytes)
    return _time_cpu(fn, input_sets, cfg, set_bytes)


# ---------------------------------------------------------------- CPU

class _WaitClock:
    """Nanoseconds this process's threads have spent runnable but not running (the run
    delay of /proc/self/task/*/schedstat, summed), read by ``pread`` on descriptors opened
    once, a few µs a read; where schedstat is missing, the calling thread's time off the
    CPU stands in (it misses a worker thread preempted while the caller spins)."""

    def __init__(self):
        self.fds: list = []
        try:
            for tid in os.listdir("/proc/self/task"):
                try:
                    self.fds.append(os.open(f"/proc/self/task/{tid}/schedstat", os.O_RDONLY))
                except OSError:
                    pass        # a thread that just ended
        except OSError:
            pass
        self.method = "schedstat run delay" if self.fds else "calling thread off-CPU time"

    def read(self) -> int:
        if not self.fds:
            return time.perf_counter_ns() - time.thread_time_ns()
        total = 0
        for fd in self.fds:
            try:
                total += int(os.pread(fd, 128, 0).split()[1])
            except (OSError, ValueError, IndexError):
                pass            # a thread that ended contributes what it had
        return total

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds = []


def _time_cpu(fn, sets, cfg: TimingConfig, set_bytes: int) -> Timing:
    n = len(sets)
    fn(sets[0])                                  # first call outside timing
    # Warm up for ~5% of the budget (at least 2 calls) and estimate one call's time.
    t_end = time.perf_counter() + 0.05 * cfg.budget_s
    calls, t0 = 0, time.perf_counter_ns()
    while True:
        fn(sets[calls % n])
        calls += 1
        if calls >= 2 and time.perf_counter() >= t_end:
            break
    est_us = (time.perf_counter_ns() - t0) / 1e3 / calls
    inner = max(1, math.ceil(cfg.cpu_min_sample_us / max(est_us, 1e-3)))
    state = {"i": 0}
    waits: list = []
    clock = _WaitClock()        # after the warm-up: torch's worker threads exist by now

    def take(k):
        out = []
        for _ in range(k):
            i = state["i"]
            w0 = clock.read()
            t = time.perf_counter_ns()
            for j in range(inner):
                fn(sets[(i + j) % n])
            wall = time.perf_counter_ns() - t
            waits.append(max(clock.read() - w0, 0) / max(wall, 1))
            out.append(wall / 1e3 / inner)
            state["i"] = i + inner
        return out

    try:
        samples, conv, wall = _sample_loop(take, cfg, batch=5)
    finally:
        clock.close()
    cache = (f"rotated {n} input sets ({n * set_bytes / 2**20:.1f} MiB)" if n > 1 else "none (one input set)")
    summ = stats.summarize(samples)
    hit = sum(1 for w in waits if w > stats.WAIT_SHARE)
    return Timing(summ, "cpu_perf_counter", inner, cache, conv, wall,
                  note=f"torch threads: {torch.get_num_threads()}", stall=stats.stall_reason(samples, waits),
                  waited={"method": clock.method, "samples_waited": hit,
                          "median_share": round(stats.quantile(sorted(waits), 0.5), 4)})


# ---------------------------------------------------------------- GPU

def _host_us(call: Callable[[], Any], reps: int = 5) -> float:
    """Host time of one call made with an idle device queue: what the launcher costs before
    its work is queued. The median of a few; sizes the device-side wait."""
    out = []
    for _ in range(reps):
        torch.cuda.synchronize()
        t = time.perf_counter()
        call()
        out.append((time.perf_counter() - t) * 1e6)
    torch.cuda.synchronize()
    return stats.quantile(sorted(out), 0.5)


class _Rotation:
    """``fn`` over the input sets in turn, as one argument-less call."""

    def __init__(self, fn, sets):
        self.fn, self.sets, self.i = fn, sets, 0

    def __call__(self):
        self.fn(self.sets[self.i % len(self.sets)])
        self.i += 1


class _EventTimer:
    """take(k) -> up to k device-side samples (µs) of one call each: ``before`` (the L2
    flush), the device-side wait, start event, the call, the late-launch check, end event.
    Queued in groups and synchronised once per group; late samples are settled by the wait."""

    def __init__(self, call, before, wait: gpu_wait.DeviceWait, group: int = 256):
        self.call, self.before, self.wait = call, before, wait
        self.ev = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                   for _ in range(group)]

    def __call__(self, k: int) -> list:
        out = []
        for s in range(0, k, len(self.ev)):
            m = min(len(self.ev), k - s)
            late = []
            for start, end in self.ev[:m]:
                if self.before is not None:
                    self.before()
                self.wait.enqueue()
                start.record()
                self.call()
                late.append(self.wait.launch_was_late(start))
                end.record()
            torch.cuda.synchronize()
            got = [start.elapsed_time(end) * 1e3 for start, end in self.ev[:m]]
            out.extend(self.wait.settle(got, late))
        return out


def _join(*notes) -> str:
    return "; ".join(n for n in notes if n)


def _time_gpu(fn, sets, device, cfg: TimingConfig, l2_bytes: int, set_bytes: int) -> Timing:
    with torch.cuda.device(device):
        fn(sets[0])                              # compile / autotune, outside timing
        torch.cuda.synchronize()
        flush = _flush_buffer(device, l2_bytes)
        call = _Rotation(fn, sets)
        host_us = _host_us(call)
        wait = gpu_wait.DeviceWait(gpu_wait.cycles_per_us(device))
        wait.size_for(host_us)
        take = _EventTimer(call, flush.zero_, wait)

        # Warm-up: ~5% of the budget, at least 3 samples. Their median, a device-side time
        # (the wait keeps the launcher's host time out), chooses events or graph replay.
        warm, t_end = [], time.perf_counter() + 0.05 * cfg.budget_s
        while len(warm) < 3 or time.perf_counter() < t_end:
            warm.extend(take(3))
            if len(warm) > 200:
                break
        est_us = stats.quantile(sorted(warm), 0.5)
        wait.dropped = wait.kept_late = 0        # count what the timed samples lost, not the warm-up's
        note = ""
        if cfg.use_graphs and est_us < cfg.short_kernel_us:
            try:
                t = _time_graph(fn, sets, device, cfg, est_us, set_bytes, l2_bytes, flush, wait)
                t.host_call_us = host_us
                return t
            except Exception as e:  # capture is not possible for every callable
                note = f"graph replay not used ({type(e).__name__}: {str(e)[:200]}); timed with events"
                torch.cuda.synchronize()
        samples, conv, wall = _sample_loop(take, cfg, batch=10)
    cache = f"L2 flushed before each call ({flush.numel() * 4 / 2**20:.0f} MiB written)"
    return Timing(stats.summarize(samples), "cuda_event", 1, cache, conv, wall, _join(note, wait.note()),
                  device_wait_us=wait.wait_us, host_call_us=host_us, estimate_us=est_us,
                  dropped_samples=wait.dropped, stall=stats.stall_reason(samples))


def _capture(stream, launches: Callable[[], None]):
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=stream):
        launches()
    return graph


def _time_graph(fn, sets, device, cfg: TimingConfig, est_us: float, set_bytes: int, l2_bytes: int,
                flush, event_wait: gpu_wait.DeviceWait) -> Timing:
    """Replay a graph of ``inner`` calls between events. The calls either rotate over input
    sets that together exceed twice the L2, or (when the sets are too few: small ops) each
    call is preceded by an L2 flush captured into the graph, and the flush's own time,
    measured by replaying a graph of the same flushes alone, is subtracted sample by sample."""
    n = len(sets)
    rotate = l2_bytes > 0 and set_bytes > 0 and n * set_bytes >= 2 * l2_bytes
    flush_est = 0.0
    if not rotate:
        flush_est = stats.quantile(sorted(_EventTimer(flush.zero_, None, event_wait, group=8)(8)), 0.5)
    inner = int(min(max(math.ceil(cfg.graph_target_us / max(est_us + flush_est, 0.5)), 8), 2000))
    # Outputs allocated inside the graph stay alive for its life: keep them to about 1 GiB.
    inner = max(8, min(inner, (1 << 30) // max(set_bytes, 1)))
    if rotate:   # a whole number of rounds, or one replay's last set is the next one's first
        inner = math.ceil(inner / n) * n
    stream = torch.cuda.Stream(device)
    stream.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(stream):          # warm up on the capture stream, as capture requires
        for i in range(3):
            fn(sets[i % n])
    torch.cuda.current_stream(device).wait_stream(stream)
    torch.cuda.synchronize()

    def calls():
        for i in range(inner):
            if not rotate:
                flush.zero_()
            fn(sets[i % n])

    def flushes():
        for _ in range(inner):
            flush.zero_()

    graph = _capture(stream, calls)
    flush_graph = None if rotate else _capture(stream, flushes)

    def replay():
        if flush_graph is not None:
            flush_graph.replay()
        graph.replay()

    replay()                                  # the first replay uploads the graphs
    torch.cuda.synchronize()
    wait = gpu_wait.DeviceWait(event_wait.cycles_per_us)
    wait.size_for(_host_us(replay, reps=3))
    ev = [tuple(torch.cuda.Event(enable_timing=True) for _ in range(3)) for _ in range(16)]
    flush_per_call: list = []

    def take(k):
        out = []
        for s in range(0, k, len(ev)):
            m = min(len(ev), k - s)
            late = []
            for e0, e1, e2 in ev[:m]:
                wait.enqueue()
                e0.record()
                if flush_graph is not None:
                    flush_graph.replay()
                e1.record()
                graph.replay()
                late.append(wait.launch_was_late(e0))
                e2.record()
            torch.cuda.synchronize()
            got = []
            for e0, e1, e2 in ev[:m]:
                f = e0.elapsed_time(e1) * 1e3 / inner
                got.append((e1.elapsed_time(e2) * 1e3 / inner - f, f))
            kept = wait.settle(got, late)
            out.extend(call_us for call_us, _ in kept)
            if flush_graph is not None:
                flush_per_call.extend(f for _, f in kept)
        return out

    samples, conv, wall = _sample_loop(take, cfg, batch=5)
    summary = stats.summarize(samples)
    flush_us = stats.quantile(sorted(flush_per_call), 0.5) if flush_per_call else None
    if summary.median_us <= 0:     # nothing left once the flush is taken out: no honest number here
        raise RuntimeError(f"the graph's per-call time is {summary.median_us:.3g} µs"
                           + (f" after subtracting the L2 flush ({flush_us:.2f} µs a call)" if flush_us else ""))
    if rotate:
        cache = f"rotated {n} input sets ({n * set_bytes / 2**20:.1f} MiB, over twice the L2) inside the graph"
    else:
        cache = (f"L2 flushed before each call inside the graph ({flush.numel() * 4 / 2**20:.0f} MiB written); "
                 f"the flush's own time ({flush_us:.2f} µs a call, from a graph of the flushes alone) subtracted")
    return Timing(summary, "cuda_graph", inner, cache, conv, wall, wait.note(),
                  device_wait_us=wait.wait_us, estimate_us=est_us, dropped_samples=wait.dropped,
                  flush_us=flush_us, stall=stats.stall_reason(samples))
