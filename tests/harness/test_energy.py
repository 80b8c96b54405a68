"""Energy counters and the arithmetic of J per call, with fake counters on a fake clock
(nothing here reads a real clock or sleeps)."""
import math
import types

import pytest
import torch

from kernelmark.harness import energy, energy_window


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t

    def sleep(self, s):
        self.t += s


class StepCounter:
    """A device drawing ``power`` watts whose counter updates every ``update`` seconds, in mJ."""
    name = "fake_step"
    resolution_j = 1e-3

    def __init__(self, clock, power=700.0, update=0.1, reported_power=None):
        self.clock, self.power, self.update_interval_s = clock, power, update
        self.reported = power if reported_power is None else reported_power
        self.t0 = clock()

    def available(self):
        return None

    def read_j(self):
        last_update = math.floor(round((self.clock() - self.t0) / self.update_interval_s, 9)) * self.update_interval_s
        return math.floor(self.power * last_update * 1000) / 1000

    def power_w(self):
        return self.reported


class Backwards(StepCounter):
    name = "fake_backwards"

    def read_j(self):
        return 1e6 - super().read_j()


def _calls(clock, call_s):
    n = [0]

    def run_n(k):
        n[0] += k
        clock.t += k * call_s
    return run_n, n


# ------------------------------------------------------------------ arithmetic

def test_uncertainty_closed_form_worked_example():
    # The module docstring's example: 700 W for 2 s, 1 mJ unit, 100 ms update: 5.0%.
    u = energy.uncertainty_rel(1400.0, 2.0, 1e-3, 0.1)
    assert u == pytest.approx((0.001 + 700 * 0.1) / 1400)
    assert u == pytest.approx(0.1 / 2 + 0.001 / 1400)
    assert energy.uncertainty_rel(0.0, 2.0, 1e-3, 0.1) == math.inf


def test_per_call_gross_net_and_their_uncertainties():
    w = energy.Window(calls=1000, dt_s=2.0, de_j=1400.0)
    f = energy.per_call(w, idle_w=100.0, resolution_j=1e-3, update_interval_s=0.1)
    assert f["gross_j_per_call"] == pytest.approx(1.4)
    assert f["avg_w"] == pytest.approx(700.0)
    assert f["net_j_per_call"] == pytest.approx((1400 - 100 * 2) / 1000)
    assert f["net_uncertainty_rel"] == pytest.approx((2e-3 + 800 * 0.1) / 1200)
    assert f["uncertainty_rel"] == pytest.approx(70.001 / 1400)
    # Without idle power there is no net figure, rather than a made-up one.
    assert energy.per_call(w, None, 1e-3, 0.1)["net_j_per_call"] is None


def test_per_call_refuses_a_window_where_the_counter_did_not_move_or_went_back():
    with pytest.raises(energy.CounterError, match="did not advance"):
        energy.per_call(energy.Window(10, 0.05, 0.0), None, 1e-3, 0.1)
    with pytest.raises(energy.CounterError, match="backwards"):
        energy.per_call(energy.Window(10, 0.05, -3.0), None, 1e-3, 0.1)


def test_step_counter_window_is_within_the_stated_uncertainty():
    clock = Clock()
    c = StepCounter(clock, power=700.0)
    clock.t += 0.037                      # start between two updates
    run_n, n = _calls(clock, 1e-4)        # 100 µs calls
    syncs = []
    w = energy.measure_window(c, run_n, lambda: syncs.append(clock()), 2.0, batch=500, clock=clock)
    assert w.calls == n[0] and w.dt_s >= 2.0 and len(syncs) == w.calls // 500 + 1
    f = energy.per_call(w, None, c.resolution_j, c.update_interval_s)
    true = 700.0 * 1e-4                   # 70 mJ a call
    assert abs(f["gross_j_per_call"] - true) / true <= f["uncertainty_rel"]
    assert f["uncertainty_rel"] == pytest.approx((1e-3 + w.de_j / w.dt_s * 0.1) / w.de_j)
    assert f["uncertainty_rel"] == pytest.approx(0.05, rel=0.05)      # ~u / window = 0.1 / 2
    # It is a real bound, not a decoration: this window is visibly off, by under 5%.
    assert f["gross_j_per_call"] != pytest.approx(true, rel=1e-6)


def test_idle_power_from_an_idle_window():
    clock = Clock()
    c = StepCounter(clock, power=90.0)
    assert energy.idle_power(c, 2.0, clock=clock, sleep=clock.sleep) == pytest.approx(90.0, rel=0.05)


# ------------------------------------------------------------------ sanity check

def test_sanity_check_accepts_an_honest_counter():
    clock = Clock()
    text = energy.sanity_check(StepCounter(clock), clock=clock, sleep=clock.sleep)
    assert "ratio" in text


def test_sanity_check_refuses_a_counter_that_disagrees_with_power():
    clock = Clock()
    c = StepCounter(clock, power=700.0, reported_power=50.0)    # counts 14x what power says
    with pytest.raises(energy.CounterError, match="disagrees with power"):
        energy.sanity_check(c, clock=clock, sleep=clock.sleep)
    c = StepCounter(clock, power=700.0, reported_power=80.0)    # 8.75x: within 10x, accepted
    energy.sanity_check(c, clock=clock, sleep=clock.sleep)


def test_sanity_check_refuses_a_counter_that_goes_backwards():
    clock = Clock()
    with pytest.raises(energy.CounterError, match="backwards"):
        energy.sanity_check(Backwards(clock), clock=clock, sleep=clock.sleep)


def test_session_with_a_refused_counter_records_why_and_measures_nothing():
    clock = Clock()
    s = energy_window.Session("cuda", 0, 1.0, counter=StepCounter(clock, reported_power=1.0),
                              clock=clock, sleep=clock.sleep)
    d = s.measure(lambda x: None, [None], torch.device("cpu"), 1e-3, lambda: None)
    assert d["status"] == "unavailable" and d["reason"].startswith("counter refused") and "disagrees" in d["reason"]


# ------------------------------------------------------------------ a whole window through a session

def test_session_measures_a_cpu_window_with_idle_subtracted():
    clock = Clock()

    class Busy(StepCounter):       # idles at 20 W, 120 W while calls run
        def __init__(self, clock):
            super().__init__(clock, power=20.0)
            self.extra = 0.0

        def read_j(self):
            return super().read_j() + math.floor(self.extra * 1000) / 1000

    c = Busy(clock)
    s = energy_window.Session("cpu", None, 1.0, counter=c, clock=clock, sleep=clock.sleep)
    assert s.idle_w == pytest.approx(20.0, rel=0.1)

    def call(_inputs):
        clock.t += 1e-3
        c.extra += 100.0 * 1e-3      # 100 W above idle for 1 ms: 0.1 J a call
    d = s.measure(call, [object(), object()], torch.device("cpu"), 1e-3, lambda: None)
    assert d["status"] == "ok" and d["counter"] == "fake_step" and d["calls"] >= 1000
    assert d["net_j_per_call"] == pytest.approx(0.1, rel=0.15)
    assert d["gross_j_per_call"] == pytest.approx(0.12, rel=0.15)
    assert "back to back" in d["method"] and d["window_s"] >= 1.0


# ------------------------------------------------------------------ RAPL

def _zone(root, name, uj, rng=None):
    z = root / name
    z.mkdir(parents=True, exist_ok=True)
    (z / "energy_uj").write_text(f"{uj}\n")
    if rng is not None:
        (z / "max_energy_range_uj").write_text(f"{rng}\n")
    return z


def test_rapl_sums_packages_ignores_subzones_and_handles_wrap(tmp_path):
    p0 = _zone(tmp_path, "intel-rapl:0", 999_000, rng=1_000_000)
    p1 = _zone(tmp_path, "intel-rapl:1", 10, rng=1_000_000)
    sub = _zone(tmp_path, "intel-rapl:0:0", 5)          # a part of package 0: not added again
    c = energy.RaplEnergy(tmp_path)
    assert c.available() is None and [z.name for z in c.zones] == ["intel-rapl:0", "intel-rapl:1"]
    e0 = c.read_j()
    (p0 / "energy_uj").write_text("3000\n")              # wrapped: 999000 -> 1000000 -> 3000
    (p1 / "energy_uj").write_text("2010\n")
    (sub / "energy_uj").write_text("900000\n")
    assert c.read_j() - e0 == pytest.approx((1_000 + 3_000 + 2_000) * 1e-6)


def test_rapl_on_amd_cpus(tmp_path):
    _zone(tmp_path, "amd-rapl:0", 7, rng=2 ** 32)
    assert energy.RaplEnergy(tmp_path).available() is None


def test_rapl_counter_that_goes_backwards_without_a_range_is_refused(tmp_path):
    z = _zone(tmp_path, "intel-rapl:0", 5000)
    c = energy.RaplEnergy(tmp_path)
    c.read_j()
    (z / "energy_uj").write_text("4000\n")
    with pytest.raises(energy.CounterError, match="backwards"):
        c.read_j()


def test_rapl_missing_or_unreadable_says_why(tmp_path):
    assert "no " in energy.RaplEnergy(tmp_path / "absent").available()
    assert "no intel-rapl" in energy.RaplEnergy(tmp_path).available()
    _zone(tmp_path, "intel-rapl:0", "garbage")
    assert "cannot be read" in energy.RaplEnergy(tmp_path).available()


def test_missing_counter_gives_an_unavailable_session(tmp_path, monkeypatch):
    monkeypatch.setenv(energy.POWERCAP_ENV, str(tmp_path / "none"))
    s = energy_window.Session("cpu", None, 0.2)
    d = s.measure(lambda x: None, [None], torch.device("cpu"), 1e-3, lambda: None)
    assert d["status"] == "unavailable" and "no CPU energy counter" in d["reason"]
    assert "gross_j_per_call" not in d      # nothing is estimated


# ------------------------------------------------------------------ NVML and amdsmi with fake bindings

class FakeNvml:
    def __init__(self, energy_mj=None, power_mw=250_000):
        self.energy_mj, self.power_mw = energy_mj, power_mw

    def nvmlDeviceGetTotalEnergyConsumption(self, h):
        if self.energy_mj is None:
            raise RuntimeError("NVML_ERROR_NOT_SUPPORTED")
        return self.energy_mj

    def nvmlDeviceGetPowerUsage(self, h):
        if self.power_mw is None:
            raise RuntimeError("NVML_ERROR_NOT_SUPPORTED")
        return self.power_mw


def test_nvml_counter_reads_millijoules(monkeypatch):
    nv = FakeNvml(energy_mj=123_456)
    monkeypatch.setattr(energy_window, "_nvml_handle", lambda i: (nv, "h"))
    c, why = energy_window.find_counter("cuda", 0)
    assert why is None and c.name == "nvml_total_energy" and c.read_j() == pytest.approx(123.456)
    assert c.power_w() == pytest.approx(250.0)


def test_nvml_without_energy_counter_falls_back_to_integrated_power(monkeypatch):
    nv = FakeNvml(energy_mj=None)
    monkeypatch.setattr(energy_window, "_nvml_handle", lambda i: (nv, "h"))
    c, why = energy_window.find_counter("cuda", 0)
    try:
        assert why is None and c.name == "power_integral"
    finally:
        c.stop()
    nv.power_mw = None
    c, why = energy_window.find_counter("cuda", 0)
    assert c is None and "nvmlDeviceGetTotalEnergyConsumption failed" in why and "no power reading" in why


def test_power_integral_is_the_trapezoid_rule():
    clock = Clock()
    watts = iter([100.0, 200.0, 200.0, 50.0])
    p = energy.PowerIntegral(lambda: next(watts), clock=clock)
    p.sample()
    clock.t += 0.1
    p.sample()
    clock.t += 0.2
    p.sample()
    clock.t += 0.1
    assert p.read_j() == pytest.approx(0.5 * (100 + 200) * 0.1 + 200 * 0.2 + 0.5 * (200 + 50) * 0.1)


def test_amdsmi_counter_is_accumulator_times_resolution():
    amd = types.SimpleNamespace(amdsmi_get_energy_count=lambda h: {"energy_accumulator": 2_000_000,
                                                                   "counter_resolution": 15.3},
                                amdsmi_get_power_info=lambda h: {"current_socket_power": 300})
    c = energy.AmdSmiEnergy(amd, "h")
    assert c.available() is None and c.resolution_j == pytest.approx(15.3e-6)
    assert c.read_j() == pytest.approx(2_000_000 * 15.3e-6) and c.power_w() == 300.0
