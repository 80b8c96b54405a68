"""The GPU targets `kernelmark compile --target` names, and the default list. The table itself
(per-block limits with sources, beside the datasheet table, which holds peaks, not limits)
lives in kernelmark/gpu_limits.py, a leaf that the kernels read too: autotuning on a GPU
leaves out the configs over that GPU's limits (kernelmark/kernels/autotune_prune.py).
"""

from __future__ import annotations

from kernelmark.gpu_limits import CUDA_GUIDE, KIB, TARGETS, Target, fits  # noqa: F401  (read from here)

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
