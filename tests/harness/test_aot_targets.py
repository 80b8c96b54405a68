"""Every kernel family compiles for an H100/H200 (sm_90) and an MI300X (gfx942), on this
machine, which has neither: one case per op of the smoke suite, the smallest autotune config
of each kernel, compiled by `kernelmark.harness.aot` as `kernelmark compile` does (the full
matrix is `kernelmark compile`). A kernel that the interpreter runs but a GPU compiler refuses
fails here. Over-limit configs are not failures here (tuning leaves them out on that target);
spills are not checked (they are slow, not wrong).

Both targets under the Triton of the GPU machines we measure on (the one the Makefile pins for
`make test-triton36`): that is where a kernel that fails to compile costs a GPU session. Under
any other Triton (the main venv's newest one) sm_90 only: whether the kernels still compile
with a newer compiler is asked once, not once per target, which halves the test's cost there
(the AMD compile is the slower of the two).

The compile runs in a subprocess without TRITON_INTERPRET (under it, @triton.jit gives
interpreted functions, which cannot be compiled)."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TARGETS = "cuda:90,hip:gfx942"
OTHER_TRITON_TARGETS = "cuda:90"


def gpu_machines_triton() -> str:
    """'3.6.': the Triton version prefix the Makefile pins for the GPU machines' test venv."""
    m = re.search(r"^TRITON36_PINS\s*:?=.*\btriton==(\d+\.\d+)\.\*", (ROOT / "Makefile").read_text(), re.M)
    assert m, "Makefile: TRITON36_PINS has no triton==X.Y.* pin"
    return m.group(1) + "."


def targets_for(triton_version: str) -> str:
    return TARGETS if triton_version.startswith(gpu_machines_triton()) else OTHER_TRITON_TARGETS


def _probe(target: str) -> dict:
    import triton
    try:
        from triton.backends.compiler import GPUTarget  # noqa: F401
        from triton.compiler import ASTSource  # noqa: F401
    except ImportError as e:
        return {"skip": f"this triton has no ahead-of-time compile API ({e})"}
    backend = {"cuda": "nvidia", "hip": "amd"}[target.split(":")[0]]
    if backend not in getattr(triton.backends, "backends", {}):
        return {"skip": f"this triton has no {backend} backend"}
    from kernelmark.harness import aot, targets
    from kernelmark.ops.registry import all_ops
    from kernelmark.suites import loader
    first = {}
    for c in loader.load("smoke").cases:        # one case per op with a Triton backend
        if c.op not in first and any(b.triton for b in all_ops()[c.op].backends):
            first[c.op] = c
    seen, results = set(), []
    for r in aot.check_cases(list(first.values()), targets.parse_targets(target), max_configs=1):
        if (r.target, r.kernel) not in seen or r.status == aot.FAILED:   # one per kernel family and target
            seen.add((r.target, r.kernel))
            results.append(r.as_record())
    return {"results": results}


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    from importlib import metadata
    version = metadata.version("triton")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.update(PYTHONPATH=str(ROOT), TRITON_DEFAULT_FP_FUSION="1")
    # One process per target, side by side: they share nothing, and a 2-core CI machine
    # compiles both in the time of the slower one.
    procs = {}
    for t in targets_for(version).split(","):
        cache = tmp_path_factory.mktemp("triton-cache")
        procs[t] = subprocess.Popen([sys.executable, __file__, t], cwd=ROOT, env={**env, "TRITON_CACHE_DIR": str(cache)},
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    outs, skips = {"results": [], "targets": [], "triton": version}, []
    for t, p in procs.items():
        stdout, stderr = p.communicate(timeout=900)
        assert p.returncode == 0, f"{t}: {stderr[-3000:]}"
        out = json.loads(stdout.strip().splitlines()[-1])
        if "skip" in out:
            skips.append(f"{t}: {out['skip']}")
            continue
        outs["results"] += out["results"]
        outs["targets"].append(t)
    if not outs["targets"]:
        pytest.skip("; ".join(skips))
    return outs


def test_every_kernel_family_compiles_for_sm90_and_gfx942(compiled):
    if compiled["triton"].startswith(gpu_machines_triton()):      # the GPU machines' Triton: both targets
        assert compiled["targets"] == TARGETS.split(","), compiled["targets"]
    failed = [f"{r['target']} {r['op']} {r['kernel']} {r['config']}: {r['error']}"
              for r in compiled["results"] if r["status"] == "failed"]
    assert failed == []
    done = {(r["target"], r["op"]) for r in compiled["results"] if r["status"] in ("compiled", "over_limit")}
    for t in compiled["targets"]:
        assert {op for tt, op in done if tt == t} >= {"gemm", "rmsnorm"}, compiled["results"]


def test_only_the_gpu_machines_triton_compiles_for_every_target():
    v = gpu_machines_triton()
    assert re.fullmatch(r"\d+\.\d+\.", v)
    assert targets_for(v + "0") == TARGETS and targets_for(v + "1+git") == TARGETS
    assert targets_for("3.9.0") == OTHER_TRITON_TARGETS == TARGETS.split(",")[0]


if __name__ == "__main__":
    print(json.dumps(_probe(sys.argv[1])))
