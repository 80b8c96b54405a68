"""Every kernel family compiles for an H100/H200 (sm_90) and an MI300X (gfx942), on this
machine, which has neither: one case per op of the smoke suite, the smallest autotune config
of each kernel, compiled by `kernelmark.harness.aot` as `kernelmark compile` does (the full
matrix is `kernelmark compile`). A kernel that the interpreter runs but a GPU compiler refuses
fails here. Over-limit configs are not failures here (tuning leaves them out on that target);
spills are not checked (they are slow, not wrong).

The compile runs in a subprocess without TRITON_INTERPRET (under it, @triton.jit gives
interpreted functions, which cannot be compiled)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TARGETS = "cuda:90,hip:gfx942"


def _probe() -> dict:
    import triton
    try:
        from triton.backends.compiler import GPUTarget  # noqa: F401
        from triton.compiler import ASTSource  # noqa: F401
    except ImportError as e:
        return {"skip": f"this triton has no ahead-of-time compile API ({e})"}
    missing = {"cuda": "nvidia", "hip": "amd"}
    have = getattr(triton.backends, "backends", {})
    names = [t for t in TARGETS.split(",") if missing[t.split(":")[0]] in have]
    if not names:
        return {"skip": "this triton has neither the NVIDIA nor the AMD backend"}
    from kernelmark.harness import aot, targets
    from kernelmark.ops.registry import all_ops
    from kernelmark.suites import loader
    first = {}
    for c in loader.load("smoke").cases:        # one case per op with a Triton backend
        if c.op not in first and any(b.triton for b in all_ops()[c.op].backends):
            first[c.op] = c
    seen, results = set(), []
    for r in aot.check_cases(list(first.values()), targets.parse_targets(",".join(names)), max_configs=1):
        if (r.target, r.kernel) not in seen or r.status == aot.FAILED:   # one per kernel family and target
            seen.add((r.target, r.kernel))
            results.append(r.as_record())
    return {"results": results, "targets": names}


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.update(PYTHONPATH=str(ROOT), TRITON_CACHE_DIR=str(tmp_path_factory.mktemp("triton-cache")),
               TRITON_DEFAULT_FP_FUSION="1")
    p = subprocess.run([sys.executable, __file__], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    if "skip" in out:
        pytest.skip(out["skip"])
    return out


def test_every_kernel_family_compiles_for_sm90_and_gfx942(compiled):
    failed = [f"{r['target']} {r['op']} {r['kernel']} {r['config']}: {r['error']}"
              for r in compiled["results"] if r["status"] == "failed"]
    assert failed == []
    done = {(r["target"], r["op"]) for r in compiled["results"] if r["status"] in ("compiled", "over_limit")}
    for t in compiled["targets"]:
        assert {op for tt, op in done if tt == t} >= {"gemm", "rmsnorm"}, compiled["results"]


if __name__ == "__main__":
    print(json.dumps(_probe()))
