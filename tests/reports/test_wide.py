"""kernelmark/reports/wide.py: the default per-device table, one row per case and a column group
per backend, within 160 columns for every built-in suite on a CPU run and on a GPU run."""
import copy
import json

import pytest

from kernelmark import cli, results
from kernelmark.reports import table, wide
from kernelmark.suites import loader

from .conftest import read_lines


def _case_key(r):
    return (r["op"], r.get("label") or "", json.dumps(r["shape"], sort_keys=True), r["dtype"])


def _gpu_header(header):
    h = copy.deepcopy(header)
    h["device"].update(name="NVIDIA H100 80GB HBM3", kind="cuda", arch="sm_90", driver="570.86.15", load_avg=None,
                       datasheet={"name": "H100 SXM5 80GB", "copy_gbps": 3350.0,
                                  "tflops": {"bf16": 989.0, "fp16": 989.0, "fp32": 67.0, "fp8": 1979.0}})
    h["peaks"].update(copy_gbps=2900.0, tflops={"bf16": 700.0, "fp16": 690.0, "fp32": 51.0, "fp8": 1300.0})
    return h


def _synthetic(template, suite, kind, base_us):
    """A record for every (case, backend) of ``suite`` on a device of ``kind``, all timed: the
    widest table that suite can make (every backend a column). Times grow with the backend's
    position, every other one noisy, so rows have a fastest and cells their marks."""
    recs = []
    for c in suite.cases:
        if not c.runs_on(kind):
            continue
        for i, b in enumerate(c.backends):
            r = copy.deepcopy(template)
            r.update(op=c.op, label=c.label, shape=c.shape, dtype=c.dtype, backend=b, status="ok",
                     noisy=i % 2 == 0, pct_of_peak=0.0123 if i % 3 == 0 else 61.7, health={})
            r["timing"]["median_us"] = base_us * (1 + i / 10)
            recs.append(r)
    return recs


def test_compact_shapes_stay_unambiguous_for_every_builtin_suite():
    assert wide.compact_shape({"m": 1, "n": 6144, "k": 4096, "layout": "nt"}) == "m=1 n=6144 k=4096 nt"
    assert wide.compact_shape({"batch": 1, "seq": 64, "q_heads": 4, "kv_heads": 2, "head_dim": 64,
                               "causal": 1}) == "b=1 s=64 h=4/2 d=64 causal"
    assert wide.compact_shape({"batch": 4, "context": 100, "q_heads": 8, "kv_heads": 2, "head_dim": 64,
                               "page_size": 16, "ragged": 0}) == "b=4 ctx=100 h=8/2 d=64 pg=16"
    assert wide.compact_shape({"tokens": 16, "kv_heads": 8, "mystery": 3}) == "tok=16 kvh=8 mystery=3"
    # Two different shapes of one op never read the same.
    for path in loader.builtin_suites().values():
        seen = {}
        for c in loader.load(str(path)).cases:
            text, key = (c.op, wide.compact_shape(c.shape)), json.dumps(c.shape, sort_keys=True)
            assert seen.setdefault(text, key) == key, f"{text} stands for {seen[text]} and {key}"


def test_one_row_per_case_with_its_own_ops_backends(smoke_run):
    run = results.load(smoke_run)
    text = wide.render(run.header, run.records)
    assert "±95% CI" not in text and "not run here" in text       # the long columns are behind --long
    lines = text.splitlines()
    gemm = lines.index("gemm")
    end = lines.index("", gemm + 1)
    head, rows = lines[gemm + 1:gemm + 4], lines[gemm + 4:end]
    assert head[0].split() == ["torch", "triton"]                 # gemm's backends only: no attention ones
    cases = {_case_key(r) for r in run.records if r["op"] == "gemm"}
    assert len(rows) == len(cases)
    for r in run.records:
        if r["op"] == "gemm" and r["backend"] == "triton":       # interpreter: checked, never a time
            assert r["status"] == "checked"
    assert all(line.rstrip().endswith("checked") for line in rows)
    # Columns for the backends that ran in that op; skipped and unsupported ones are counted below.
    cols = {s.op: s.backends for s in wide.sections(run.records)}
    assert cols["gemm"] == ["torch", "triton"]
    assert cols["prefill_attention"] == ["triton", "torch-sdpa-math", "torch-sdpa-flash"]
    attn = lines.index("prefill_attention")
    heads = " ".join(lines[attn + 1:attn + 5])
    assert "sdpa-" in heads and "efficient" not in heads and "flash-attn" not in heads
    assert "torch-sdpa-efficient: unsupported" in text


def test_failed_cell_says_failed_and_the_fastest_is_marked(smoke_run, tmp_path, capsys):
    run = results.load(smoke_run)
    ok = next(r for r in run.records if r["op"] == "gemm" and r["status"] == "ok")
    fast = dict(copy.deepcopy(ok), backend="triton", noisy=False)
    fast["timing"]["median_us"] = ok["timing"]["median_us"] / 2
    bad = dict(copy.deepcopy(ok), backend="wrong", status="failed_check",
               check={"passed": False, "detail": "relative L2 error 0.3 exceeds 1e-05"})
    bad["timing"]["median_us"] = 777777.0            # a time a failed record must never show
    recs = [ok, fast, bad]
    text = wide.render(run.header, recs)
    row = next(line for line in text.splitlines() if line.startswith(ok["label"]))
    assert "FAILED" in row and "777,777" not in text
    assert row.count("*") == 1 and table._num(fast["timing"]["median_us"], 2) + "*" in row
    assert "relative L2 error 0.3" in text                      # the reason, under the table
    md = wide.render(run.header, recs, "md")
    assert f"**{table._num(fast['timing']['median_us'], 2)}**" in md and "| FAILED |" in md
    assert "**bold**: fastest" in md and "* fastest" not in md


def test_every_builtin_suite_fits_160_columns_on_cpu_and_gpu(smoke_run):
    objs = read_lines(smoke_run)
    run = results.load(smoke_run)
    template = next(r for r in run.records if r["status"] == "ok")
    real = wide.render(run.header, run.records)
    assert max(len(line) for line in real.splitlines()) <= wide.WIDTH
    gpu = _gpu_header(objs[0])
    for name, path in loader.builtin_suites().items():
        suite = loader.load(str(path))
        for kind, header, base_us in (("cuda", gpu, 12345.6), ("cpu", run.header, 123456.7)):
            recs = _synthetic(template, suite, kind, base_us)
            if not recs:
                continue
            text = wide.render(header, recs)
            width = max(len(line) for line in text.splitlines())
            assert width <= wide.WIDTH, f"suite {name} on {kind}: {width} columns"
            # Ops with many backends on a GPU (attention with its -repeat-kv rows, the decode ops with
            # torch-compile and three libraries) split over tables: the documented fallback, each part
            # within the width checked above.


def test_a_table_too_wide_is_narrowed_then_split(smoke_run):
    run = results.load(smoke_run)
    ok = next(r for r in run.records if r["status"] == "ok")
    label = "a label long enough that a label column cannot fit beside twelve backends"
    recs = []
    for i in range(12):
        # noisy set here, not inherited: whether the smoke run's case was noisy depends on the machine
        r = dict(copy.deepcopy(ok), label=label, backend=f"backend-number-{i}", noisy=(i == 0))
        r["timing"]["median_us"] = 100.0 + i
        recs.append(r)
    lines = wide.render(run.header, recs).splitlines()
    assert max(len(line) for line in lines) <= wide.WIDTH
    assert f"label: {label}" in lines and any(line.startswith("(2/") for line in lines)
    marked = [line for line in lines if "*" in line and not line.startswith("* fastest")]
    assert len(marked) == 1 and "~100*" in marked[0]                  # the fastest over all the tables


def test_long_format_and_csv_json_are_unchanged(smoke_run, capsys):
    run = results.load(smoke_run)
    assert wide.render(run.header, run.records, long=True) == table.render(run.header, run.records)
    for fmt in ("csv", "json"):
        assert wide.render(run.header, run.records, fmt) == table.render(run.header, run.records, fmt)
    assert cli.main(["report", smoke_run, "--long"]) == 0
    out = capsys.readouterr().out
    assert "±95% CI" in out and "checked, not timed (interpreter)" in out
    assert cli.main(["report", smoke_run]) == 0
    out = capsys.readouterr().out
    assert "±95% CI" not in out and "\ngemm\n" in out


def test_no_records_and_nothing_run_here(smoke_run):
    run = results.load(smoke_run)
    assert "no records" in wide.render(run.header, [])
    skipped = [dict(r, status="skipped", reason="libfoo is not installed") for r in run.records[:3]]
    text = wide.render(run.header, skipped)
    assert "no case ran here" in text and "libfoo is not installed" in text
