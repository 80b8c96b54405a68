"""`kernelmark model ... --measure --check-step`: the roll-up checked against real decode steps.

The roll-up is a sum of kernel times. Here the same model is built from its config
(kernelmark.suites.reference_decoder: random weights, eager torch, a KV cache of the
context), each of its kernels run by the backend the roll-up picked for that case, and
whole decode steps are timed by the same harness (kernelmark.harness.timing) on the same
device, at each batch and the context. Measured step / kernel sum is then the framework
and launch overhead (and whatever else a step pays between its kernels), as a number. On a
CPU the step and its kernels are also timed in paired rounds (kernelmark.harness.paired), the
ratio taken per round, so the machine's speed drifting between the run's cases and the step
does not enter it. On a GPU the step is also captured as one CUDA graph and its replay
timed: launch overhead gone.

An explicit option, not part of every --measure: it allocates the whole model (Llama-3.2-1B
in fp32 is 5 GB) and takes as long as several steps per batch.
"""

from __future__ import annotations

import dataclasses
import sys
import time

from kernelmark.errors import UsageError

DEFAULT_BUDGET_S = 2.0
STEP_SAMPLES = 15           # a step's median from at least this many steps (5 gave ±21% at batch 1)
STEP_BUDGET_CAP_S = 60.0    # ... unless that would take longer than this a batch
PAIRED_ROUNDS = 25          # CPU: rounds of a step and its kernels (19 gave a ±6% interval at batch 1)
IN_STEP_STEPS = 3           # steps run with each kernel call timed inside them (CPU)
KERNEL_BUDGET_S = 0.5       # each kernel re-timed in the step's process
MEMORY_SHARE = 0.8          # at most this share of the free memory for the weights and caches
WITHIN = 0.10               # the goal: the kernel sum within 10% of the measured step


def validate(args, cfg, batches: list, dtype: str, device_spec) -> None:
    """UsageError (exit 2) for what the check cannot do, before anything is measured."""
    from kernelmark.suites import reference_decoder as rd
    if not args.measure:
        raise UsageError("--check-step times decode steps on this device next to its kernels: give --measure too")
    if args.tp != 1:
        raise UsageError(f"--check-step --tp {args.tp}: the reference decoder runs the whole model on one device "
                         "(--tp 1)")
    if dtype not in rd.DTYPES:
        raise UsageError(f"--check-step --dtype {dtype}: the reference decoder runs {', '.join(rd.DTYPES)}")
    why = rd.supported(cfg)
    if why:
        raise UsageError(f"--check-step: not supported for this architecture: {why} (the reference decoder "
                         "builds dense GQA models, Llama, Mistral, Qwen2, Qwen3, and softmax-routed MoE ones, "
                         "Mixtral, Qwen3-MoE)")
    if args.context > cfg.max_position:
        raise UsageError(f"--check-step --context {args.context}: beyond {cfg.name}'s {cfg.max_position} positions")
    need = rd.weight_bytes(cfg, dtype) + max(cache_bytes(cfg, b, args.context, dtype) for b in batches)
    free = free_bytes(device_spec)
    if free is not None and need > MEMORY_SHARE * free:
        raise UsageError(f"--check-step: {cfg.name} in {dtype} needs {need / 2**30:.1f} GiB (weights and KV cache); "
                         f"this device has {free / 2**30:.1f} GiB free")


def cache_bytes(cfg, batch: int, context: int, dtype: str) -> int:
    from kernelmark import dtypes
    from kernelmark.suites import reference_decoder as rd
    pages = batch * -(-context // rd.PAGE_SIZE) + 1
    return 2 * cfg.layers * pages * rd.PAGE_SIZE * cfg.kv_heads * cfg.head_dim * dtypes.itemsize(dtype)


def free_bytes(device_spec):
    """Free memory of the device --measure uses (MemAvailable on a CPU), or None if unknown."""
    from kernelmark.harness import device as hdev
    try:
        target = hdev.resolve(device_spec)
    except hdev.DeviceError:
        return None     # the run names the device error itself
    return hdev.free_bytes(target)


def _device_group(built: list, measured_path):
    """The roll-up of this device: the device group holding the run measured here."""
    if measured_path:
        for dev, ests in built:
            if any(r.path == measured_path for r in dev.runs):
                return dev, ests
    if len(built) == 1:
        return built[0]
    raise UsageError("--check-step compares with this device's kernels: the --run files are of several devices "
                     "and nothing was measured here; give only this device's runs")


def _picked(est) -> dict:
    """(op, dtype, fixed shape) -> the backend the roll-up used for that component."""
    from kernelmark.suites import reference_decoder as rd
    return {rd._key(f.need.op, f.need.dtype, {**f.need.fixed, **f.need.prefer}): f.rec["backend"]
            for f in est.found if f.rec is not None}


def _fastest_sum(est):
    """The kernel sum of each case's fastest sample: next to the step's fastest, the figure a
    busy machine disturbs least (stalls only add time); None without every case's minimum."""
    total = 0.0
    for f in est.found:
        if f.rec is None:
            continue
        m = f.rec["timing"].get("min_us")
        if m is None:
            return None
        total += m * f.need.count / f.need.per
    return total


def _summary(t) -> dict:
    s = t.summary
    return {"median_us": s.median_us, "min_us": s.min_us, "ci_rel": s.ci_rel, "samples": s.n, "method": t.method,
            "converged": t.converged, "stall": t.stall, "note": t.note}


def _graph_timing(dec, device, tcfg):
    """Time the step replayed as one CUDA graph (GPU only): (timing dict, None) or (None, why)."""
    import torch
    from kernelmark.harness import timing
    try:
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(2):
                dec.step()          # warm up outside capture (allocator, lazy inits)
        torch.cuda.current_stream(device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            dec.step()
    except Exception as e:  # a backend that syncs or allocates on the host cannot be captured
        return None, f"not captured: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    t = timing.time_callable(lambda _: graph.replay(), [None], device, tcfg)
    return _summary(t), None


def _kernels_here(dec, calls: list, device, budget_s: float):
    """Each distinct kernel of the step timed alone, on the step's own tensors, in this process
    just before the step is timed: a kernel sum measured under the same load as the step (the
    roll-up's comes from the run, measured minutes earlier). Caches are not flushed between
    calls, so small kernels run warm here: a lower bound for them."""
    from kernelmark.harness import timing
    from kernelmark.suites import reference_decoder as rd
    counts: dict = {}
    for c in calls:
        k = rd._key(c.op, c.dtype, c.shape)
        counts[k] = counts.get(k, 0) + 1
    tcfg = timing.TimingConfig(budget_s=budget_s, min_samples=5)
    total, each = 0.0, []
    import torch
    for op, dt, shape, fn, inputs in dec.calls_to_time():
        with torch.inference_mode():        # the step's tensors are inference tensors
            t = timing.time_callable(fn, [inputs], device, tcfg)
        n = counts[rd._key(op, dt, shape)]
        total += t.summary.median_us * n
        each.append({"op": op, "dtype": dt, "shape": shape, "median_us": t.summary.median_us, "count": n,
                     "stall": t.stall})
    return total, each


def _paired(dec, calls: list, budget_s: float) -> dict:
    """CPU: the step and its kernels in alternating rounds (kernelmark.harness.paired), so the
    kernel sum and the step see the same machine; ``kernels`` as _kernels_here lists them."""
    from kernelmark.harness import paired
    from kernelmark.suites import reference_decoder as rd
    import torch
    counts: dict = {}
    for c in calls:
        k = rd._key(c.op, c.dtype, c.shape)
        counts[k] = counts.get(k, 0) + 1
    todo = dec.calls_to_time()
    kernels = [paired.Kernel(rd._text(rd._key(op, dt, shape)), fn, inputs, counts[rd._key(op, dt, shape)])
               for op, dt, shape, fn, inputs in todo]
    with torch.inference_mode():        # the step's tensors are inference tensors
        got = paired.rounds(dec.step, kernels, budget_s, want=PAIRED_ROUNDS)
    got["kernels"] = [{"op": op, "dtype": dt, "shape": shape, "median_us": k["median_us"], "count": k["count"],
                       "stall": None} for (op, dt, shape, _, _), k in zip(todo, got["kernels"])]
    lo, hi = got["ci"]
    got["within"] = {"share": WITHIN, "holds": 1 - WITHIN <= lo and hi <= 1 + WITHIN}
    return got


def step_budget(budget_s: float, step_s: float) -> float:
    """Seconds to time the step: enough for STEP_SAMPLES of them (the sampler takes 5, then
    10 more; 10% spare for the warm-up), never below the asked budget, capped a batch."""
    return max(budget_s, min(STEP_BUDGET_CAP_S, 1.1 * STEP_SAMPLES * step_s))


def in_step(dec, alone: list) -> dict:
    """Where the step's time goes (CPU): each kernel call timed inside real steps, against the
    same kernels re-timed alone (``alone``: _kernels_here's list). What runs between the calls
    is Python, dispatch and views; a kernel slower inside the step than alone pays for the
    caches the step's other work left cold (the weights stream through them)."""
    from kernelmark.suites import reference_decoder as rd
    got = dec.time_ops_in_step(IN_STEP_STEPS)
    alone_us = {rd._key(k["op"], k["dtype"], k["shape"]): k["median_us"] * k["count"] for k in alone}
    kernels = [{"kernel": rd._text(k), "in_step_us": v, "alone_us": alone_us.get(k)} for k, v in got["by_key"].items()]
    kernels.sort(key=lambda k: -(k["in_step_us"] - (k["alone_us"] or 0.0)))
    return {"steps": got["steps"], "step_us": got["step_us"], "kernel_calls_us": got["ops_us"],
            "between_calls_us": got["step_us"] - got["ops_us"],
            "kernels_alone_us": sum(v for v in alone_us.values()), "kernels": kernels}


def stalled_share(est) -> dict:
    """How much of a kernel sum comes from cases whose timing stalled (the cores were busy
    while they were measured): such a sum is the load at that moment, and a step timed
    minutes later can come out faster than it (step / kernel sum < 1)."""
    used = [f for f in est.found if f.rec]
    stalled = [f for f in used if (f.rec.get("timing") or {}).get("stall")]
    return {"components": len(stalled), "of": len(used),
            "us": sum(f.us * f.need.count / f.need.per for f in stalled)}


def run(args, cfg, batches: list, dtype: str, phases: list, built: list, measured_path) -> list:
    """Time decode steps at each batch; one dict each (the roll-up's figures beside them)."""
    from kernelmark.cli.run import apply_threads
    from kernelmark.harness import device as hdev, timing
    from kernelmark.suites import reference_decoder as rd
    import torch
    dev, ests = _device_group(built, measured_path)
    target = hdev.resolve(args.device)
    threads = apply_threads(None, target)       # the thread count the run's workers used
    tcfg = timing.TimingConfig(budget_s=args.budget or DEFAULT_BUDGET_S)
    comps = {size: cs for kind, size, cs in phases if kind == "decode"}
    decode = {e.batch: e for e in ests if e.kind == "decode"}
    print(f"kernelmark: building {cfg.name} ({dtype}, random weights) for --check-step", file=sys.stderr)
    dec, out = None, []
    for b in batches:
        est = decode[b]
        picked = _picked(est)

        def backend_for(op, dt, shape, picked=picked):
            return picked.get(rd._key(op, dt, shape))

        if dec is None:
            dec = rd.ReferenceDecoder(cfg, b, args.context, dtype, target.torch_device, backend_for)
        else:
            dec.resize(b, args.context, backend_for)
        t0 = time.perf_counter()
        calls = dec.record_step(keep_inputs=True)
        if target.is_gpu:
            torch.cuda.synchronize(target.torch_device)
        step_cfg = dataclasses.replace(tcfg, budget_s=step_budget(tcfg.budget_s, time.perf_counter() - t0),
                                       min_samples=STEP_SAMPLES)
        # a component done inside another's kernel (its record covers it) is not a call of its own
        covered = {rd._key(f.need.op, f.need.dtype, {**f.need.fixed, **f.need.prefer}) for f in est.found if f.covered}
        problems = rd.accounting(calls, [c for c in comps[b] if rd._key(c.op, c.dtype, c.shape) not in covered])
        if target.is_gpu:
            here, each = _kernels_here(dec, calls, target.torch_device, min(tcfg.budget_s, KERNEL_BUDGET_S))
            dec.kept = None
        t = timing.time_callable(lambda _: dec.step(), [None], target.torch_device, step_cfg)
        if not target.is_gpu:     # a round: a step, then its distinct kernels once (about half a step)
            pair = _paired(dec, calls, max(tcfg.budget_s, min(STEP_BUDGET_CAP_S,
                                                              1.1 * PAIRED_ROUNDS * 1.5 * t.summary.median_us / 1e6)))
            dec.kept = None
            here, each = pair["kernel_sum_us"], pair["kernels"]
        row = {"device": dev.label, "batch": b, "context": args.context, "dtype": dtype,
               "step": _summary(t), "measured_step_us": t.summary.median_us,
               "kernel_sum_us": est.total_us if est.complete else None, "kernel_sum_stalled": stalled_share(est),
               "backends": {op: sorted(names) for op, names in dec.backends_used.items()},
               "substituted": dict(dec.substituted), "accounting": problems,
               "kernels_here": pair if not target.is_gpu else
               {"kernel_sum_us": here, "step_over_kernel_sum": t.summary.median_us / here, "kernels": each},
               "threads": torch.get_num_threads(),
               "threads_reason": threads["reason"] if threads else None}
        if row["kernel_sum_us"]:
            row["step_over_kernel_sum"] = row["measured_step_us"] / row["kernel_sum_us"]
            row["overhead_us"] = row["measured_step_us"] - row["kernel_sum_us"]
            fastest = _fastest_sum(est)
            if fastest:
                row["fastest"] = {"step_us": t.summary.min_us, "kernel_sum_us": fastest,
                                  "step_over_kernel_sum": t.summary.min_us / fastest}
        else:
            row["why_no_ratio"] = f"the roll-up is incomplete ({len(est.missing)} case(s) not measured)"
        if not target.is_gpu:
            row["in_step"] = in_step(dec, each)
        if target.is_gpu:
            g, why = _graph_timing(dec, target.torch_device, step_cfg)
            row["cuda_graph_step"] = g if g else {"missing": why}
            if g and row["kernel_sum_us"]:
                row["graph_over_kernel_sum"] = g["median_us"] / row["kernel_sum_us"]
        out.append(row)
        print(f"kernelmark: checked decode batch {b}: step {t.summary.median_us:,.1f} µs", file=sys.stderr)
    return out
