"""The package's layering (docs/design.md): no import cycles between modules, reports/ reading
run files only, the harness knowing no kernel, kernels standing alone. Checked from the
source with ast, function-level imports included, so a lazy import cannot hide a cycle."""
import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "kernelmark"


def _modules() -> dict:
    mods = {}
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(PKG.parent).with_suffix("")
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        mods[".".join(parts)] = path
    return mods


MODULES = _modules()


def _imports(path: Path) -> set:
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("kernelmark"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("kernelmark"):
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                out.add(sub if sub in MODULES else node.module)
    return {m for m in out if m in MODULES}


GRAPH = {m: _imports(p) - {m} for m, p in MODULES.items()}


def _cycle(graph: dict):
    state, stack = {}, []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for m in sorted(graph[n]):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state and (found := visit(m)):
                return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (found := visit(n)):
            return found
    return None


def test_no_import_cycle():
    cycle = _cycle(GRAPH)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_one():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def _package(mod: str) -> str:
    parts = mod.split(".")
    return parts[1] if len(parts) > 1 else ""


@pytest.mark.parametrize("pkg, forbidden", [
    ("reports", {"harness", "ops", "kernels", "cli", "multi"}),
    ("harness", {"kernels", "cli", "reports"}),
    ("kernels", {"harness", "ops", "cli", "reports", "suites", "multi", "results", "dtypes", "errors"}),
    ("ops", {"harness", "cli", "reports", "multi"}),
    ("multi", {"cli"}),
    ("results", {"harness", "ops", "kernels", "cli", "reports", "multi", "suites"}),
    ("runcheck", {"harness", "ops", "kernels", "cli", "reports", "multi", "suites", "results"}),
])
def test_layering(pkg, forbidden):
    bad = sorted(f"{m} imports {i}" for m, imps in GRAPH.items() if _package(m) == pkg
                 for i in imps if _package(i) in forbidden)
    assert not bad, "\n".join(bad)


def test_kernels_import_only_kernels_and_the_limits_leaf():
    # The target-limits table is the one thing of kernelmark the kernels read (autotune
    # pruning), and it imports nothing of kernelmark itself.
    allowed = {"kernels", "gpu_limits"}
    bad = sorted(f"{m} imports {i}" for m, imps in GRAPH.items() if _package(m) == "kernels"
                 for i in imps if _package(i) not in allowed)
    assert not bad, "\n".join(bad)
    assert GRAPH["kernelmark.gpu_limits"] == set()


def test_every_package_is_in_the_graph():
    assert {"cli", "harness", "ops", "kernels", "suites", "reports", "multi"} <= {_package(m) for m in MODULES}
