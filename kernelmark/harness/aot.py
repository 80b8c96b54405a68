"""Compile every Triton kernel of some ops ahead of time, for GPUs this machine does not have.

How a kernel is found, and specialised as a real launch would specialise it: the op's Triton
backend runs on CPU tensors of the case's shape with Triton's launch intercepted
(`JITFunction.run` records its arguments and returns without launching; `Autotuner.run`
records one launch per config its early prune keeps). Each recorded launch is then bound
by Triton's own binder for the target's backend (so dtypes, 16-divisibility of pointers and
ints, and constexprs are what Triton derives from the real arguments) and compiled with
`triton.compile(ASTSource(...), target=GPUTarget(...))`. Nothing is launched: no GPU needed.

This must run with TRITON_INTERPRET unset: under it @triton.jit gives interpreted functions,
which cannot be compiled (the command re-executes itself without it).

Outputs never get written (the kernel does not run), so a launcher that reads a kernel's
output on the host to size its next launch sees garbage; launches it makes from that are
still compiled for their dtypes and constexprs, which is what the check is about.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from typing import Optional

import torch

from kernelmark.gpu_limits import config_name
from kernelmark.harness.targets import Target, fits

COMPILED, FAILED, UNSUPPORTED, OVER_LIMIT = "compiled", "failed", "unsupported", "over_limit"


@dataclass
class Launch:
    """One launch a backend would make: the kernel, its arguments, the config's name."""
    fn: object              # triton JITFunction
    args: tuple
    kwargs: dict            # keyword arguments incl. the config's constexprs and num_warps/stages
    config: str             # "BLOCK_M=64 BLOCK_N=64 w4 s3", or "" for a plain @triton.jit

    @property
    def kernel(self) -> str:
        return getattr(self.fn, "__name__", None) or self.fn.fn.__name__


@dataclass
class Result:
    op: str
    backend: str
    case: str               # the case's shape and dtype
    kernel: str
    config: str
    target: str
    status: str
    error: Optional[str] = None
    compile_s: Optional[float] = None
    shared_bytes: Optional[int] = None
    registers: Optional[int] = None
    spills: Optional[int] = None
    fits: Optional[bool] = None
    extra: dict = field(default_factory=dict)

    def as_record(self) -> dict:
        d = {k: v for k, v in self.__dict__.items() if k != "extra"}
        d.update(self.extra)
        return d


def _size(cfg) -> int:
    """How big a config's tiles are (product of its int constexprs x stages): the smallest
    compiles fastest, which is what a bounded check wants."""
    n = cfg.num_stages or 1
    for v in cfg.kwargs.values():
        n *= v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else 1
    return n


@contextlib.contextmanager
def intercept_launches(out: list, max_configs: Optional[int] = None):
    """Within: every Triton kernel launch is appended to `out` as a Launch, and not run.
    An autotuned launch gives one Launch per config (the `max_configs` smallest, if given)."""
    from triton.runtime import autotuner, jit
    current = {"config": ""}
    orig_run, orig_tune = jit.JITFunction.run, autotuner.Autotuner.run

    def record(self, *args, grid, warmup=False, **kwargs):
        out.append(Launch(self, args, dict(kwargs), current["config"]))

    def tune(self, *args, **kwargs):
        self.nargs = dict(zip(self.arg_names, args))
        configs = self.configs
        if self.early_config_prune:     # the kernel's own prune by shape; a prune that asks
            try:                        # the live GPU cannot run here: every config is kept
                configs = self.early_config_prune(self.configs, self.nargs, **kwargs)
            except Exception:  # noqa: BLE001
                configs = self.configs
        if max_configs:
            configs = sorted(configs, key=_size)[:max_configs]
        kwargs.pop("warmup", None)
        grid = kwargs.pop("grid")
        for cfg in configs:
            current["config"] = config_name(cfg)
            try:
                self.fn.run(*args, grid=grid, warmup=False, **kwargs, **cfg.all_kwargs())
            finally:
                current["config"] = ""

    jit.JITFunction.run, autotuner.Autotuner.run = record, tune
    try:
        yield out
    finally:
        jit.JITFunction.run, autotuner.Autotuner.run = orig_run, orig_tune


def capture(backend, inputs, max_configs: Optional[int] = None) -> list:
    """The launches `backend.run(inputs)` makes, without running any."""
    launches: list = []
    with intercept_launches(launches, max_configs):
        backend.run(backend.setup(inputs))
    return launches


def gpu_target(target: Target):
    from triton.backends.compiler import GPUTarget
    return GPUTarget(target.backend, target.arch, target.warp_size)


def bind(launch: Launch, target: Target):
    """(signature, constexprs, attrs, options) as Triton's binder derives them for `target`."""
    from triton.compiler import make_backend
    from triton.runtime.jit import create_function_from_signature
    backend = make_backend(gpu_target(target))
    fn = launch.fn
    kwargs = {"debug": False, **launch.kwargs}
    binder = create_function_from_signature(fn.signature, fn.params, backend)
    bound_args, specialization, _ = binder(*launch.args, **kwargs)
    options, signature, constexprs, attrs = fn._pack_args(backend, kwargs, bound_args, specialization, None)
    return signature, constexprs, attrs, options


def fp8_unsupported(launch: Launch, target: Target) -> Optional[str]:
    """Why a launch's fp8 tensors cannot be on `target` (MI300 has e4m3fnuz, not e4m3fn)."""
    for a in list(launch.args) + list(launch.kwargs.values()):
        if isinstance(a, torch.Tensor) and a.dtype.is_floating_point and "float8" in str(a.dtype):
            name = str(a.dtype).replace("torch.", "")
            if target.fp8_e4m3 is None:
                return f"{target.name} ({target.gpus}) has no fp8"
            if "e4m3" in name and name != target.fp8_e4m3:
                return f"{target.name} ({target.gpus}) uses {target.fp8_e4m3}, not {name}"
    return None


def first_line(err: BaseException) -> str:
    """The line of a compile error that says what is wrong (Triton puts the source first)."""
    lines = [ln.strip() for ln in str(err).strip().splitlines() if ln.strip()]
    for ln in lines:
        if re.match(r"^(at \d+:\d+:|[A-Za-z]*Error:|error:)", ln) or "rror" in ln:
            if ln.startswith("at ") and lines.index(ln) + 1 < len(lines):
                continue
            return f"{type(err).__name__}: {ln}"[:300]
    return f"{type(err).__name__}: {lines[-1] if lines else ''}"[:300]


def _cuobjdump() -> Optional[str]:
    import triton
    p = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    return p if os.path.exists(p) else None


def cuda_resources(cubin: bytes) -> dict:
    """REG and STACK/LOCAL of the cubin's kernel, from cuobjdump --dump-resource-usage."""
    tool = _cuobjdump()
    if tool is None or not cubin:
        return {}
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        out = subprocess.run([tool, "--dump-resource-usage", f.name], capture_output=True, text=True).stdout
    line = next((ln for ln in out.splitlines() if "REG:" in ln), "")
    res = {k: int(v) for k, v in re.findall(r"(\w+):(\d+)", line)}
    return {"registers": res.get("REG"), "spills": max(res.get("STACK", 0), res.get("LOCAL", 0))}


def amd_resources(amdgcn: str) -> dict:
    """VGPRs, spills and LDS from the kernel descriptor metadata in the AMDGCN assembly."""
    def num(key):
        m = re.search(rf"\.{key}:\s*(\d+)", amdgcn or "")
        return int(m.group(1)) if m else None
    vgpr, agpr = num("vgpr_count"), num("agpr_count")
    spills = [n for n in (num("vgpr_spill_count"), num("sgpr_spill_count")) if n is not None]
    return {"registers": None if vgpr is None else vgpr + (agpr or 0),
            "spills": sum(spills) if spills else None, "lds": num("group_segment_fixed_size")}


def compile_launch(launch: Launch, target: Target) -> dict:
    """Compile one launch for `target`: the fields of a Result past its identity."""
    import triton
    from triton.compiler import ASTSource
    why = fp8_unsupported(launch, target)
    if why:
        return {"status": UNSUPPORTED, "error": why}
    t0 = time.perf_counter()
    try:
        signature, constexprs, attrs, options = bind(launch, target)
        k = triton.compile(ASTSource(launch.fn, signature, constexprs, attrs), target=gpu_target(target),
                           options=options.__dict__)
    except Exception as e:  # noqa: BLE001  (a compile error is the result, the others go on)
        return {"status": FAILED, "error": first_line(e), "compile_s": round(time.perf_counter() - t0, 3)}
    compile_s = round(time.perf_counter() - t0, 3)
    shared = k.metadata.shared
    if target.backend == "cuda":
        res = cuda_resources(k.asm.get("cubin", b""))
    else:
        res = amd_resources(k.asm.get("amdgcn", ""))
        # Triton's figure counts the LDS it allocates at launch; the descriptor's the static part.
        shared = max(shared or 0, res.pop("lds", None) or 0)
    ok, why = fits(target, shared, res.get("registers"))
    return {"status": COMPILED if ok else OVER_LIMIT, "error": why, "compile_s": compile_s,
            "shared_bytes": shared, "registers": res.get("registers"), "spills": res.get("spills"), "fits": ok}


def _to_meta(x):
    """CPU inputs as meta tensors of the same shape, strides and dtype (containers kept)."""
    if isinstance(x, torch.Tensor):
        return torch.empty_strided(x.shape, x.stride(), dtype=x.dtype, device="meta")
    if isinstance(x, dict):
        return {k: _to_meta(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)) and not hasattr(x, "_fields"):
        return type(x)(_to_meta(v) for v in x)
    return x


def meta_inputs(op, shape, dtype):
    """The op's inputs on the meta device: no memory, and the launchers' device checks pass.
    An op that reads a value on the host while making them (a seed) makes them on the CPU,
    then they are turned into meta tensors of the same layout."""
    try:
        return op.make_inputs(shape, dtype, torch.device("meta"), torch.Generator().manual_seed(0))
    except (RuntimeError, NotImplementedError):
        return _to_meta(op.make_inputs(shape, dtype, torch.device("cpu"), torch.Generator().manual_seed(0)))


def case_name(case) -> str:
    from kernelmark.ops.base import shape_str
    return f"{shape_str(case.shape)} {case.dtype}"


def check_cases(cases, targets, backends=None, on_result=None, max_configs: Optional[int] = None) -> list:
    """Compile every Triton kernel × config the cases' Triton backends launch, for each target.

    A backend that cannot even be captured (its launcher raises on CPU tensors) gives one
    `failed` result naming where; a backend the target cannot run (its `supports` says so,
    asked with the target's kind and capability) gives `unsupported` with the reason.
    Identical launches (same kernel, config, binding) are compiled once per target."""
    from kernelmark.ops.registry import get_op
    results, seen = [], set()

    def emit(r):
        results.append(r)
        if on_result:
            on_result(r)

    for case in cases:
        op = get_op(case.op)
        shape = {**op.defaults, **case.shape}
        for b in op.backends:
            if not b.triton or (backends and b.name not in backends) or (b.dtypes and case.dtype not in b.dtypes):
                continue
            ident = dict(op=op.name, backend=b.name, case=case_name(case))
            try:
                inputs = meta_inputs(op, shape, case.dtype)
                launches = capture(b, inputs, max_configs)
            except Exception as e:  # noqa: BLE001
                for t in targets:
                    emit(Result(**ident, kernel="?", config="", target=t.name, status=FAILED,
                                error=f"launcher on meta tensors: {first_line(e)}"))
                continue
            for t in targets:
                why = b.supports(shape, case.dtype, t.kind, t.capability) if b.supports else None
                if why:
                    emit(Result(**ident, kernel="*", config="", target=t.name, status=UNSUPPORTED, error=why))
                    continue
                for ln in launches:
                    try:
                        sig, consts, attrs, _ = bind(ln, t)
                        key = (t.name, ln.kernel, ln.config, repr(sorted(sig.items())), repr(consts), repr(attrs))
                    except Exception:  # noqa: BLE001  (compile_launch reports the binding error)
                        key = None
                    if key is not None and key in seen:
                        continue
                    seen.add(key)
                    emit(Result(**ident, kernel=ln.kernel, config=ln.config, target=t.name,
                                **compile_launch(ln, t)))
    return results
