"""The launch limits of the GPUs kernelmark knows (per-block shared memory or LDS, registers per
thread), with their sources, and how an autotune config is named: a leaf module that imports
nothing of kernelmark, so that both the kernels (pruning autotune configs at run time,
kernelmark/kernels/autotune_prune.py) and the harness (the ahead-of-time compile check,
kernelmark/harness/aot.py, and its `--target` list, kernelmark/harness/targets.py) read the
same numbers.

A kernel that compiles can still fail at its first launch: Triton allocates shared memory
(LDS on AMD) for the tiles of a config, and a block may use only so much. These numbers are
the launch limits, not the per-SM capacity, and each names where it comes from so that a
reader can check it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

KIB = 1024

CUDA_GUIDE = ("CUDA C++ Programming Guide, 'Features and Technical Specifications', table "
              "'Technical Specifications per Compute Capability' "
              "(https://docs.nvidia.com/cuda/cuda-c-programming-guide/#features-and-technical-specifications)")


@dataclass(frozen=True)
class Target:
    name: str               # as `--target` spells it: cuda:90, hip:gfx942
    backend: str            # Triton's: "cuda" or "hip"
    arch: object            # 90 (int) for CUDA, "gfx942" for HIP
    warp_size: int
    gpus: str               # the GPUs this target is
    max_shared_bytes: int   # per block (opt-in maximum) / LDS per workgroup
    max_registers: int      # per thread (CUDA) / VGPRs per lane, arch + acc (AMD)
    fp8_e4m3: Optional[str]  # torch dtype name of this target's fp8 e4m3, None: no fp8
    source: str

    @property
    def kind(self) -> str:
        """The device kind a backend's `supports` is asked about."""
        return "cuda" if self.backend == "cuda" else "rocm"

    @property
    def capability(self):
        """(major, minor) as torch reports it on CUDA; None on AMD."""
        return divmod(int(self.arch), 10) if self.backend == "cuda" else None


TARGETS = {t.name: t for t in (
    Target("cuda:80", "cuda", 80, 32, "A100", 163 * KIB, 255, None,
           CUDA_GUIDE + "; NVIDIA Ampere Tuning Guide 1.4.1.1: 163 KB per thread block"),
    Target("cuda:89", "cuda", 89, 32, "L40S, L4", 99 * KIB, 255, "float8_e4m3fn",
           CUDA_GUIDE + "; NVIDIA Ada Tuning Guide: 99 KB per thread block"),
    Target("cuda:90", "cuda", 90, 32, "H100, H200", 227 * KIB, 255, "float8_e4m3fn",
           CUDA_GUIDE + "; NVIDIA Hopper Tuning Guide 1.4.1.1: 227 KB per thread block"),
    Target("cuda:100", "cuda", 100, 32, "B200", 227 * KIB, 255, "float8_e4m3fn",
           CUDA_GUIDE + "; NVIDIA Blackwell Tuning Guide: 228 KB per SM, 227 KB per thread block"),
    Target("hip:gfx942", "hip", "gfx942", 64, "MI300X, MI300A, MI325X", 64 * KIB, 512, "float8_e4m3fnuz",
           "AMD Instinct MI300 ISA reference / ROCm 'GPU hardware specifications' table "
           "(https://rocm.docs.amd.com/en/latest/reference/gpu-arch-specs.html): 64 KiB LDS per "
           "workgroup, 512 VGPRs (256 arch + 256 acc) per lane"),
)}


def for_device(backend: str, arch) -> Optional[Target]:
    """The target a live GPU is: ("cuda", 90) or ("hip", "gfx942:sramecc+:xnack-") -> its
    Target; None for a GPU the table does not hold (its own reported limits are then used)."""
    if backend == "hip":
        arch = str(arch).split(":")[0]
    for t in TARGETS.values():
        if t.backend == backend and str(t.arch) == str(arch):
            return t
    return None


def fits(target: Target, shared_bytes, registers) -> tuple:
    """(fits, why not): a kernel over a limit fails at launch, not at compile time."""
    why = []
    if shared_bytes is not None and shared_bytes > target.max_shared_bytes:
        what, per = ("LDS", "workgroup") if target.backend == "hip" else ("shared memory", "block")
        why.append(f"{what} {shared_bytes} B > {target.max_shared_bytes} B per {per} on {target.name}")
    if registers is not None and registers > target.max_registers:
        why.append(f"{registers} registers > {target.max_registers} per thread on {target.name}")
    return (not why, "; ".join(why) or None)


def config_name(cfg) -> str:
    """How records and compile files name an autotune config: "BLOCK_M=64 BLOCK_N=64 w4 s3"
    (its constexprs, then warps and stages): the compile check's footer and a run's record
    use the same words, so the one can be matched against the other."""
    kw = " ".join(f"{k}={v}" for k, v in cfg.kwargs.items())
    return f"{kw} w{cfg.num_warps} s{cfg.num_stages}".strip()
