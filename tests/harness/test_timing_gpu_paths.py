"""The GPU timing paths, run on the CPU against a stand-in for torch.cuda.

No GPU here, so the control flow of `_time_gpu` / `_time_graph` (flush before each
event pair, graph capture over rotated input sets, the fallback when capture fails)
is exercised with fake events whose clock is perf_counter and a fake graph that
replays what was launched during capture.
"""
import contextlib
import time

import pytest
import torch

from kernelmark.harness import timing


class FakeEvent:
    def __init__(self, enable_timing=False):
        self.t = None

    def record(self, stream=None):
        self.t = time.perf_counter()

    def synchronize(self):
        pass

    def elapsed_time(self, end):          # milliseconds, as torch.cuda.Event says
        return (end.t - self.t) * 1e3


class FakeStream:
    def wait_stream(self, other):
        pass


class Flush:
    def __init__(self):
        self.zeroed = 0

    def zero_(self):
        self.zeroed += 1

    def numel(self):
        return 1 << 20


class Capture:
    """A graph whose replay re-runs the launches made while it was being captured."""
    active = None

    def __init__(self):
        self.launches = []

    def replay(self):
        for work in self.launches:
            work()


@contextlib.contextmanager
def _graph(g, stream=None):
    Capture.active = g
    try:
        yield
    finally:
        Capture.active = None


@pytest.fixture
def fake_cuda(monkeypatch):
    flush = Flush()
    monkeypatch.setattr(torch.cuda, "Event", FakeEvent)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a, **k: None)
    monkeypatch.setattr(torch.cuda, "device", lambda d: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "Stream", lambda *a, **k: FakeStream())
    monkeypatch.setattr(torch.cuda, "current_stream", lambda *a, **k: FakeStream())
    monkeypatch.setattr(torch.cuda, "stream", lambda s: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "CUDAGraph", Capture)
    monkeypatch.setattr(torch.cuda, "graph", _graph)
    monkeypatch.setattr(timing, "_flush_buffer", lambda device, l2: flush)
    return flush


def _kernel(seconds, seen):
    def fn(x):
        def work():
            seen.append(x)
            t = time.perf_counter() + seconds
            while time.perf_counter() < t:
                pass
        if Capture.active is not None:
            Capture.active.launches.append(work)
        else:
            work()
    return fn


GPU = torch.device("cuda", 0)


def test_long_kernels_get_events_with_the_l2_flushed_before_each(fake_cuda):
    seen = []
    cfg = timing.TimingConfig(budget_s=0.2, min_samples=10)
    t = timing.time_callable(_kernel(60e-6, seen), ["set0"], GPU, cfg, l2_bytes=50 << 20)
    assert t.method == "cuda_event" and t.inner == 1
    assert t.summary.median_us >= 55
    # Every timed call (and every warm-up call) was preceded by a flush.
    assert fake_cuda.zeroed >= t.summary.n
    assert "L2 flushed" in t.cache


def test_short_kernels_are_timed_by_graph_replay_over_rotated_sets(fake_cuda):
    seen = []
    sets = ["a", "b", "c"]
    cfg = timing.TimingConfig(budget_s=0.2, min_samples=5)
    t = timing.time_callable(_kernel(2e-6, seen), sets, GPU, cfg, l2_bytes=50 << 20, set_bytes=1 << 20)
    assert t.method == "cuda_graph"
    assert t.inner >= 8
    assert set(seen) == set(sets)
    assert "rotated 3 input sets" in t.cache
    # Per-call time, not per-graph time.
    assert t.summary.median_us < 200


def test_graph_capture_failure_falls_back_to_events_and_says_so(fake_cuda, monkeypatch):
    def broken_graph(g, stream=None):
        raise RuntimeError("operation not permitted when stream is capturing")
    monkeypatch.setattr(torch.cuda, "graph", broken_graph)
    cfg = timing.TimingConfig(budget_s=0.1, min_samples=5)
    t = timing.time_callable(_kernel(2e-6, []), ["s"], GPU, cfg, l2_bytes=50 << 20)
    assert t.method == "cuda_event"
    assert "graph capture failed" in t.note and "RuntimeError" in t.note


def test_graphs_can_be_turned_off(fake_cuda):
    cfg = timing.TimingConfig(budget_s=0.1, min_samples=5, use_graphs=False)
    t = timing.time_callable(_kernel(2e-6, []), ["s"], GPU, cfg, l2_bytes=50 << 20)
    assert t.method == "cuda_event"
