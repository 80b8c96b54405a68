"""Peaks measured on this device: the ceilings "% of peak" is computed against.

* ``copy_gbps``: a large device-to-device copy, counting bytes read plus written.
* ``h2d_gbps`` / ``d2h_gbps`` (GPU only): pinned host memory to device and back.
* ``tflops[dtype]``: torch.matmul at a large square size on random data (fp32 is
  IEEE fp32, TF32 off; fp8 through torch._scaled_mm where the device has it).

The compute roof of a dtype is the fastest way the device can compute it: natively, or in
a wider dtype that holds it exactly (``EXACT_IN``). A CPU without native bf16 (AVX2 only:
bf16 matmul 0.0013 TFLOP/s, fp32 0.155) computes bf16 attention in fp32, so against the
bf16 rate it would read 2,000% of peak; ``roof`` in the peaks names each dtype whose roof
is another dtype's rate.

Measured once per device (CPU: with its ISA features and thread count) + driver + library
versions and cached in the user's cache directory (``$KERNELMARK_CACHE_DIR``, else
``$XDG_CACHE_HOME/kernelmark``, else ``~/.cache/kernelmark``); ``--remeasure`` measures
again. A peak whose samples stalled (measured on a busy machine: too low) is named in
``stalled``, which every table built on it repeats; it is cached all the same (measuring
again takes seconds, more on a busy machine, at every run): ``--remeasure`` on a quiet
machine replaces it.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Callable, Optional

import torch

from kernelmark.harness import device as dev
from kernelmark.harness import timing

SCHEMA = 1

# Wider dtypes that represent every value of a dtype exactly: it can be computed in them.
EXACT_IN = {"fp8_e4m3": ("fp16", "bf16", "fp32"), "fp16": ("fp32",), "bf16": ("fp32",)}


def cache_dir() -> Path:
    if os.environ.get("KERNELMARK_CACHE_DIR"):
        return Path(os.environ["KERNELMARK_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "kernelmark"


def cache_key(prof: dict) -> str:
    v = prof["versions"]
    ident = [SCHEMA, prof["kind"], prof["name"], prof.get("driver"), prof["torch_device"],
             v["torch"], v["triton"], v.get("cuda_runtime"), v.get("hip_runtime"),
             prof["cpu"]["model"], prof["cpu"]["torch_threads"]]
    if prof["kind"] == "cpu":     # the model name does not say what the CPU can multiply natively
        ident += [prof["cpu"].get("isa"), prof["cpu"].get("torch_capability")]
    return hashlib.sha256(json.dumps(ident).encode()).hexdigest()[:16]


def _time_us(fn: Callable, target: dev.Target, prof: dict, budget_s: float, name: str = "",
             stalls: Optional[dict] = None) -> float:
    """Median µs of ``fn``; where its samples stalled, ``stalls[name]`` says why."""
    cfg = timing.TimingConfig(budget_s=budget_s, target_ci_rel=0.01, min_samples=5, use_graphs=False)
    t = timing.time_callable(lambda _: fn(), [None], target.torch_device, cfg, l2_bytes=dev.cache_bytes(prof))
    if t.stall and stalls is not None:
        stalls[name] = t.stall
    return t.summary.median_us


def _matmul_tflops(dtype: str, n: int, target: dev.Target, prof: dict, budget_s: float,
                   stalls: Optional[dict] = None) -> Optional[float]:
    d = target.torch_device
    gen = torch.Generator(d).manual_seed(0)
    if dtype == "fp8_e4m3":
        if target.kind != "cuda" or (target.capability or (0, 0)) < (8, 9):
            return None
        f8 = torch.float8_e4m3fn
        a = torch.randn(n, n, device=d, generator=gen).to(f8)
        b = torch.randn(n, n, device=d, generator=gen).to(f8).t()     # column-major, as _scaled_mm needs
        one = torch.ones((), device=d)
        fn = lambda: torch._scaled_mm(a, b, scale_a=one, scale_b=one, out_dtype=torch.bfloat16)  # noqa: E731
    else:
        dt = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[dtype]
        a = torch.randn(n, n, device=d, generator=gen).to(dt)
        b = torch.randn(n, n, device=d, generator=gen).to(dt)
        fn = lambda: torch.matmul(a, b)  # noqa: E731
    us = _time_us(fn, target, prof, budget_s, f"tflops.{dtype}", stalls)
    return 2 * n ** 3 / (us * 1e-6) / 1e12


def _copy_gbps(nbytes: int, target: dev.Target, prof: dict, budget_s: float,
               stalls: Optional[dict] = None) -> float:
    src = torch.randint(0, 255, (nbytes,), dtype=torch.uint8, device=target.torch_device)
    dst = torch.empty_like(src)
    us = _time_us(lambda: dst.copy_(src), target, prof, budget_s, "copy_gbps", stalls)
    return 2 * nbytes / (us * 1e-6) / 1e9


def _host_link_gbps(nbytes: int, direction: str, target: dev.Target, prof: dict, budget_s: float,
                    stalls: Optional[dict] = None) -> float:
    host = torch.randint(0, 255, (nbytes,), dtype=torch.uint8).pin_memory()
    gpu = torch.empty(nbytes, dtype=torch.uint8, device=target.torch_device)
    fn = (lambda: gpu.copy_(host, non_blocking=True)) if direction == "h2d" else \
        (lambda: host.copy_(gpu, non_blocking=True))
    us = _time_us(fn, target, prof, budget_s, f"{direction}_gbps", stalls)
    return nbytes / (us * 1e-6) / 1e9


def measure(target: dev.Target, prof: dict) -> dict:
    """Measure every peak this device has (a few seconds)."""
    t0 = time.time()
    stalls: dict = {}
    out: dict = {"tflops": {}, "method": {}}
    gpu = target.is_gpu
    budget = 0.5 if gpu else 0.4
    copy_bytes = (1 << 30) if gpu else (128 << 20)
    if gpu:
        copy_bytes = min(copy_bytes, prof["memory_bytes"] // 8)
    out["copy_gbps"] = _copy_gbps(copy_bytes, target, prof, budget, stalls)
    out["method"]["copy_gbps"] = f"torch copy_ of {copy_bytes >> 20} MiB, bytes read + written"
    if gpu:
        for direction in ("h2d", "d2h"):
            out[f"{direction}_gbps"] = _host_link_gbps(256 << 20, direction, target, prof, budget, stalls)
        out["method"]["h2d_gbps"] = out["method"]["d2h_gbps"] = "256 MiB pinned host <-> device, non_blocking copy_"
    sizes = {"fp32": 8192, "fp16": 8192, "bf16": 8192, "fp8_e4m3": 8192} if gpu else \
        {"fp32": 1024, "fp16": 512, "bf16": 512}
    for dtype, n in sizes.items():
        try:
            v = _matmul_tflops(dtype, n, target, prof, budget, stalls)
        except Exception as e:  # a dtype the device's torch cannot multiply
            out["method"][f"tflops.{dtype}"] = f"not measured: {type(e).__name__}: {str(e)[:120]}"
            continue
        if v is not None:
            out["tflops"][dtype] = v
            out["method"][f"tflops.{dtype}"] = f"torch matmul {n}x{n}x{n} on random data" + \
                (" (torch._scaled_mm)" if dtype == "fp8_e4m3" else "")
    if gpu:
        torch.cuda.empty_cache()
    out["roof"] = {dt: via for dt in out["tflops"] if (via := compute_roof(out, dt)[1]) != dt}
    if stalls:
        out["stalled"] = stalls
    out["measured_s"] = round(time.time() - t0, 2)
    out["measured_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    return out


def get(target: dev.Target, prof: dict, remeasure: bool = False,
        log: Optional[Callable[[str], None]] = None) -> dict:
    """Measured peaks for this device, from the cache unless ``remeasure``. ``log`` is told
    when they are measured (seconds of work), and only then."""
    key = cache_key(prof)
    path = cache_dir() / f"peaks-{key}.json"
    if not remeasure and path.exists():
        try:
            cached = json.loads(path.read_text())
            if cached.get("schema") == SCHEMA:
                cached["source"] = f"cache ({path})"
                return cached
        except (OSError, ValueError):
            pass  # a corrupt cache entry is measured again
    if log is not None:
        log("kernelmark: measuring this device's peaks (once per device, driver and library versions; "
            f"cached in {cache_dir()})...")
    peaks = measure(target, prof)
    peaks["schema"] = SCHEMA
    peaks["key"] = key
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(peaks, indent=1))
        tmp.replace(path)
    except OSError:
        pass  # an unwritable cache only costs a re-measure next time
    peaks["source"] = "measured now"
    return peaks


def compute_roof(peaks: dict, dtype: str) -> tuple:
    """(TFLOP/s, dtype whose rate it is) of the fastest measured way to compute ``dtype``:
    natively or in a wider dtype that holds it exactly; (None, None) where none was measured.
    Its own rate wins a tie."""
    tf = peaks.get("tflops") or {}
    ways = [(tf[d], d) for d in (dtype, *EXACT_IN.get(dtype, ())) if tf.get(d)]
    return max(ways, key=lambda w: w[0]) if ways else (None, None)


def roofline(peaks: dict, dtype: str, intensity: Optional[float], memory_peak: str = "copy") -> tuple:
    """(attainable FLOP/s or None, attainable bytes/s or None, bound) for one case.

    Pure data movement (no FLOPs) is bounded by the named bandwidth alone. The compute
    ceiling is ``compute_roof``.
    """
    bw = peaks.get(f"{memory_peak}_gbps")
    bw = bw * 1e9 if bw else None
    tf, _ = compute_roof(peaks, dtype)
    fl = tf * 1e12 if tf else None
    if not intensity:
        return None, bw, "memory"
    if fl is None or bw is None:
        return fl, bw, "unknown"
    if intensity * bw < fl:
        return intensity * bw, bw, "memory"
    return fl, bw, "compute"
