"""`kernelmark compile`: compile every Triton kernel × autotune config of some ops for GPUs
this machine does not have, and say which compile, with what shared memory, registers and
spills, and whether they fit each target's limits (kernelmark/harness/targets.py).

    kernelmark compile [--target cuda:90,hip:gfx942] [--suite smoke] [--ops gemm,...] [--out F]

Exit 0 when the check ran (failed compiles are results, shown in the table and the file);
2 on usage errors. `kernelmark compare BASE HEAD` of two compile files exits 1 when a config
that compiled in BASE fails or goes over a limit in HEAD.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from kernelmark.errors import UsageError


def register(sub) -> None:
    p = sub.add_parser("compile", help="compile every Triton kernel and config ahead of time for GPU targets "
                                       "(no GPU needed)")
    p.add_argument("--target", default=None,
                   help="comma-separated targets (default: all: cuda:80,cuda:89,cuda:90,cuda:100,hip:gfx942)")
    p.add_argument("--suite", default="smoke", help="suite whose cases give the shapes and dtypes (default smoke)")
    p.add_argument("--ops", help="comma-separated ops (default: every op of the suite with a Triton backend)")
    p.add_argument("--max-configs", type=int, metavar="N",
                   help="compile only the N smallest autotune configs of each kernel (a quick check; default: all)")
    p.add_argument("--out", help="write a compile run file here (JSON lines, kind \"compile\")")
    p.set_defaults(func=cmd_compile)


def _reexec_without_interpreter(args) -> int:
    """Under TRITON_INTERPRET @triton.jit gives interpreted functions, which cannot be compiled:
    run the command again in a process without it."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in [env.get("PYTHONPATH")] if p])
    return subprocess.call([sys.executable, "-m", "kernelmark", *args.command[1:]], env=env)


def cmd_compile(args) -> int:
    from kernelmark.harness import targets as tg
    try:
        targets = tg.parse_targets(args.target) if args.target else [tg.TARGETS[n] for n in tg.DEFAULT_TARGETS]
    except ValueError as e:
        raise UsageError(str(e)) from None
    from kernelmark.suites import loader
    try:
        suite = loader.load(args.suite)
    except loader.SuiteError as e:
        raise UsageError(str(e)) from None
    from kernelmark.ops.registry import all_ops
    ops = [o.strip() for o in args.ops.split(",") if o.strip()] if args.ops else None
    if ops:
        bad = [o for o in ops if o not in all_ops()]
        if bad:
            raise UsageError(f"--ops: unknown op(s) {', '.join(bad)}; known: {', '.join(sorted(all_ops()))}")
    cases = [c for c in suite.cases if not ops or c.op in ops]
    if not cases:
        raise UsageError(f"suite {suite.name} has no case of {', '.join(ops or [])}")
    if args.max_configs is not None and args.max_configs < 1:
        raise UsageError(f"--max-configs {args.max_configs}: must be at least 1")
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        return _reexec_without_interpreter(args)
    out = None
    if args.out:
        try:
            out = open(args.out, "x", encoding="utf-8")
        except OSError as e:
            raise UsageError(f"--out {args.out}: cannot create ({e.strerror})") from None
    import triton
    from kernelmark.harness import aot
    from kernelmark.reports import compile_table

    def write(obj):
        if out:
            out.write(json.dumps(obj) + "\n")
            out.flush()

    write({"type": "header", "kind": "compile", "triton": triton.__version__, "suite": suite.as_header(),
           "targets": [{k: v for k, v in t.__dict__.items()} for t in targets],
           "command": " ".join(args.command), "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    records = []

    def on_result(r):
        rec = {"type": "record", **r.as_record()}
        records.append(rec)
        write(rec)
        print(f"{r.target} {r.op} {r.kernel} {r.config or '-'}: {r.status}", file=sys.stderr, flush=True)

    results = aot.check_cases(cases, targets, on_result=on_result, max_configs=args.max_configs)
    pruned = compile_table.left_out(records)     # the rule the table's footer applies
    write({"type": "footer", "records": len(records), "left_out": pruned})
    if out:
        out.close()
    sys.stdout.write(compile_table.render(records))      # ends with the configs left out per target
    return 0
