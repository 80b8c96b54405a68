"""Workload inputs stored as safetensors blobs (in the published dataset, Git LFS files that
may be absent). A blob that is there is loaded with the ``safetensors`` package and checked
against the definition; where the mapped op can take it (its mapper's ``feeds``), the case
names it in ``meta["given"]`` and the runner feeds it to the reference and every backend.
"""

from __future__ import annotations

from pathlib import Path

from kernelmark.suites.fitrace.format import TraceFormatError, dim

_TORCH_NAME = {"float32": "float32", "float16": "float16", "bfloat16": "bfloat16",
               "float8_e4m3fn": "float8_e4m3fn", "float8_e5m2": "float8_e5m2", "int64": "int64",
               "int32": "int32", "int16": "int16", "int8": "int8", "bool": "bool"}


def read_blob(root, w, name: str, spec: dict, defn, dims: dict) -> tuple:
    """(tensor, None) for a present blob that agrees with the definition; (None, note) where
    it cannot be read here (absent, a Git LFS pointer, no safetensors package); TraceFormatError
    where a present blob contradicts the definition."""
    path = Path(root) / spec["path"]
    where = f"{w.path}:{w.line}"
    if not path.is_file() or path.read_bytes()[:40].startswith(b"version https://git-lfs"):
        return None, f"safetensors {spec['path']} absent (or a Git LFS pointer): {name} synthesised from the axes"
    try:
        from safetensors.torch import load_file
    except ImportError:
        return None, (f"safetensors {spec['path']} present but the safetensors package is not installed: "
                      f"not read, {name} synthesised from the axes")
    try:
        tensors = load_file(str(path))
    except Exception as e:
        raise TraceFormatError(f"{where}: input {name}: {spec['path']} is not a readable safetensors file "
                               f"({type(e).__name__}: {e})") from None
    if spec["tensor_key"] not in tensors:
        raise TraceFormatError(f"{where}: input {name}: {spec['path']} has no tensor {spec['tensor_key']!r} "
                               f"(it has {', '.join(sorted(tensors))})")
    t = tensors[spec["tensor_key"]]
    want = defn.inputs[name]
    shape = [dim(a, dims) for a in (want["shape"] or [])]
    if list(t.shape) != shape or str(t.dtype).removeprefix("torch.") != _TORCH_NAME.get(want["dtype"]):
        raise TraceFormatError(f"{where}: input {name}: {spec['path']}[{spec['tensor_key']}] is "
                               f"{list(t.shape)} {str(t.dtype).removeprefix('torch.')}; the definition says "
                               f"{shape} {want['dtype']}")
    return t, None


def given(root, spec: dict) -> dict:
    """What the runner needs to load the blob again in its own process (the case crosses to
    the worker as JSON): the absolute path and the key."""
    return {"path": str((Path(root) / spec["path"]).resolve()), "tensor_key": spec["tensor_key"]}
