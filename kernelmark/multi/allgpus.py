"""`kernelmark run --all-gpus`: the suite on every GPU of this node, then a node summary that
flags an outlier card. A sick card in an 8-GPU node (a bad HBM stack, a throttling fan, a
degraded PCIe link) slows every job it is part of; comparing each card with its neighbours
on the same cases, in the same run, is how to find it.

Each GPU gets its own ordinary `kernelmark run --device cuda:I --out DIR/gpuI.jsonl` (same
arguments otherwise), in parallel by default or one after the other with ``--serial``.
Its table goes to DIR/gpuI.txt and its progress to DIR/gpuI.log. Then, for every case
(op, shape, dtype, backend) measured on at least two GPUs, the node median of the GPUs'
medians is taken, and a GPU is flagged for the case when its median is more than the
threshold (default 10%) above it. A card is an outlier when any case flags it, when it
fails a case (check, error, crash, timeout, oom) that other cards pass, or when its run
fails. DIR/node-summary.json holds all of it; the exit status is 1 when a card is flagged.

Running in parallel measures each card under the node's real power and thermal load, as
in service; ``--serial`` measures each card alone (no shared host CPU or PCIe contention).
"""

from __future__ import annotations

import json
import os
import re
import socket
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from kernelmark.errors import UsageError

DEFAULT_THRESHOLD = 0.10
SUMMARY_NAME = "node-summary.json"
OUTLIER = 1
FAILURES = ("failed_check", "error", "oom", "crashed", "timeout")
# Options of `run` the per-GPU command sets itself (or that only the node run has).
_DROP = {"all_gpus", "serial", "outlier_threshold", "out", "device"}


@dataclass
class Job:
    index: int
    name: str
    argv: list
    run_file: str
    table_file: str
    log_file: str
    exit_status: Optional[int] = None
    wall_s: float = 0.0


# ---------------------------------------------------------------- the boundary (faked in tests)

def list_gpus() -> list:
    """[(index, name)] of the GPUs torch sees (after CUDA_VISIBLE_DEVICES)."""
    import torch
    if not torch.cuda.is_available():
        return []
    return [(i, torch.cuda.get_device_name(i)) for i in range(torch.cuda.device_count())]


def device_spec(index: int) -> str:
    return f"cuda:{index}"


def run_gpu(job: Job) -> int:
    """Run one GPU's `kernelmark run` to completion; its exit status."""
    root = str(Path(__file__).resolve().parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    with open(job.table_file, "w") as out, open(job.log_file, "w") as err:
        return subprocess.run(job.argv, stdout=out, stderr=err, env=env, check=False).returncode


# ---------------------------------------------------------------- command lines

def fraction(text) -> float:
    """'10%' -> 0.1, '0.1' -> 0.1."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(%?)\s*", str(text))
    v = float(m.group(1)) / (100 if m.group(2) else 1) if m else -1.0
    if not 0 < v < 10:
        raise UsageError(f"--outlier-threshold {text!r}: write a percentage (10%) or a fraction (0.1)")
    return v


def passthrough(argv: list, parser) -> list:
    """``argv`` (after `run`) without the options the per-GPU command sets itself. Resolves
    abbreviations (argparse accepts --all for --all-gpus) with the `run` parser's own table."""
    table = parser._option_string_actions if parser is not None else {}
    kept, skip = [], False
    for tok in argv:
        if skip:
            skip = False
            continue
        name, eq, _ = tok.partition("=")
        action = table.get(name)
        if action is None and tok.startswith("--"):
            hits = {a for opt, a in table.items() if opt.startswith(name)}
            action = hits.pop() if len(hits) == 1 else None
        if action is not None and action.dest in _DROP:
            skip = action.nargs != 0 and not eq
            continue
        kept.append(tok)
    return kept


def child_argv(args, index: int, run_file: str, run_parser) -> list:
    rest = passthrough(list(args.command[2:]), run_parser)
    return [sys.executable, "-m", "kernelmark", "run", *rest, "--device", device_spec(index), "--out", run_file]


# ---------------------------------------------------------------- the node run

def run(args, run_parser) -> int:
    threshold = fraction(args.outlier_threshold) if args.outlier_threshold is not None else DEFAULT_THRESHOLD
    if args.resume:
        raise UsageError("--resume with --all-gpus: resume each GPU's run file on its own "
                         "(kernelmark run --resume DIR/gpuI.jsonl)")
    if args.device not in (None, "cuda", "rocm"):
        raise UsageError(f"--device {args.device} with --all-gpus: every visible GPU is used; "
                         "choose GPUs with CUDA_VISIBLE_DEVICES")
    gpus = list_gpus()
    if not gpus:
        raise UsageError("--all-gpus: no GPU is visible to torch on this machine (a CPU-only build, or "
                         "CUDA_VISIBLE_DEVICES hides them); run without --all-gpus to measure the CPU")
    from kernelmark.results import slug as _slug
    out_dir = Path(args.out or Path("kernelmark-runs") /
                   f"{time.strftime('%Y%m%d-%H%M%S')}_node_{_slug(Path(args.suite).stem)}")
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"--out {out_dir}: with --all-gpus, --out is a directory and this is a file")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"--out {out_dir}: cannot create the directory: {e.strerror or e}") from None
    jobs = [Job(i, name, child_argv(args, i, str(out_dir / f"gpu{i}.jsonl"), run_parser), str(out_dir / f"gpu{i}.jsonl"),
                str(out_dir / f"gpu{i}.txt"), str(out_dir / f"gpu{i}.log")) for i, name in gpus]
    log = (lambda m: None) if args.quiet else (lambda m: print(f"kernelmark: {m}", file=sys.stderr, flush=True))
    log(f"{len(jobs)} GPUs, {'one after the other' if args.serial else 'in parallel'}; run files, tables "
        f"and logs in {out_dir}/")

    def one(job: Job) -> Job:
        t0 = time.time()
        job.exit_status = run_gpu(job)
        job.wall_s = round(time.time() - t0, 1)
        log(f"gpu{job.index} ({job.name}): exit status {job.exit_status} after {job.wall_s} s")
        return job

    if args.serial:
        for job in jobs:
            one(job)
    else:
        with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
            list(pool.map(one, jobs))
    if all(j.exit_status == 2 for j in jobs):       # the same usage error everywhere: say it once
        print(_tail(jobs[0].log_file), file=sys.stderr)
        return 2
    summary = summarize(jobs, threshold, args.command)
    path = out_dir / SUMMARY_NAME
    from kernelmark.results import strict_json
    path.write_text(strict_json(summary, indent=1) + "\n")
    print(strict_json(summary, indent=1) if args.format == "json" else render(summary))
    for j in jobs:
        if j.exit_status != 0:
            log(f"gpu{j.index} failed; the end of {j.log_file}:\n{_tail(j.log_file)}")
    log(f"node summary {path}")
    return OUTLIER if summary["outliers"] else 0


def _tail(path: str, lines: int = 15) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# ---------------------------------------------------------------- the summary

def _load(job: Job):
    from kernelmark import results
    try:
        return results.load(job.run_file), None
    except results.RunFileError as e:
        return None, str(e)


def _case_name(rec: dict) -> str:
    shape = " ".join(f"{k}={v}" for k, v in rec["shape"].items())
    return f"{rec['op']} {shape} {rec['dtype']} {rec['backend']}"


def outliers(medians: dict, threshold: float) -> dict:
    """medians: {case: {gpu: median_us}} -> {case: {"node_median_us", "slow": {gpu: ratio}, "ratios": {...}}}.
    Cases measured on fewer than two GPUs have no node to compare with and are left out."""
    out = {}
    for case, by_gpu in medians.items():
        if len(by_gpu) < 2:
            continue
        node = statistics.median(by_gpu.values())
        ratios = {g: v / node for g, v in by_gpu.items()}
        out[case] = {"node_median_us": node, "ratios": ratios,
                     "slow": {g: r for g, r in ratios.items() if r > 1 + threshold}}
    return out


def summarize(jobs: list, threshold: float, command: Optional[list] = None) -> dict:
    from kernelmark import results
    runs, errors = {}, {}
    for j in jobs:
        runs[j.index], errors[j.index] = _load(j)
    medians: dict = {}
    status: dict = {}
    names: dict = {}
    throttled: dict = {j.index: 0 for j in jobs}
    for g, run in runs.items():
        for rec in (run.records if run else []):
            key = json.dumps(results.record_key(rec))
            names[key] = _case_name(rec)
            status.setdefault(key, {})[g] = rec["status"]
            if rec["status"] == "ok":
                medians.setdefault(key, {})[g] = rec["timing"]["median_us"]
                throttled[g] += bool((rec.get("health") or {}).get("throttled"))
    per_case = outliers(medians, threshold)
    gpus = []
    for j in jobs:
        g = j.index
        slow = [{"case": names[k], "median_us": medians[k][g], "node_median_us": c["node_median_us"],
                 "ratio": c["ratios"][g]} for k, c in per_case.items() if g in c["slow"]]
        failed = [{"case": names[k], "status": st[g]} for k, st in status.items()
                  if st.get(g) in FAILURES and "ok" in st.values()]
        ratios = [c["ratios"][g] for c in per_case.values() if g in c["ratios"]]
        worst = max(((c["ratios"][g], names[k]) for k, c in per_case.items() if g in c["ratios"]), default=None)
        problem = None
        if j.exit_status not in (0, None) or runs[g] is None:
            problem = f"run failed (exit status {j.exit_status})" + (f": {errors[g]}" if errors[g] else "")
        elif runs[g] is not None and not runs[g].complete:
            problem = "run interrupted (no footer)"
        gpus.append({
            "index": g, "name": j.name, "run_file": j.run_file, "exit_status": j.exit_status, "wall_s": j.wall_s,
            "cases_compared": len(ratios), "median_ratio": statistics.median(ratios) if ratios else None,
            "worst_ratio": worst[0] if worst else None, "worst_case": worst[1] if worst else None,
            "slow_cases": sorted(slow, key=lambda s: -s["ratio"]), "failed_cases": failed,
            "throttled_cases": throttled[g], "problem": problem,
            "outlier": bool(slow or failed or problem)})
    flagged = [x["index"] for x in gpus if x["outlier"]]
    note = ("" if len(jobs) >= 3 else
            "with fewer than 3 GPUs the node median is the mean of two: a slow card shows half its slowdown")
    return {"type": "node_summary", "schema": 1, "host": socket.gethostname(), "command": command,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "threshold": threshold,
            "cases": len(per_case), "gpus": gpus, "outliers": flagged, "note": note}


def render(summary: dict) -> str:
    from tabulate import tabulate
    rows = []
    for g in summary["gpus"]:
        verdict = "OUTLIER" if g["outlier"] else "ok"
        why = []
        if g["slow_cases"]:
            why.append(f"{len(g['slow_cases'])} slow")
        if g["failed_cases"]:
            why.append(f"{len(g['failed_cases'])} failed where others pass")
        if g["problem"]:
            why.append(g["problem"])
        rows.append([f"gpu{g['index']}", g["name"], g["cases_compared"],
                     f"{g['median_ratio']:.3f}" if g["median_ratio"] else "",
                     f"{g['worst_ratio']:.3f} ({g['worst_case']})" if g["worst_ratio"] else "",
                     g["throttled_cases"] or "", verdict + (f": {', '.join(why)}" if why else "")])
    thr = f"{100 * summary['threshold']:g}%"
    head = (f"node {summary['host']}: {len(summary['gpus'])} GPUs, {summary['cases']} cases compared; "
            f"a card is flagged when a case is more than {thr} slower than the node median for it")
    body = tabulate(rows, headers=["gpu", "name", "cases", "median ratio", "worst ratio (case)", "throttled",
                                   "verdict"], disable_numparse=True)
    tail = [head, body]
    for g in summary["gpus"]:
        for s in g["slow_cases"][:5]:
            tail.append(f"  gpu{g['index']}: {s['case']}: {s['median_us']:.2f} us vs node median "
                        f"{s['node_median_us']:.2f} us ({100 * (s['ratio'] - 1):+.1f}%)")
        for f in g["failed_cases"][:5]:
            tail.append(f"  gpu{g['index']}: {f['case']}: {f['status']} where other GPUs pass")
    if summary.get("note"):
        tail.append(f"note: {summary['note']}")
    return "\n".join(tail)
