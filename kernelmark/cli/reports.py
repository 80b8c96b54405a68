"""`kernelmark report`, `kernelmark model` and `kernelmark publish`: what comes out of run
files. Reports read run files and nothing else.

    kernelmark report RUN... [--format table|md|csv|html|json] [--long] [--out PATH] [--baseline DEVICE]
    kernelmark report COMPILE_RUN... [--format table|md|csv|json]   # files of `kernelmark compile --out`
    kernelmark model NAME --run RUN [--run RUN...] [--batch 1,8,32] [--context 4096]
                     [--prefill-tokens 4096] [--dtype bf16] [--price-per-hour USD] [--price-per-kwh USD]
                     [--format ...]
    kernelmark publish RUN... [--dir published]      # add runs, regenerate tables and index
    kernelmark publish [--dir published] [--check]   # regenerate (or check) everything
"""

from __future__ import annotations

import sys
from pathlib import Path

from kernelmark.errors import UsageError


def register(sub) -> None:
    rep = sub.add_parser("report", help="tables (one device, or several side by side) and an HTML page from run files")
    rep.add_argument("runs", nargs="+", metavar="RUN")
    rep.add_argument("--format", choices=("table", "md", "csv", "json", "html"), default="table")
    rep.add_argument("--long", action="store_true",
                     help="one device's table and md: one row per (case, backend) with every column, instead of "
                          "one row per case with a column group per backend (csv and json are always long)")
    rep.add_argument("--out", help="write here instead of standard output")
    rep.add_argument("--baseline", help="device the speed-ups are against (a device name or a unique part of it; "
                                        "default: the first run's device)")
    rep.set_defaults(func=cmd_report)

    mod = sub.add_parser("model", help="a model's decode and prefill roll-up from measured kernel times "
                                       "(a kernel-sum lower bound)")
    mod.add_argument("name", nargs="?", help="model: a shipped config (llama-3.2-1b, llama-3.1-8b, qwen3-8b, "
                     "mixtral-8x7b, deepseek-v3, gpt-oss-120b, ...) or the legacy llama3-8b, llama3-70b roll-up")
    mod.add_argument("--config", metavar="FILE", help="a Hugging Face config.json instead of NAME")
    mod.add_argument("--emit-suite", metavar="FILE", help="write a suite measuring exactly the cases the runs lack")
    mod.add_argument("--measure", action="store_true", help="measure the missing cases on this device, then roll up")
    mod.add_argument("--measure-out", metavar="RUN", help="with --measure: keep the run file here")
    mod.add_argument("--check-step", action="store_true",
                     help="with --measure: also build the model (random weights, eager torch, a KV cache of "
                          "--context) and time whole decode steps at each batch: measured step, kernel sum and "
                          "their ratio (dense models; the whole model must fit this device)")
    mod.add_argument("--device", help="with --measure: cpu, cuda or cuda:N")
    mod.add_argument("--budget", type=float, help="with --measure: seconds of sampling per (case, backend)")
    mod.add_argument("--energy", action="store_true",
                     help="with --measure: measure with `run --energy`, for J per token (docs/energy.md)")
    # `--run A B` (as the README writes it) and `--run A --run B` both give [A, B]
    mod.add_argument("--run", action="extend", nargs="+", metavar="RUN",
                     help="run file(s): --run A B or --run A --run B (runs of one device are merged, several "
                          "devices compared)")
    mod.add_argument("--batch", default="1,8,32", help="decode batch sizes, comma-separated (default 1,8,32)")
    mod.add_argument("--context", type=int, default=4096, help="tokens of context per sequence (default 4096)")
    mod.add_argument("--prefill-tokens", type=int, default=4096,
                     help="tokens in one prefill chunk: the GEMMs' M (default 4096)")
    mod.add_argument("--dtype", help="dtype of the cases to use (default: with --run, whichever of bf16, fp16, "
                                     "fp32, fp8 the runs have most of the step's cases in; else bf16)")
    mod.add_argument("--tp", type=int, default=1, help="tensor-parallel slice of the model (default 1)")
    mod.add_argument("--price-per-hour", type=float, metavar="USD", help="price of one GPU-hour, for $ per 1M tokens")
    mod.add_argument("--price-per-kwh", type=float, metavar="USD",
                     help="price of electricity, for the energy $ per 1M tokens of runs measured with --energy "
                          "(docs/energy.md)")
    mod.add_argument("--format", choices=("table", "md", "json", "csv", "html"), default="table",
                     help="html: one page with the table and a stacked bar of each step by kernel family")
    mod.add_argument("--out", help="write here instead of standard output")
    mod.set_defaults(func=cmd_model)

    pub = sub.add_parser("publish", help="copy runs into published/ and regenerate its tables and index")
    pub.add_argument("runs", nargs="*", metavar="RUN")
    pub.add_argument("--dir", default="published", help="the published tree (default: published)")
    pub.add_argument("--check", action="store_true",
                     help="regenerate in memory and report any table or index that differs (exit 1)")
    pub.set_defaults(func=cmd_publish)


def load_runs(paths: list, keep_samples: bool = True) -> tuple:
    """(runs, problems): every readable run, and a message for each that is not. No run at
    all is a usage error naming every problem. ``keep_samples=False``: each record's samples
    are dropped once checked (only compare, export and json output read them)."""
    import warnings

    from kernelmark import results
    runs, problems = [], []
    for path in paths:
        # A truncated last line is said once, as our warning, not as Python's with a source line.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                runs.append(results.load(path, keep_samples))
            except results.RunFileError as e:
                problems.append(str(e))
                continue
        for w in runs[-1].warnings:
            print(f"kernelmark: warning: {w}", file=sys.stderr)
    if not runs:
        raise UsageError("no run file could be read: " + "; ".join(problems))     # one line
    for p in problems:
        print(f"kernelmark: warning: left out of the report: {p}", file=sys.stderr)
    for run in runs:
        _notes(run.path, run.complete, len(run.records), any(r["status"] == "ok" for r in run.records))
    return runs, problems


def _notes(path: str, complete: bool, records: int, timed: bool) -> None:
    if not complete:
        print(f"kernelmark: note: {path} has no footer: the run was interrupted; showing what it holds",
              file=sys.stderr)
    if not records:
        print(f"kernelmark: note: {path} holds no records", file=sys.stderr)
    elif not timed:
        print(f"kernelmark: note: {path}: no case was timed (every record failed, was skipped, "
              f"or was only checked)", file=sys.stderr)


def _csv_streamed(path: str) -> str:
    """`report --format csv` of one run file, its records read one at a time and each turned
    into its row at once: the memory held is the CSV, not the records (a 100,000-record file
    took 3.9 GB read whole). The same text wide.render gives for the loaded run (csv is
    always the long table)."""
    from kernelmark import results
    from kernelmark.reports import wide
    seen = {"records": 0, "timed": False}

    def counted(records):
        for r in records:
            seen["records"] += 1
            seen["timed"] = seen["timed"] or r["status"] == "ok"
            yield r

    from kernelmark import gcpause
    try:
        with results.RunReader(path, keep_samples=False, prefetch=True) as reader, gcpause.paused():
            text = wide.render(reader.header, counted(reader.records()), "csv")
    except results.RunFileError as e:
        raise UsageError(f"no run file could be read: {e}") from None
    for w in reader.warnings:
        print(f"kernelmark: warning: {w}", file=sys.stderr)
    _notes(reader.path, reader.complete, seen["records"], seen["timed"])
    return text


def _emit(text: str, out: str | None) -> None:
    if not out:
        print(text)
        return
    try:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text + ("" if text.endswith("\n") else "\n"), encoding="utf-8")
    except OSError as e:
        raise UsageError(f"cannot write {out}: {e.strerror or e}") from None
    print(f"kernelmark: wrote {out}", file=sys.stderr)


def render_report(runs: list, fmt: str, baseline: str | None = None, problems=(), long: bool = False) -> str:
    from kernelmark.reports import crossdevice, html, wide
    try:
        if fmt == "html":
            return html.page(runs, baseline, problems)
        ct = crossdevice.build(runs, baseline)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if len(ct.devices) == 1:
        dev = ct.devices[0]
        if len(runs) == 1:
            text = wide.render(runs[0].header, runs[0].records, fmt, long=long)
        else:
            text = wide.render(dev.header, list(dev.records.values()), fmt, long=long)
            if fmt not in ("csv", "json"):
                text = "\n".join(f"note: {n}" for n in ct.notes) + "\n" + text
    else:
        text = crossdevice.render(ct, fmt)
    if problems and fmt in ("table", "md"):
        text = "\n".join(f"not included: {p}" for p in problems) + "\n\n" + text
    return text


def _report_compile_files(args):
    """The text of `report` when the files are compile runs (kernelmark compile --out); None
    when none is. A mix of compile and timing runs is refused: they have nothing in common."""
    from kernelmark.reports import compile_table as ct
    kinds = [ct.file_kind(p) for p in args.runs]
    if ct.KIND not in kinds:
        return None
    if set(kinds) != {ct.KIND}:
        timing = next(p for p, k in zip(args.runs, kinds) if k != ct.KIND)
        raise UsageError(f"cannot report compile runs and timing runs together ({timing} is not a compile run)")
    if args.format == "html":
        raise UsageError("--format html: a compile run has a table, csv and json (and md), not a page")
    if args.baseline:
        raise UsageError("--baseline: a compile run has no device to compare against")
    parts = []
    for path in args.runs:
        try:
            header, records = ct.load(path)
        except ct.CompileFileError as e:
            raise UsageError(str(e)) from None
        parts.append(ct.render(records, args.format, header))
    return "\n".join(parts).rstrip("\n")


def cmd_report(args) -> int:
    text = _report_compile_files(args)
    if text is not None:
        _emit(text, args.out)
        return 0
    if args.format == "csv" and len(args.runs) == 1:
        _emit(_csv_streamed(args.runs[0]), args.out)       # csv is always long: --long changes nothing
        return 0
    runs, problems = load_runs(args.runs, keep_samples=args.format == "json")
    _emit(render_report(runs, args.format, args.baseline, problems, long=args.long), args.out)
    return 0


def cmd_model(args) -> int:
    from kernelmark.reports import rollup
    from kernelmark.suites import models
    if args.config and args.name:
        raise UsageError("give a model NAME or --config FILE, not both")
    if not (args.config or args.name):
        # `--run A B NAME`: the run list took the name too
        last = (args.run or [""])[-1]
        hint = (f" ({last!r} was read as a run file: put NAME before --run)"
                if last and not Path(last).exists() else "")
        raise UsageError("give a model NAME or --config FILE" + hint)
    if args.energy and not args.measure:
        raise UsageError("--energy goes with --measure (runs given with --run carry their own energy)")
    # every model but the legacy Llama-3 roll-up (projections and attention only) is derived
    # from its config, kernel by kernel (kernelmark.suites.step)
    if args.config or args.name not in models.MODELS or args.measure or args.emit_suite or args.check_step:
        from kernelmark.cli.model_step import cmd_model_step
        return cmd_model_step(args, load_runs, _emit)
    if not args.run:
        raise UsageError(f"--run RUN is required for {args.name} (or --measure / --emit-suite)")
    if args.format in ("csv", "html"):
        raise UsageError(f"--format {args.format} is for config-derived models (e.g. llama-3.1-8b)")
    try:
        batches = [int(x) for x in args.batch.split(",") if x.strip()]
    except ValueError as e:
        raise UsageError(f"--batch must be integers, e.g. 1,8,32 ({e})") from None
    try:        # before any run file is read: a bad option costs nothing
        rollup.check_options(args.name, batches, args.context, args.prefill_tokens, args.tp, args.dtype,
                             args.price_per_hour, args.price_per_kwh)
    except ValueError as e:
        raise UsageError(str(e)) from None
    runs, problems = load_runs(args.run, keep_samples=False)
    try:
        text = rollup.render(runs, args.name, batches, args.context, args.prefill_tokens, dtype=args.dtype,
                             tp=args.tp, price_per_hour=args.price_per_hour, fmt=args.format,
                             price_per_kwh=args.price_per_kwh)
    except ValueError as e:
        raise UsageError(str(e)) from None
    _emit(text, args.out)
    return 0


def cmd_publish(args) -> int:
    from kernelmark.reports import publish
    if args.check and args.runs:
        raise UsageError("--check regenerates what is there; give no RUN with it")
    try:
        if args.runs:
            runs, problems = load_runs(args.runs, keep_samples=False)
            if problems:
                raise UsageError("not publishing: " + "; ".join(problems))
            for run in runs:
                print(f"kernelmark: published {publish.add(args.dir, run)}", file=sys.stderr)
        if args.check:
            diffs = publish.check(args.dir)
            for d in diffs:
                print(f"kernelmark: {d}", file=sys.stderr)
            print(f"kernelmark: {args.dir}: {'out of date' if diffs else 'every table matches its run file'}",
                  file=sys.stderr)
            return 1 if diffs else 0
        for path in publish.write(args.dir):
            print(f"kernelmark: wrote {path}", file=sys.stderr)
    except publish.PublishError as e:
        raise UsageError(str(e)) from None
    return 0
