"""kernelmark/harness/device.py: the environment a run records."""
from kernelmark.harness import device


def test_code_generation_variables_are_recorded_by_family():
    env = {"TRITON_DEFAULT_FP_FUSION": "0", "TORCHINDUCTOR_MAX_AUTOTUNE": "1", "OMP_NUM_THREADS": "2",
           "CUDA_VISIBLE_DEVICES": "1", "HOME": "/root", "PATH": "/usr/bin", "MY_TRITON_THING": "x"}
    got = device.captured_env(env)
    assert got == {"CUDA_VISIBLE_DEVICES": "1", "OMP_NUM_THREADS": "2", "TORCHINDUCTOR_MAX_AUTOTUNE": "1",
                   "TRITON_DEFAULT_FP_FUSION": "0"}


def test_the_profile_records_the_live_environment(monkeypatch):
    monkeypatch.setenv("TRITON_F32_DEFAULT", "ieee")
    prof = device.profile(device.resolve("cpu"))
    assert prof["env"]["TRITON_F32_DEFAULT"] == "ieee"
