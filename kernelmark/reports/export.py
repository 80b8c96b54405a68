"""Export a run file as pytest-benchmark JSON.

The output is what ``pytest --benchmark-json`` writes, so ``pytest-benchmark compare``
loads it and github-action-benchmark's ``pytest`` tool accepts it (that tool reads
``benchmarks[].fullname`` and ``stats.ops``, ``stats.mean``, ``stats.stddev``,
``stats.rounds``). Times are in seconds, as pytest-benchmark stores them.

Only timed (``ok``) records become benchmarks: pytest-benchmark has no place for a
failed check or an untimed case. The statistics are computed from the stored samples
(``samples_us``, at most 1000 per record) by pytest-benchmark's own ``Stats``, so every
field means exactly what it means there; ``data`` holds the per-call times and
``iterations`` the calls per sample (``timing.inner``). ``fullname`` is stable across
runs (op, shape, dtype, backend), so a dashboard keeps one series per case.
"""

from __future__ import annotations


from kernelmark.reports.table import shape_text
from kernelmark.results import strict_json


def benchmark_name(rec: dict) -> str:
    parts = (shape_text(rec["shape"]), rec["dtype"], rec["backend"])
    return f"{rec['op']}[{' '.join(p for p in parts if p)}]"


def _stats(samples_s: list) -> dict:
    from pytest_benchmark.stats import Stats
    st = Stats()
    for x in samples_s:
        st.update(x)
    return st.as_dict()


def benchmark(rec: dict, suite: str) -> dict:
    t = rec["timing"]
    data = [x * 1e-6 for x in (t.get("samples_us") or [t["median_us"]])]
    stats = _stats(data)
    stats["data"] = data
    stats["iterations"] = int(t.get("inner") or 1)
    params = {**rec["shape"], "dtype": rec["dtype"], "backend": rec["backend"]}
    return {
        "group": rec["op"] + (f" ({rec['label']})" if rec.get("label") else ""),
        "name": benchmark_name(rec),
        "fullname": f"kernelmark/{suite}::{benchmark_name(rec)}",
        "params": params,
        "param": "-".join(f"{k}={v}" for k, v in params.items()),
        "extra_info": {k: rec.get(k) for k in ("tflops", "gbps", "pct_of_peak", "bound", "flops", "bytes")} | {
            "kernelmark_median_us": t["median_us"], "kernelmark_n": t.get("n"),
            "ci_low_s": t.get("ci_low_us", 0) * 1e-6, "ci_high_s": t.get("ci_high_us", 0) * 1e-6,
            "method": t.get("method"), "cache": t.get("cache"), "converged": t.get("converged")},
        "options": {"disable_gc": False, "timer": t.get("method"), "min_rounds": None,
                    "max_time": t.get("wall_s"), "min_time": None, "warmup": True},
        "stats": stats,
    }


def to_pytest_benchmark(run) -> dict:
    """The pytest-benchmark JSON document for a loaded run."""
    try:
        from pytest_benchmark import __version__ as pb_version
    except ImportError:          # only the version string is borrowed then
        pb_version = "5.0.0"
    h = run.header
    d = h.get("device") or {}
    cpu, v, host, git = d.get("cpu") or {}, d.get("versions") or {}, d.get("host") or {}, d.get("git") or {}
    machine = {
        "node": host.get("hostname", ""), "processor": cpu.get("model", ""), "machine": d.get("arch") or "",
        "python_compiler": "", "python_implementation": "CPython",
        "python_implementation_version": v.get("python", ""), "python_version": v.get("python", ""),
        "python_build": [], "release": "", "system": (host.get("os") or "").split("-")[0],
        "cpu": {"brand_raw": cpu.get("model", ""), "count": cpu.get("logical_cpus")},
        "kernelmark": {"device": d.get("name"), "kind": d.get("kind"), "arch": d.get("arch"),
                       "driver": d.get("driver"), "versions": v, "run_id": h.get("run_id")},
    }
    commit = {"id": git.get("commit") or "unversioned", "time": h.get("started"),
              "author_time": h.get("started"), "dirty": bool(git.get("dirty")), "project": "kernelmark",
              "branch": "(unknown)"}
    suite = (h.get("suite") or {}).get("name") or "suite"
    benches = [benchmark(r, suite) for r in run.records if r["status"] == "ok"]
    return {"machine_info": machine, "commit_info": commit, "benchmarks": benches,
            "datetime": h.get("started"), "version": pb_version}


def write_pytest_benchmark(run, path: str) -> int:
    """Write the document; returns how many benchmarks it holds."""
    doc = to_pytest_benchmark(run)
    with open(path, "w", encoding="utf-8") as f:
        f.write(strict_json(doc, indent=1) + "\n")
    return len(doc["benchmarks"])
