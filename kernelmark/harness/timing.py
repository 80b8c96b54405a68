"""How one callable is timed on this device. The harness alone owns this; ops never time.

GPU (CUDA or HIP through torch.cuda):
  * the first call (compilation, autotuning) and a warm-up run outside all timing;
  * kernels of at least ``short_kernel_us``: device events around each call, with the
    L2 flushed before it (a write of twice the L2 size), so a call never reads what
    the previous one left in cache ("cuda_event");
  * shorter kernels: a CUDA graph of ``inner`` launches cycling over rotated input sets
    is replayed between two events and the time divided by ``inner``, so launch
    overhead is not what is measured ("cuda_graph"). The runner provides enough input
    sets that a set is not reused before twice the L2 size has been touched (where
    memory allows; the record says how many).
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

from kernelmark.harness import stats


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
    stall: Optional[str] = None   # why the median is not the call's time (stats.stall_reason)
    waited: Optional[dict] = None  # CPU: how the wait for a CPU was measured, and how often it hit

    @property
    def noisy(self) -> bool:
        """Not to be trusted as it stands: the CI target missed, or stalls in the samples."""
        return not self.converged or self.stall is not None

    def as_dict(self) -> dict:
        d = asdict(self)
        d.update(d.pop("summary"))
        return d


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
        if time.perf_counter() - t0 >= cfg.budget_s or len(samples) >= cfg.max_samples:
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

def _time_gpu(fn, sets, device, cfg: TimingConfig, l2_bytes: int, set_bytes: int) -> Timing:
    n = len(sets)
    with torch.cuda.device(device):
        fn(sets[0])                              # compile / autotune, outside timing
        torch.cuda.synchronize()
        flush = _flush_buffer(device, l2_bytes)
        ev = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(256)]
        counter = {"i": 0}

        def events_batch(k):
            out = []
            for s in range(0, k, len(ev)):
                m = min(len(ev), k - s)
                for j in range(m):
                    flush.zero_()
                    ev[j][0].record()
                    fn(sets[counter["i"] % n])
                    counter["i"] += 1
                    ev[j][1].record()
                torch.cuda.synchronize()
                out.extend(ev[j][0].elapsed_time(ev[j][1]) * 1e3 for j in range(m))
            return out

        # Warm-up: ~5% of the budget, at least 3 calls; the median of these estimates one call.
        warm, t_end = [], time.perf_counter() + 0.05 * cfg.budget_s
        while len(warm) < 3 or time.perf_counter() < t_end:
            warm.extend(events_batch(3))
            if len(warm) > 200:
                break
        est_us = stats.quantile(sorted(warm), 0.5)
        note = ""
        if cfg.use_graphs and est_us < cfg.short_kernel_us:
            try:
                return _time_graph(fn, sets, device, cfg, est_us, set_bytes)
            except Exception as e:  # capture is not possible for every callable
                note = f"graph capture failed ({type(e).__name__}: {str(e)[:200]}); timed with events"
                torch.cuda.synchronize()
        samples, conv, wall = _sample_loop(events_batch, cfg, batch=10)
    cache = f"L2 flushed before each call ({flush.numel() * 4 / 2**20:.0f} MiB written)"
    return Timing(stats.summarize(samples), "cuda_event", 1, cache, conv, wall, note,
                  stall=stats.stall_reason(samples))


def _time_graph(fn, sets, device, cfg: TimingConfig, est_us: float, set_bytes: int) -> Timing:
    n = len(sets)
    inner = int(min(max(math.ceil(cfg.graph_target_us / max(est_us, 0.5)), 8), 2000))
    # Outputs allocated inside the graph stay alive for its life: keep them to about 1 GiB.
    inner = max(8, min(inner, (1 << 30) // max(set_bytes, 1)))
    stream = torch.cuda.Stream(device)
    stream.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(stream):          # warm up on the capture stream, as capture requires
        for i in range(3):
            fn(sets[i % n])
    torch.cuda.current_stream(device).wait_stream(stream)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=stream):
        for i in range(inner):
            fn(sets[i % n])
    graph.replay()                            # first replay uploads the graph
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

    def take(k):
        out = []
        for _ in range(k):
            start.record()
            graph.replay()
            end.record()
            end.synchronize()
            out.append(start.elapsed_time(end) * 1e3 / inner)
        return out

    samples, conv, wall = _sample_loop(take, cfg, batch=5)
    cache = (f"rotated {n} input sets ({n * set_bytes / 2**20:.1f} MiB) inside the graph" if n > 1
             else "one input set (it exceeds twice the L2)")
    return Timing(stats.summarize(samples), "cuda_graph", inner, cache, conv, wall,
                  stall=stats.stall_reason(samples))
