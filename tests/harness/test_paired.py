"""Paired rounds: the step and its kernels timed alternately, the ratio taken per round."""

import statistics

import pytest

from kernelmark.harness import paired


class FakeMachine:
    """A host clock the fake calls advance: a step costs 1000 ns, the kernels 300 and 100 ns
    (counted 2 and 1 times: 700 ns a step), all times the machine's current slowness."""

    def __init__(self, slowness):
        self.t, self.slowness, self.log, self.rounds = 0, slowness, [], 0

    def now(self):
        return self.t

    def step(self):
        self.rounds += 1
        self.t += int(1000 * self.slowness(self.rounds))
        self.log.append("step")

    def kernel(self, ns, name):
        def call(_):
            self.t += int(ns * self.slowness(self.rounds))
            self.log.append(name)
        return call


class FakeWait:
    method = "fake"

    def __init__(self, waits=()):
        self.waits, self.i, self.total = list(waits), 0, 0

    def read(self):
        # called twice a round (before and after): the round's wait is added at its end
        self.i += 1
        if self.i % 2 == 0 and self.waits:
            self.total += self.waits.pop(0)
        return self.total

    def close(self):
        pass


def _run(monkeypatch, slowness, waits=(), budget_s=60.0, want=15):
    m = FakeMachine(slowness)
    monkeypatch.setattr(paired, "_now_ns", m.now)
    kernels = [paired.Kernel("a", m.kernel(300, "a"), None, 2), paired.Kernel("b", m.kernel(100, "b"), None, 1)]
    got = paired.rounds(m.step, kernels, budget_s, want=want, clock_factory=lambda: FakeWait(waits))
    return m, got


def test_drift_between_rounds_cancels_in_the_ratio(monkeypatch):
    # the machine gets 2x slower halfway: a kernel sum taken in the first half against steps
    # taken in the second would read 1000*2 / 700 = 2.86; per round it is 1000 / 700 throughout
    m, got = _run(monkeypatch, lambda r: 1.0 if r <= 9 else 2.0)
    assert got["step_over_kernel_sum"] == pytest.approx(1000 / 700, rel=1e-3)
    assert got["ci"][0] == pytest.approx(1000 / 700, rel=1e-3) and got["ci"][1] == pytest.approx(1000 / 700, rel=1e-3)
    assert got["rounds"] == got["rounds_used"] == 15 and got["stall"] is None
    s = got["samples"]
    assert s["step_us"][0] == 1.0 and s["step_us"][-1] == 2.0          # the drift is in the samples
    assert {k["name"]: k["count"] for k in got["kernels"]} == {"a": 2, "b": 1}


def test_rounds_alternate_step_first_and_kernels_first(monkeypatch):
    m, got = _run(monkeypatch, lambda r: 1.0, want=5)
    body = m.log[3:]                  # after the warm-up: step, a, b
    assert m.log[:3] == ["step", "a", "b"]
    assert body[:6] == ["step", "a", "b", "a", "b", "step"] and len(body) == 3 * got["rounds"]


def test_stalled_rounds_are_left_out_and_named(monkeypatch):
    # rounds 2 and 4 waited for a CPU most of their time and ran 3x slower in their kernels only
    slow = {2, 4}
    m = FakeMachine(lambda r: 1.0)
    monkeypatch.setattr(paired, "_now_ns", m.now)
    state = {"round": 0}

    def step():
        m.step()
        state["round"] += 1

    def kern(_):
        m.t += 700 * (3 if state["round"] in slow else 1)

    waits = [1700 * 3 if i + 1 in slow else 0 for i in range(15)]
    got = paired.rounds(step, [paired.Kernel("k", kern, None, 1)], 60.0, want=15,
                        clock_factory=lambda: FakeWait(waits))
    assert got["rounds"] == 15 and got["rounds_used"] == 13
    assert got["stall"].startswith("2 of 15 rounds waited for a CPU") and "(left out)" in got["stall"]
    assert got["step_over_kernel_sum"] == pytest.approx(1000 / 700, rel=1e-3)
    assert got["samples"]["stalled"].count(True) == 2


def test_at_least_five_rounds_whatever_the_budget_and_a_ratio_that_wanders_runs_on(monkeypatch):
    _, got = _run(monkeypatch, lambda r: 1.0, budget_s=0.0)
    assert got["rounds"] == paired.MIN_ROUNDS
    # a ratio that does not settle (the step alone slows and speeds) keeps sampling to MAX_ROUNDS
    m = FakeMachine(lambda r: 1.0)
    monkeypatch.setattr(paired, "_now_ns", m.now)

    def step():
        m.step()
        m.t += (m.rounds * 7919) % 1000      # spread evenly over 0-999 ns: never settles to 1%

    got = paired.rounds(step, [paired.Kernel("k", m.kernel(700, "k"), None, 1)], 60.0,
                        clock_factory=lambda: FakeWait())
    assert got["rounds"] == paired.MAX_ROUNDS
    ratios = [a / b for a, b in zip(got["samples"]["step_us"], got["samples"]["kernel_sum_us"])]
    assert got["step_over_kernel_sum"] == pytest.approx(statistics.median(ratios), rel=1e-3)


def test_no_kernels_is_refused():
    with pytest.raises(ValueError, match="at least one kernel"):
        paired.rounds(lambda: None, [], 1.0)
