"""`kernelmark compare`, `ab`, `history` and `export`: what CI needs, and the history
every `kernelmark run` is added to (``--db``, ``--no-history``).

Exit status of compare and ab: 0 no regression, 1 at least one regression (see
``--fail-on``), 2 a usage or input error (a bad file, runs from different devices).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import sys
import warnings

from kernelmark.errors import UsageError
from kernelmark.harness import options

REGRESSION = 1


def _fraction(text: str) -> float:
    """'5%' -> 0.05; '0.05' -> 0.05."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(%?)\s*", str(text))
    if not m:
        raise UsageError(f"--threshold {text!r}: write a percentage (5%) or a fraction (0.05)")
    v = float(m.group(1)) / (100 if m.group(2) else 1)
    if not 0 < v < 1:
        raise UsageError(f"--threshold {text!r}: must be between 0 and 100% (write 5% or 0.05)")
    return v


def _note(msg: str) -> None:
    print(f"kernelmark: {msg}", file=sys.stderr)


def load_run(path: str):
    """results.load with the messages a user needs; warnings go to stderr. Only JSON is read."""
    from kernelmark import results
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            run = results.load(path)
        except results.RunFileError as e:
            raise UsageError(_explain(path, e)) from None
    _say_warnings(run)
    return run


def open_run(path: str):
    """A results.RunReader (header read and checked, records read later), for files that may
    be too large to hold; _say_warnings once its records have been read. The samples come as
    numpy arrays: compare computes on them as such."""
    from kernelmark import results
    try:
        return results.RunReader(path, sample_arrays=True, prefetch=True)
    except results.RunFileError as e:
        raise UsageError(_explain(path, e)) from None


def _say_warnings(run) -> None:
    for w in run.warnings:
        _note(f"warning: {w}")
    if not run.complete:
        _note(f"warning: {run.path} has no footer: the run was interrupted; using the records it holds")


def _explain(path: str, err: Exception) -> str:
    from kernelmark import results
    try:
        with open(path, encoding="utf-8") as f:
            first = json.loads(f.readline())
    except (OSError, ValueError, UnicodeDecodeError):
        return str(err)
    if not isinstance(first, dict):
        return str(err)
    if first.get("type") == "header" and first.get("schema") != results.SCHEMA_VERSION:
        s = first.get("schema")
        if isinstance(s, int) and s > results.SCHEMA_VERSION:
            return (f"{path}: written by a newer kernelmark (run file schema {s}); this one reads schema "
                    f"{results.SCHEMA_VERSION}: upgrade kernelmark to read it")
        return (f"{path}: run file schema {s!r} is older than any this kernelmark reads (schema "
                f"{results.SCHEMA_VERSION}) and there is no migration for it: measure again with this version")
    if "benchmarks" in first and "machine_info" in first:
        return f"{path}: this is pytest-benchmark JSON, not a kernelmark run file"
    return str(err)


# ------------------------------------------------------------------ parsers

def _compare_options(p) -> None:
    p.add_argument("--threshold", default="5%",
                   help="smallest change that counts, as 5%% or 0.05 (default 5%%); a pair is slower only "
                        "when its ratio is beyond it and the change is significant")
    p.add_argument("--alpha", type=float, default=0.01, help="significance level (default 0.01)")
    p.add_argument("--format", choices=("table", "md", "json"), default="table")
    p.add_argument("--fail-on", choices=("slower", "any"), default="slower",
                   help="exit 1 on: slower (slower, check-failed; default) or any (also faster, missing, noisy)")
    p.add_argument("--allow-device-mismatch", action="store_true",
                   help="compare runs from different devices or dtype sets anyway (said on top of the table)")
    p.add_argument("--energy", action="store_true",
                   help="also compare J per call where both runs were measured with --energy (a section of its "
                        "own; never a regression: the exit status stays the timing's; docs/energy.md)")


def register(sub) -> None:
    c = sub.add_parser("compare", help="compare two run files; exit 1 on a regression")
    c.add_argument("base", metavar="BASE")
    c.add_argument("head", metavar="HEAD")
    _compare_options(c)
    c.set_defaults(func=cmd_compare)

    a = sub.add_parser("ab", help="measure two git revisions interleaved on this device and compare them")
    a.add_argument("rev_a", metavar="REV_A", help="the baseline revision")
    a.add_argument("rev_b", metavar="REV_B", help="the revision under test")
    a.add_argument("--suite", default="default",
                   help="built-in suite or a .toml path (default: default); a relative path is read in "
                        "each worktree, so each side runs its own revision of the file")
    a.add_argument("--rounds", type=int, default=5,
                   help="processes per side, alternating A B / B A (default 5, at least 3: with fewer, a side "
                        "whose processes all drift the same way is more likely to pass for a change)")
    a.add_argument("--threads", type=int,
                   help="torch CPU threads for both sides (default on a CPU: this revision's default, passed "
                        "to both, so an older revision with another default measures the same way)")
    for flag in ("--ops", "--backends", "--dtypes", "--device", "--budget", "--target-ci", "--seed", "--isolation"):
        a.add_argument(flag, help=f"passed to each `kernelmark run` ({flag})")
    a.add_argument("--run-args", default="", help="more arguments for each `kernelmark run`, as one string")
    a.add_argument("--out-dir", help="where the run files go (default kernelmark-runs/ab-<time>)")
    a.add_argument("--repo", default=".", help="the git checkout holding both revisions (default .)")
    a.add_argument("--allow-dirty", action="store_true", help="run although the tree has uncommitted changes")
    _compare_options(a)
    a.set_defaults(func=cmd_ab)

    h = sub.add_parser("history", help="each case's trend across runs and commits, with step changes")
    h.add_argument("--op", help="comma-separated ops")
    h.add_argument("--backend", help="comma-separated backends")
    h.add_argument("--dtype", help="comma-separated dtypes")
    h.add_argument("--device", help="device name contains this")
    h.add_argument("--since", help="runs since an ISO date (2026-11-01) or an age (7d, 12h)")
    h.add_argument("--threshold", default="5%", help="smallest step change flagged (default 5%%)")
    h.add_argument("--last", type=int, default=20, help="runs shown per case (default 20)")
    h.add_argument("--points", action="store_true", help="list each case's runs too")
    h.add_argument("--format", choices=("table", "md", "json"), default="table")
    h.add_argument("--db", help="history database (default: see kernelmark.reports.history)")
    h.add_argument("--ingest", nargs="+", metavar="RUN", help="add these run files to the history first")
    h.set_defaults(func=cmd_history)

    e = sub.add_parser("export", help="convert a run file for other tools")
    e.add_argument("run", metavar="RUN")
    e.add_argument("--format", choices=("pytest-benchmark", "flashinfer-trace"), default="pytest-benchmark",
                   help="flashinfer-trace: traces/<op_type>/<definition>.jsonl under the directory -o names")
    e.add_argument("-o", "--output", required=True, help="file to write (for flashinfer-trace: a directory)")
    e.set_defaults(func=cmd_export)


def add_run_arguments(run_parser) -> None:
    run_parser.add_argument("--db", help="history database this run is added to (default: the user's data dir)")
    run_parser.add_argument("--no-history", action="store_true", help="do not add this run to the history")


def after_run(args, run_path: str) -> None:
    """Add a finished run to the history. A history that cannot be written never fails the run."""
    if getattr(args, "no_history", False) or os.environ.get("KERNELMARK_NO_HISTORY", "") not in ("", "0"):
        return
    from kernelmark import results
    from kernelmark.reports import history
    db = getattr(args, "db", None) or history.default_path()
    try:
        conn = history.connect(db)
        try:
            history.ingest(conn, results.load(run_path))
        finally:
            conn.close()
    except Exception as e:      # noqa: BLE001 -- the run itself succeeded; say why history did not
        _note(f"warning: the run was not added to the history {db}: {e}")


# ------------------------------------------------------------------ commands

def _compare_and_print(base, head, args) -> int:
    """Compare two runs (results.Run, or results.RunReader: read as the comparison goes)."""
    from kernelmark import results
    from kernelmark.reports import compare
    threshold = _fraction(args.threshold)
    if not 0 < args.alpha < 0.5:
        raise UsageError("--alpha must be between 0 and 0.5, e.g. 0.01")
    refusal = compare.incomparable(base, head)      # a CPU run against a GPU run: never
    if refusal:
        raise UsageError(f"refusing to compare: {refusal}")

    def refuse_if(problems):
        if problems and not args.allow_device_mismatch:
            raise UsageError("refusing to compare: " + "; ".join(problems) +
                             " (pass --allow-device-mismatch to compare anyway)")

    refuse_if(compare.mismatch_reasons(base.header, head.header))    # the devices: before any work
    from kernelmark import gcpause, heap
    heap.keep_freed()               # the statistics' batches reuse their pages (kernelmark/heap.py)
    try:
        with gcpause.paused():      # millions of small objects, no cycles (kernelmark/gcpause.py)
            c = compare.compare_runs(base, head, threshold, args.alpha)
    except results.RunFileError as e:
        raise UsageError(str(e)) from None
    for run in (base, head):
        if isinstance(run, results.RunReader):
            _say_warnings(run)
    refuse_if(c.mismatch)          # the dtype sets, known once both runs have been read
    with gcpause.paused():
        text = compare.render(c, base.header, head.header, args.format, args.fail_on)
    if getattr(args, "energy", False):
        # opt-in, and apart from the verdicts: an energy change never makes the exit status.
        # It reads the two files again, whole (energy records are few; timing streamed above).
        from kernelmark.reports import energy_compare
        pairs = energy_compare.compare_runs(load_run(base.path).records, load_run(head.path).records, threshold)
        if args.format == "json":
            doc = json.loads(text)
            doc["energy"] = energy_compare.as_json(pairs)
            text = results.strict_json(doc, indent=1)
        else:
            text += "\n\n" + energy_compare.render(pairs, args.format)
    print(text)
    return REGRESSION if c.regressions(args.fail_on) else 0


def _compare_compile_files(args):
    """Exit status when BASE or HEAD is a compile run file, None when both are timing runs."""
    from kernelmark.reports import compile_table as ct
    kinds = (ct.file_kind(args.base), ct.file_kind(args.head))
    if kinds == ("run", "run"):
        return None
    if kinds[0] != kinds[1]:
        raise UsageError(f"refusing to compare: {args.base} is a {kinds[0]} file, {args.head} a {kinds[1]} file "
                         "(compare two timing runs or two compile runs)")
    try:
        (_, base), (_, head) = ct.load(args.base), ct.load(args.head)
    except ct.CompileFileError as e:
        raise UsageError(str(e)) from None
    diff = ct.compare(base, head)
    print(ct.render_compare(diff), end="")
    return REGRESSION if diff["regressions"] else 0


def cmd_compare(args) -> int:
    status = _compare_compile_files(args)
    if status is not None:
        return status
    # Both files read a record at a time: a large run is never held whole (see reports/sides.py).
    base = open_run(args.base)
    try:
        head = open_run(args.head)
        try:
            return _compare_and_print(base, head, args)
        finally:
            head.close()
    finally:
        base.close()


def cmd_ab(args) -> int:
    from kernelmark.harness import ab
    _fraction(args.threshold)            # a bad threshold fails before minutes of measuring
    run_args = []
    for name in ("ops", "backends", "dtypes", "device", "budget", "target_ci", "seed", "isolation"):
        v = getattr(args, name)
        if v is not None:
            run_args += [f"--{name.replace('_', '-')}", str(v)]
    run_args += shlex.split(args.run_args)
    if args.rounds < ab.MIN_ROUNDS:           # before the worktrees and minutes of measuring
        raise UsageError(ab.rounds_problem(args.rounds))
    run_args += _threads_args(args, run_args)
    cfg = ab.ABConfig(args.rev_a, args.rev_b, args.suite, args.rounds, run_args, args.out_dir, args.repo,
                      args.allow_dirty)
    try:
        base, head, out = ab.run_ab(cfg, log=_note)
    except ab.ABError as e:
        raise UsageError(str(e)) from None
    _note(f"run files in {out} (pooled: base.jsonl, head.jsonl)")
    return _compare_and_print(base, head, args)


def _threads_args(args, run_args: list) -> list:
    """``--threads N`` for both sides: as given, or on a CPU this revision's default, so that
    both revisions run with one thread count (the device identity compare checks)."""
    if args.threads is not None:
        if args.threads < 1:
            raise UsageError(f"--threads {args.threads}: must be a positive integer")
        return ["--threads", str(args.threads)]
    if "--threads" in run_args or any(a.startswith("--threads=") for a in run_args):
        return []
    device = (args.device or "").strip().lower()
    if device.startswith("cuda") or device == "rocm":
        return []
    if not device:
        import torch
        if torch.cuda.is_available():
            return []
    from kernelmark.harness import cpu
    return ["--threads", str(cpu.choose_threads(None, cpu.cpus_available())["chosen"])]


_csv = options.names


def cmd_history(args) -> int:
    from kernelmark.reports import history
    db = args.db or history.default_path()
    threshold = _fraction(args.threshold)
    if args.last < 1:
        raise UsageError("--last must be at least 1")
    try:
        since = history.parse_since(args.since) if args.since else None
    except ValueError as e:
        raise UsageError(str(e)) from None
    if not args.ingest and not os.path.exists(db):
        raise UsageError(f"no history database at {db} (runs are added to it by `kernelmark run`; "
                         "or use --ingest RUN... or --db PATH)")
    try:
        conn = history.connect(db)
    except history.HistoryError as e:
        raise UsageError(str(e)) from None
    try:
        for path in args.ingest or ():
            added, known = history.ingest(conn, load_run(path))
            _note(f"{path}: {added} measurements added" + (f", {known} already in the history" if known else ""))
        cases = history.query(conn, _csv(args.op), args.device, since, _csv(args.backend), _csv(args.dtype),
                              threshold)
    finally:
        conn.close()
    print(history.render(cases, args.format, args.last, args.points))
    return 0


def cmd_export(args) -> int:
    from kernelmark.reports import export
    run = load_run(args.run)
    if args.format == "flashinfer-trace":
        return _export_traces(run, args.output)
    try:
        n = export.write_pytest_benchmark(run, args.output)
    except OSError as e:
        raise UsageError(f"cannot write {args.output}: {e.strerror or e}") from None
    skipped = sum(r["status"] != "ok" for r in run.records)
    _note(f"wrote {n} benchmarks to {args.output}" +
          (f" ({skipped} records not timed are left out)" if skipped else ""))
    return 0


def _export_traces(run, directory: str) -> int:
    from kernelmark.reports import flashinfer_trace
    if not any((r.get("trace") or {}).get("definition") for r in run.records):
        raise UsageError(f"{run.path}: no record comes from a FlashInfer-Trace suite "
                         "(run one with `kernelmark run --suite DATASET` first)")
    try:
        n, files, left = flashinfer_trace.write(run.header, run.records, directory)
    except OSError as e:
        raise UsageError(f"cannot write under {directory}: {e.strerror or e}") from None
    _note(f"wrote {n} traces in {files} files under {directory}/traces" +
          (f" ({left} records not timed, not run or not from a FlashInfer-Trace workload are left out)"
           if left else ""))
    return 0
