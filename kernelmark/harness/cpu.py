"""The host CPU as a device: the ISA features that decide how fast it multiplies each
dtype, the CPUs this process can actually get, and how many threads torch should use.

Why the ISA: two machines both called "AMD EPYC", one with AVX-512 BF16 and one with AVX2
only, differ 300x in bf16 matmul. The model name does not tell them apart; these flags do,
so they are in the profile, the peak-cache key and the device identity reports compare.

Why the thread count matters: a torch parallel region ends at a barrier that waits for its
slowest thread. With as many threads as cores, any other runnable thread on the machine
(the supervising kernelmark process, another tenant of a CI runner) deschedules one of
them, and every call then waits a scheduler slice (milliseconds) for it: a 6 µs GEMM was
measured at 8 ms. torch's default counts the machine's cores, not what a cgroup quota lets
this process use, and leaves nothing for the rest of the machine.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Optional

import torch

# Features that decide matmul speed per dtype, in the order they are listed. x86 (from
# /proc/cpuinfo "flags"): AVX2/FMA (fp32), AVX-512 F (fp32, wider), AVX-512 BF16 / FP16 and
# AVX-VNNI (native bf16, fp16, int8 dot products), AMX tiles (bf16, fp16, int8 matrix units).
# Arm ("Features"): NEON, fp16 arithmetic, SVE/SVE2, bf16, int8 matmul, SME.
MATMUL_ISA = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "avx_vnni",
              "amx_tile", "amx_bf16", "amx_fp16", "amx_int8",
              "asimd", "asimdhp", "sve", "sve2", "bf16", "i8mm", "sme")

# torch's thread count as this process started, before kernelmark (or a test) set it.
TORCH_DEFAULT_THREADS = torch.get_num_threads()


def isa_features(cpuinfo: str) -> list:
    """The MATMUL_ISA features every processor in a /proc/cpuinfo text has (a feature only
    some cores have, as on hybrid CPUs, is not one a thread can count on)."""
    common: Optional[set] = None
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() in ("flags", "Features"):
            have = set(value.split())
            common = have if common is None else common & have
    return [f for f in MATMUL_ISA if common and f in common]


def torch_capability() -> Optional[str]:
    """The vector ISA torch's own CPU kernels dispatch to (DEFAULT, AVX2, AVX512, ...)."""
    try:
        return torch.backends.cpu.get_cpu_capability()
    except Exception:       # an old or unusual torch build: unknown
        return None


def parse_cpu_max(text: str) -> Optional[float]:
    """CPUs allowed by a cgroup v2 ``cpu.max`` ("200000 100000" -> 2.0; "max ..." -> None)."""
    parts = text.split()
    if not parts or parts[0] == "max":
        return None
    try:
        quota, period = int(parts[0]), int(parts[1]) if len(parts) > 1 else 100000
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def _read(path: Path) -> Optional[str]:
    try:
        return path.read_text()
    except OSError:
        return None


def _up_from(base: Path, rel: str) -> list:
    """``base/rel`` and its parents up to ``base``; just ``base`` where that path is not
    under the mount (inside a container the mount is the container's own cgroup)."""
    d = base / rel.strip("/")
    if not d.is_dir():
        return [base]
    out = [d]
    while d != base and base in d.parents:
        d = d.parent
        out.append(d)
    return out


def cgroup_cpu_quota(root: Path = Path("/sys/fs/cgroup"), proc_cgroup: Path = Path("/proc/self/cgroup")) \
        -> Optional[float]:
    """The tightest CPU quota (in CPUs) on this process's cgroup and its ancestors; None if none.

    cgroup v2: ``cpu.max`` along the process's path (``0::/path`` in /proc/self/cgroup).
    cgroup v1: ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` in the ``cpu`` hierarchy.
    """
    paths = {}
    for line in (_read(proc_cgroup) or "").splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            for ctl in parts[1].split(",") if parts[1] else [""]:
                paths[ctl] = parts[2]
    found = []
    if (root / "cgroup.controllers").exists():                      # v2 mounted here
        for d in _up_from(root, paths.get("", "/")):
            q = parse_cpu_max(_read(d / "cpu.max") or "max")
            if q:
                found.append(q)
    v1 = next((root / n for n in ("cpu", "cpu,cpuacct", "cpuacct,cpu") if (root / n).is_dir()), None)
    if v1 is not None:
        for d in _up_from(v1, paths.get("cpu", "/")):
            try:
                quota = int((_read(d / "cpu.cfs_quota_us") or "-1").strip())
                period = int((_read(d / "cpu.cfs_period_us") or "100000").strip())
            except ValueError:
                continue
            if quota > 0 and period > 0:
                found.append(quota / period)
    return min(found) if found else None


def cpus_available() -> dict:
    """CPUs this process can run on at once: its affinity mask, capped by a cgroup quota."""
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = os.cpu_count() or 1
    quota = cgroup_cpu_quota()
    n = affinity if quota is None else max(1, min(affinity, math.floor(quota)))
    return {"cpus": n, "affinity": affinity, "cgroup_quota": quota}


def choose_threads(requested: Optional[int], available: dict, torch_default: int = TORCH_DEFAULT_THREADS,
                   env: Optional[dict] = None) -> dict:
    """How many threads torch gets, and why: ``--threads`` as asked; ``OMP_NUM_THREADS`` as
    set; else torch's default, capped at one fewer than the CPUs this process can get (at
    least 1), so the rest of the machine has a CPU that is not one of torch's."""
    env = os.environ if env is None else env
    cpus = available["cpus"]
    how = f"affinity {available['affinity']}" + \
        (f", cgroup quota {available['cgroup_quota']:g}" if available.get("cgroup_quota") else ", no cgroup quota")
    out = {"torch_default": torch_default, "cpus_available": cpus, "affinity": available["affinity"],
           "cgroup_quota": available.get("cgroup_quota")}
    if requested is not None:
        return {**out, "chosen": requested, "source": "--threads", "reduced": False,
                "reason": f"--threads {requested} ({cpus} CPUs available: {how})"}
    omp = _omp_threads(env.get("OMP_NUM_THREADS"))
    if omp:     # read here: torch read it at its start, which may have been before it was set
        return {**out, "chosen": omp, "source": "OMP_NUM_THREADS", "reduced": False,
                "reason": f"OMP_NUM_THREADS={env['OMP_NUM_THREADS']} ({cpus} CPUs available: {how})"}
    chosen = max(1, min(torch_default, cpus - 1))
    if chosen < torch_default:
        return {**out, "chosen": chosen, "source": "default", "reduced": True,
                "reason": f"{chosen} instead of torch's {torch_default}: this process can get {cpus} CPUs "
                          f"({how}) and one is left for the rest of the machine, so a thread descheduled "
                          "for another process does not stall every call (--threads overrides)"}
    return {**out, "chosen": chosen, "source": "default", "reduced": False,
            "reason": f"torch's default ({torch_default}; {cpus} CPUs available: {how})"}


def _omp_threads(value: Optional[str]) -> Optional[int]:
    """The thread count OMP_NUM_THREADS asks for (its first level: '4' or '4,2'); None if unset
    or not a positive integer."""
    try:
        n = int(str(value).split(",")[0].strip()) if value else 0
    except ValueError:
        return None
    return n if n > 0 else None
