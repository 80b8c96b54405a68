"""Energy in the default wide view, the long table and the cross-device table, from synthetic
records whose energy fields follow runcheck.py's schema: shown only where measured, never
estimated, and a run without energy looks as it always did."""
import copy
import json

import pytest

from kernelmark import results
from kernelmark.reports import crossdevice, energy, table, wide

HEADER = {"type": "header", "schema": 1, "kernelmark": "0.1.0", "command": ["kernelmark", "run", "--energy"],
          "suite": {"name": "synthetic"}, "started": "2026-12-01T00:00:00+0000", "run_id": "e0",
          "device": {"name": "Test GPU", "kind": "cuda", "arch": "sm_90", "versions": {}, "git": {},
                     "host": {"hostname": "h"}},
          "peaks": {"copy_gbps": 1000.0, "tflops": {"fp32": 50.0}}}


def _energy(net, gross, calls=1000):
    return {"status": "ok", "reason": None, "counter": "nvml", "gross_j_per_call": gross, "net_j_per_call": net,
            "idle_w": None if net is None else (gross - net) * calls / 2.0, "avg_w": gross * calls / 2.0,
            "window_s": 2.0, "calls": calls, "energy_j": gross * calls, "uncertainty_rel": 0.05,
            "net_uncertainty_rel": 0.08 if net else None, "resolution_j": 1e-3, "update_interval_s": 0.1}


UNAVAILABLE = {"status": "unavailable", "reason": "no CPU energy counter: no powercap"}


def _rec(m, us, e=None, backend="torch", bound="compute"):
    r = {"type": "record", "op": "gemm", "label": "", "shape": {"m": m, "n": m, "k": m, "layout": "nn"},
         "dtype": "fp32", "backend": backend, "status": "ok", "flops": 2 * m ** 3, "bytes": 12 * m * m,
         "bound": bound, "timing": {"median_us": us, "ci_rel": 0.004}, "tflops": 2 * m ** 3 / us / 1e6,
         "gbps": 12 * m * m / us / 1e3, "pct_of_peak": 40.0}
    if e is not None:
        r["energy"] = e
    return r


def _header(**dev):
    h = {k: v for k, v in copy.deepcopy(HEADER).items() if k != "type"}
    h["device"].update(dev)
    return h


def _stripped(recs):
    return [{k: v for k, v in r.items() if k != "energy"} for r in recs]


def test_wide_view_adds_energy_columns_where_measured():
    recs = [_rec(64, 10.0, _energy(2e-5, 4e-5)), _rec(64, 8.0, _energy(None, 3e-5), backend="triton"),
            _rec(128, 30.0, UNAVAILABLE, bound="memory"), _rec(128, 20.0, _energy(2e-4, 3e-4), "triton", "memory")]
    text = wide.render(_header(), recs, "table")
    lines = text.splitlines()
    sub = next(x for x in lines if x.lstrip().startswith("shape"))
    assert sub.count("energy") == 2 and sub.count("per J") == 2       # one group per backend
    row64 = next(x for x in lines if x.startswith("m=64"))
    assert "20 µJ" in row64 and "26.2 GFLOP/J" in row64          # 2·64³ FLOP / 20 µJ
    assert "30 µJ g" in row64                                     # no idle: gross, marked
    row128 = next(x for x in lines if x.startswith("m=128"))
    assert row128.split()[7] == "-" and "200 µJ" in row128 and "0.983 GB/J" in row128     # 12·128² B / 200 µJ
    assert "energy - (1 row): energy unavailable: no CPU energy counter: no powercap" in text
    assert "energy per call and work per joule" in text


def test_wide_view_without_energy_is_unchanged():
    recs = [_rec(64, 10.0, _energy(2e-5, 4e-5)), _rec(128, 30.0, _energy(2e-4, 3e-4))]
    plain_text = wide.render(_header(), _stripped(recs), "table")
    assert "energy" not in plain_text and "per J" not in plain_text
    # the same run with energy differs only by the energy columns, the intro and the notes
    with_e = wide.render(_header(), recs, "table")
    sub = next(x for x in with_e.splitlines() if x.lstrip().startswith("shape"))
    assert sub.rstrip().endswith("µs % peak energy        per J")
    for md in (False, True):
        t = wide.render(_header(), _stripped(recs), "md" if md else "table")
        assert "energy" not in t


def test_wide_view_of_a_run_with_no_counter_keeps_its_columns_and_says_why():
    recs = [_rec(64, 10.0, UNAVAILABLE), _rec(128, 30.0, UNAVAILABLE)]
    text = wide.render(_header(kind="cpu"), recs, "table")
    cols = wide.render(_header(kind="cpu"), _stripped(recs), "table")
    assert text.splitlines()[:8] == cols.splitlines()[:8]       # title, intro and the table itself
    assert "energy not measured on any timed row (2 rows): energy unavailable: no CPU energy counter" in text
    assert "µJ" not in text and "GFLOP/J" not in text


def test_wide_md_has_energy_headers_and_escapes_reasons():
    recs = [_rec(64, 10.0, _energy(2e-5, 4e-5)),
            _rec(128, 30.0, {"status": "error", "reason": "bad <b>counter</b>\nnext"})]
    text = wide.render(_header(), recs, "md")
    assert "| torch µs | torch % peak | torch energy | torch per J |" in text
    assert "|---|---|---:|---:|---:|---:|" in text
    note = next(x for x in text.splitlines() if "energy error" in x)
    assert "\\<b\\>counter" in note and "<b>" not in note


def test_long_table_shows_energy_in_words_and_csv_keeps_the_number():
    recs = [_rec(64, 10.0, _energy(2e-5, 4e-5))]
    heads, body = table.cells(recs)
    assert heads[-2:] == ["energy/call", "per J"] and "J/call" not in heads
    assert body[0][-2:] == ["20 µJ net ±8%", "26.2 GFLOP/J"]
    csv_lines = table.render(_header(), recs, "csv").splitlines()
    assert csv_lines[0].endswith("energy,j_per_call,work_per_j") and ",2e-05," in csv_lines[1]


def test_joules_above_one_are_written_in_joules():
    assert energy.fmt_joules(2.5) == "2.5 J" and energy.fmt_joules(0.0021) == "2.1 mJ"
    assert energy.fmt_joules(-3e-6) == "-3 µJ"


# ---------------------------------------------------------------- cross-device

def _run(tmp_path, name, recs):
    h = copy.deepcopy(HEADER)
    h["device"]["name"] = name
    p = tmp_path / f"{name.replace(' ', '_')}.jsonl"
    p.write_text("".join(json.dumps(x) + "\n" for x in [h, *recs, {"type": "footer", "wall_s": 1}]))
    return results.load(str(p))


def test_cross_device_energy_column_where_both_have_energy(tmp_path):
    a = _run(tmp_path, "GPU A", [_rec(64, 10.0, _energy(2e-5, 4e-5)), _rec(128, 30.0, _energy(None, 8e-5))])
    b = _run(tmp_path, "GPU B", [_rec(64, 5.0, _energy(1e-5, 3e-5)), _rec(128, 20.0, _energy(1e-5, 2e-5))])
    ct = crossdevice.build([a, b])
    keys, groups, body = crossdevice.headed_rows(ct)
    assert groups[0][1][-1] == "work/J" and groups[1][1][-2:] == ["work/J", "energy vs GPU A"]
    r64, r128 = body
    assert r64[-1] == "×2.00" and r64[-2] == "52.4"           # 2e-5 / 1e-5 net; 2·64³ / 1e-5 J / 1e9
    # A has no idle on the 128 row: compared gross with gross (8e-5 / 2e-5), never net with gross
    assert r128[-1] == "×4.00 g"
    s, = crossdevice.summary(ct)
    assert s["energy"]["rows"] == 2 and s["energy"]["geomean"] == pytest.approx((2.0 * 4.0) ** 0.5)
    text = crossdevice.render(ct, "table")
    assert "geometric-mean energy efficiency ×2.83" in text
    row = json.loads(crossdevice.render(ct, "json"))["rows"][1]["devices"]["GPU B"]
    assert row["energy_vs_baseline"] == pytest.approx(4.0) and row["energy_vs_baseline_kind"] == "gross"
    assert row["energy_kind"] == "net" and row["j_per_call"] == pytest.approx(1e-5)
    assert crossdevice.render(ct, "csv").splitlines()[0].endswith("energy_vs_baseline,energy_vs_baseline_kind")


def test_cross_device_without_energy_on_both_sides_has_no_energy_column(tmp_path):
    a = _run(tmp_path, "GPU A", [_rec(64, 10.0, _energy(2e-5, 4e-5))])
    b = _run(tmp_path, "GPU B", [_rec(64, 5.0, UNAVAILABLE)])
    ct = crossdevice.build([a, b])
    _, groups, body = crossdevice.headed_rows(ct)
    assert all("work/J" not in hs for _, hs in groups) and len(body[0]) == 6 + 3 + 4
    text = crossdevice.render(ct, "table")
    assert "energy" not in text and "work/J" not in text
    assert "j_per_call" not in crossdevice.render(ct, "csv")
