"""`kernelmark compare --energy` (kernelmark/reports/energy_compare.py): opt-in, bounded by the
counters' uncertainty, and never a regression (the exit status is the timing's)."""
import json

import pytest

from kernelmark import cli
from kernelmark.reports import energy_compare

HEADER = {"type": "header", "schema": 1, "kernelmark": "0.1.0", "command": ["kernelmark", "run", "--energy"],
          "suite": {"name": "synthetic"}, "started": "2026-12-01T00:00:00+0000", "run_id": "e0",
          "device": {"name": "Test CPU", "kind": "cpu", "arch": "x86_64", "versions": {}, "git": {},
                     "cpu": {"torch_threads": 1}, "host": {"hostname": "h"}},
          "peaks": {"copy_gbps": 10.0, "tflops": {"fp32": 0.1}}}


def _energy(net, gross, rel=0.05):
    return {"status": "ok", "gross_j_per_call": gross, "net_j_per_call": net, "window_s": 2.0, "calls": 1000,
            "uncertainty_rel": rel, "net_uncertainty_rel": rel if net else None, "idle_w": 1.0 if net else None,
            "avg_w": gross * 500, "resolution_j": 1e-6, "update_interval_s": 0.001}


def _rec(m, e=None):
    s = [round(10 + 0.01 * i, 4) for i in range(21)]       # the same times on both sides
    r = {"type": "record", "op": "gemm", "label": "", "shape": {"m": m, "n": m, "k": m, "layout": "nn"},
         "dtype": "fp32", "backend": "torch", "status": "ok",
         "timing": {"method": "cpu_perf_counter", "n": 21, "median_us": s[10], "ci_rel": 0.004, "samples_us": s}}
    if e is not None:
        r["energy"] = e
    return r


def _write(path, recs):
    path.write_text("".join(json.dumps(x) + "\n" for x in [HEADER, *recs, {"type": "footer", "wall_s": 1}]))
    return str(path)


def test_pair_verdicts_follow_the_counter_bounds():
    a = _rec(1, _energy(1.0e-3, 2e-3))
    assert energy_compare.compare_pair(a, _rec(1, _energy(1.5e-3, 3e-3)), 0.05).verdict == "more energy"
    assert energy_compare.compare_pair(a, _rec(1, _energy(0.6e-3, 1e-3)), 0.05).verdict == "less energy"
    # +8%, but 5% bounds on each side: [1.08·0.95/1.05, ...] = 0.977 is not above 1.05
    p = energy_compare.compare_pair(a, _rec(1, _energy(1.08e-3, 2e-3)), 0.05)
    assert p.verdict == "unchanged" and p.low == pytest.approx(1.08 * 0.95 / 1.05)
    assert p.high == pytest.approx(1.08 * 1.05 / 0.95) and p.kind == "net"


def test_net_is_never_compared_with_gross():
    p = energy_compare.compare_pair(_rec(1, _energy(1e-3, 2e-3)), _rec(1, _energy(None, 3e-3)), 0.05)
    assert p.kind == "gross" and p.ratio == pytest.approx(1.5)


def test_energy_on_one_side_only_is_named_not_compared():
    p = energy_compare.compare_pair(_rec(1, _energy(1e-3, 2e-3)),
                                    _rec(1, {"status": "unavailable", "reason": "no counter"}), 0.05)
    assert p.verdict == "not measured" and p.ratio is None and "HEAD: energy unavailable: no counter" in p.note


def test_compare_energy_is_opt_in_and_never_changes_the_exit_status(tmp_path, capsys):
    base = _write(tmp_path / "a.jsonl", [_rec(1, _energy(1e-3, 2e-3)), _rec(2, _energy(1e-3, 2e-3))])
    head = _write(tmp_path / "b.jsonl", [_rec(1, _energy(2e-3, 4e-3)), _rec(2, _energy(1e-3, 2e-3))])
    assert cli.main(["compare", base, head]) == 0
    plain_out = capsys.readouterr().out
    assert "J/call" not in plain_out and "more energy" not in plain_out
    assert cli.main(["compare", base, head, "--energy"]) == 0          # twice the energy: still exit 0
    out = capsys.readouterr().out
    assert "never a regression" in out and "1 more energy, 1 unchanged" in out
    assert cli.main(["compare", base, head, "--energy", "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["regressions"] == 0 and [p["verdict"] for p in doc["energy"]] == ["more energy", "unchanged"]
    assert doc["energy"][0]["ratio"] == pytest.approx(2.0)
