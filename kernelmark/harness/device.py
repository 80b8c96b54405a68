"""What machine this is: the device profile every run file carries.

Backend (cuda, rocm or cpu), device name and architecture, SM/CU count, memory and L2
size, clocks and throttle state where NVML or rocm-smi exposes them, driver and
runtime versions, library versions, CPU model, the ISA features that decide its matmul
speed, its threads (and why that many), and the kernelmark commit.
Reading the card's state never changes it: nothing here sets clocks, power or modes.
"""

from __future__ import annotations

import os
import platform
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

import kernelmark
from kernelmark.harness import cpu as cpu_mod
from kernelmark.harness import datasheet


class DeviceError(ValueError):
    """The requested device does not exist on this machine."""


@dataclass(frozen=True)
class Target:
    """The device a run measures: torch device plus its kind."""
    torch_device: torch.device
    kind: str                      # cuda | rocm | cpu
    capability: Optional[tuple]    # (major, minor) on CUDA; None elsewhere

    @property
    def is_gpu(self) -> bool:
        return self.kind in ("cuda", "rocm")


def _gpu_kind() -> str:
    return "rocm" if getattr(torch.version, "hip", None) else "cuda"


def resolve(spec: Optional[str]) -> Target:
    """'cpu', 'cuda', 'cuda:N' (ROCm GPUs are 'cuda' to torch too) or None for the best here."""
    if spec is None:
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    spec = spec.strip().lower()
    if spec == "cpu":
        return Target(torch.device("cpu"), "cpu", None)
    if spec == "rocm":
        spec = "cuda"
    if spec == "cuda" or spec.startswith("cuda:"):
        if not torch.cuda.is_available():
            build = "a CPU-only build" if torch.version.cuda is None and torch.version.hip is None else "a GPU build"
            raise DeviceError(f"--device {spec}: no GPU is visible to torch {torch.__version__} ({build}); "
                              "use --device cpu")
        try:
            index = int(spec.split(":", 1)[1]) if ":" in spec else torch.cuda.current_device()
        except ValueError:
            raise DeviceError(f"--device {spec}: expected cuda:N with N an integer") from None
        count = torch.cuda.device_count()
        if not 0 <= index < count:
            raise DeviceError(f"--device {spec}: this machine has {count} GPU(s), cuda:0..cuda:{count - 1}")
        kind = _gpu_kind()
        cap = torch.cuda.get_device_capability(index) if kind == "cuda" else None
        return Target(torch.device("cuda", index), kind, tuple(cap) if cap else None)
    raise DeviceError(f"unknown device {spec!r}; use cpu, cuda or cuda:N")


# ------------------------------------------------------------------ pieces of the profile

def _run(cmd: list, timeout: float = 5.0) -> Optional[str]:
    exe = shutil.which(cmd[0])
    if not exe:
        return None
    try:
        out = subprocess.run([exe, *cmd[1:]], capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_state() -> dict:
    """Commit of the kernelmark checkout this code runs from, with a dirty flag."""
    root = Path(kernelmark.__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return {"commit": None, "dirty": None}
    commit = _run(["git", "-C", str(root), "rev-parse", "HEAD"])
    status = _run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"])
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def _cpu_info() -> dict:
    model = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        isa = cpu_mod.isa_features(Path("/proc/cpuinfo").read_text())
    except OSError:
        isa = None          # unknown, which compare treats as unknown, not as "none"
    return {"model": model, "logical_cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "llc_bytes": _llc_bytes(), "isa": isa, "torch_capability": cpu_mod.torch_capability()}


def _llc_bytes() -> int:
    """Largest CPU cache (bytes) from sysfs; 0 if unknown."""
    best = 0
    base = Path("/sys/devices/system/cpu/cpu0/cache")
    for idx in base.glob("index*"):
        try:
            s = (idx / "size").read_text().strip()
        except OSError:
            continue
        mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(s[-1:], 1)
        try:
            best = max(best, int(s.rstrip("KMG")) * mult)
        except ValueError:
            pass
    return best


_THROTTLE_BITS = {
    0x1: "gpu_idle", 0x2: "applications_clocks_setting", 0x4: "sw_power_cap", 0x8: "hw_slowdown",
    0x10: "sync_boost", 0x20: "sw_thermal_slowdown", 0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown", 0x100: "display_clock_setting",
}


def _nvml_handle(index: int):
    try:
        import pynvml  # provided by nvidia-ml-py
    except ImportError:
        return None, None
    try:
        pynvml.nvmlInit()
        handle = None
        uuid = getattr(torch.cuda.get_device_properties(index), "uuid", None)
        if uuid is not None:
            try:
                # bytes: c_char_p takes no str in the bindings without convertStrBytes.
                handle = pynvml.nvmlDeviceGetHandleByUUID(f"GPU-{uuid}".encode())
            except Exception:   # NVMLError, or a TypeError from the bindings: use the index
                handle = None
        if handle is None:
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        return pynvml, handle
    except Exception:
        return None, None


def _reasons(pynvml, h) -> Optional[list]:
    reasons_fn = getattr(pynvml, "nvmlDeviceGetCurrentClocksEventReasons", None) or \
        getattr(pynvml, "nvmlDeviceGetCurrentClocksThrottleReasons", None)
    if reasons_fn is None:
        return None
    try:
        bits = reasons_fn(h)
    except Exception:
        return None
    return [n for b, n in _THROTTLE_BITS.items() if bits & b]


def _query(pynvml, h, state: dict, fields) -> dict:
    for key, fn, *args in fields:
        try:
            state[key] = fn(h, *args)
        except Exception:
            pass
    reasons = _reasons(pynvml, h)
    if reasons is not None:
        state["throttle_reasons"] = reasons
    return state


def _live_fields(pynvml) -> list:
    """What changes while a kernel runs: clocks, temperature, power (and throttle reasons)."""
    return [("sm_clock_mhz", pynvml.nvmlDeviceGetClockInfo, pynvml.NVML_CLOCK_SM),
            ("mem_clock_mhz", pynvml.nvmlDeviceGetClockInfo, pynvml.NVML_CLOCK_MEM),
            ("temperature_c", pynvml.nvmlDeviceGetTemperature, pynvml.NVML_TEMPERATURE_GPU),
            ("power_w", lambda hh: pynvml.nvmlDeviceGetPowerUsage(hh) / 1000.0)]


def nvml_state(index: int) -> Optional[dict]:
    """Clocks, temperature, power and throttle reasons of a GPU now (None without NVML)."""
    pynvml, h = _nvml_handle(index)
    if h is None:
        return None
    return _query(pynvml, h, {}, _live_fields(pynvml) + [
        ("sm_clock_max_mhz", pynvml.nvmlDeviceGetMaxClockInfo, pynvml.NVML_CLOCK_SM),
        ("mem_clock_max_mhz", pynvml.nvmlDeviceGetMaxClockInfo, pynvml.NVML_CLOCK_MEM),
        ("sm_app_clock_mhz", pynvml.nvmlDeviceGetApplicationsClock, pynvml.NVML_CLOCK_SM),
        ("power_limit_w", lambda hh: pynvml.nvmlDeviceGetEnforcedPowerLimit(hh) / 1000.0),
        ("persistence_mode", pynvml.nvmlDeviceGetPersistenceMode)])


def nvml_reader(index: int):
    """A function that reads the live state of a GPU (clocks, temperature, power, throttle
    reasons) cheaply, for sampling during a measurement; None without NVML."""
    pynvml, h = _nvml_handle(index)
    if h is None:
        return None
    fields = _live_fields(pynvml)
    return lambda: _query(pynvml, h, {}, fields)


def _driver_version() -> Optional[str]:
    pynvml, h = _nvml_handle(torch.cuda.current_device()) if torch.cuda.is_available() else (None, None)
    if pynvml is not None:
        try:
            v = pynvml.nvmlSystemGetDriverVersion()
            return v.decode() if isinstance(v, bytes) else v
        except Exception:
            pass
    out = _run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"])
    if out:
        return out.splitlines()[0].strip()
    if getattr(torch.version, "hip", None):
        out = _run(["rocm-smi", "--showdriverversion"])
        if out:
            for line in out.splitlines():
                if "version" in line.lower():
                    return line.split(":")[-1].strip()
    return None


def _rocm_state() -> Optional[dict]:
    out = _run(["rocm-smi", "--showclocks", "--showtemp", "--showpower", "--json"], timeout=10)
    if not out:
        return None
    import json
    try:
        return json.loads(out)
    except ValueError:
        return None


def _versions() -> dict:
    # Read Triton's version without importing it: on a CPU the runner must still be able
    # to switch the interpreter on before Triton's first import.
    from importlib import metadata
    try:
        triton_v = metadata.version("triton")
    except metadata.PackageNotFoundError:
        triton_v = None
    import numpy
    return {
        "kernelmark": kernelmark.__version__, "python": platform.python_version(),
        "torch": torch.__version__, "triton": triton_v, "numpy": numpy.__version__,
        "cuda_runtime": torch.version.cuda, "hip_runtime": getattr(torch.version, "hip", None),
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
    }


# Environment variables that change what is measured.
_ENV_VARS = ("CUDA_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES", "TRITON_INTERPRET",
             "OMP_NUM_THREADS", "MKL_NUM_THREADS", "ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA",
             "TORCH_ALLOW_TF32_CUBLAS_OVERRIDE",
             "NVIDIA_TF32_OVERRIDE", "CUBLAS_WORKSPACE_CONFIG", "PYTORCH_CUDA_ALLOC_CONF")
# Every variable of these families changes the code that is timed (TRITON_DEFAULT_FP_FUSION,
# TRITON_F32_DEFAULT, TORCHINDUCTOR_MAX_AUTOTUNE, ...): recorded whatever their name.
_ENV_PREFIXES = ("TRITON_", "TORCHINDUCTOR_", "TORCH_BLAS_", "HIPBLASLT_", "ROCBLAS_")


def captured_env(environ=None) -> dict:
    """The environment variables that change what is measured, as set for this run."""
    environ = os.environ if environ is None else environ
    return {k: environ[k] for k in sorted(environ) if k in _ENV_VARS or k.startswith(_ENV_PREFIXES)}


def profile(target: Target, threads: Optional[dict] = None) -> dict:
    """The device profile: a JSON-able dict (no peaks; see kernelmark.harness.peaks).
    ``threads``: the thread choice (kernelmark.harness.cpu.choose_threads), kept under cpu."""
    p: dict = {"kind": target.kind, "torch_device": str(target.torch_device)}
    if target.is_gpu:
        idx = target.torch_device.index
        props = torch.cuda.get_device_properties(idx)
        p.update({
            "name": props.name,
            "arch": (getattr(props, "gcnArchName", None) if target.kind == "rocm"
                     else f"sm_{props.major}{props.minor}"),
            "capability": list(target.capability) if target.capability else None,
            "multiprocessors": props.multi_processor_count,
            "memory_bytes": props.total_memory,
            "l2_bytes": getattr(props, "L2_cache_size", 0),
            "driver": _driver_version(),
            "health": nvml_state(idx) if target.kind == "cuda" else _rocm_state(),
        })
    else:
        cpu = _cpu_info()
        p.update({"name": cpu["model"] or platform.machine(), "arch": platform.machine(),
                  "capability": None, "multiprocessors": cpu["logical_cpus"], "memory_bytes": _host_memory(),
                  "l2_bytes": cpu["llc_bytes"], "driver": None, "health": None})
    p["cpu"] = _cpu_info()
    if threads is not None:
        p["cpu"]["threads"] = threads
    p["versions"] = _versions()
    p["git"] = git_state()
    p["host"] = {"hostname": socket.gethostname(), "os": platform.platform(), "executable": sys.executable}
    p["env"] = captured_env()
    p["load_avg"] = load_avg()
    p["datasheet"] = datasheet.lookup(p["name"]) if target.is_gpu else None
    return p


def load_avg() -> Optional[list]:
    """1, 5 and 15 minute load averages: a busy host makes CPU timings (and GPU launch
    timings) unreliable, so the run records how busy it was."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def free_bytes(target: Target) -> Optional[int]:
    """Free memory of the device: the GPU's (cudaMemGetInfo), the host's MemAvailable for the
    CPU; None where it cannot be read."""
    if target.is_gpu:
        return torch.cuda.mem_get_info(target.torch_device)[0]
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _host_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def cache_bytes(prof: dict) -> int:
    """The cache a repetition must not find warm: the GPU's L2, or the CPU's last level."""
    return int(prof.get("l2_bytes") or 0)
