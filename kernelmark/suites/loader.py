"""Suite files (TOML) into cases. Suites are data: parsed, never evaluated.

    name = "smoke"
    description = "..."
    [defaults]                  # any of: backends, dtypes, devices, budget_s
    budget_s = 0.2
    [[case]]
    op = "gemm"
    label = "square"            # optional, shown in the table
    dtypes = ["bf16"]
    devices = ["gpu"]           # cpu, cuda, rocm, or gpu (= cuda or rocm); default all
    backends = ["triton"]       # default: every backend of the op
    shapes = [{m = 64, n = 64, k = 64}]    # explicit shapes (integers, numbers, strings), and/or
    [case.grid]                 # a cartesian product (a scalar is one value)
    m = [1, 16]
    n = 4096
    # or a named shape set from kernelmark.suites.models with its parameters:
    # shape_set = "llama3-8b.gemm"
    # [case.params]
    # m = [1, 16]

Every error names the file and, for a case, the line of its ``[[case]]`` header.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from kernelmark.suites import models
from kernelmark.suites.case import Case, Suite  # noqa: F401  (re-exported: the harness reads Case here)
from kernelmark.ops.registry import get_op

SUITE_DIR = Path(__file__).resolve().parent
DEVICE_KINDS = ("cpu", "cuda", "rocm", "gpu")
_TOP_KEYS = {"name", "description", "defaults", "case"}
_DEFAULT_KEYS = {"backends", "dtypes", "devices", "budget_s"}
_CASE_KEYS = _DEFAULT_KEYS | {"op", "label", "shapes", "grid", "shape_set", "params"}
# A suite this large is a typo in a grid, not a benchmark plan.
MAX_CASES = 20000


class SuiteError(ValueError):
    """A suite that cannot be used; the message names the file and line."""


def builtin_suites() -> dict:
    return {p.stem: p for p in sorted(SUITE_DIR.glob("*.toml"))}


def find(name_or_path: str) -> Path:
    builtins = builtin_suites()
    if name_or_path in builtins:
        return builtins[name_or_path]
    p = Path(name_or_path)
    if p.suffix == ".toml" or p.exists():
        if p.is_dir():
            raise SuiteError(f"suite {p} is a directory, not a suite file (give the path of a .toml file)")
        if not p.is_file():
            raise SuiteError(f"suite file {p} does not exist")
        return p
    raise SuiteError(f"unknown suite {name_or_path!r}; built-in suites: {', '.join(builtins)} "
                     "(or give a path to a .toml file)")


def _case_lines(text: str) -> list:
    return [i for i, line in enumerate(text.splitlines(), 1) if line.strip().startswith("[[case]]")]


def _as_list(v) -> list:
    return list(v) if isinstance(v, (list, tuple)) else [v]


def load(name_or_path: str) -> Suite:
    from kernelmark.suites import fitrace
    if fitrace.is_trace_spec(name_or_path):
        try:
            return fitrace.load_suite(name_or_path)
        except fitrace.TraceFormatError as e:
            raise SuiteError(str(e)) from None
    path = find(name_or_path)
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SuiteError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise SuiteError(f"{path}: malformed TOML: {e}") from None
    where = str(path)
    unknown = set(data) - _TOP_KEYS
    if unknown:
        raise SuiteError(f"{where}: unknown top-level key(s) {', '.join(sorted(unknown))}; "
                         f"allowed: {', '.join(sorted(_TOP_KEYS))}")
    defaults = data.get("defaults", {})
    if not isinstance(defaults, dict):
        raise SuiteError(f"{where}: [defaults] must be a table")
    bad = set(defaults) - _DEFAULT_KEYS
    if bad:
        raise SuiteError(f"{where}: unknown key(s) in [defaults]: {', '.join(sorted(bad))}; "
                         f"allowed: {', '.join(sorted(_DEFAULT_KEYS))}")
    blocks = data.get("case", [])
    if not isinstance(blocks, list) or not blocks:
        raise SuiteError(f"{where}: a suite needs at least one [[case]]")
    lines = _case_lines(text)
    cases = []
    for i, block in enumerate(blocks, 1):
        line = lines[i - 1] if i - 1 < len(lines) else 0
        cases.extend(_expand(block, defaults, i, line, f"{where}:{line} (case {i})"))
        if len(cases) > MAX_CASES:
            raise SuiteError(f"{where}: more than {MAX_CASES} cases; split the suite")
    return Suite(name=str(data.get("name", path.stem)), description=str(data.get("description", "")),
                 path=str(path), sha256=hashlib.sha256(raw).hexdigest(), cases=tuple(cases))


def _strings(v, what: str, where: str) -> tuple:
    vals = _as_list(v)
    if not all(isinstance(x, str) for x in vals):
        raise SuiteError(f"{where}: {what} must be a string or a list of strings, got {v!r}")
    return tuple(vals)


def _expand(block: dict, defaults: dict, index: int, line: int, where: str) -> list:
    if not isinstance(block, dict):
        raise SuiteError(f"{where}: a [[case]] must be a table")
    bad = set(block) - _CASE_KEYS
    if bad:
        raise SuiteError(f"{where}: unknown key(s) {', '.join(sorted(bad))}; allowed: {', '.join(sorted(_CASE_KEYS))}")
    if "op" not in block:
        raise SuiteError(f"{where}: the case names no op")
    if not isinstance(block["op"], str):
        raise SuiteError(f"{where}: op must be a string, got {block['op']!r}")
    try:
        op = get_op(block["op"])
    except ValueError as e:
        raise SuiteError(f"{where}: {e}") from None
    merged = {**defaults, **block}
    dtypes_ = _strings(merged.get("dtypes", op.dtypes[:1]), "dtypes", where)
    for dt in dtypes_:
        if dt not in op.dtypes:
            raise SuiteError(f"{where}: op {op.name!r} has no dtype {dt!r}; its dtypes: {', '.join(op.dtypes)}")
    backends = _strings(merged.get("backends", [b.name for b in op.backends]), "backends", where)
    for b in backends:
        try:
            op.backend(b)
        except ValueError as e:
            raise SuiteError(f"{where}: {e}") from None
    devices = _strings(merged.get("devices", []), "devices", where)
    for d in devices:
        if d not in DEVICE_KINDS:
            raise SuiteError(f"{where}: unknown device kind {d!r}; known: {', '.join(DEVICE_KINDS)}")
    budget = merged.get("budget_s")
    if budget is not None and (not isinstance(budget, (int, float)) or isinstance(budget, bool) or budget <= 0):
        raise SuiteError(f"{where}: budget_s must be a positive number of seconds, got {budget!r}")
    label = block.get("label", "")
    if not isinstance(label, str):
        raise SuiteError(f"{where}: label must be a string")

    shapes = []  # (label, shape)
    explicit = block.get("shapes", [])
    if not isinstance(explicit, list) or not all(isinstance(s, dict) for s in explicit):
        raise SuiteError(f"{where}: shapes must be a list of inline tables, e.g. [{{m = 64, n = 64}}]")
    shapes += [(label, dict(s)) for s in explicit]
    if "grid" in block:
        grid = block["grid"]
        if not isinstance(grid, dict) or not grid:
            raise SuiteError(f"{where}: [case.grid] must be a table of parameter = value or list")
        keys = list(grid)
        count = 1
        for k in keys:
            count *= len(_as_list(grid[k]))
        if count > MAX_CASES:
            raise SuiteError(f"{where}: the grid expands to {count} shapes; at most {MAX_CASES} per suite")
        for combo in itertools.product(*(_as_list(grid[k]) for k in keys)):
            shapes.append((label, dict(zip(keys, combo))))
    if "shape_set" in block:
        name = block["shape_set"]
        fn = models.SHAPE_SETS.get(name) if isinstance(name, str) else None
        if fn is None:
            raise SuiteError(f"{where}: unknown shape_set {name!r}; known: {', '.join(models.SHAPE_SETS)}")
        params = block.get("params", {})
        if not isinstance(params, dict):
            raise SuiteError(f"{where}: [case.params] must be a table")
        try:
            produced = fn(**params)
        except (TypeError, ValueError) as e:
            raise SuiteError(f"{where}: shape_set {name!r}: {e}") from None
        shapes += [(label or set_label, s) for set_label, s in produced]
    elif "params" in block:
        raise SuiteError(f"{where}: [case.params] is only for a shape_set")
    if not shapes:
        raise SuiteError(f"{where}: the case has no shapes (give shapes, [case.grid] or shape_set)")

    cases = []
    for lbl, shape in shapes:
        for k, v in shape.items():
            # Floats for parameters such as a sampler's top_p or temperature; never NaN or inf.
            if isinstance(v, bool) or not isinstance(v, (int, float, str)) or \
                    (isinstance(v, float) and not math.isfinite(v)):
                raise SuiteError(f"{where}: shape parameter {k} = {v!r}: expected an integer, a finite "
                                 "number or a string")
        try:
            full = op.full_shape(shape)
            for dt in dtypes_:
                op.check_shape(full, dt)
        except (ValueError, TypeError) as e:
            raise SuiteError(f"{where}: {e}") from None
        for dt in dtypes_:
            cases.append(Case(op.name, full, dt, backends, devices, lbl, float(budget) if budget else None,
                              index, line))
    return cases
