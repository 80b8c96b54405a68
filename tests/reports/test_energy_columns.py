"""Energy columns of the long table and csv: J per call and work per joule from records."""
import pytest

from kernelmark.reports import energy, table


def _rec(e, bound="compute"):
    return {"op": "gemm", "label": "", "shape": {"m": 64}, "dtype": "fp32", "backend": "torch", "status": "ok",
            "timing": {"median_us": 10.0, "ci_rel": 0.01}, "bound": bound, "flops": 2e9, "bytes": 1e8,
            "energy": e}


def test_net_joules_and_gflop_per_joule():
    c = energy.cells(_rec({"status": "ok", "gross_j_per_call": 0.03, "net_j_per_call": 0.02,
                           "net_uncertainty_rel": 0.07, "uncertainty_rel": 0.05}))
    assert c["j_per_call"] == 0.02 and c["energy"] == "20 mJ net ±7%"
    assert c["work_per_j"] == "100 GFLOP/J"          # 2e9 FLOP / 0.02 J


def test_gross_when_no_idle_and_gb_per_joule_for_memory_bound():
    c = energy.cells(_rec({"status": "ok", "gross_j_per_call": 5e-5, "net_j_per_call": None,
                           "uncertainty_rel": 0.05}, bound="memory"))
    assert c["energy"] == "50 µJ gross ±5%" and c["work_per_j"] == "2e+03 GB/J"


def test_unavailable_says_why_and_no_number():
    c = energy.cells(_rec({"status": "unavailable", "reason": "no counter"}))
    assert c == {"energy": "energy: unavailable (no counter)"}


def test_csv_gets_energy_columns_only_when_records_have_energy():
    header = {"device": {"name": "x"}}
    rec = _rec({"status": "ok", "gross_j_per_call": 0.03, "net_j_per_call": 0.02})
    with_e = table.render(header, [rec], "csv").splitlines()
    assert with_e[0].endswith("energy,j_per_call,work_per_j") and "0.02" in with_e[1]
    rec.pop("energy")
    assert "energy" not in table.render(header, [rec], "csv").splitlines()[0]
