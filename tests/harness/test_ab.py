"""kernelmark/harness/ab.py and `kernelmark ab`: two revisions of a throwaway clone, interleaved,
pooled, compared; a dirty tree and an unknown revision refused."""
import json
import subprocess
from pathlib import Path

import pytest

from kernelmark.harness import ab
from kernelmark import cli, results

ROOT = Path(__file__).resolve().parents[2]

# The revision under test in the clone: gemm's torch backend busy-waits 100 us per call
# (the cases take ~10 us). Committed in the throwaway clone only.
SLOWDOWN = '''def _torch_run(x):
    import time as _time
    _end = _time.perf_counter_ns() + 100_000
    while _time.perf_counter_ns() < _end:
        pass
'''


def _git(repo, *args):
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True)


@pytest.fixture(scope="module")
def clone(tmp_path_factory):
    repo = tmp_path_factory.mktemp("ab") / "repo"
    subprocess.run(["git", "clone", "--quiet", "--depth", "1", f"file://{ROOT}", str(repo)], check=True)
    _git(repo, "config", "user.email", "test@example.com")
    _git(repo, "config", "user.name", "test")
    gemm = repo / "kernelmark" / "ops" / "gemm.py"
    text = gemm.read_text()
    assert "def _torch_run(x):\n" in text
    gemm.write_text(text.replace("def _torch_run(x):\n", SLOWDOWN, 1))
    _git(repo, "commit", "--quiet", "-am", "slow gemm (test)")
    return repo


def test_ab_catches_a_slowed_revision(clone, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")     # a 2-core machine shared with other tests
    out = tmp_path / "out"
    status = cli.main(["ab", "HEAD~1", "HEAD", "--repo", str(clone), "--suite", "smoke", "--ops", "gemm",
                       "--dtypes", "fp32", "--backends", "torch", "--budget", "0.02", "--rounds", "3",
                       "--isolation", "none", "--out-dir", str(out), "--threshold", "30%", "--format", "json"])
    cap = capsys.readouterr()
    assert status == 1, cap.err
    doc = json.loads(cap.out)
    # Slower, unless the slowed side stalled in most rounds (this 2-core machine is shared): then
    # noisy, and said.
    assert all(p["verdict"] == "slower" or (p["verdict"] == "noisy" and "HEAD round" in p["note"])
               for p in doc["pairs"]), [(p["verdict"], p["ratio"], p["note"]) for p in doc["pairs"]]
    assert len(doc["pairs"]) == 4 and doc["geomean_ratio"] > 2
    # Interleaved rounds, each side's pooled file with one sample group per process.
    err = cap.err
    order = [err.index(f"round {r}/3, {s}") for r, s in ((1, "A"), (1, "B"), (2, "B"), (2, "A"), (3, "A"), (3, "B"))]
    assert order == sorted(order)
    base, head = results.load(str(out / "base.jsonl")), results.load(str(out / "head.jsonl"))
    for run in (base, head):
        assert run.header["pooled"]["rounds"] == 3 and len(run.records) == 4
        for r in run.records:
            t = r["timing"]
            assert len(t["groups"]) == 3 and sum(t["groups"]) == len(t["samples_us"]) == t["n"]
        # Both revisions ran with one thread count (the ab driver's default, passed to both).
        assert run.header["device"]["cpu"]["torch_threads"] == 1
    commits = {run.header["device"]["git"]["commit"] for run in (base, head)}
    assert len(commits) == 2                                   # each side ran its own revision
    assert sorted(p.name for p in out.iterdir()) == ["a-round1.jsonl", "a-round2.jsonl", "a-round3.jsonl",
                                                      "b-round1.jsonl", "b-round2.jsonl", "b-round3.jsonl",
                                                      "base.jsonl", "head.jsonl"]
    worktrees = subprocess.run(["git", "-C", str(clone), "worktree", "list"], capture_output=True, text=True).stdout
    assert len(worktrees.strip().splitlines()) == 1            # temporary worktrees removed


def test_ab_refuses_a_dirty_tree_and_unknown_revisions(clone, tmp_path, capsys):
    args = ["--repo", str(clone), "--suite", "smoke", "--out-dir", str(tmp_path / "o")]
    assert cli.main(["ab", "HEAD~1", "nosuchrev", *args]) == 2
    assert "unknown revision 'nosuchrev'" in capsys.readouterr().err
    readme = clone / "README.md"
    before = readme.read_text()
    readme.write_text(before + "\nedited\n")
    try:
        assert cli.main(["ab", "HEAD~1", "HEAD", *args]) == 2
        err = capsys.readouterr().err
        assert "uncommitted changes (README.md)" in err and "pass --allow-dirty" in err
    finally:
        readme.write_text(before)
    assert cli.main(["ab", "HEAD~1", "HEAD", "--repo", str(tmp_path)]) == 2
    assert "not inside a git repository" in capsys.readouterr().err


def test_ab_refuses_fewer_than_three_rounds_before_any_work(tmp_path, capsys):
    out = tmp_path / "o"
    for rounds in ("1", "2"):
        assert cli.main(["ab", "HEAD~1", "HEAD", "--repo", str(tmp_path), "--rounds", rounds,
                         "--out-dir", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"kernelmark: error: --rounds {rounds}: ab needs at least 3 processes per side")
        assert "Traceback" not in err
    assert not out.exists()


def _round_file(path, records, run_id):
    w = results.RunWriter(str(path))
    w.header({"kernelmark": "0.1.0", "suite": {"name": "t"}, "device": {"name": "cpu", "kind": "cpu"},
              "peaks": {}, "started": "2026-11-01T00:00:00+0000", "run_id": run_id})
    for r in records:
        w.record(r)
    w.footer({"finished": "x", "wall_s": 1.0})
    w.close()
    return str(path)


def _ok(m, samples, median, **timing):
    return {"op": "gemm", "shape": {"m": m}, "dtype": "fp32", "backend": "torch", "status": "ok", "tflops": 2.0,
            "timing": {"n": len(samples), "median_us": median, "ci_rel": 0.01, "samples_us": samples,
                       "method": "cpu_perf_counter", "converged": True, **timing}}


def test_pool_keeps_each_process_as_a_group(tmp_path):
    f1 = _round_file(tmp_path / "r1.jsonl", [_ok(1, [10.0] * 700, 10.0), _ok(2, [5.0] * 3, 5.0),
                                             _ok(3, [1.0] * 3, 1.0)], "r1")
    f2 = _round_file(tmp_path / "r2.jsonl", [_ok(1, [12.0] * 700, 12.0), _ok(2, [6.0] * 3, 6.0),
                                             {"op": "gemm", "shape": {"m": 3}, "dtype": "fp32", "backend": "torch",
                                              "status": "crashed", "reason": "signal 11"}], "r2")
    run = ab.pool([f1, f2], str(tmp_path / "pooled.jsonl"), ["test"])
    big, small, crashed = run.records
    assert big["timing"]["groups"] == [500, 500] and len(big["timing"]["samples_us"]) == 1000
    assert big["timing"]["round_median_us"] == [10.0, 12.0] and big["timing"]["n"] == 1000
    assert big["tflops"] == pytest.approx(2.0 * 10.0 / big["timing"]["median_us"])
    assert small["timing"]["groups"] == [3, 3]
    assert crashed["status"] == "crashed" and crashed["reason"] == "round 2: signal 11"
    assert run.header["pooled"]["run_ids"] == ["r1", "r2"] and run.header["run_id"] not in ("r1", "r2")


def test_pool_weighs_processes_equally_and_marks_stalled_rounds(tmp_path):
    quick = [10.0] * 600
    slow = [13.0] * 20                               # a slowed process takes fewer samples
    # The third round's samples stalled (from a revision that recorded no stall: found in them).
    stall = [6.0] * 3 + [8000.0] * 7
    files = [_round_file(tmp_path / f"r{i}.jsonl", recs, f"r{i}") for i, recs in enumerate([
        [_ok(1, quick, 10.0), _ok(2, [5.0] * 9, 5.0)],
        [_ok(1, slow, 13.0), _ok(2, [5.0] * 9, 5.0)],
        [_ok(1, slow, 13.0), _ok(2, stall, 8000.0)],
        [_ok(1, slow, 13.0), _ok(2, [5.0] * 9, 5.0, stall="stalls: 9 of 9 samples waited for a CPU")]])]
    one, two = ab.pool(files, str(tmp_path / "pooled.jsonl"), ["test"]).records
    assert one["timing"]["groups"] == [250, 20, 20, 20]
    assert one["timing"]["median_us"] == 13.0           # 3 of 4 processes; by sample count it would be 10
    assert one["tflops"] == pytest.approx(2.0 * 10.0 / 13.0)
    assert one["timing"]["stall"] is None and one["timing"]["stalled_rounds"] == []
    t = two["timing"]
    assert [x.split(":")[0] for x in t["stalled_rounds"]] == ["round 3", "round 4"]
    assert t["stall"].startswith("round 3: stalls: median 8000") and two["noisy"]


@pytest.mark.parametrize("rounds", [3, 5])
def test_pool_with_one_stalled_round_keeps_its_median(tmp_path, rounds):
    files = [_round_file(tmp_path / f"r{i}.jsonl", [_ok(1, s, s[4])], f"r{i}") for i, s in enumerate(
        [[10.0] * 9] * (rounds - 1) + [[10.0] * 2 + [9000.0] * 7])]
    (one,) = ab.pool(files, str(tmp_path / "pooled.jsonl"), ["test"]).records
    assert one["timing"]["median_us"] == 10.0 and one["timing"]["stall"] is None
    assert len(one["timing"]["stalled_rounds"]) == 1
