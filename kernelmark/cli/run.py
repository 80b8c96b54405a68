"""`kernelmark run`, `list` and `env`: run a suite on this machine, say what it can run,
show the device profile. Registered by kernelmark.cli, which hands each command the
full parser (``args.parser``) and the command modules that extend `run`
(``args.extensions``); --resume is in kernelmark/cli/resume.py."""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

from kernelmark.errors import UsageError
from kernelmark.harness import options
from kernelmark.results import slug, strict_json

# The `run` parser (set by register): --resume reads a run header's command with it.
RUN_PARSER = None
# The clock --deadline is read against; a test replaces it to run past a deadline without waiting.
_clock = time.monotonic
DEADLINE_REASON = "deadline reached: not started"


def register(sub):
    """Add run, list and env to the subparsers; returns the run parser (others extend it)."""
    r = sub.add_parser("run", help="run a suite on this machine and print its table")
    r.add_argument("--suite", default="default", help="built-in suite name or path to a .toml (default: default)")
    r.add_argument("--ops", help="comma-separated ops to keep")
    r.add_argument("--backends", help="comma-separated backends to keep")
    r.add_argument("--dtypes", help="comma-separated dtypes to keep")
    r.add_argument("--device", help="cpu, cuda or cuda:N (default: the GPU if there is one, else cpu)")
    r.add_argument("--out", help="run file to write (default: kernelmark-runs/<time>_<device>_<suite>.jsonl)")
    r.add_argument("--format", choices=("table", "md", "csv", "json"), default="table")
    r.add_argument("--long", action="store_true",
                   help="table and md: one row per (case, backend) with every column, instead of one row per "
                        "case with a column group per backend (csv and json are always that long form)")
    r.add_argument("--budget", type=float, help="seconds of sampling per (case, backend), overriding the suite")
    r.add_argument("--target-ci", type=float, default=0.01,
                   help="stop sampling when the median's 95%% CI half-width is within this fraction (default 0.01)")
    r.add_argument("--seed", type=int, help="fixed input seed (default: fresh random inputs per case)")
    r.add_argument("--remeasure", action="store_true", help="measure the device's peaks again")
    r.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    r.add_argument("--progress-lines", action="store_true",
                   help="one progress line per (case, backend) on stderr even when it is not a terminal "
                        "(for logs of unattended runs such as scripts/gpu-session.sh)")
    r.add_argument("--isolation", choices=("process", "case", "none"), default="process",
                   help="process: cases run in a worker process, restarted if it dies (default); "
                        "case: a fresh worker per case; none: in this process")
    r.add_argument("--timeout", type=float, default=900.0,
                   help="seconds one backend of one case may take (compile, check and timing) before "
                        "its worker is killed and the case recorded as timeout (default 900)")
    r.add_argument("--deadline", type=float, metavar="SECONDS",
                   help="seconds from the start of this command after which no new case is started; "
                        "the backends of the cases not started are recorded as skipped ('deadline reached') "
                        "and the run ends normally (exit 0). A case already running is finished")
    r.add_argument("--threads", type=int,
                   help="torch CPU threads (default on a CPU: torch's own choice, capped at one fewer than the "
                        "CPUs this process can get); recorded with the reason in the device profile")
    r.add_argument("--energy", action="store_true",
                   help="after each timed (case, backend), an energy window read from the device's own energy "
                        "counter: J per call gross and net of idle (see docs/energy.md)")
    r.add_argument("--energy-window", type=float, metavar="S",
                   help=f"with --energy: seconds of each energy window and of the idle window "
                        f"(default {options.DEFAULT_ENERGY_WINDOW_S:g}; the NVML counter's 100 ms update is "
                        "5%% of 2 s)")
    r.add_argument("--compile-check", metavar="FILE",
                   help="a run file of `kernelmark compile --out`: autotuning leaves out the configs it found failing "
                        "or over a limit on this GPU's target for the same case (each record names them)")
    r.add_argument("--resume", metavar="RUN", help="continue an interrupted run file where it stopped")
    r.add_argument("--force", action="store_true", help="with --resume: continue even if the environment changed")

    l_ = sub.add_parser("list", help="suites, ops, backends, and what this device can run")
    l_.add_argument("--device")

    e = sub.add_parser("env", help="the device profile and its peaks")
    e.add_argument("--device")
    e.add_argument("--remeasure", action="store_true", help="measure the peaks again")
    e.add_argument("--json", action="store_true")
    r.set_defaults(func=cmd_run)
    l_.set_defaults(func=cmd_list)
    e.set_defaults(func=cmd_env)
    global RUN_PARSER
    RUN_PARSER = r
    return r


def _target(spec):
    from kernelmark.harness import device as dev
    try:
        return dev.resolve(spec)
    except dev.DeviceError as e:
        raise UsageError(str(e)) from None


def apply_threads(requested, target):
    """Set torch's thread count for this run; returns the choice and its reason (for the
    profile), or None on a GPU run left at torch's default."""
    from kernelmark.harness import cpu
    if requested is not None and requested < 1:
        raise UsageError(f"--threads {requested}: must be a positive integer")
    if requested is None and target.kind != "cpu":
        return None
    choice = cpu.choose_threads(requested, cpu.cpus_available())
    import torch
    torch.set_num_threads(choice["chosen"])
    return choice


def _differences(run, suite, prof) -> list:
    old, diffs = run.header["device"], []
    if run.header["suite"].get("sha256") != suite.sha256:
        diffs.append(f"suite {suite.path} changed since the run started (content hash differs)")
    for key in ("name", "kind", "torch_device", "driver"):
        if old.get(key) != prof.get(key):
            diffs.append(f"device {key}: {old.get(key)!r} then, {prof.get(key)!r} now")
    for key in ("kernelmark", "torch", "triton", "cuda_runtime", "hip_runtime"):
        a, b = (old.get("versions") or {}).get(key), prof["versions"].get(key)
        if a != b:
            diffs.append(f"{key} version: {a} then, {b} now")
    a, b = (old.get("git") or {}).get("commit"), prof["git"].get("commit")
    if a != b:
        diffs.append(f"kernelmark commit: {a} then, {b} now")
    return diffs


def _plan(args, prior):
    """(suite, target, cases, profile, keys already done) before any work; a resumed run's
    options came from its header, so a bad one is named as the header's."""
    from kernelmark import results
    from kernelmark.harness import device as dev
    from kernelmark.suites import loader
    try:
        try:
            suite = loader.load(args.suite)
        except loader.SuiteError as e:
            raise UsageError(str(e)) from None
        target = _target(args.device)
        cases = options.select(suite, args, target.kind)
        options.check_sampling(args)
        options.energy_window(args)
        if args.threads is not None and args.threads < 1:
            raise UsageError("--threads must be a positive integer")
        if getattr(args, "deadline", None) is not None and not (math.isfinite(args.deadline) and args.deadline > 0):
            raise UsageError(f"--deadline must be a positive, finite number of seconds (got {args.deadline})")
    except UsageError as e:
        if prior is None:
            raise
        raise UsageError(f"--resume {prior.path}: the options in its header: {e}") from None
    prof = dev.profile(target, apply_threads(args.threads, target))
    done: set = set()
    if prior is not None:
        diffs = _differences(prior, suite, prof)
        if diffs and not args.force:
            raise UsageError("--resume: the run cannot be continued as it was started:\n  " + "\n  ".join(diffs)
                             + "\n(--force continues anyway; the records will then mix environments)")
        done = {results.record_key(r) for r in prior.records}
    return suite, target, cases, prof, done


def _open_writer(out: str, prior):
    """The run file, claimed (created exclusively, or locked to be continued) before any work."""
    import warnings

    from kernelmark import results
    try:
        writer = results.RunWriter(out, append=prior is not None, count=len(prior.records) if prior else 0)
    except results.RunFileError as e:
        raise UsageError(str(e)) from None
    if prior is not None:
        # Read it again under the lock: a run that wrote to it since it was read is not continued.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                now = results.load(out)
            except results.RunFileError as e:
                now, why = None, str(e)
        if now is None or now.complete or len(now.records) != len(prior.records):
            writer.close()
            raise UsageError(f"--resume: {out} changed while it was being read "
                             f"({why if now is None else 'another run wrote to it'}); try again")
    return writer


def cmd_run(args) -> int:
    from kernelmark import results
    from kernelmark.cli import resume

    for mod in args.extensions:
        if hasattr(mod, "intercept_run"):
            status = mod.intercept_run(args)
            if status is not None:
                return status
    started = _clock()        # --deadline counts from here: planning and peaks are part of the window
    prior = None
    if args.resume:
        args, prior = resume.resume_args(args, RUN_PARSER)
    args.left_out = _compile_check(args.compile_check)      # a bad file fails before any work
    suite, target, cases, prof, done = _plan(args, prior)
    out = args.out or str(Path("kernelmark-runs") /
                          f"{time.strftime('%Y%m%d-%H%M%S')}_{slug(prof['name'])}_{slug(suite.name)}.jsonl")
    writer = _open_writer(out, prior)      # before any work: an unwritable path costs nothing
    try:
        stop_at = started + args.deadline if getattr(args, "deadline", None) is not None else None
        return _run(args, prior, suite, target, cases, prof, done, out, writer, stop_at)
    except results.RunFileError as e:      # a write that failed (a full disk): what was written is kept
        kept = writer.count - (len(prior.records) if prior is not None else 0)
        raise UsageError(f"{e}" + (f" ({kept} records of this run were written before it)" if kept else "")) from None
    finally:
        writer.close()


def _compile_check(path):
    """(entries, about): the configs a compile run file says tuning must leave out, and what
    the run header records of that file; ((), None) without --compile-check."""
    if not path:
        return (), None
    from kernelmark.reports import compile_table as ct
    try:
        header, records = ct.load(path)
    except ct.CompileFileError as e:
        raise UsageError(f"--compile-check: {e}") from None
    entries = ct.tuning_exclusions(records, Path(path).name)
    return tuple(entries), {"path": path, "triton": header.get("triton"), "left_out": len(entries)}


def _not_started(case, backends) -> list:
    """The records of a case's backends that the deadline kept from starting: present in the run
    file (so a report shows them, and a comparison sees them as not measured), never timed."""
    return [{"op": case.op, "label": case.label, "shape": case.shape, "dtype": case.dtype, "backend": b,
             "status": "skipped", "reason": DEADLINE_REASON, "case_index": case.index, "suite_line": case.line}
            for b in backends]


def _run(args, prior, suite, target, cases, prof, done, out, writer, stop_at=None) -> int:
    from kernelmark import results
    energy_window_s = options.energy_window(args)
    from kernelmark.harness import peaks, runner, timing
    from kernelmark.reports import table, wide

    log = (lambda *a: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    log(f"kernelmark: {len(cases)} cases of suite {suite.name} on {prof['name']} ({target.kind}); run file {out}"
        + (f" (resuming: {len(done)} records already there)" if prior is not None else ""))
    if prior is not None:
        pk, header = prior.header["peaks"], prior.header
    else:
        pk = peaks.get(target, prof, remeasure=args.remeasure, log=log)
    cfg = runner.RunConfig(timing=timing.TimingConfig(target_ci_rel=args.target_ci),
                           budget_override=args.budget, seed=args.seed, energy_window_s=energy_window_s,
                           left_out=args.left_out[0])
    if prior is None:
        header = runner.header(args.command, suite, prof, pk, cfg)
        header["isolation"] = args.isolation
        if args.left_out[1] is not None:
            header["compile_check"] = args.left_out[1]
        writer.header(header)
    records = list(prior.records) if prior is not None else []

    total = sum(len(c.backends) for c in cases) - len(done)
    bar = None
    if not args.quiet and sys.stderr.isatty():   # a progress bar in a terminal; quiet in logs and pipes
        from tqdm import tqdm
        bar = tqdm(total=total, unit="row", file=sys.stderr, dynamic_ncols=True, leave=False)

    def progress(i, n, rec):
        if bar is None and getattr(args, "progress_lines", False) and not args.quiet:
            extra = f"{rec['timing']['median_us']:.2f} us" if rec["status"] == "ok" else rec["status"]
            print(f"[{i}/{n}] {rec['op']} {rec.get('label') or ''} {rec['dtype']} {rec['backend']}: {extra}",
                  file=sys.stderr, flush=True)
        if bar is not None:
            extra = f"{rec['timing']['median_us']:.2f} us" if rec["status"] == "ok" else rec["status"]
            bar.set_postfix_str(f"case {i}/{n} {rec['op']} {rec['dtype']} {rec['backend']}: {extra}"[:70])
            bar.update(1)

    t0 = time.time()
    interrupted = False
    not_run = 0
    sup = None
    try:
        if args.isolation == "none":
            source = runner.Runner(target, prof, pk, cfg, emit=lambda r: None)
            run_case = source.run_case
        else:
            from kernelmark.harness import isolation
            sup = isolation.Supervisor(runner.worker_init(target, prof, pk, cfg), timeout_s=args.timeout,
                                       per_case=args.isolation == "case")
            run_case = sup.run_case
        for i, case in enumerate(cases, 1):
            left = tuple(b for b in case.backends if results.record_key(
                {"case_index": case.index, "op": case.op, "shape": case.shape, "dtype": case.dtype,
                 "backend": b}) not in done)
            if not left:
                continue
            if stop_at is not None and _clock() >= stop_at:
                if not_run == 0:
                    log(f"kernelmark: deadline reached before case {i}/{len(cases)}; "
                        f"the rest are recorded as skipped")
                for rec in _not_started(case, left):
                    writer.record(rec)
                    records.append(rec)
                    progress(i, len(cases), rec)
                    not_run += 1
                continue
            for rec in run_case(type(case)(**{**case.__dict__, "backends": left})):
                writer.record(rec)
                records.append(rec)
                progress(i, len(cases), rec)
        footer = {"finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "wall_s": round(time.time() - t0, 2)}
        if stop_at is not None:
            footer["deadline_s"] = args.deadline
            footer["not_run"] = not_run
        if sup is not None:
            footer["worker_starts"] = sup.starts
            footer["worker_startup_s"] = [round(x, 2) for x in sup.startup_s]
        writer.footer(footer)
    except KeyboardInterrupt:
        interrupted = True
    except Exception as e:
        from kernelmark.harness.isolation import WorkerStartError
        if isinstance(e, WorkerStartError):
            raise UsageError(str(e)) from None
        raise
    finally:
        if bar is not None:
            bar.close()
        if sup is not None:
            sup.close()
    print(wide.render(header, records, args.format, long=args.long))
    if interrupted:
        print(f"kernelmark: interrupted; {len(records)} records kept in {out}. "
              f"Continue with: kernelmark run --resume {out}", file=sys.stderr)
        return 130
    if energy_window_s is not None:
        log(energy_summary(records))
    if not_run:
        log(f"kernelmark: {not_run} (case, backend) pairs not started: the deadline of {args.deadline:g} s was reached")
    log(f"kernelmark: run file {out}")
    for mod in args.extensions:
        if hasattr(mod, "after_run"):
            mod.after_run(args, out)
    return 0


def energy_summary(records: list) -> str:
    """One line for stderr: how many timed rows have energy, and why the others do not."""
    timed = [r for r in records if r.get("status") == "ok"]
    ok = sum((r.get("energy") or {}).get("status") == "ok" for r in timed)
    whys = sorted({(r.get("energy") or {}).get("reason") or "not measured" for r in timed
                   if (r.get("energy") or {}).get("status") != "ok"})
    if timed and not ok:
        return "kernelmark: energy: unavailable (" + "; ".join(whys) + "); nothing was estimated"
    return f"kernelmark: energy measured for {ok} of {len(timed)} timed rows" + \
        (" (others: " + "; ".join(whys) + ")" if whys else "")


def cmd_list(args) -> int:
    from tabulate import tabulate

    from kernelmark.harness.runner import prepare_triton
    from kernelmark.suites import loader
    from kernelmark.ops.registry import all_ops

    target = _target(args.device)
    triton_problem = prepare_triton(target)
    print("suites:")
    for name, path in loader.builtin_suites().items():
        try:
            s = loader.load(str(path))
            here = sum(c.runs_on(target.kind) for c in s.cases)
            print(f"  {name:<12} {len(s.cases):>4} cases ({here} for {target.kind})  {s.description}")
        except loader.SuiteError as e:
            print(f"  {name:<12} BROKEN: {e}")
    rows = []
    for op in all_ops().values():
        for b in op.backends:
            why = b.available()
            if not why and b.devices is not None and target.kind not in b.devices:
                why = f"not on {target.kind}"
            if not why and b.triton and triton_problem:
                why = triton_problem
            if not why and b.triton and target.kind == "cpu":
                why = "interpreter: checked at small sizes, not timed"
            rows.append([op.name, b.name, ",".join(b.dtypes or op.dtypes), "yes" if not why else why])
    print(f"\nops and backends on this device ({target.kind}):")
    print(tabulate(rows, headers=["op", "backend", "dtypes", "runs here"]))
    return 0


def cmd_env(args) -> int:
    from kernelmark.harness import device as dev
    from kernelmark.harness import peaks

    target = _target(args.device)
    prof = dev.profile(target, apply_threads(None, target))    # as `run` would: the same cached peaks
    pk = peaks.get(target, prof, remeasure=args.remeasure)
    if args.json:
        print(strict_json({"device": prof, "peaks": pk}, indent=1))
        return 0
    v = prof["versions"]
    print(f"device       {prof['name']} ({prof['kind']}, {prof.get('arch')})")
    if target.is_gpu:
        print(f"SMs/CUs      {prof['multiprocessors']}   memory {prof['memory_bytes'] / 2**30:.1f} GiB   "
              f"L2 {prof['l2_bytes'] / 2**20:.1f} MiB   driver {prof.get('driver')}")
        h = prof.get("health") or {}
        if h:
            print("state        " + ", ".join(f"{k} {val}" for k, val in h.items()))
        else:
            print("state        not available (install the nvml extra: pip install nvidia-ml-py)")
    cpu = prof["cpu"]
    print(f"cpu          {cpu['model']} | {cpu['logical_cpus']} logical CPUs | torch threads {cpu['torch_threads']}"
          + (f" ({cpu['threads']['reason']})" if cpu.get("threads") else ""))
    if cpu.get("isa") is not None:
        print(f"cpu isa      {', '.join(cpu['isa']) or 'none of the matmul extensions'}"
              f" | torch kernels {cpu.get('torch_capability')}")
    print("versions     " + ", ".join(f"{k} {val}" for k, val in v.items() if val is not None))
    g = prof["git"]
    print(f"commit       {g.get('commit') or 'not a git checkout'}" + (" (dirty)" if g.get("dirty") else ""))
    print(f"peaks        ({pk.get('source')}, measured {pk.get('measured_at')})")
    print(f"  copy       {pk['copy_gbps']:.1f} GB/s")
    for k in ("h2d_gbps", "d2h_gbps"):
        if k in pk:
            print(f"  {k[:3]}        {pk[k]:.1f} GB/s")
    ds = prof.get("datasheet") or {}
    for dt, tf in sorted(pk["tflops"].items()):
        sheet = (ds.get("tflops") or {}).get(dt)
        via = (pk.get("roof") or {}).get(dt)
        print(f"  matmul {dt:<8} {tf:8.3g} TFLOP/s" + (f"   (datasheet {sheet:g})" if sheet else "")
              + (f"   (roof: the {via} rate, faster here)" if via else ""))
    for name, why in (pk.get("stalled") or {}).items():
        print(f"  WARNING: {name} was measured while the machine was busy ({why}): too low; "
              "--remeasure on a quiet machine")
    if ds:
        print(f"datasheet    {ds['name']}: {ds['copy_gbps']:g} GB/s (see kernelmark/harness/datasheet.py for sources)")
    elif target.is_gpu:
        print("datasheet    this device is not in kernelmark's datasheet table")
    return 0
