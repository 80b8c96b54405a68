"""kernelmark/harness/peaks.py: measured once per device and versions, then read from the cache."""
from kernelmark.harness import device, peaks


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
