"""Walks a suite's cases: make inputs, check every backend against the reference, time
the ones that passed, and hand one record per (case, backend) to the writer at once.

A failure in one case (an exception, out of memory, a failed check) is recorded for
that case and the run goes on. The runner knows no op by name.
"""

from __future__ import annotations

import math
import os
import re
import secrets
import sys
import time
import traceback
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch

from kernelmark.harness import device as dev
from kernelmark.harness import energy_window
from kernelmark.harness import nvml_sampler
from kernelmark.harness import peaks as peaks_mod
from kernelmark.harness import timing
from kernelmark.suites.loader import Case
from kernelmark.ops.base import Unsupported, shape_str
from kernelmark.ops.registry import get_op

# Above these, a Triton kernel under the CPU interpreter would take minutes: skipped.
INTERPRETER_MAX_FLOPS = 2 ** 25
INTERPRETER_MAX_BYTES = 2 ** 24
# Rotated input sets: at most this many, and at most this share of free memory.
MAX_INPUT_SETS = 64
INPUT_SET_MEMORY_SHARE = 0.25
# On a GPU, sets are rotated only if each holds at most this many times what a call touches.
GPU_MAX_HELD_PER_TOUCHED = 4


def interpreting() -> bool:
    """True when Triton kernels would run under the Triton interpreter (TRITON_INTERPRET=1).
    Read from the environment here, as kernels/ does, so that the harness imports no kernel."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


@dataclass
class RunConfig:
    timing: timing.TimingConfig = field(default_factory=timing.TimingConfig)
    budget_override: Optional[float] = None   # --budget: replaces every case's budget_s
    seed: Optional[int] = None                # fixed seed for every case (default: fresh per case)
    energy_window_s: Optional[float] = None   # --energy: seconds of each energy window (None: off)
    # --compile-check FILE: [{target, op, backend, case, kernel, config, why}, ...], the configs
    # that compile file found failing or over a limit; tuning leaves them out for that case.
    left_out: tuple = ()


def prepare_triton(target: dev.Target) -> Optional[str]:
    """Make Triton usable for this device. Returns why Triton backends cannot run, or None.

    On a CPU, Triton kernels need the interpreter, which must be switched on before
    Triton is first imported.
    """
    if target.kind == "cpu":
        if "triton" in sys.modules and not interpreting():
            return "Triton was imported before kernelmark could set TRITON_INTERPRET=1"
        os.environ["TRITON_INTERPRET"] = "1"
    elif interpreting():
        return "TRITON_INTERPRET is set: Triton would run in the interpreter, not on the GPU"
    try:
        import triton  # noqa: F401
    except Exception as e:
        return f"triton cannot be imported ({type(e).__name__}: {e})"
    return None


def _sync(target: dev.Target) -> None:
    if target.is_gpu:
        torch.cuda.synchronize(target.torch_device)


def _free_bytes(target: dev.Target) -> int:
    free = dev.free_bytes(target)
    return 4 << 30 if free is None else free


def _n_input_sets(set_bytes: int, cache: int, free: int, held_bytes: int = 0, gpu: bool = False) -> int:
    """Sets to rotate so none is reused before twice the cache has been touched.

    ``set_bytes``: what one call touches (the op's minimum bytes); ``held_bytes``: what
    one set occupies (a cache append touches kilobytes of a cache of gigabytes).

    On a GPU the timing keeps the L2 cold by itself when it has one set (a flush before each
    call, captured into graphs too, its own time subtracted), so more sets are made only when
    they are enough to rotate past twice the L2 and cheap: at most MAX_INPUT_SETS, within
    the memory share, each holding little more than it touches. Otherwise one set: never
    more memory than the case needs (64 copies of a 537 MB KV cache to rotate a 262 KB
    append would be 34 GB). On a CPU, as many as fit, up to the cap.
    """
    held_bytes = max(held_bytes, set_bytes)
    if set_bytes <= 0 or cache <= 0:
        return 1
    want = math.ceil(2 * cache / set_bytes)
    fit = int(free * INPUT_SET_MEMORY_SHARE // held_bytes)
    if gpu:
        cheap = held_bytes <= GPU_MAX_HELD_PER_TOUCHED * set_bytes
        return want if 1 < want <= min(MAX_INPUT_SETS, fit) and cheap else 1
    return max(1, min(want, MAX_INPUT_SETS, fit))


def tensor_bytes(obj) -> int:
    """Bytes of the distinct tensor storages in an inputs structure (dicts, lists, tuples)."""
    seen, total, stack = set(), 0, [obj]
    while stack:
        x = stack.pop()
        if isinstance(x, torch.Tensor):
            st = x.untyped_storage()
            if st.data_ptr() not in seen:
                seen.add(st.data_ptr())
                total += st.nbytes()
        elif isinstance(x, dict):
            stack.extend(x.values())
        elif isinstance(x, (list, tuple)):
            stack.extend(x)
    return total


def _error_text(e: BaseException) -> str:
    msg = str(e).strip().splitlines()
    return f"{type(e).__name__}: {msg[0] if msg else ''}"[:500]


# How an allocation failure reads: CUDA/HIP "out of memory"; torch's CPU allocator
# "DefaultCPUAllocator: can't allocate memory" or "not enough memory"; ENOMEM's strerror.
_OOM_TEXT = ("out of memory", "can't allocate memory", "not enough memory", "cannot allocate memory")


def _is_oom(e: BaseException) -> bool:
    return isinstance(e, (torch.cuda.OutOfMemoryError, MemoryError)) or \
        any(t in str(e).lower() for t in _OOM_TEXT)


def _size_text(n: int) -> str:
    for unit, shift in (("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            return f"{n / (1 << shift):.2f} {unit}"
    return f"{n} bytes"


def _oom_text(e: BaseException) -> str:
    """The error, led by the size asked for where the message says it (torch's CPU
    allocator gives bytes, "you tried to allocate 256000000000000 bytes"; CUDA's says
    "Tried to allocate 20.00 GiB" already)."""
    m = re.search(r"tried to allocate (\d+) bytes", str(e), re.IGNORECASE)
    return (f"asked for {_size_text(int(m.group(1)))}; " if m else "") + _error_text(e)


# Clock-event reasons that mean the card was held back, not merely idle or configured.
_THROTTLING = {"sw_power_cap", "hw_slowdown", "sw_thermal_slowdown", "hw_thermal_slowdown",
               "hw_power_brake_slowdown"}


def health_flags(before: dict, after: Optional[dict], during: Optional[dict] = None) -> dict:
    """The card's state around one measurement (and, from the background sampler, during
    it), and whether it throttled.

    ``throttled``: a throttling reason was seen before, after or during the measurement.
    ``below_app_clocks``: right after the measurement, or in the median of the samples taken
    during it, the SM clock was under 90% of the application clock (or of the max clock
    where no application clock is set).
    """
    after = after or {}
    seen = set(before.get("throttle_reasons", [])) | set(after.get("throttle_reasons", []))
    if during:
        seen |= set(during.get("throttle_reasons", []))
    reasons = sorted(seen & _THROTTLING)
    ref_clock = after.get("sm_app_clock_mhz") or after.get("sm_clock_max_mhz") or \
        before.get("sm_app_clock_mhz") or before.get("sm_clock_max_mhz")

    def low(clock) -> bool:
        return bool(ref_clock and clock and clock < 0.9 * ref_clock)

    out = {"before": before, "after": after, "throttled": bool(reasons), "throttle_reasons": reasons,
           "below_app_clocks": low(after.get("sm_clock_mhz")) or low((during or {}).get("sm_clock_mhz_median"))}
    if during is not None:
        out["during"] = during
    return out


def _failure_status(e: BaseException) -> str:
    return "oom" if _is_oom(e) else "error"


def metrics(op, shape: dict, dtype: str, median_us: float, pk: dict, datasheet: Optional[dict]) -> dict:
    """Rates and roofline percentages for one timed case."""
    flops = op.flops(shape)
    nbytes = op.nbytes(shape, dtype)
    sec = median_us * 1e-6
    intensity = flops / nbytes if nbytes else None
    achieved_flops = flops / sec if flops else None
    achieved_bw = nbytes / sec
    out = {"tflops": achieved_flops / 1e12 if achieved_flops else None, "gbps": achieved_bw / 1e9}

    def pct(peaks: Optional[dict]) -> tuple:
        if not peaks:
            return None, None
        fl, bw, bound = peaks_mod.roofline(peaks, dtype, intensity, op.memory_peak)
        if not flops:
            return (100 * achieved_bw / bw if bw else None), "memory"
        if bound == "unknown" or fl is None:
            return None, bound
        return 100 * achieved_flops / fl, bound

    out["pct_of_peak"], out["bound"] = pct(pk)
    out["pct_of_datasheet"], _ = pct(datasheet)
    if flops and pk:
        _, via = peaks_mod.compute_roof(pk, dtype)
        if via and via != dtype:        # e.g. bf16 on a CPU that computes it faster in fp32
            out["roof_dtype"] = via
    return out


class Runner:
    def __init__(self, target: dev.Target, profile: dict, peaks: dict, cfg: RunConfig,
                 emit: Callable[[dict], None], progress: Optional[Callable[[int, int, dict], None]] = None):
        self.target, self.profile, self.peaks, self.cfg = target, profile, peaks, cfg
        self.emit, self.progress = emit, progress
        self.triton_problem = prepare_triton(target)
        self.cache = dev.cache_bytes(profile)
        idx = target.torch_device.index
        self.health = (lambda: dev.nvml_state(idx)) if target.kind == "cuda" else (lambda: None)
        # NVML sampled during each measurement: CUDA only; None where NVML is missing.
        self._nvml_read = dev.nvml_reader(idx) if target.kind == "cuda" else None
        self._energy = None    # an energy_window.Session, opened before the first case with --energy
        self._blobs: dict = {}  # (case index, safetensors path) -> its tensors, for the case being run

    def run(self, cases: list) -> int:
        """Run every case; returns the number of records written."""
        n = 0
        for i, case in enumerate(cases):
            for rec in self.run_case(case):
                self.emit(rec)
                n += 1
                if self.progress:
                    self.progress(i + 1, len(cases), rec)
        return n

    # ------------------------------------------------------------------ one case

    def run_case(self, case: Case, on_start: Optional[Callable[[str], None]] = None):
        """Yield one record per backend of the case. ``on_start(stage)`` is called before
        the reference ("reference") and before each backend is measured (its name), so a
        supervising process knows what was in flight if this process dies."""
        on_start = on_start or (lambda stage: None)
        if case.meta and case.meta.get("unsupported"):
            for name in case.backends:
                yield {"op": case.op, "label": case.label, "shape": case.shape, "dtype": case.dtype,
                       "case_index": case.index, "suite_line": case.line, "backend": name,
                       "status": "unsupported", "reason": case.meta["unsupported"], "trace": case.meta}
            return
        if self.cfg.energy_window_s and self._energy is None:
            # Before any work of this process: the idle window sees the device idle.
            self._energy = energy_window.Session(self.target.kind, self.target.torch_device.index,
                                                 self.cfg.energy_window_s)
        op = get_op(case.op)
        base = {"op": op.name, "label": case.label, "shape": case.shape, "dtype": case.dtype,
                "case_index": case.index, "suite_line": case.line,
                "flops": op.flops(case.shape), "bytes": op.nbytes(case.shape, case.dtype)}
        if case.meta:
            base["trace"] = case.meta
        base["intensity"] = base["flops"] / base["bytes"] if base["bytes"] else None
        if op.inputs_summary is not None:
            base["inputs"] = op.inputs_summary(case.shape, case.dtype)
        seed = self.cfg.seed if self.cfg.seed is not None else secrets.randbits(31)
        base["seed"] = seed

        runnable, verdicts = [], {}
        for name in case.backends:
            b = op.backend(name)
            verdicts[name] = self._why_not(op, b, case)
            if verdicts[name] is None:
                runnable.append(b)
        ref = None
        too_big = self._cannot_fit(op, case) if runnable else None
        if too_big:
            for b in runnable:
                verdicts[b.name] = ("oom", too_big)
            runnable = []
        if runnable:
            stage = "making the inputs"
            try:
                on_start("reference")
                inputs = self._inputs(op, case, self.target.torch_device, seed)
                stage = "computing the reference"
                ref = op.reference(inputs)
                del inputs
                _sync(self.target)
            except Exception as e:
                if _is_oom(e):
                    v = ("oom", f"out of memory while {stage}: {_oom_text(e)}")
                else:
                    v = ("error", ("the reference failed: " if stage == "computing the reference" else
                                   "making the inputs failed: ") + _error_text(e))
                for b in runnable:
                    verdicts[b.name] = v
                runnable = []
                inputs = None
                self._cleanup()
        for name in case.backends:
            v = verdicts[name]
            if v is not None:
                yield {**base, "backend": name, "status": v[0], "reason": v[1]}
            else:
                on_start(name)
                before = self.health()
                rec = {**base, "backend": name, **self._measure(op, op.backend(name), case, ref, seed)}
                during = rec.pop("_during", None)
                if before is not None:
                    rec["health"] = health_flags(before, self.health(), during)
                yield rec
        del ref
        self._blobs = {}
        self._cleanup()

    def _cannot_fit(self, op, case: Case) -> Optional[str]:
        """Why a case's inputs cannot be allocated on this CPU, before trying: Linux grants an
        allocation past the free memory and its OOM killer ends the process (the worker, or
        the run) when the pages are touched. On a GPU an allocation fails cleanly by itself."""
        if self.target.is_gpu:
            return None
        need = (op.alloc_bytes or op.nbytes)(case.shape, case.dtype)
        free = dev.free_bytes(self.target)
        if free is None or need <= free:
            return None
        return (f"out of memory: its inputs need at least {_size_text(need)} and this machine has "
                f"{_size_text(free)} available; not allocated (past it the kernel's OOM killer would end the run)")

    def _inputs(self, op, case: Case, device, seed: int):
        """The op's inputs, with the case's given tensors (meta["given"]: a FlashInfer-Trace
        workload's safetensors blobs, {our input: {path, tensor_key}}) in place of random ones,
        so the reference and every backend compute on the same given data."""
        inputs = op.make_inputs(case.shape, case.dtype, device, self._gen(seed))
        given = (case.meta or {}).get("given")
        if not given:
            return inputs
        from safetensors.torch import load_file
        tensors = {}
        for name, src in given.items():
            # One read of each file per case: the timing's rotated sets take the same blobs.
            key = (case.index, src["path"])
            if key not in self._blobs:
                self._blobs = {k: v for k, v in self._blobs.items() if k[0] == case.index}
                self._blobs[key] = load_file(src["path"])
            tensors[name] = self._blobs[key][src["tensor_key"]]
        return op.use_given(inputs, tensors)

    def _gen(self, seed: int) -> torch.Generator:
        return torch.Generator(self.target.torch_device).manual_seed(seed)

    def _why_not(self, op, b, case: Case) -> Optional[tuple]:
        """(status, reason) if this backend will not run this case here; None if it will."""
        kind = self.target.kind
        reason = b.available()
        if reason:
            return "skipped", reason
        if b.devices is not None and kind not in b.devices:
            return "unsupported", f"{b.name} does not run on {kind} (runs on {', '.join(b.devices)})"
        if b.dtypes is not None and case.dtype not in b.dtypes:
            return "unsupported", f"{b.name} does not implement {case.dtype}"
        if b.supports is not None:
            reason = b.supports(case.shape, case.dtype, kind, self.target.capability)
            if reason:
                return "unsupported", reason
        if b.triton:
            if self.triton_problem:
                return "skipped", self.triton_problem
            if kind == "cpu" and (op.flops(case.shape) > INTERPRETER_MAX_FLOPS or
                                  op.nbytes(case.shape, case.dtype) > INTERPRETER_MAX_BYTES):
                return "skipped", "too large for the Triton interpreter (CPU); checked on small cases only"
        return None

    def _asked(self, op: str, backend: str, case: Case) -> dict:
        """{target: {kernel: {config: why}}}: what the compile check found failing or over a
        limit for this very case (op, backend, shape and dtype, as `kernelmark compile` names it)."""
        name = f"{shape_str(case.shape)} {case.dtype}"
        table: dict = {}
        for e in self.cfg.left_out:
            if (e["op"], e["backend"], e["case"]) == (op, backend, name):
                table.setdefault(e["target"], {}).setdefault(e["kernel"], {})[e["config"]] = e["why"]
        return table

    def _measure(self, op, b, case: Case, ref, seed: int) -> dict:
        dev_ = self.target.torch_device
        stage = "making inputs"
        try:
            inputs = b.setup(self._inputs(op, case, dev_, seed))
            stage = "running"
            if b.triton and self.cfg.left_out:
                b.leave_out_of_tuning(self._asked(op.name, b.name, case))
            mark = b.tuning_mark()
            out = b.run(inputs)
            _sync(self.target)
            stage = "checking"
            check = op.compare(out, ref, case.dtype)
            del out
        except Unsupported as e:           # the backend found at run time it cannot do this case
            self._cleanup()
            return {"status": "unsupported", "reason": str(e)}
        except Exception as e:
            self._cleanup()
            return {"status": _failure_status(e), "reason": self._describe(e, stage)}
        rec: dict = {"check": check.as_dict()}
        if b.covers:
            rec["covers"] = list(b.covers)
        pruned = b.left_out_since(mark)
        # On a GPU a Triton record always says what tuning left out ([]: nothing); on the CPU
        # the interpreter tunes nothing, so only a list with something in it is kept.
        if pruned is not None and (pruned or self.target.is_gpu):
            rec["pruned"] = pruned
        if b.detail is not None:
            try:
                rec["detail"] = b.detail()
            except Exception as e:  # a description must never cost the measurement
                rec["detail"] = f"unavailable ({type(e).__name__})"
        if not check.passed:
            return {**rec, "status": "failed_check", "reason": check.detail}
        if b.triton and self.target.kind == "cpu":
            return {**rec, "status": "checked", "reason": "checked in the Triton interpreter; not timed on a CPU"}
        during = None
        try:
            stage = "making rotated input sets"
            set_bytes = op.nbytes(case.shape, case.dtype)
            n_sets = _n_input_sets(set_bytes, self.cache, _free_bytes(self.target), tensor_bytes(inputs),
                                   gpu=self.target.is_gpu)
            sets = [inputs] + [b.setup(self._inputs(op, case, dev_, seed + i))
                               for i in range(1, n_sets)]
            stage = "timing"
            budget = self.cfg.budget_override or case.budget_s or self.cfg.timing.budget_s
            tcfg = timing.TimingConfig(**{**self.cfg.timing.__dict__, "budget_s": budget})
            sampler = nvml_sampler.Sampler(self._nvml_read).start() if self._nvml_read else None
            try:
                t = timing.time_callable(b.run, sets, dev_, tcfg, l2_bytes=self.cache, set_bytes=set_bytes)
            finally:
                during = sampler.stop() if sampler else None
            if self._energy is not None:   # after the timing and its sampler: never overlapping
                rec["energy"] = self._measure_energy(b, sets, t.summary.median_us * 1e-6)
        except Exception as e:
            self._cleanup()
            return {**rec, "status": _failure_status(e), "reason": self._describe(e, stage)}
        finally:
            sets = inputs = None
        rec["timing"] = t.as_dict()
        if during is not None:
            rec["_during"] = during          # run_case files it under "health"
        rec["noisy"] = t.noisy          # CI target missed, or stalls in the samples
        rec.update(metrics(op, case.shape, case.dtype, t.summary.median_us, self.peaks,
                           self.profile.get("datasheet")))
        rec["status"] = "ok"
        self._cleanup()
        return rec

    def _measure_energy(self, b, sets, call_s: float) -> dict:
        """The energy dict of a timed backend; a failure here costs the energy, not the timing."""
        try:
            return self._energy.measure(b.run, sets, self.target.torch_device, call_s, self.health)
        except Exception as e:
            self._cleanup()
            return {"status": "error", "reason": self._describe(e, "measuring energy")}

    def _describe(self, e: BaseException, stage: str) -> str:
        if _is_oom(e):
            return f"out of memory while {stage}: {_oom_text(e)}"
        if isinstance(e, ValueError):      # a launcher's own input check
            return f"rejected while {stage}: {_error_text(e)}"
        tb = traceback.extract_tb(e.__traceback__)
        where = f" at {os.path.basename(tb[-1].filename)}:{tb[-1].lineno}" if tb else ""
        return f"failed while {stage}{where}: {_error_text(e)}"

    def _cleanup(self) -> None:
        if self.target.is_gpu:
            try:
                torch.cuda.synchronize(self.target.torch_device)
            except Exception:
                pass
            torch.cuda.empty_cache()


def worker_init(target: dev.Target, profile: dict, pk: dict, cfg: RunConfig) -> dict:
    """The message that sets up a worker process (kernelmark.harness.worker) like this runner."""
    return {"device": str(target.torch_device), "profile": profile, "peaks": pk, "timing": cfg.timing.__dict__,
            "budget_override": cfg.budget_override, "seed": cfg.seed, "threads": torch.get_num_threads(),
            "energy_window_s": cfg.energy_window_s, "left_out": list(cfg.left_out)}


def header(command: list, suite, profile: dict, pk: dict, cfg: RunConfig) -> dict:
    import kernelmark
    return {"kernelmark": kernelmark.__version__, "command": command, "suite": suite.as_header(),
            "device": profile, "peaks": pk, "timing": cfg.timing.__dict__,
            "budget_override_s": cfg.budget_override, "energy_window_s": cfg.energy_window_s,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "run_id": secrets.token_hex(6)}
