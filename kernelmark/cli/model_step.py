"""`kernelmark model NAME|--config F`: every kernel of a model's decode step and prefill chunk
(kernelmark.suites.step), rolled up from run files, emitted as a suite, or measured here.

    kernelmark model llama-3.2-1b --run RUN...           roll up runs; what is missing is named
    kernelmark model llama-3.2-1b --emit-suite F.toml    a suite measuring exactly the missing cases
    kernelmark model llama-3.2-1b --measure              write that suite, run it (the `run` command), roll up

Called from cli/reports.cmd_model for every model but the legacy llama3-8b / llama3-70b roll-up.
"""

from __future__ import annotations

import math
import os
import sys
import tempfile

from kernelmark.errors import UsageError


def _config(args):
    from kernelmark.suites import model_config
    try:
        return model_config.load(args.config or args.name)
    except model_config.ConfigError as e:
        raise UsageError(str(e)) from None


def _options(args, cfg) -> tuple:
    from kernelmark.suites import step
    try:
        batches = [int(x) for x in args.batch.split(",") if x.strip()]
    except ValueError:
        raise UsageError(f"--batch must be integers, e.g. 1,8,32 (got {args.batch!r})") from None
    if not batches:
        raise UsageError("--batch must name at least one batch size, e.g. 1,8,32")
    dtype = args.dtype or "bf16"
    for name, price in (("--price-per-hour", args.price_per_hour), ("--price-per-kwh", args.price_per_kwh)):
        if price is not None and not (math.isfinite(price) and price > 0):
            raise UsageError(f"{name} must be a positive, finite number of dollars (got {price:g})")
    if args.prefill_tokens <= 0:
        raise UsageError(f"--prefill-tokens must be a positive integer (got {args.prefill_tokens})")
    try:
        for b in batches:
            step.check(cfg, b, args.context, dtype, args.tp)
    except ValueError as e:
        raise UsageError(str(e)) from None
    # a prefill chunk is whole sequences: at least one of the context
    prefill = max(args.context, args.prefill_tokens // args.context * args.context)
    if prefill != args.prefill_tokens:
        print(f"kernelmark: note: --prefill-tokens {args.prefill_tokens} taken as {prefill}: a prefill chunk is "
              f"whole sequences of the --context, {args.context} tokens each", file=sys.stderr)
    return batches, dtype, prefill


def plans(cfg, batches, context, dtype, tp, prefill_tokens) -> list:
    """[(kind, size, [Component...])]: decode at each batch, then one prefill chunk."""
    from kernelmark.suites import step
    out = [("decode", b, step.components(cfg, b, context, dtype, tp, "decode")) for b in batches]
    out.append(("prefill", prefill_tokens,
                step.components(cfg, 1, context, dtype, tp, "prefill", prefill_tokens=prefill_tokens)))
    return out


def needs(comps: list) -> list:
    from kernelmark.reports import rollup
    return [rollup.Need(c.name, c.op, c.fixed, {k: v for k, v in c.shape.items() if k not in c.fixed},
                        c.count, c.per, c.required, dtype=c.dtype, family=c.family) for c in comps]


def missing_cases(runs: list, phases: list, single_device: bool) -> list:
    """(op, dtype, shape) of every component no run has timed (communication left out when
    measuring on one device: it needs several)."""
    from kernelmark.reports import modelstep
    from kernelmark.suites import step
    comps = [c for _, _, cs in phases for c in cs if c.op and not (single_device and c.family == "communication")]
    if not runs:
        return step.distinct_cases(comps)
    built = modelstep.build(runs, [(k, s, needs(cs)) for k, s, cs in phases], "bf16")
    missing = {(f.need.op, f.need.dtype, tuple(sorted(f.need.fixed.items())))
               for _, ests in built for e in ests for f in e.found if f.rec is None}
    return step.distinct_cases([c for c in comps if (c.op, c.dtype, tuple(sorted(c.fixed.items()))) in missing])


def choose_dtype(runs: list, cfg, batches, context, tp, prefill) -> str:
    """Without --dtype: the step dtype in which the runs have the most of the step's cases
    timed (ties: bf16, fp16, fp32, fp8), as --help promises; bf16 with no runs."""
    from kernelmark.reports import modelstep
    from kernelmark.suites import step
    if not runs:
        return "bf16"
    best, score = "bf16", -1
    for dt in step.DTYPES:
        phases = plans(cfg, batches, context, dt, tp, prefill)
        built = modelstep.build(runs, [(k, s, needs(cs)) for k, s, cs in phases], dt)
        n = sum(f.rec is not None for _, ests in built for e in ests for f in e.found)
        if n > score:
            best, score = dt, n
    return best


def check_writable(option: str, path) -> None:
    """An output path that cannot be written is a usage error before any work (not a
    traceback, nor a result lost after minutes of measuring). Tried by opening it, since
    permission bits say little to root; a file this makes is removed again."""
    if not path:
        return
    if os.path.isdir(path):
        raise UsageError(f"{option} {path}: is a directory")
    existed = os.path.exists(path)
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "a"):
            pass
    except OSError as e:
        raise UsageError(f"{option} {path}: cannot write it: {e.strerror or e}") from None
    if not existed and os.path.isfile(path):
        os.unlink(path)


def _write(option: str, path: str, text: str) -> None:
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
    except OSError as e:
        raise UsageError(f"{option} {path}: cannot write it: {e.strerror or e}") from None


def cmd_model_step(args, load_runs, _emit) -> int:
    """``load_runs`` and ``_emit`` are cli.reports' (passed in: that module calls this one)."""
    from kernelmark.reports import modelstep
    from kernelmark.suites import step
    cfg = _config(args)
    batches, dtype, prefill = _options(args, cfg)
    try:
        phases = plans(cfg, batches, args.context, dtype, args.tp, prefill)
    except ValueError as e:
        raise UsageError(str(e)) from None
    for option, path in (("--emit-suite", args.emit_suite), ("--out", args.out)):
        check_writable(option, path)
    runs = load_runs(args.run)[0] if args.run else []
    if args.dtype is None and runs:
        dtype = choose_dtype(runs, cfg, batches, args.context, args.tp, prefill)
        phases = plans(cfg, batches, args.context, dtype, args.tp, prefill)
        print(f"kernelmark: no --dtype given: using {dtype}, the dtype the runs have most of the step's cases in",
              file=sys.stderr)
    if args.check_step:
        from kernelmark.cli import step_check
        step_check.validate(args, cfg, batches, dtype, args.device)
    measured = None
    if args.emit_suite or args.measure:
        cases = missing_cases(runs, phases, single_device=args.measure)
        text = step.suite_toml(f"model-{cfg.name}", f"every kernel of {cfg.name}'s decode step (batch "
                               f"{','.join(map(str, batches))}) and prefill chunk ({prefill} tokens), context "
                               f"{args.context}, {dtype}, tp {args.tp}", cases)
        if args.emit_suite:
            _write("--emit-suite", args.emit_suite, text)
            print(f"kernelmark: wrote {args.emit_suite} ({len(cases)} case(s))", file=sys.stderr)
        if args.measure and cases:
            from kernelmark.cli import main
            from kernelmark import results
            tmp = tempfile.mkdtemp(prefix="kernelmark-model-")
            suite, out = os.path.join(tmp, "suite.toml"), args.measure_out or os.path.join(tmp, "run.jsonl")
            with open(suite, "w") as f:
                f.write(text)
            # the run's progress (a bar in a terminal) on stderr, as `run` shows it; its table is not
            # the answer and is left out (it is a CSV wall of every backend): `report` prints it
            argv = ["run", "--suite", suite, "--out", out, "--format", "csv"]
            if args.device:
                argv += ["--device", args.device]
            if args.budget is not None:
                argv += ["--budget", str(args.budget)]
            if args.energy:
                argv += ["--energy"]
            import contextlib
            import io
            with contextlib.redirect_stdout(io.StringIO()):
                rc = main(argv)
            if rc not in (0, 1):
                return rc
            runs.append(results.load(out))
            measured = out
            print(f"kernelmark: measured {len(cases)} case(s) into {out} (every backend's row: "
                  f"kernelmark report {out})", file=sys.stderr)
    if not runs:
        if args.emit_suite:
            return 0
        raise UsageError("give --run RUN, --measure or --emit-suite FILE")
    built = modelstep.build(runs, [(k, s, needs(cs)) for k, s, cs in phases], dtype, args.price_per_hour,
                            args.price_per_kwh, gpus=args.tp)
    checks = None
    if args.check_step:
        from kernelmark.cli import step_check
        checks = step_check.run(args, cfg, batches, dtype, phases, built, measured)
    if args.format == "html":
        from kernelmark.reports import modelstep_html
        text = modelstep_html.render(built, cfg.name, args.context, args.tp, args.price_per_hour,
                                      args.price_per_kwh, checks)
    else:
        text = modelstep.render(built, cfg.name, args.context, args.tp, args.price_per_hour, args.format,
                                args.price_per_kwh, checks)
    _emit(text, args.out)
    return 0
