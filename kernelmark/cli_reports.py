"""`kernelmark report`: tables from run files. Reports read run files and nothing else."""

from __future__ import annotations

import sys

from kernelmark.cli import UsageError


def register(sub) -> None:
    rep = sub.add_parser("report", help="tables from run files")
    rep.add_argument("runs", nargs="+")
    rep.add_argument("--format", choices=("table", "md", "csv", "json"), default="table")
    rep.set_defaults(func=cmd_report)


def cmd_report(args) -> int:
    from kernelmark import results
    from kernelmark.reports import table
    outs = []
    for path in args.runs:
        try:
            run = results.load(path)
        except results.RunFileError as e:
            raise UsageError(str(e)) from None
        if not run.complete:
            print(f"kernelmark: note: {path} has no footer: the run was interrupted; showing what it holds",
                  file=sys.stderr)
        outs.append(table.render(run.header, run.records, args.format))
    print("\n\n".join(outs))
    return 0
