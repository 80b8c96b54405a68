"""`kernelmark ab`: measure two revisions on this device, interleaved, in fresh processes.

Both revisions are checked out into temporary git worktrees. The suite then runs
``rounds`` times for each, alternating sides in the order A B, B A, A B, ... (each
round swaps who goes first, so neither side always follows the other's heat), every
time as ``python -m kernelmark run`` in a new process with ``PYTHONPATH`` and the working
directory set to that side's worktree. Clock and thermal drift therefore hit both
sides alike, and the per-process offsets docs/design.md describes land in the samples.

Each side's rounds are pooled into one run file: per case, every round's stored
samples (thinned so the pool stays within the 1000 kept samples) with
``timing.groups``, the count from each process, so the comparison resamples whole
processes and a between-process spread wider than the threshold reads ``noisy``.
The per-round run files are kept next to the pooled ones.

At least MIN_ROUNDS rounds: with fewer processes a side cannot be resampled by process, and
the comparison would quietly fall back to resampling samples, which holds none of the
between-process spread that makes A/A runs differ.

Rounds whose samples stalled (their own record says so, or kernelmark.harness.stats.
stall_reason finds it in their samples, for a revision that predates the test) are listed
in the pooled ``timing.stalled_rounds``. The median weighs every process equally, so one
stalled process of three or more does not move it; from two stalled rounds and a quarter
of the rounds (stats.CLUSTER_SHARE) on, the pooled record's ``timing.stall`` says so, and
a comparison then reads ``noisy`` rather than a change.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from kernelmark import results
from kernelmark.harness import stats


MIN_ROUNDS = 3          # as kernelmark.reports.compare.MIN_GROUPS: the fewest processes resampled


class ABError(RuntimeError):
    """ab cannot proceed: a bad revision, a dirty tree, a failed run. The message says which."""


@dataclass
class ABConfig:
    rev_a: str
    rev_b: str
    suite: str = "default"
    rounds: int = 5
    run_args: list = field(default_factory=list)     # passed to every `kernelmark run`
    out_dir: Optional[str] = None
    repo: str = "."
    allow_dirty: bool = False
    python: str = sys.executable
    timeout_s: float = 3600.0


def rounds_problem(rounds: int) -> str:
    return (f"--rounds {rounds}: ab needs at least {MIN_ROUNDS} processes per side, so that the comparison "
            "can resample whole processes (between-process drift is most of the noise on a shared machine); "
            f"with fewer it cannot tell drift from a change. Use --rounds {MIN_ROUNDS} or more, or "
            "`kernelmark run` twice and `kernelmark compare` for one process a side")


def _git(repo, *args, check: bool = True, strip: bool = True) -> str:
    p = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
    if check and p.returncode != 0:
        raise ABError(f"git {' '.join(args)}: {p.stderr.strip() or p.stdout.strip()}")
    return p.stdout.strip() if strip else p.stdout


def repo_root(path: str) -> Path:
    try:
        return Path(_git(path, "rev-parse", "--show-toplevel"))
    except ABError:
        raise ABError(f"{Path(path).resolve()} is not inside a git repository") from None


def resolve(repo: Path, rev: str) -> str:
    try:
        return _git(repo, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    except ABError:
        raise ABError(f"unknown revision {rev!r} in {repo}") from None


def dirty(repo: Path) -> list:
    out = _git(repo, "status", "--porcelain", "--untracked-files=no", strip=False)
    return [line[3:] for line in out.splitlines() if line.strip()]      # "XY path"


def pool(paths: list, out_path: str, command: list) -> results.Run:
    """Pool one side's round files into one run file (see the module docstring)."""
    runs = [results.load(p) for p in paths]
    per_round = max(1, stats.MAX_STORED_SAMPLES // len(runs))
    order, by_key = [], {}
    for r_i, run in enumerate(runs):
        for rec in run.records:
            k = (rec["op"], repr(sorted(rec["shape"].items())), rec["dtype"], rec["backend"])
            if k not in by_key:
                order.append(k)
                by_key[k] = []
            by_key[k].append((r_i, rec))
    header = {k: v for k, v in runs[0].header.items() if k not in ("type", "schema")}
    header.update({"run_id": secrets.token_hex(6), "command": command,
                   "pooled": {"rounds": len(runs), "files": [str(p) for p in paths],
                              "run_ids": [r.header.get("run_id") for r in runs]}})
    w = results.RunWriter(out_path)
    try:
        w.header(header)
        for k in order:
            w.record(_pool_records(by_key[k], len(runs), per_round))
        w.footer({"finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                  "wall_s": round(sum((r.footer or {}).get("wall_s", 0) for r in runs), 2)})
    finally:
        w.close()
    return results.load(out_path)


def _pool_records(recs: list, rounds: int, per_round: int) -> dict:
    first = {k: v for k, v in recs[0][1].items() if k != "type"}
    if len(recs) < rounds or any(r["status"] != "ok" for _, r in recs):
        # A case that did not time in every round: the worst round stands for it.
        rank = ("failed_check", "crashed", "timeout", "oom", "error", "unsupported", "skipped", "checked", "ok")
        r_i, worst = min(recs, key=lambda x: rank.index(x[1]["status"]) if x[1]["status"] in rank else 4)
        out = {k: v for k, v in worst.items() if k != "type"}
        if worst["status"] == "ok":       # ok wherever it ran, but absent from some round
            out.update(status="error", reason=f"measured in {len(recs)} of {rounds} rounds only")
            out.pop("timing", None)
        elif len(recs) > 1:
            out["reason"] = f"round {r_i + 1}: {worst.get('reason', '')}"
        return out
    pooled, groups, medians, stalls = [], [], [], []
    for r_i, r in recs:
        s = r["timing"].get("samples_us") or [r["timing"]["median_us"]]
        stall = r["timing"].get("stall") or stats.stall_reason(s)
        if stall:
            stalls.append(f"round {r_i + 1}: {stall}")
        s = s if len(s) <= per_round else _thin(s, per_round)
        pooled += s
        groups.append(len(s))
        medians.append(r["timing"]["median_us"])
    summ = stats.summarize(pooled)
    t = dict(first["timing"])
    t.update(summ.as_dict())
    # Every process weighs the same in the pooled median, as in the comparison's bootstrap.
    t["median_us"] = stats.process_median(pooled, groups)
    t.update(groups=groups, round_median_us=medians, converged=all(r["timing"].get("converged") for _, r in recs),
             wall_s=round(sum(r["timing"].get("wall_s", 0) for _, r in recs), 3),
             n_measured=sum(r["timing"].get("n", 0) for _, r in recs), stalled_rounds=stalls,
             stall=("; ".join(stalls)[:300] if len(stalls) >= max(2, stats.CLUSTER_SHARE * len(recs)) else None))
    scale = first["timing"]["median_us"] / t["median_us"]
    out = dict(first, timing=t, noisy=t["stall"] is not None or any(r.get("noisy") for _, r in recs))
    for k in ("tflops", "gbps", "pct_of_peak", "pct_of_datasheet"):
        if isinstance(out.get(k), (int, float)):
            out[k] = out[k] * scale
    return out


def _run_one(cfg: ABConfig, tree: Path, out: Path) -> None:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(tree) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["KERNELMARK_NO_HISTORY"] = "1"       # the pooled runs are what ab reports
    cmd = [cfg.python, "-m", "kernelmark", "run", "--suite", cfg.suite, "--out", str(out), "--quiet",
           "--format", "csv", *cfg.run_args]
    try:
        p = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True, timeout=cfg.timeout_s)
    except subprocess.TimeoutExpired:
        raise ABError(f"`{' '.join(cmd)}` in {tree} ran past {cfg.timeout_s:.0f} s") from None
    if p.returncode != 0:
        tail = "\n".join((p.stderr or p.stdout).strip().splitlines()[-15:])
        raise ABError(f"`kernelmark run` failed (exit {p.returncode}) in the worktree {tree}:\n{tail}")


def run_ab(cfg: ABConfig, log: Callable[[str], None] = lambda m: None) -> tuple:
    """Measure both revisions; returns the (BASE, HEAD) pooled runs and the output folder."""
    if cfg.rounds < MIN_ROUNDS:
        raise ABError(rounds_problem(cfg.rounds))
    repo = repo_root(cfg.repo)
    sha_a, sha_b = resolve(repo, cfg.rev_a), resolve(repo, cfg.rev_b)
    changed = dirty(repo)
    if changed and not cfg.allow_dirty:
        raise ABError(f"{repo} has uncommitted changes ({', '.join(changed[:5])}"
                      f"{', ...' if len(changed) > 5 else ''}), which ab would not measure: it checks out "
                      f"{cfg.rev_a} and {cfg.rev_b}. Commit them, or pass --allow-dirty")
    out = Path(cfg.out_dir or Path("kernelmark-runs") / f"ab-{time.strftime('%Y%m%d-%H%M%S')}").resolve()
    out.mkdir(parents=True, exist_ok=True)
    wt_root = Path(tempfile.mkdtemp(prefix="kernelmark-ab-"))
    trees = {"A": wt_root / "a", "B": wt_root / "b"}
    made = []
    try:
        for side, sha in (("A", sha_a), ("B", sha_b)):
            _git(repo, "worktree", "add", "--detach", "--quiet", str(trees[side]), sha)
            made.append(trees[side])
        files: dict = {"A": [], "B": []}
        for r in range(cfg.rounds):
            for side in (("A", "B") if r % 2 == 0 else ("B", "A")):
                f = out / f"{side.lower()}-round{r + 1}.jsonl"
                log(f"kernelmark ab: round {r + 1}/{cfg.rounds}, {side} "
                    f"({(cfg.rev_a if side == 'A' else cfg.rev_b)} @ {(sha_a if side == 'A' else sha_b)[:10]})")
                _run_one(cfg, trees[side], f)
                files[side].append(f)
    finally:
        for t in made:
            _git(repo, "worktree", "remove", "--force", str(t), check=False)
        _git(repo, "worktree", "prune", check=False)
        _rmtree(wt_root)
    cmd = ["kernelmark", "ab", cfg.rev_a, cfg.rev_b, "--suite", cfg.suite, "--rounds", str(cfg.rounds)]
    base = pool(files["A"], str(out / "base.jsonl"), cmd)
    head = pool(files["B"], str(out / "head.jsonl"), cmd)
    return base, head, out


def _thin(xs: list, k: int) -> list:
    """k samples spread evenly over the measurement order."""
    step = len(xs) / k
    return [xs[int(i * step)] for i in range(k)]


def _rmtree(path: Path) -> None:
    import shutil
    shutil.rmtree(path, ignore_errors=True)
