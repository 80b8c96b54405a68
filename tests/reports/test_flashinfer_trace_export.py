"""`kernelmark export --format flashinfer-trace`: traces that flashinfer-bench's own data
models accept, and that kernelmark reads back as workloads."""
import json
import sys
from pathlib import Path

import pytest

from kernelmark import cli, results
from kernelmark.reports import flashinfer_trace
from kernelmark.suites import loader
from kernelmark.suites.fitrace.format import load_definition, load_workloads

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "suites"))
from fitrace_data import write_dataset  # noqa: E402

NO_MODELS = ("flashinfer-bench's data models are not installed: scripts/setup-venv.sh installs them "
             "(pip install --no-deps -r scripts/flashinfer-bench-models.txt); its setup line says why it could not")


@pytest.fixture(scope="module")
def traced(tmp_path_factory):
    """A real run of a small dataset (gemm: torch timed, triton checked only; moe unsupported),
    exported."""
    tmp = tmp_path_factory.mktemp("fitrace")
    root = write_dataset(tmp / "ds", ["gemm_n64_k32", "moe_fp8_e8_h64"])
    out = tmp / "run.jsonl"
    # In this process, without workers: what is tested is the export of a real run file.
    assert cli.main(["run", "--suite", str(root), "--out", str(out), "--budget", "0.01", "--quiet",
                     "--backends", "torch,triton", "--isolation", "none"]) == 0
    assert cli.main(["export", "--format", "flashinfer-trace", str(out), "-o", str(tmp / "exp")]) == 0
    return root, results.load(str(out)), tmp / "exp" / "traces"


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_one_trace_per_timed_workload_and_backend(traced):
    root, run, traces = traced
    files = sorted(p.relative_to(traces).as_posix() for p in traces.rglob("*.jsonl"))
    assert files == ["gemm/gemm_n64_k32.jsonl"]          # moe was unsupported: nothing to report
    ts = _lines(traces / "gemm" / "gemm_n64_k32.jsonl")
    timed = [r for r in run.records if r["status"] == "ok"]
    assert [(t["workload"]["uuid"], t["solution"]) for t in ts] == \
        [(r["trace"]["uuid"], "kernelmark/" + r["backend"]) for r in timed]
    assert all(r["backend"] == "torch" for r in timed)    # triton was checked, not timed: left out
    for t, r in zip(ts, timed):
        ev = t["evaluation"]
        assert ev["status"] == "PASSED"
        assert ev["performance"]["latency_ms"] == pytest.approx(r["timing"]["median_us"] / 1000)
        assert ev["performance"]["speedup_factor"] == pytest.approx(1.0)   # torch is its own baseline
        assert ev["correctness"]["max_absolute_error"] == r["check"]["max_abs"]
        assert ev["environment"]["libs"]["torch"] == run.header["device"]["versions"]["torch"]


def test_flashinfer_bench_models_accept_definitions_workloads_and_traces(traced):
    data = pytest.importorskip("flashinfer_bench.data", reason=NO_MODELS)
    root, run, traces = traced
    for d in (root / "definitions").rglob("*.json"):
        data.Definition.model_validate_json(d.read_text())
    for w in (root / "workloads").rglob("*.jsonl"):
        for line in w.read_text().splitlines():
            data.Trace.model_validate_json(line)
    ts = [data.Trace.model_validate_json(line)
          for line in (traces / "gemm" / "gemm_n64_k32.jsonl").read_text().splitlines()]
    assert ts and all(t.is_successful() and t.solution == "kernelmark/torch" for t in ts)


def test_failures_map_to_their_statuses_and_validate(traced):
    root, run, _ = traced
    ok = next(r for r in run.records if r["status"] == "ok")
    made = {}
    for st in ("failed_check", "error", "timeout", "checked", "unsupported"):
        rec = {**ok, "status": st, "reason": f"a {st} here"}
        rec.pop("timing")
        made[st] = flashinfer_trace.trace(rec, run.header, None)
    assert made["failed_check"]["evaluation"]["status"] == "INCORRECT_NUMERICAL"
    assert "performance" not in made["failed_check"]["evaluation"]
    assert made["error"]["evaluation"]["status"] == "RUNTIME_ERROR" and "a error here" in made["error"]["evaluation"]["log"]
    assert made["timeout"]["evaluation"]["status"] == "TIMEOUT"
    assert made["checked"] is None and made["unsupported"] is None     # never given a number
    data = pytest.importorskip("flashinfer_bench.data", reason=NO_MODELS)
    for st in ("failed_check", "error", "timeout"):
        data.Trace.model_validate(made[st])


def test_traces_round_trip_into_kernelmark(traced):
    root, run, traces = traced
    d = root / "definitions" / "gemm" / "gemm_n64_k32.json"
    tfile = traces / "gemm" / "gemm_n64_k32.jsonl"
    back = load_workloads(tfile, {"gemm_n64_k32": load_definition(d)})
    assert [(w.uuid, w.axes) for w in back] == [(r["trace"]["uuid"], r["trace"]["axes"])
                                                for r in run.records if r["status"] == "ok"]
    assert all(w.extra["solution"] == "kernelmark/torch" for w in back)
    again = loader.load(f"{d}:{tfile}")
    assert [c.shape for c in again.cases] == [r["shape"] for r in run.records if r["status"] == "ok"]


def test_export_of_a_run_without_traces_is_a_usage_error(tmp_path, capsys, traced):
    _, run, _ = traced
    plain = tmp_path / "plain.jsonl"
    lines = Path(run.path).read_text().splitlines()
    recs = [json.loads(x) for x in lines[1:]]
    for r in recs:
        r.pop("trace", None)
    plain.write_text("\n".join([lines[0], *map(json.dumps, recs)]) + "\n")
    assert cli.main(["export", "--format", "flashinfer-trace", str(plain), "-o", str(tmp_path / "o")]) == 2
    assert "no record comes from a FlashInfer-Trace suite" in capsys.readouterr().err
