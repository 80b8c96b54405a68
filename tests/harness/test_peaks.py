"""kernelmark/harness/peaks.py: the compute roof of a dtype is the fastest way the device
computes it; the peak-cache key tells CPUs of one name with different matmul ISAs apart."""
import copy

import pytest

from kernelmark.harness import device, peaks, runner
from kernelmark.ops.registry import get_op

# A CPU without native bf16/fp16 (AVX2 only): bf16 matmul ~100x slower than fp32.
AVX2_PEAKS = {"copy_gbps": 16.8, "tflops": {"fp32": 0.155, "bf16": 0.0013, "fp16": 0.0015}}
# A GPU: every narrower dtype faster than fp32.
GPU_PEAKS = {"copy_gbps": 3000.0, "tflops": {"fp32": 50.0, "bf16": 700.0, "fp16": 700.0, "fp8_e4m3": 1400.0}}


def test_the_roof_of_a_dtype_is_the_fastest_way_to_compute_it():
    assert peaks.compute_roof(AVX2_PEAKS, "bf16") == (0.155, "fp32")
    assert peaks.compute_roof(AVX2_PEAKS, "fp16") == (0.155, "fp32")
    assert peaks.compute_roof(AVX2_PEAKS, "fp32") == (0.155, "fp32")
    assert peaks.compute_roof(GPU_PEAKS, "bf16") == (700.0, "bf16")
    assert peaks.compute_roof(GPU_PEAKS, "fp8_e4m3") == (1400.0, "fp8_e4m3")
    no_fp8 = {"tflops": {"fp32": 19.5, "bf16": 312.0, "fp16": 312.0}}          # fp8 computed in fp16
    assert peaks.compute_roof(no_fp8, "fp8_e4m3") == (312.0, "fp16")
    assert peaks.compute_roof({"tflops": {}}, "bf16") == (None, None)
    fl, _, bound = peaks.roofline(AVX2_PEAKS, "bf16", 1000.0)
    assert bound == "compute" and fl == pytest.approx(0.155e12)


def test_bf16_attention_on_an_avx2_cpu_is_not_thousands_of_percent():
    # An SDPA case at 0.0268 TFLOP/s in bf16 (it computes in fp32): 2,054% of the bf16 rate.
    op = get_op("prefill_attention")
    shape = {"batch": 1, "seq": 64, "q_heads": 4, "kv_heads": 2, "head_dim": 64, "causal": 0}
    median_us = op.flops(shape) / 0.0268e12 * 1e6
    m = runner.metrics(op, shape, "bf16", median_us, AVX2_PEAKS, None)
    assert m["roof_dtype"] == "fp32"
    assert m["pct_of_peak"] < 100
    gpu = runner.metrics(op, shape, "bf16", median_us, GPU_PEAKS, None)
    assert "roof_dtype" not in gpu


def _profile(isa):
    return {"kind": "cpu", "name": "AMD EPYC", "driver": None, "torch_device": "cpu",
            "versions": {"torch": "2.13.0", "triton": "3.9.0", "cuda_runtime": None, "hip_runtime": None},
            "cpu": {"model": "AMD EPYC", "torch_threads": 2, "isa": isa, "torch_capability": "AVX2"}}


def test_peak_cache_key_differs_with_the_matmul_isa():
    avx2 = _profile(["avx2", "fma"])
    bf16 = _profile(["avx2", "fma", "avx512f", "avx512_bf16"])
    assert peaks.cache_key(avx2) != peaks.cache_key(bf16)
    assert peaks.cache_key(avx2) == peaks.cache_key(copy.deepcopy(avx2))
    other_kernels = copy.deepcopy(avx2)
    other_kernels["cpu"]["torch_capability"] = "DEFAULT"        # ATEN_CPU_CAPABILITY=default
    assert peaks.cache_key(other_kernels) != peaks.cache_key(avx2)


def test_peaks_name_their_roofs_and_a_stalled_peak_stays_named_in_the_cache(monkeypatch, tmp_path):
    from kernelmark.harness import device as dev
    # fp32 matmul 1024^3 in 14 ms, bf16/fp16 512^3 in 200 ms: bf16 ~100x slower than fp32.
    times = {"copy_gbps": 16_000.0, "tflops.fp32": 14_000.0, "tflops.fp16": 200_000.0, "tflops.bf16": 200_000.0}

    def fake_time_us(fn, target, prof, budget_s, name="", stalls=None):
        if name == "tflops.fp32" and stalls is not None:
            stalls[name] = "stalls: 9 of 15 samples waited for a CPU over 10% of their time (the cores were busy)"
        return times[name]

    monkeypatch.setattr(peaks, "_time_us", fake_time_us)
    monkeypatch.setenv("KERNELMARK_CACHE_DIR", str(tmp_path))
    target = dev.resolve("cpu")
    got = peaks.get(target, _profile(["avx2", "fma"]) | {"l2_bytes": 0})
    assert got["roof"] == {"bf16": "fp32", "fp16": "fp32"}
    assert set(got["stalled"]) == {"tflops.fp32"} and got["source"] == "measured now"
    again = peaks.get(target, _profile(["avx2", "fma"]) | {"l2_bytes": 0})
    assert again["source"].startswith("cache") and set(again["stalled"]) == {"tflops.fp32"}


def test_peaks_are_measured_once_and_only_measuring_is_announced():
    # The tests' own cache directory (tests/conftest.py): whichever test first needs this
    # machine's peaks measures them, every later one reads them.
    target = device.resolve("cpu")
    prof = device.profile(target)
    said = []
    first = peaks.get(target, prof, log=said.append)
    assert first["copy_gbps"] > 0 and first["tflops"]["fp32"] > 0
    if first["source"] == "measured now":
        assert len(said) == 1 and said[0].startswith("kernelmark: measuring this device's peaks")
    else:
        assert said == []
    said.clear()
    again = peaks.get(target, prof, log=said.append)
    assert again["source"].startswith("cache (") and again["copy_gbps"] == first["copy_gbps"]
    assert said == []           # nothing is measured, so nothing says it is
