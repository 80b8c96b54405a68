"""The GPU timing paths, run on the CPU against a stand-in for torch.cuda.

No GPU here, so `_time_gpu` / `_time_graph` run against a simulated device with its own
launch queue. Two clocks, both virtual (nothing here depends on how fast this machine
is): the host clock advances by what each host-side step costs (a Python launcher's
100 µs before its kernel is queued, 1 µs to record an event), and the device runs
queued work in order, starting each piece when both the device is free and the host has
queued it. Events are stamped with the device time at which the device reaches them, as
CUDA's are; `query()` says whether the device is past them at the current host time.
`torch.cuda._sleep(cycles)` is a kernel lasting cycles / clock. A small L2 model decides
whether a kernel finds its input set in cache (cold or warm duration), and the flush
evicts it. A captured graph keeps the kernels launched during capture and queues them
again on each replay, for one small host cost.
"""
import contextlib
import types

import pytest
import torch

from kernelmark.harness import gpu_wait, timing

GPU = torch.device("cuda", 0)
L2 = 50 << 20


class Sim:
    """Host clock, device queue and L2 contents of the simulated GPU (times in µs)."""

    def __init__(self, clock_mhz=1500.0, flush_us=30.0, graph_launch_us=8.0):
        self.host = 0.0
        self.free = 0.0           # device time when everything queued so far is done
        self.clock_mhz = clock_mhz
        self.flush_us = flush_us
        self.graph_launch_us = graph_launch_us
        self.capturing = None     # the graph being captured, if any
        self.touched = 0          # bytes the device has moved so far
        self.last_use = {}        # input set -> self.touched after its last use
        self.flushes = 0          # flushes queued (in capture or not)
        self.kernels = []         # (input set, duration, run by a graph replay) of every kernel
        self.replaying = False

    def spend(self, us):
        self.host += us

    def enqueue(self, work):
        """Queue ``work()`` -> duration; in capture, keep it for the graph instead."""
        if self.capturing is not None:
            self.capturing.launches.append(work)
            return
        start = max(self.host, self.free)
        self.free = start + work()

    def stamp(self):
        """The device time at which work queued now is reached (an event's timestamp)."""
        self.free = max(self.host, self.free)
        return self.free

    def read(self, key, nbytes, cold_us, warm_us):
        warm = key in self.last_use and self.touched - self.last_use[key] < L2
        self.touched += nbytes
        self.last_use[key] = self.touched
        us = warm_us if warm else cold_us
        self.kernels.append((key, us, self.replaying))
        return us

    def flush(self):
        self.touched += 2 * L2
        return self.flush_us


SIM: Sim = None


class FakeEvent:
    def __init__(self, enable_timing=False):
        self.t = None

    def record(self, stream=None):
        assert SIM.capturing is None, "events are never recorded inside a capture"
        SIM.spend(1.0)
        self.t = SIM.stamp()

    def query(self):
        SIM.spend(1.0)
        return self.t <= SIM.host

    def synchronize(self):
        SIM.host = max(SIM.host, self.t)

    def elapsed_time(self, end):          # milliseconds, as torch.cuda.Event says
        return (end.t - self.t) / 1e3


class FakeStream:
    def wait_stream(self, other):
        pass


class FakeFlush:
    def zero_(self):
        SIM.spend(3.0)
        SIM.flushes += 1
        SIM.enqueue(SIM.flush)

    def numel(self):
        return 2 * L2 // 4


class FakeGraph:
    def __init__(self):
        self.launches = []

    def replay(self):
        SIM.spend(SIM.graph_launch_us)
        SIM.replaying = True
        for work in self.launches:
            SIM.enqueue(work)
        SIM.replaying = False


@contextlib.contextmanager
def _graph(g, stream=None):
    SIM.capturing = g
    try:
        yield
    finally:
        SIM.capturing = None


def _sleep(cycles):
    SIM.spend(2.0)
    SIM.enqueue(lambda: cycles / SIM.clock_mhz)


def _synchronize(*a, **k):
    SIM.host = max(SIM.host, SIM.free)


@pytest.fixture
def sim(monkeypatch):
    global SIM
    SIM = Sim()
    monkeypatch.setattr(torch.cuda, "Event", FakeEvent)
    monkeypatch.setattr(torch.cuda, "synchronize", _synchronize)
    monkeypatch.setattr(torch.cuda, "_sleep", _sleep, raising=False)
    monkeypatch.setattr(torch.cuda, "device", lambda d: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "Stream", lambda *a, **k: FakeStream())
    monkeypatch.setattr(torch.cuda, "current_stream", lambda *a, **k: FakeStream())
    monkeypatch.setattr(torch.cuda, "stream", lambda s: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "CUDAGraph", FakeGraph)
    monkeypatch.setattr(torch.cuda, "graph", _graph)
    monkeypatch.setattr(timing, "_flush_buffer", lambda device, l2: FakeFlush())
    clock = types.SimpleNamespace(perf_counter=lambda: SIM.host / 1e6,
                                  perf_counter_ns=lambda: int(SIM.host * 1e3))
    monkeypatch.setattr(timing, "time", clock)
    monkeypatch.setattr(gpu_wait, "_CYCLES_PER_US", {})
    return SIM


def kernel(launch_us, cold_us, warm_us=None, nbytes=256 << 10, host_jitter=None, syncs=False):
    """A launcher that costs ``launch_us`` of host time, then queues one kernel reading its
    input set (``nbytes``): ``cold_us`` from memory, ``warm_us`` when the set is still in L2.
    ``host_jitter(i)``: extra host time of the i-th call (a GC pause)."""
    calls = [0]

    def fn(x):
        SIM.spend(launch_us + (host_jitter(calls[0]) if host_jitter else 0.0))
        calls[0] += 1
        SIM.enqueue(lambda: SIM.read(x, nbytes, cold_us, cold_us if warm_us is None else warm_us))
        if syncs and SIM.capturing is None:
            _synchronize()
    return fn


CFG = timing.TimingConfig(budget_s=0.2, min_samples=10)


def test_a_host_bound_short_kernel_is_timed_on_the_device_by_graph_replay(sim):
    # 100 µs of launcher before a 5 µs kernel: without a device-side wait, events around
    # the call read ~100 µs, and that estimate kept it off graph replay.
    t = timing.time_callable(kernel(100.0, 5.0, warm_us=1.0), ["s"], GPU, CFG, l2_bytes=L2,
                             set_bytes=256 << 10)
    assert t.method == "cuda_graph"
    assert t.estimate_us == pytest.approx(5.0, rel=0.02)
    assert t.host_call_us == pytest.approx(100.0, rel=0.05) and t.device_wait_us > 0
    # One small input set cannot keep the L2 cold by rotation: the flush is in the graph,
    # its own time subtracted, and what is left is the cold kernel, not the warm one.
    assert t.summary.median_us == pytest.approx(5.0, rel=0.01)
    assert t.flush_us == pytest.approx(sim.flush_us, rel=0.01)
    assert "flushed before each call inside the graph" in t.cache and "subtracted" in t.cache
    replayed = [us for _, us, graph in sim.kernels if graph]
    assert replayed and all(us == 5.0 for us in replayed)   # no timed call found its set in L2
    d = t.as_dict()
    assert d["method"] == "cuda_graph" and d["device_wait_us"] == t.device_wait_us and "flush_us" in d


def test_a_host_bound_long_kernel_gets_events_without_the_launch_time(sim):
    t = timing.time_callable(kernel(290.0, 60.0), ["s"], GPU, CFG, l2_bytes=L2)
    assert t.method == "cuda_event" and t.inner == 1
    assert t.summary.median_us == pytest.approx(60.0, rel=0.01)
    assert t.device_wait_us >= 2 * 290
    assert t.dropped_samples == 0
    assert sim.flushes >= t.summary.n                     # a flush before every timed call
    assert "L2 flushed" in t.cache


def test_without_a_spin_kernel_the_record_says_host_time_may_be_in_it(sim, monkeypatch):
    monkeypatch.delattr(torch.cuda, "_sleep")
    t = timing.time_callable(kernel(100.0, 5.0), ["s"], GPU, CFG, l2_bytes=L2)
    # What the old timing measured: the launcher's host time (less the flush the device
    # was busy with meanwhile), and events chosen for it.
    assert t.method == "cuda_event" and t.summary.median_us > 10 * 5.0
    assert t.device_wait_us == 0 and "no device-side wait" in t.note


def test_samples_the_launcher_outran_are_dropped_and_counted(sim):
    # Every 7th call stalls 3 ms on the host (a GC pause): those samples would hold idle
    # device time; they are dropped, and the median is the kernel's.
    t = timing.time_callable(kernel(50.0, 40.0, host_jitter=lambda i: 3000.0 if i % 7 == 3 else 0.0),
                             ["s"], GPU, CFG, l2_bytes=L2)
    assert t.method == "cuda_event"
    assert t.dropped_samples > 0 and "dropped" in t.note
    assert t.summary.median_us == pytest.approx(40.0, rel=0.01)
    assert t.summary.max_us == pytest.approx(40.0, rel=0.01)   # none of the stalls got in


def test_a_call_that_synchronises_is_kept_and_flagged_once_the_wait_is_at_its_cap(sim):
    t = timing.time_callable(kernel(30.0, 40.0, syncs=True), ["s"], GPU,
                             timing.TimingConfig(budget_s=0.3, min_samples=5, use_graphs=False), l2_bytes=L2)
    assert t.device_wait_us == gpu_wait.MAX_WAIT_US
    assert "include host time" in t.note


def test_sets_that_exceed_twice_the_l2_are_rotated_inside_the_graph_without_a_flush(sim):
    sets = ["a", "b", "c"]
    t = timing.time_callable(kernel(100.0, 5.0, warm_us=1.0, nbytes=40 << 20), sets, GPU, CFG,
                             l2_bytes=L2, set_bytes=40 << 20)
    assert t.method == "cuda_graph" and t.inner >= 8
    assert t.flush_us is None and "rotated 3 input sets" in t.cache
    assert t.summary.median_us == pytest.approx(5.0, rel=0.01)
    replayed = [(k, us) for k, us, graph in sim.kernels if graph]
    assert {k for k, _ in replayed} == set(sets)
    assert all(us == 5.0 for _, us in replayed)     # not even where one replay meets the next


def test_graph_failure_falls_back_to_events_and_says_so(sim, monkeypatch):
    def broken_graph(g, stream=None):
        raise RuntimeError("operation not permitted when stream is capturing")
    monkeypatch.setattr(torch.cuda, "graph", broken_graph)
    t = timing.time_callable(kernel(10.0, 5.0), ["s"], GPU, CFG, l2_bytes=L2)
    assert t.method == "cuda_event"
    assert "graph replay not used" in t.note and "RuntimeError" in t.note


def test_graphs_can_be_turned_off(sim):
    t = timing.time_callable(kernel(10.0, 5.0), ["s"], GPU,
                             timing.TimingConfig(budget_s=0.1, min_samples=5, use_graphs=False), l2_bytes=L2)
    assert t.method == "cuda_event"
    assert t.summary.median_us == pytest.approx(5.0, rel=0.01)


def test_the_spin_is_calibrated_against_events(sim):
    assert gpu_wait.cycles_per_us(GPU) == pytest.approx(sim.clock_mhz, rel=1e-6)


def test_cpu_records_carry_no_gpu_fields():
    t = timing.time_callable(lambda s: None, [None], torch.device("cpu"),
                             timing.TimingConfig(budget_s=0.02, min_samples=3))
    assert not set(timing._GPU_ONLY) & set(t.as_dict())
