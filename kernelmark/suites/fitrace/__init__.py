"""FlashInfer-Trace datasets (definitions/ + workloads/) as kernelmark suites.

``load_suite(spec)``: spec is a dataset root, one definition .json (its workloads found at
``<root>/workloads/<op_type>/<name>.jsonl``, root two levels above the definition), or
``DEF.json:WORKLOAD.jsonl``. Every workload becomes one case; a definition that cannot be
mapped becomes one ``unsupported`` case that the runner records without running anything.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from kernelmark.suites.case import Case, Suite
from kernelmark.suites.fitrace import constraints as cons
from kernelmark.suites.fitrace.format import TraceFormatError, load_definition, load_workloads
from kernelmark.suites.fitrace.mapping import INDEX_INPUTS, MAPPERS, Unmappable, map_workload
from kernelmark.suites.fitrace.mapping_moe import map_moe
from kernelmark.suites.fitrace.safetensors_inputs import given as given_blob
from kernelmark.suites.fitrace.safetensors_inputs import read_blob

# As for suite files: a dataset this large is to be run a definition at a time.
MAX_CASES = 20000

# The MoE mapper has a module of its own (it reads many definition forms).
MAPPERS["moe"] = map_moe

__all__ = ["is_trace_spec", "load_suite", "TraceFormatError"]


def is_trace_spec(spec: str) -> bool:
    p = Path(spec.split(":")[0]) if spec.count(":") == 1 and spec.endswith(".jsonl") else Path(spec)
    return (p.is_dir() and (p / "definitions").is_dir()) or (p.suffix == ".json" and p.is_file())


def _pairs(spec: str) -> tuple:
    """(dataset root, [(definition path, workload path or None)])."""
    if spec.count(":") == 1 and spec.endswith(".jsonl"):
        d, w = spec.split(":")
        return Path(d).resolve().parent.parent.parent, [(Path(d), Path(w))]
    p = Path(spec)
    if p.is_dir():
        defs = sorted((p / "definitions").rglob("*.json"))
        if not defs:
            raise TraceFormatError(f"{p}: definitions/ holds no .json definition")
        return p, [(d, p / "workloads" / d.parent.name / (d.stem + ".jsonl")) for d in defs]
    root = p.resolve().parent.parent.parent
    return root, [(p, root / "workloads" / p.parent.name / (p.stem + ".jsonl"))]


def load_suite(spec: str):
    root, pairs = _pairs(spec)
    h = hashlib.sha256()
    cases = []
    for dpath, wpath in pairs:
        defn = load_definition(dpath)
        h.update(defn.sha256.encode())
        label = defn.name
        meta0 = {"format": "flashinfer-trace", "definition": defn.name, "op_type": defn.op_type,
                 "tags": list(defn.tags), "reference_sha256": defn.reference_sha256,
                 "model": next((t.split(":", 1)[1] for t in defn.tags if t.startswith("model:")), None)}
        if meta0["model"]:
            label = f"{defn.name} ({meta0['model']})"
        if not wpath.is_file():
            if len(pairs) == 1:
                raise TraceFormatError(f"{dpath}:1: no workload file for {defn.name} (looked for {wpath})")
            # In a dataset, a definition without workloads is a row saying so, not an error.
            cases.append(Case(defn.op_type, {}, _first_dtype(defn), ("-",), (), label, None, len(cases) + 1, 1,
                              meta={**meta0, "unsupported": f"no workloads for {defn.name} (no {wpath})"}))
            continue
        h.update(hashlib.sha256(wpath.read_bytes()).hexdigest().encode())
        workloads = load_workloads(wpath, {defn.name: defn})     # still checked: a malformed file stops
        if defn.unsupported and workloads:
            # A dtype no op of ours takes: one row for the definition, the run goes on.
            w = workloads[0]
            cases.append(Case(defn.op_type, dict(w.axes), _first_dtype(defn), ("-",), (), label, None,
                              len(cases) + 1, w.line, meta={**meta0, "uuid": w.uuid, "axes": w.axes,
                                                            "workload": f"{w.path}:{w.line}",
                                                            "unsupported": "; ".join(defn.unsupported)}))
            continue
        for w in workloads:
            meta = {**meta0, "uuid": w.uuid, "axes": w.axes, "inputs": w.inputs, "workload": f"{w.path}:{w.line}"}
            dims = {**defn.const_axes(), **w.axes}
            failed, not_checked = cons.check_all(list(defn.constraints), dims)
            if failed:
                raise TraceFormatError(f"{w.path}:{w.line}: workload {w.uuid} breaks the constraint(s) of "
                                       f"{defn.name}: {'; '.join(failed)}")
            if not_checked:
                meta["constraints_not_checked"] = not_checked
            notes, blobs = [], {}
            for name, spec_ in w.inputs.items():
                if spec_["type"] == "safetensors":
                    t, note = read_blob(root, w, name, spec_, defn, dims)
                    if t is None:
                        notes.append(note)
                    else:
                        blobs[name] = t
            where = f"{w.path}:{w.line}"
            try:
                m = map_workload(defn, w, blobs)
                case = _case(Case, m, len(cases) + 1, w.line, where, defn.name)
            except Unmappable as e:
                # A definition we cannot map is one row, not one per workload.
                if any(c.meta.get("definition") == defn.name and c.meta.get("unsupported") for c in cases):
                    continue
                reason = str(e) if str(e).startswith(("op_type ", "dtype ")) else \
                    f"op_type {defn.op_type} ({defn.name}): {e}"
                cases.append(Case(defn.op_type, dict(w.axes), _first_dtype(defn), ("-",), (), label, None,
                                  len(cases) + 1, w.line, meta={**meta, "unsupported": reason}))
                continue
            fed = _fed(root, w, m, blobs, notes)
            notes += [n for n in m.notes]
            used = {g["input"] for g in fed.values()} | set(blobs)    # a read blob has its own note
            unfed = [n for n in INDEX_INPUTS if n in defn.inputs and n not in used]
            if unfed and not any("synthesised" in n for n in notes):
                notes.append(f"{'/'.join(unfed)} synthesised from the axes")
            if fed:
                meta["given"] = fed
            cases.append(Case(case.op, case.shape, case.dtype, case.backends, (), label, None,
                              case.index, case.line, meta={**meta, "notes": notes} if notes else meta))
    if len(cases) > MAX_CASES:
        raise TraceFormatError(f"{spec}: more than {MAX_CASES} workloads; give one definition at a time")
    if not cases:
        raise TraceFormatError(f"{spec}: the workload files hold no workload")
    return Suite(name=f"flashinfer-trace:{Path(root).name if len(pairs) > 1 else pairs[0][0].stem}",
                 description=f"FlashInfer-Trace workloads from {spec}", path=str(spec),
                 sha256=h.hexdigest(), cases=tuple(cases))


def _fed(root, w, m, blobs: dict, notes: list) -> dict:
    """{our op's input: where its blob is} for the blobs the op takes (the runner feeds them to
    the reference and every backend); a note for each blob read but not fed."""
    fed = {}
    for name, t in blobs.items():
        spec = w.inputs[name]
        if name in m.feeds:
            fed[m.feeds[name]] = {**given_blob(root, spec), "input": name}
            notes.append(f"{name} fed from safetensors {spec['path']}[{spec['tensor_key']}]")
        else:
            notes.append(f"safetensors {spec['path']} checked (shape, dtype) but not fed: op {m.op} makes its "
                         f"own {name} (from the axes)")
    return fed


def _first_dtype(defn) -> str:
    from kernelmark.suites.fitrace.mapping import DTYPE
    return next((DTYPE.get(t["dtype"], t["dtype"]) for t in defn.inputs.values()), "-")


def _case(Case, m, index: int, line: int, where: str, where_name: str = ""):
    """The case for a mapped workload, checked by the op as a suite file's case is."""
    from kernelmark.ops.registry import get_op
    op = get_op(m.op)
    if m.dtype not in op.dtypes:
        raise Unmappable(f"dtype {m.dtype} ({where_name}): op {op.name} has no dtype {m.dtype} "
                         f"(its dtypes: {', '.join(op.dtypes)})")
    try:
        full = op.full_shape(m.shape)
        op.check_shape(full, m.dtype)
    except (ValueError, TypeError) as e:
        raise Unmappable(f"{where}: {e}") from None
    return Case(op.name, full, m.dtype, tuple(b.name for b in op.backends), (), "", None, index, line)
