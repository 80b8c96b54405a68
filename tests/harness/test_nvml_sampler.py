"""NVML sampled during a measurement, against a fake pynvml (no GPU, no NVML here)."""
import sys
import time
import types

import pytest
import torch

from kernelmark.harness import device, nvml_sampler, runner

CALM = {"sm_clock_mhz": 1980, "mem_clock_mhz": 2619, "temperature_c": 41, "power_w": 120.0,
        "throttle_reasons": ["gpu_idle"]}
HOT = {"sm_clock_mhz": 1410, "mem_clock_mhz": 2619, "temperature_c": 87, "power_w": 699.0,
       "throttle_reasons": ["sw_thermal_slowdown"]}


def fake_pynvml(states):
    """A pynvml whose device walks through ``states`` (one per read of the SM clock), then
    stays on the last one."""
    at = {"i": -1}

    def state():
        return states[min(at["i"], len(states) - 1)]

    def clock(h, kind):
        if kind == m.NVML_CLOCK_SM:
            at["i"] += 1
            return state()["sm_clock_mhz"]
        return state()["mem_clock_mhz"]

    bits = {name: bit for bit, name in device._THROTTLE_BITS.items()}
    m = types.SimpleNamespace(
        NVML_CLOCK_SM=0, NVML_CLOCK_MEM=2, NVML_TEMPERATURE_GPU=0,
        nvmlInit=lambda: None, nvmlDeviceGetHandleByIndex=lambda i: ("gpu", i),
        nvmlDeviceGetClockInfo=clock,
        nvmlDeviceGetTemperature=lambda h, kind: state()["temperature_c"],
        nvmlDeviceGetPowerUsage=lambda h: int(state()["power_w"] * 1000),
        nvmlDeviceGetCurrentClocksEventReasons=lambda h: sum(bits[r] for r in state()["throttle_reasons"]),
    )
    return m


@pytest.fixture
def nvml(monkeypatch):
    def install(states):
        monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(states))
        monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: types.SimpleNamespace(uuid=None))
    return install


def _wait_for(pred, what):
    deadline = time.monotonic() + 30
    while not pred():
        assert time.monotonic() < deadline, f"never saw {what}"
        time.sleep(0.001)


def test_the_reader_reads_live_state_through_nvml(nvml):
    nvml([CALM])
    assert device.nvml_reader(0)() == CALM


def test_a_throttle_in_the_middle_is_seen_although_before_and_after_are_calm(nvml):
    nvml([CALM, CALM, HOT, HOT, CALM])
    s = nvml_sampler.Sampler(device.nvml_reader(0), interval_s=0.001).start()
    _wait_for(lambda: len(s.samples) >= 6, "six samples")
    during = s.stop()
    assert during["samples"] >= 6
    assert during["sm_clock_mhz_min"] == 1410 and during["sm_clock_mhz_max"] == 1980
    assert during["temperature_c_max"] == 87 and during["power_w_max"] == 699.0
    assert during["throttle_reasons"] == ["gpu_idle", "sw_thermal_slowdown"]
    flags = runner.health_flags(dict(CALM), dict(CALM), during)
    assert flags["throttled"] and flags["throttle_reasons"] == ["sw_thermal_slowdown"]
    assert flags["during"] is during
    assert not runner.health_flags(dict(CALM), dict(CALM))["throttled"]     # what before/after alone say


def test_a_sagging_clock_during_the_run_is_flagged():
    ref = {"sm_app_clock_mhz": 1980, "sm_clock_mhz": 1980}
    during = nvml_sampler.summarize([{"sm_clock_mhz": 1500}] * 5 + [{"sm_clock_mhz": 1980}] * 2)
    assert runner.health_flags(ref, ref, during)["below_app_clocks"]
    brief = nvml_sampler.summarize([{"sm_clock_mhz": 1500}] + [{"sm_clock_mhz": 1980}] * 6)
    assert not runner.health_flags(ref, ref, brief)["below_app_clocks"]


def test_without_nvml_there_is_no_reader_and_no_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)        # import pynvml -> ImportError
    assert device.nvml_reader(0) is None


def test_failing_reads_give_no_summary_and_no_error():
    def broken():
        raise OSError("NVML_ERROR_GPU_IS_LOST")
    s = nvml_sampler.Sampler(broken, interval_s=0.001).start()
    assert s.stop() is None and not s._thread.is_alive()
