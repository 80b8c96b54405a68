"""GPUs a kernel can be compiled for ahead of time, with the per-block limits a compiled kernel
must fit to launch there (beside the datasheet table, which holds peaks, not limits).

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

DEFAULT_TARGETS = ("cuda:80", "cuda:89", "cuda:90", "cuda:100", "hip:gfx942")


def parse_targets(text: str) -> list:
    """'cuda:90,hip:gfx942' -> [Target, ...]; ValueError naming an unknown one."""
    names = [t.strip() for t in str(text).split(",") if t.strip()]
    if not names:
        raise ValueError("--target: name at least one target")
    bad = [n for n in names if n not in TARGETS]
    if bad:
        raise ValueError(f"--target: unknown target(s) {', '.join(bad)}; known: {', '.join(TARGETS)}")
    return [TARGETS[n] for n in dict.fromkeys(names)]


def fits(target: Target, shared_bytes, registers) -> tuple:
    """(fits, why not): a kernel over a limit fails at launch, not at compile time."""
    why = []
    if shared_bytes is not None and shared_bytes > target.max_shared_bytes:
        what, per = ("LDS", "workgroup") if target.backend == "hip" else ("shared memory", "block")
        why.append(f"{what} {shared_bytes} B > {target.max_shared_bytes} B per {per} on {target.name}")
    if registers is not None and registers > target.max_registers:
        why.append(f"{registers} registers > {target.max_registers} per thread on {target.name}")
    return (not why, "; ".join(why) or None)
