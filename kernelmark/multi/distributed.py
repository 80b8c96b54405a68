"""`kernelmark run` under torchrun: every rank runs the suite's collectives in lockstep, rank
0 alone writes the run file and prints the table.

    torchrun --nproc-per-node 8 -m kernelmark run --suite collectives

Each rank takes cuda:LOCAL_RANK (NCCL; RCCL on ROCm) or, with --device cpu, the CPU (gloo).
There is no worker isolation here: a collective needs every rank in the same process group,
so the cases run in each rank's own process, and a rank that dies takes the job with it
(torchrun stops the others; the records written so far stay in the run file). A rank that
hangs is cut off by the process group's timeout (--timeout).

The trap is divergence: a collective that one rank enters and another does not hangs both.
So every decision that could differ between ranks is taken from data all ranks share:

* the plan: every rank loads the suite and filters it; the plan's hash is compared first;
* each stage that can fail on one rank only (making inputs, running, the check) is followed
  by an exchange of outcomes, and a case that failed anywhere is recorded as failed for all
  and not timed;
* timing: warm-up call counts are fixed; the calls per sample come from the max over ranks
  of the estimated call time; after every batch of samples the ranks all-reduce (MAX) their
  samples and their elapsed time, and the stopping rule (CI target, budget, sample cap) is
  evaluated on those identical numbers, so every rank stops after the same sample.

Per-rank times: a sample is ``inner`` back-to-back calls after a barrier, timed by each rank
with its own clock (CUDA events; perf_counter on the CPU); the sample stored is the MAX over
ranks. A collective is complete only when its last rank is, and a tensor-parallel step
waits for that rank. (nccl-tests averages the per-rank times by default and offers the
max as ``-a 3``; the records keep every rank's median so the average can be recomputed.)
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import secrets
import sys
import time
from datetime import timedelta

import torch
import torch.distributed as dist

from kernelmark.harness import stats, timing

WARMUP_CALLS = 5          # after the checked call; nccl-tests' default warm-up is 5 as well
SAMPLE_TARGET_US = {"gpu": 1000.0, "cpu": 2000.0}   # one sample lasts at least this long
MAX_INNER = 1000
FIRST_BATCH, MAX_BATCH = 5, 64


def launched() -> bool:
    """True inside a torchrun launch of more than one process."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) > 1
    except ValueError:
        return False


class Comm:
    """This rank's place in the process group and the few collectives the harness agrees by."""

    def __init__(self, target):
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self.target = target
        self.device = target.torch_device
        self._flag = torch.zeros(1, device=self.device)

    def sync(self) -> None:
        if self.target.is_gpu:
            torch.cuda.synchronize(self.device)

    def barrier(self) -> None:
        dist.all_reduce(self._flag)     # on the device the collectives use (NCCL needs one)
        self.sync()

    def gather(self, obj) -> list:
        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def max_floats(self, values: list) -> list:
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return t.tolist()

    def broadcast(self, obj):
        box = [obj]
        dist.broadcast_object_list(box, 0)
        return box[0]


# ---------------------------------------------------------------- timing in lockstep

def _sample(fn, calls: int, comm: Comm) -> float:
    """Microseconds per call over ``calls`` back-to-back calls, after a barrier."""
    comm.barrier()
    if comm.target.is_gpu:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(calls):
            fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) * 1e3 / calls
    t = time.perf_counter_ns()
    for _ in range(calls):
        fn()
    return (time.perf_counter_ns() - t) / 1e3 / calls


def time_lockstep(fn, comm: Comm, cfg: timing.TimingConfig) -> tuple:
    """Time ``fn()`` on every rank at once. Returns (Timing of the per-sample max over ranks,
    this rank's own samples). Every branch below depends only on numbers all ranks share."""
    kind = "gpu" if comm.target.is_gpu else "cpu"
    est = comm.max_floats([_sample(fn, WARMUP_CALLS, comm)])[0]
    inner = int(min(max(math.ceil(SAMPLE_TARGET_US[kind] / max(est, 1e-3)), 1), MAX_INNER))
    samples: list = []
    mine: list = []
    batch, t0 = FIRST_BATCH, time.perf_counter()
    while True:
        local = [_sample(fn, inner, comm) for _ in range(batch)]
        shared = comm.max_floats(local + [time.perf_counter() - t0])
        mine += local
        samples += shared[:-1]
        elapsed = shared[-1]
        converged = len(samples) >= cfg.min_samples and stats.ci_relative_width(samples) <= cfg.target_ci_rel
        if converged or elapsed >= cfg.budget_s or len(samples) >= cfg.max_samples:
            break
        batch = min(batch * 2, MAX_BATCH)
    method = ("cuda_event" if kind == "gpu" else "cpu_perf_counter") + "_max_over_ranks"
    t = timing.Timing(stats.summarize(samples), method, inner,
                      "none: nccl-tests does not flush either; a collective streams its buffers once per call",
                      converged, round(elapsed, 4),
                      note=f"sample = {inner} back-to-back calls after a barrier, slowest of {comm.world} ranks")
    return t, mine


# ---------------------------------------------------------------- one case, agreed by all ranks

def _error(e: BaseException, stage: str) -> dict:
    from kernelmark.harness.runner import _error_text, _is_oom
    oom = _is_oom(e)
    return {"status": "oom" if oom else "error",
            "reason": f"{'out of memory' if oom else 'failed'} while {stage}: {_error_text(e)}"}


def _verdict(op, b, case, target):
    from kernelmark.ops.collectives import is_collective
    if not is_collective(op):
        return ("skipped", "not a collective: under torchrun kernelmark measures collectives only; "
                "per-GPU kernels: kernelmark run --all-gpus")
    why = b.available()
    if why:
        return "skipped", why
    if b.devices is not None and target.kind not in b.devices:
        return "unsupported", f"{b.name} does not run on {target.kind}"
    if b.dtypes is not None and case.dtype not in b.dtypes:
        return "unsupported", f"{b.name} does not implement {case.dtype}"
    if b.supports is not None:
        why = b.supports(case.shape, case.dtype, target.kind, target.capability)
        if why:
            return "unsupported", why
    return None


def _agreed(comm: Comm, outcome):
    """Share this rank's outcome (None = fine). Returns None if every rank is fine, else the
    first problem, named by its rank unless every rank had that same problem."""
    outcomes = comm.gather(outcome)
    hit = next(((r, o) for r, o in enumerate(outcomes) if o is not None), None)
    if hit is None:
        return None
    rank, o = hit
    if all(x == o for x in outcomes):
        return o
    others = sum(x is not None for x in outcomes) - 1
    return {**o, "reason": f"rank {rank}" + (f" (and {others} other ranks)" if others else "") + f": {o['reason']}"}


def measure(op, b, case, seed: int, comm: Comm, cfg: timing.TimingConfig, link: dict) -> dict:
    """Check and time one backend of one collective on every rank; the record (same on all ranks)."""
    from kernelmark.ops.collectives import bus_factor
    dev = comm.device
    inputs = ref = out = None
    problem = None
    try:
        inputs = op.make_inputs(case.shape, case.dtype, dev, torch.Generator(dev).manual_seed(seed))
        ref = op.reference(inputs)
        inputs = b.setup(inputs)
        comm.sync()
    except Exception as e:   # noqa: BLE001 -- recorded, and agreed with the other ranks
        problem = _error(e, "making inputs or the reference")
    problem = _agreed(comm, problem)
    if problem:
        return problem
    comm.barrier()
    try:
        out = b.run(inputs)
        comm.sync()
        check = op.compare(out, ref, case.dtype)
        problem = None if check.passed else {"status": "failed_check", "reason": check.detail,
                                              "check": check.as_dict()}
    except Exception as e:   # noqa: BLE001
        problem = _error(e, "running")
    del out, ref
    problem = _agreed(comm, problem)
    if problem:
        return problem
    t, mine = time_lockstep(lambda: b.run(inputs), comm, cfg)
    medians = comm.gather(round(stats.quantile(sorted(mine), 0.5), 4))
    n = comm.world
    med = t.summary.median_us
    algbw = op.nbytes(case.shape, case.dtype) / (med * 1e-6) / 1e9
    busbw = algbw * bus_factor(op.name, n)
    pct = 100 * busbw / link["gbps"] if link.get("gbps") else None
    return {"status": "ok", "check": check.as_dict(), "timing": t.as_dict(), "noisy": t.noisy,
            "tflops": None, "gbps": algbw, "algbw_gbps": algbw, "busbw_gbps": busbw,
            "bus_factor": bus_factor(op.name, n), "pct_of_peak": None, "pct_of_datasheet": pct,
            "pct_of_link_peak": pct if pct is not None else "unknown", "bound": "link",
            "ranks": n, "rank_median_us": medians, "slowest_rank": max(range(n), key=lambda i: medians[i])}


# ---------------------------------------------------------------- the run

def resolve_target(spec, local_rank: int):
    """cuda:LOCAL_RANK (or the one GPU a rank sees), or the CPU."""
    from kernelmark.harness import device as dev
    from kernelmark.errors import UsageError
    s = (spec or ("cuda" if torch.cuda.is_available() else "cpu")).strip().lower()
    try:
        if s == "cpu":
            return dev.resolve("cpu")
        if s not in ("cuda", "rocm"):
            raise UsageError(f"--device {spec}: under torchrun each rank takes cuda:LOCAL_RANK; "
                             "give --device cuda (the default where there is a GPU) or --device cpu")
        dev.resolve("cuda")             # raises if there is no GPU
        n = torch.cuda.device_count()
        if local_rank >= n and n != 1:
            raise UsageError(f"LOCAL_RANK {local_rank} but this node shows {n} GPUs: "
                             f"use --nproc-per-node {n} or fewer")
        return dev.resolve(f"cuda:{local_rank if local_rank < n else 0}")
    except dev.DeviceError as e:
        raise UsageError(str(e)) from None


def run(args, after_run=()) -> int:
    """`kernelmark run` on every rank of a torchrun launch. Exit status as cmd_run's.
    ``after_run``: callables (args, run_path) that rank 0 calls once the run file is complete."""
    from kernelmark.errors import UsageError
    if args.resume:
        raise UsageError("--resume is not supported under torchrun: run the suite again "
                         "(filter with --ops/--dtypes to repeat only part of it)")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    target = resolve_target(args.device, local)
    if target.is_gpu:
        torch.cuda.set_device(target.torch_device)
    backend = "gloo" if target.kind == "cpu" else "nccl"    # torch's "nccl" is RCCL on ROCm
    dist.init_process_group(backend, timeout=timedelta(seconds=args.timeout))
    try:
        return _run(args, Comm(target), backend, local, after_run)
    finally:
        dist.destroy_process_group()


def _setup(args, comm: Comm) -> tuple:
    """Suite, cases and (rank 0) the run file, agreed by every rank before any case runs."""
    from kernelmark import results
    from kernelmark.errors import UsageError
    from kernelmark.harness import options
    from kernelmark.suites import loader
    problem = plan = None
    suite = cases = writer = out = None
    try:
        try:
            suite = loader.load(args.suite)
        except loader.SuiteError as e:
            raise UsageError(str(e)) from None
        cases = options.select(suite, args, comm.target.kind)
        options.check_sampling(args)
        plan = hashlib.sha256(json.dumps([suite.sha256] + [[c.index, c.op, c.shape, c.dtype, c.backends]
                                                           for c in cases]).encode()).hexdigest()
        if comm.rank == 0:
            out = args.out or str(os.path.join("kernelmark-runs", f"{time.strftime('%Y%m%d-%H%M%S')}_"
                                               f"{results.slug(suite.name)}_x{comm.world}.jsonl"))
            try:
                writer = results.RunWriter(out)
            except results.RunFileError as e:
                raise UsageError(str(e)) from None
    except UsageError as e:
        problem = str(e)
    shared = comm.gather((problem, plan))
    bad = next(((r, p) for r, (p, _) in enumerate(shared) if p is not None), None)
    if bad is None and len({p for _, p in shared}) > 1:
        bad = (0, "the ranks disagree on what to run (suite file or filters differ between nodes: "
                  "use the same kernelmark checkout and arguments everywhere)")
    if bad is not None:
        if writer is not None:
            writer.close()
            if os.path.getsize(out) == 0:
                os.remove(out)
        rank, msg = bad
        raise UsageError(msg if all(p == msg for p, _ in shared) else f"rank {rank}: {msg}")
    return suite, cases, writer, out


def _run(args, comm: Comm, backend: str, local: int, after_run=()) -> int:
    import socket

    from kernelmark.harness import peaks, runner
    from kernelmark.harness import device as dev
    from kernelmark.reports.collectives import busbw_table
    from kernelmark.reports import table, wide
    from kernelmark.ops import collectives
    from kernelmark.ops.registry import get_op

    rank0 = comm.rank == 0
    log = (lambda msg: None) if (args.quiet or not rank0) else (lambda msg: print(msg, file=sys.stderr, flush=True))
    suite, cases, writer, out = _setup(args, comm)
    prof = dev.profile(comm.target)
    ranks = comm.gather({"rank": comm.rank, "local_rank": local, "host": socket.gethostname(), "device": prof})
    link = collectives.link_peak([r["device"]["name"] for r in ranks], [r["host"] for r in ranks], comm.target.kind)
    base_seed = comm.broadcast(secrets.randbits(31))
    cfg = runner.RunConfig(timing=timing.TimingConfig(target_ci_rel=args.target_ci),
                           budget_override=args.budget, seed=args.seed)
    header = records = None
    if rank0:
        log(f"kernelmark: {len(cases)} cases of suite {suite.name} on {comm.world} ranks "
            f"({len({r['host'] for r in ranks})} hosts, {backend}); run file {out}")
        pk = peaks.get(comm.target, prof, remeasure=args.remeasure)
        header = runner.header(args.command, suite, prof, pk, cfg)
        try:
            nccl = torch.cuda.nccl.version() if backend == "nccl" else None
        except Exception:   # noqa: BLE001 -- a build without the query: the version is only recorded
            nccl = None
        header["isolation"] = "none (torchrun: every rank runs the cases in its own process, in lockstep)"
        header["distributed"] = {
            "launcher": "torchrun", "world_size": comm.world, "backend": backend,
            "nccl_version": ".".join(map(str, nccl)) if isinstance(nccl, tuple) else nccl,
            "hosts": sorted({r["host"] for r in ranks}), "local_world_size": os.environ.get("LOCAL_WORLD_SIZE"),
            "link": link, "time_per_sample": "max over ranks (see kernelmark/multi/distributed.py)"}
        header["ranks"] = ranks
        writer.header(header)
        records = []
    t0 = time.time()
    try:
        for i, case in enumerate(cases, 1):
            op = get_op(case.op)
            seed = args.seed if args.seed is not None else (base_seed + 7919 * case.index + i) % (1 << 31)
            base = {"op": op.name, "label": case.label, "shape": case.shape, "dtype": case.dtype,
                    "case_index": case.index, "suite_line": case.line, "flops": op.flops(case.shape),
                    "bytes": op.nbytes(case.shape, case.dtype), "seed": seed}
            base["intensity"] = base["flops"] / base["bytes"] if base["bytes"] else None
            budget = cfg.budget_override or case.budget_s or cfg.timing.budget_s
            tcfg = timing.TimingConfig(**{**cfg.timing.__dict__, "budget_s": budget})
            for name in case.backends:
                b = op.backend(name)
                try:
                    v = _verdict(op, b, case, comm.target)
                except Exception as e:  # noqa: BLE001 -- a supports() that raises: recorded, agreed
                    v = ("error", _error(e, "deciding whether it runs here")["reason"])
                v = _agreed(comm, {"status": v[0], "reason": v[1]} if v else None)
                rec = {**base, "backend": name, **(v or measure(op, b, case, seed, comm, tcfg, link))}
                comm.barrier()
                if comm.target.is_gpu:
                    torch.cuda.empty_cache()
                if rank0:
                    writer.record(rec)
                    records.append(rec)
                    extra = (f"{rec['timing']['median_us']:.2f} us, busbw {rec['busbw_gbps']:.2f} GB/s"
                             if rec["status"] == "ok" else f"{rec['status']}: {rec.get('reason', '')}")
                    log(f"[{i}/{len(cases)}] {op.name} {table.shape_text(case.shape)} {case.dtype} {name}: {extra}")
        if rank0:
            writer.footer({"finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "wall_s": round(time.time() - t0, 2)})
    finally:
        if writer is not None:
            writer.close()
    if not rank0:
        return 0
    print(wide.render(header, records, args.format, long=getattr(args, "long", False)))
    if args.format in ("table", "md"):
        print("\n" + busbw_table(header, records, args.format))
    log(f"kernelmark: run file {out}")
    for hook in after_run:
        hook(args, out)
    return 0
