import torch

from kernelmark.harness import timing


def test_cpu_timing_returns_a_full_summary():
    # The budget ends sampling even below min_samples (the budget wins): a loaded 2-core machine
    # once spent 0.2 s on the first few 256x256 calls. A small matmul and a budget that is only
    # a cap (sampling stops once the interval converges) keep n >= min_samples meaningful.
    x = torch.randn(64, 64)
    cfg = timing.TimingConfig(budget_s=5.0, min_samples=10)
    t = timing.time_callable(lambda s: s @ s, [x], torch.device("cpu"), cfg)
    s = t.summary
    assert t.method == "cpu_perf_counter" and t.inner >= 1
    assert s.n >= 10 and len(s.samples_us) == min(s.n, 1000)
    assert s.min_us <= s.ci_low_us <= s.median_us <= s.ci_high_us <= s.max_us
    assert t.converged == (s.ci_rel <= cfg.target_ci_rel)


def test_very_short_calls_are_batched():
    cfg = timing.TimingConfig(budget_s=0.05, min_samples=5)
    t = timing.time_callable(lambda s: None, [None], torch.device("cpu"), cfg)
    assert t.inner > 1


def test_stopping_rule_stops_at_the_target_when_samples_agree():
    cfg = timing.TimingConfig(budget_s=60, min_samples=10, target_ci_rel=0.01)
    samples, converged, _ = timing._sample_loop(lambda k: [5.0] * k, cfg, batch=4)
    assert converged and 10 <= len(samples) <= 16


def test_stopping_rule_gives_up_at_the_cap_and_says_not_converged():
    import itertools
    seq = itertools.cycle([1.0, 100.0])
    cfg = timing.TimingConfig(budget_s=60, min_samples=10, max_samples=50)
    samples, converged, _ = timing._sample_loop(lambda k: [next(seq) for _ in range(k)], cfg, batch=5)
    assert not converged and len(samples) >= 50


def test_rotation_cycles_through_every_input_set():
    seen = []
    cfg = timing.TimingConfig(budget_s=0.05, min_samples=5)
    timing.time_callable(seen.append, [0, 1, 2], torch.device("cpu"), cfg)
    assert set(seen) == {0, 1, 2}


class _AlwaysWaiting:
    """A wait clock as on a busy machine: between any two reads this process's threads
    waited far longer than the sample took (both runnable, neither running)."""
    method = "test clock"

    def __init__(self):
        self.ns = 0

    def read(self):
        self.ns += 10 ** 9
        return self.ns

    def close(self):
        pass


def test_cpu_samples_that_waited_for_a_cpu_make_the_timing_noisy(monkeypatch):
    monkeypatch.setattr(timing, "_WaitClock", _AlwaysWaiting)
    cfg = timing.TimingConfig(budget_s=0.05, min_samples=5)
    t = timing.time_callable(lambda s: s + 1, [torch.ones(4)], torch.device("cpu"), cfg)
    assert t.stall is not None and t.stall.startswith(f"stalls: all {t.summary.n} samples waited for a CPU")
    assert t.noisy and t.as_dict()["stall"] == t.stall
    assert t.waited["method"] == "test clock" and t.waited["samples_waited"] == t.summary.n


def test_the_wait_clock_reads_this_process_and_never_goes_back():
    clock = timing._WaitClock()
    try:
        a = clock.read()
        sum(i * i for i in range(100_000))
        b = clock.read()
    finally:
        clock.close()
    assert isinstance(a, int) and b >= a
    import os
    if os.path.exists("/proc/self/schedstat"):
        assert clock.method == "schedstat run delay"
    t = timing.time_callable(lambda s: s + 1, [torch.ones(4)], torch.device("cpu"),
                             timing.TimingConfig(budget_s=0.05, min_samples=5))
    assert 0 <= t.waited["samples_waited"] <= t.summary.n and t.waited["median_share"] >= 0
