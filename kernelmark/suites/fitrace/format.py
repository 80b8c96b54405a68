"""FlashInfer-Trace definition (.json) and workload (.jsonl) files, parsed and checked.

Nothing in these files is ever executed: a definition's ``reference`` is parsed with ``ast``
only to check that it defines ``run``, and hashed so a run records which reference it was.
Every error names the file and line (for a definition, the line of the key at fault).
"""

from __future__ import annotations

import ast
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from kernelmark.suites.fitrace import constraints as cons

DTYPES = ("float32", "float16", "bfloat16", "float8_e4m3fn", "float8_e5m2", "float4_e2m1",
          "int64", "int32", "int16", "int8", "bool")
INPUT_TYPES = ("random", "scalar", "safetensors")
# In the format, but no kernelmark op takes it: fp4 values (packed two a byte) are quantized
# data whose scales and packing only the reference states.
NO_COUNTERPART = ("float4_e2m1",)


class TraceFormatError(ValueError):
    """A definition or workload file that cannot be used; the message says file:line."""


@dataclass(frozen=True)
class Definition:
    name: str
    op_type: str
    axes: dict            # name -> {"type": "const", "value": int} | {"type": "var"}
    inputs: dict          # name -> {"shape": [axis] | None, "dtype": str}
    outputs: dict
    tags: tuple
    constraints: tuple
    reference_sha256: str
    path: str
    sha256: str           # of the file's bytes
    # Why no kernelmark op can run it, found while reading it (a dtype we have no counterpart
    # for: fp4, a packed "uint8", a dtype newer than this reader). A well-formed definition
    # of that kind is an ``unsupported`` row in a dataset run, never a stop of the run.
    unsupported: tuple = ()

    def const_axes(self) -> dict:
        return {k: v["value"] for k, v in self.axes.items() if v["type"] == "const"}

    def var_axes(self) -> list:
        return [k for k, v in self.axes.items() if v["type"] == "var"]


@dataclass(frozen=True)
class Workload:
    definition: str
    uuid: str
    axes: dict
    inputs: dict
    path: str
    line: int
    extra: dict = field(default_factory=dict)   # solution/evaluation where a trace is read


def _key_line(text: str, key: str) -> int:
    m = re.search(r'"' + re.escape(key) + r'"\s*:', text)
    return text.count("\n", 0, m.start()) + 1 if m else 1


def _read_json(path: Path, text: str, line0: int = 0):
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise TraceFormatError(f"{path}:{line0 + e.lineno}: malformed JSON: {e.msg} (column {e.colno})") from None


def reference_sha256(src: str, where: str) -> str:
    """Check, without running it, that the reference is Python defining ``run``."""
    try:
        tree = ast.parse(src)
    except SyntaxError as e:
        raise TraceFormatError(f"{where}: reference is not valid Python ({e.msg}, its line {e.lineno})") from None
    if not any(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == "run" for n in tree.body):
        raise TraceFormatError(f"{where}: reference defines no top-level function run")
    return hashlib.sha256(src.encode()).hexdigest()


def load_definition(path) -> Definition:
    path = Path(path)
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise TraceFormatError(f"{path}:1: not UTF-8 text ({e.reason} at byte {e.start})") from None
    d = _read_json(path, text)

    def where(key):
        return f"{path}:{_key_line(text, key)}"

    if not isinstance(d, dict):
        raise TraceFormatError(f"{path}:1: a definition must be a JSON object")
    for key in ("name", "op_type", "axes", "inputs", "outputs", "reference"):
        if key not in d:
            raise TraceFormatError(f"{path}:1: definition has no {key!r}")
    for key in ("name", "op_type", "reference"):
        if not isinstance(d[key], str) or not d[key]:
            raise TraceFormatError(f"{where(key)}: {key} must be a non-empty string")
    axes = d["axes"]
    if not isinstance(axes, dict):
        raise TraceFormatError(f"{where('axes')}: axes must be an object of name -> axis")
    for name, ax in axes.items():
        ok = isinstance(ax, dict) and (ax.get("type") == "var" or (
            ax.get("type") == "const" and isinstance(ax.get("value"), int) and not isinstance(ax["value"], bool)))
        if not ok:
            raise TraceFormatError(f"{where(name)}: axis {name!r} must be {{\"type\": \"var\"}} or "
                                   f"{{\"type\": \"const\", \"value\": <int>}}, got {ax!r}")
    tensors, unsupported = {}, []
    for group in ("inputs", "outputs"):
        g = d[group]
        if not isinstance(g, dict) or (group == "inputs" and not g):
            raise TraceFormatError(f"{where(group)}: {group} must be a non-empty object of name -> tensor")
        for name, t in g.items():
            if not isinstance(t, dict) or "dtype" not in t or "shape" not in t:
                raise TraceFormatError(f"{where(name)}: {group[:-1]} {name!r} needs shape and dtype")
            if not isinstance(t["dtype"], str) or not t["dtype"]:
                raise TraceFormatError(f"{where(name)}: {group[:-1]} {name!r}: dtype must be a non-empty "
                                       f"string, got {t['dtype']!r}")
            if t["dtype"] not in DTYPES or t["dtype"] in NO_COUNTERPART:
                # Not malformed: a dtype kernelmark cannot run (fp4, packed uint8, newer ones).
                unsupported.append(f"dtype {t['dtype']} ({d['name']}): {group[:-1]} {name} is "
                                   + ("fp4, which no kernelmark op takes" if t["dtype"] in NO_COUNTERPART
                                      else f"a dtype kernelmark does not know (known: {', '.join(DTYPES)})"))
            shape = t["shape"]
            if shape is not None and (not isinstance(shape, list) or
                                      any(not isinstance(a, str) or not _is_axis_expr(a, axes) for a in shape)):
                raise TraceFormatError(f"{where(name)}: {group[:-1]} {name!r}: shape must be null or a list "
                                       f"of axis names or arithmetic over them (axes: {', '.join(axes)}), "
                                       f"got {shape!r}")
        tensors[group] = g
    tags = d.get("tags", [])
    cons = d.get("constraints", [])
    for key, v in (("tags", tags), ("constraints", cons)):
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            raise TraceFormatError(f"{where(key)}: {key} must be a list of strings")
    ref_hash = reference_sha256(d["reference"], where("reference"))
    return Definition(d["name"], d["op_type"], axes, tensors["inputs"], tensors["outputs"], tuple(tags),
                      tuple(cons), ref_hash, str(path), hashlib.sha256(raw).hexdigest(),
                      tuple(dict.fromkeys(unsupported)))


def _is_axis_expr(item: str, axes: dict) -> bool:
    """An axis name, or arithmetic over axis names (``hidden_size // 2``, as packed fp4
    tensors are shaped): our own evaluator checks it uses nothing else."""
    if item in axes:
        return True
    try:
        cons.value(item, {a: 2 for a in axes})
    except cons.NotAxesOnly:
        return False
    except ZeroDivisionError:
        pass
    return True


def dim(item: str, dims: dict) -> int:
    """The size of one shape entry (an axis name or arithmetic over axes) for these axes."""
    if item in dims:
        return dims[item]
    return int(cons.value(item, dims))


def load_workloads(path, definitions: dict) -> list:
    """Every record of a .jsonl workload (or trace) file, checked against its definition."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise TraceFormatError(f"{path}:1: not UTF-8 text ({e.reason} at byte {e.start})") from None
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        rec = _read_json(path, line, n - 1)
        if not isinstance(rec, dict) or not isinstance(rec.get("workload"), dict):
            raise TraceFormatError(f"{where}: a record must be an object with a 'workload' object")
        name = rec.get("definition")
        if name not in definitions:
            raise TraceFormatError(f"{where}: definition {name!r} is not among the definitions read "
                                   f"({', '.join(sorted(definitions)) or 'none'})")
        defn = definitions[name]
        w = rec["workload"]
        uuid, axes, inputs = w.get("uuid"), w.get("axes", {}), w.get("inputs", {})
        if not isinstance(uuid, str) or not uuid:
            raise TraceFormatError(f"{where}: workload has no uuid")
        if not isinstance(axes, dict) or not isinstance(inputs, dict):
            raise TraceFormatError(f"{where}: workload axes and inputs must be objects")
        var = set(defn.var_axes())
        missing, unknown = var - set(axes), set(axes) - var
        if missing or unknown:
            raise TraceFormatError(f"{where}: workload axes must be exactly the var axes of {name} "
                                   f"({', '.join(sorted(var))}); "
                                   + (f"missing {', '.join(sorted(missing))}" if missing else "")
                                   + ("; " if missing and unknown else "")
                                   + (f"not var axes: {', '.join(sorted(unknown))}" if unknown else ""))
        for k, v in axes.items():
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise TraceFormatError(f"{where}: axis {k} = {v!r}: expected a non-negative integer")
        for k, spec in inputs.items():
            if k not in defn.inputs:
                raise TraceFormatError(f"{where}: input {k!r} is not an input of {name} "
                                       f"({', '.join(defn.inputs)})")
            if not isinstance(spec, dict) or spec.get("type") not in INPUT_TYPES:
                raise TraceFormatError(f"{where}: input {k!r}: type must be one of {', '.join(INPUT_TYPES)}")
            if spec["type"] == "scalar" and (isinstance(spec.get("value"), bool) or
                                             not isinstance(spec.get("value"), (int, float))):
                raise TraceFormatError(f"{where}: input {k!r}: a scalar needs a numeric value")
            if spec["type"] == "safetensors" and not (isinstance(spec.get("path"), str)
                                                      and isinstance(spec.get("tensor_key"), str)):
                raise TraceFormatError(f"{where}: input {k!r}: safetensors needs path and tensor_key")
        extra = {k: rec[k] for k in ("solution", "evaluation") if rec.get(k) is not None}
        out.append(Workload(name, uuid, dict(axes), dict(inputs), str(path), n, extra))
    return out
