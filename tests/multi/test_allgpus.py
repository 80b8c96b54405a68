"""`kernelmark run --all-gpus`: per-GPU command lines, parallel and serial launch, the node
summary and its outlier rule. The GPU list is faked at its boundary (allgpus.list_gpus); the
per-GPU run is either faked (allgpus.run_gpu writes a synthetic run file) or real, with each
fake "GPU" measured as the CPU (allgpus.device_spec)."""
import json
import threading

import pytest

from kernelmark.multi import allgpus
from kernelmark import cli, results
from kernelmark.cli import multi as cli_multi

CASES = [("gemm", {"m": 64, "n": 64, "k": 64, "layout": "nn"}), ("gemm", {"m": 128, "n": 64, "k": 64, "layout": "nn"}),
         ("kv_append", {"tokens": 16})]


def _write_run(path, medians, statuses=None):
    """A run file with one record per case: ok with the given median, or the given status."""
    statuses = statuses or {}
    w = results.RunWriter(path)
    w.header({"device": {"name": "Fake GPU", "kind": "cuda"}, "peaks": {"tflops": {}},
              "suite": {"name": "fake"}, "started": "2026-01-01T00:00:00"})
    for i, ((op, shape), med) in enumerate(zip(CASES, medians), 1):
        rec = {"op": op, "shape": shape, "dtype": "bf16", "backend": "torch", "case_index": i,
               "status": statuses.get(i, "ok")}
        if rec["status"] == "ok":
            rec["timing"] = {"median_us": med, "ci_rel": 0.01, "n": 10, "samples_us": [med] * 10}
        else:
            rec["reason"] = "synthetic"
        w.record(rec)
    w.footer({"finished": "now"})
    w.close()


@pytest.fixture
def fake_node(monkeypatch):
    """Four fake GPUs; run_gpu writes synthetic results: gpu2 is 15% slow on case 2,
    gpu3 fails the check of case 3 that the others pass."""
    monkeypatch.setattr(allgpus, "list_gpus", lambda: [(i, f"Fake GPU {i}") for i in range(4)])
    monkeypatch.setenv("KERNELMARK_NO_HISTORY", "1")
    state = {"argv": {}, "running": 0, "most": 0, "lock": threading.Lock(), "order": []}
    meeting = threading.Barrier(4, timeout=10)

    def fake_run_gpu(job, parallel=True):
        with state["lock"]:
            state["running"] += 1
            state["most"] = max(state["most"], state["running"])
            state["argv"][job.index] = job.argv
            state["order"].append(job.index)
        if state.get("expect_parallel"):
            meeting.wait()          # all four must be running at once, or this times out
        meds = [100.0, 200.0, 50.0]
        if job.index == 2:
            meds[1] *= 1.15
        if job.index == 1:
            meds[0] *= 1.05         # within the 10% threshold
        _write_run(job.run_file, meds, {3: "failed_check"} if job.index == 3 else None)
        with state["lock"]:
            state["running"] -= 1
        return 0
    monkeypatch.setattr(allgpus, "run_gpu", fake_run_gpu)
    return state


def test_all_gpus_in_parallel_flags_the_slow_and_the_failing_card(fake_node, tmp_path, capsys):
    fake_node["expect_parallel"] = True
    out = tmp_path / "node"
    rc = cli.main(["run", "--all-gpus", "--suite", "smoke", "--budget", "0.1", "--out", str(out), "--quiet"])
    assert rc == allgpus.OUTLIER
    assert fake_node["most"] == 4
    summary = json.loads((out / allgpus.SUMMARY_NAME).read_text())
    assert summary["outliers"] == [2, 3] and summary["cases"] == 3 and summary["threshold"] == 0.1
    g = {x["index"]: x for x in summary["gpus"]}
    assert [s["case"].split()[0:2] for s in g[2]["slow_cases"]] == [["gemm", "m=128"]]
    assert g[2]["slow_cases"][0]["ratio"] == pytest.approx(230 / 200)
    assert g[3]["failed_cases"] == [{"case": "kv_append tokens=16 bf16 torch", "status": "failed_check"}]
    assert not g[0]["outlier"] and not g[1]["outlier"] and g[1]["worst_ratio"] == pytest.approx(1.05)
    table = capsys.readouterr().out
    assert "OUTLIER" in table and "gpu2" in table and "+15.0%" in table
    for i in range(4):
        argv = fake_node["argv"][i]
        assert argv[argv.index("--device") + 1] == f"cuda:{i}"
        assert argv[argv.index("--out") + 1] == str(out / f"gpu{i}.jsonl")
        assert "--all-gpus" not in argv and argv.count("--out") == 1
        assert argv[argv.index("--budget") + 1] == "0.1" and argv[argv.index("--suite") + 1] == "smoke"


def test_serial_runs_one_gpu_at_a_time_and_threshold_is_honoured(fake_node, tmp_path):
    out = tmp_path / "node"
    rc = cli.main(["run", "--all-gpus", "--serial", "--outlier-threshold", "20%", "--suite", "smoke",
                   "--out", str(out), "--quiet"])
    assert fake_node["most"] == 1 and fake_node["order"] == [0, 1, 2, 3]
    summary = json.loads((out / allgpus.SUMMARY_NAME).read_text())
    assert summary["outliers"] == [3] and rc == allgpus.OUTLIER    # 15% is under 20%; the failure still counts


def test_a_gpu_whose_run_fails_is_flagged(fake_node, tmp_path, monkeypatch):
    ok = allgpus.run_gpu

    def dies_on_gpu1(job):
        return 1 if job.index == 1 else ok(job)
    monkeypatch.setattr(allgpus, "run_gpu", dies_on_gpu1)
    cli.main(["run", "--all-gpus", "--suite", "smoke", "--out", str(tmp_path), "--quiet"])
    g = json.loads((tmp_path / allgpus.SUMMARY_NAME).read_text())["gpus"][1]
    assert g["outlier"] and g["problem"].startswith("run failed (exit status 1)")


def test_outliers_against_the_node_median():
    med = {"a": {0: 100.0, 1: 101.0, 2: 99.0, 3: 111.0, 4: 100.0}, "b": {0: 10.0, 1: 10.0, 2: 10.0, 3: 10.5},
           "only_one_gpu": {0: 5.0}}
    got = allgpus.outliers(med, 0.10)
    assert "only_one_gpu" not in got
    assert got["a"]["node_median_us"] == 100.0 and got["a"]["slow"] == {3: pytest.approx(1.11)}
    assert got["b"]["slow"] == {}
    assert allgpus.outliers(med, 0.12)["a"]["slow"] == {}
    # A card that is fast is never an outlier; one slower card in eight is.
    eight = {"c": {i: (150.0 if i == 5 else 100.0) for i in range(8)}}
    assert allgpus.outliers(eight, 0.1)["c"]["slow"] == {5: 1.5}


def test_threshold_parsing():
    assert allgpus.fraction("10%") == pytest.approx(0.1) and allgpus.fraction("0.25") == 0.25
    for bad in ("ten", "-5%", "0"):
        with pytest.raises(cli.UsageError):
            allgpus.fraction(bad)


def test_passthrough_drops_the_node_options_even_abbreviated():
    cli._parser()       # builds the run parser and hands it to cli_multi
    argv = ["--suite", "smoke", "--all", "--out", "d", "--device=cuda", "--outlier-t", "5%", "--budget", "0.1",
            "--ser", "--ops", "gemm", "--out=x"]
    assert allgpus.passthrough(argv, cli_multi.RUN_PARSER) == ["--suite", "smoke", "--budget", "0.1", "--ops", "gemm"]


def test_all_gpus_usage_errors(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(allgpus, "list_gpus", lambda: [])
    assert cli.main(["run", "--all-gpus", "--suite", "smoke"]) == cli.USAGE_ERROR
    assert "no GPU is visible" in capsys.readouterr().err
    monkeypatch.setattr(allgpus, "list_gpus", lambda: [(0, "x")])
    assert cli.main(["run", "--all-gpus", "--device", "cuda:1", "--suite", "smoke"]) == cli.USAGE_ERROR
    f = tmp_path / "file"
    f.write_text("")
    assert cli.main(["run", "--all-gpus", "--suite", "smoke", "--out", str(f)]) == cli.USAGE_ERROR
    assert cli.main(["run", "--serial", "--suite", "smoke"]) == cli.USAGE_ERROR


def test_all_gpus_end_to_end_with_cpu_standing_in_for_gpus(monkeypatch, tmp_path, capsys):
    """Real per-GPU processes: two fake GPUs, each measured as the CPU."""
    monkeypatch.setattr(allgpus, "list_gpus", lambda: [(0, "fake0"), (1, "fake1")])
    monkeypatch.setattr(allgpus, "device_spec", lambda i: "cpu")
    monkeypatch.setenv("KERNELMARK_NO_HISTORY", "1")
    suite = tmp_path / "tiny.toml"
    suite.write_text('name = "tiny"\n[[case]]\nop = "gemm"\nbackends = ["torch"]\ndtypes = ["fp32"]\n'
                     'shapes = [{m = 32, n = 32, k = 32}, {m = 64, n = 64, k = 64}]\n')
    out = tmp_path / "node"
    rc = cli.main(["run", "--all-gpus", "--suite", str(suite), "--budget", "0.05", "--isolation", "none",
                   "--outlier-threshold", "500%", "--out", str(out), "--quiet"])
    assert rc == 0, capsys.readouterr()
    for i in range(2):
        run = results.load(str(out / f"gpu{i}.jsonl"))
        assert run.complete and [r["status"] for r in run.records] == ["ok", "ok"]
        assert (out / f"gpu{i}.txt").read_text().strip()
    summary = json.loads((out / allgpus.SUMMARY_NAME).read_text())
    assert summary["cases"] == 2 and summary["outliers"] == [] and "fewer than 3 GPUs" in summary["note"]
    assert all(g["cases_compared"] == 2 and g["exit_status"] == 0 for g in summary["gpus"])
