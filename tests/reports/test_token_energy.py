"""Energy per token in the model roll-up (kernelmark/reports/token_energy.py through rollup.py,
modelstep.py and `kernelmark model`): checked against the closed forms of docs/energy.md on
synthetic run files whose energy fields follow the schema runcheck.py validates."""
import json

import pytest

from kernelmark import cli, results
from kernelmark.cli import model_step
from kernelmark.reports import modelstep, rollup, token_energy
from kernelmark.suites import model_config as mc, step

TINY = {"architectures": ["LlamaForCausalLM"], "hidden_size": 64, "intermediate_size": 128,
        "num_attention_heads": 4, "num_key_value_heads": 2, "num_hidden_layers": 3, "vocab_size": 256,
        "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "max_position_embeddings": 512}
HEADER = {"type": "header", "schema": 1, "kernelmark": "0.1.0", "command": ["kernelmark", "run", "--energy"],
          "suite": {"name": "synthetic"}, "started": "2026-12-01T00:00:00+0000", "run_id": "e0",
          "device": {"name": "Test GPU", "kind": "cuda", "arch": "sm_90", "versions": {}, "git": {},
                     "host": {"hostname": "h"}},
          "peaks": {"copy_gbps": 1000.0, "tflops": {"fp32": 50.0}}}


def _energy(net, gross, rel_net=0.05, rel_gross=0.04, calls=1000):
    """An "ok" energy dict as energy_window writes it (window 2 s, NVML's 1 mJ / 100 ms)."""
    dt = 2.0
    e_j = gross * calls
    idle = None if net is None else (e_j - net * calls) / dt
    return {"status": "ok", "reason": None, "counter": "nvml total energy", "gross_j_per_call": gross,
            "net_j_per_call": net, "idle_w": idle, "avg_w": e_j / dt, "window_s": dt, "calls": calls,
            "energy_j": e_j, "uncertainty_rel": rel_gross, "net_uncertainty_rel": rel_net if net else None,
            "resolution_j": 1e-3, "update_interval_s": 0.1, "method": "synthetic"}


def _rec(op, dtype, shape, us, energy=None):
    r = {"type": "record", "op": op, "label": "", "shape": shape, "dtype": dtype, "backend": "torch",
         "status": "ok", "timing": {"median_us": us, "ci_rel": 0.01, "n": 10}}
    if energy is not None:
        r["energy"] = energy
    return r


def _write(path, recs):
    lines = [HEADER, *recs, {"type": "footer", "finished": "x", "wall_s": 1}]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return str(path)


def _tiny_comps(kind, batch=4):
    cfg = mc.parse(TINY, "tiny")
    return step.components(cfg, batch, 64, "fp32", 1, kind, prefill_tokens=128 if kind == "prefill" else None)


def _net(i):       # a distinct J per call for each distinct case
    return 1e-4 * (i + 1)


def _tiny_run(tmp_path, comps, energy_of=lambda i: _energy(_net(i), 2 * _net(i)), name="m.jsonl"):
    cases = step.distinct_cases(comps)
    recs = [_rec(op, dt, shape, 5.0 + i, energy_of(i)) for i, (op, dt, shape) in enumerate(cases)]
    return _write(tmp_path / name, recs), {(op, dt, json.dumps(s, sort_keys=True)): i
                                           for i, (op, dt, s) in enumerate(cases)}


def _index(idx, c):
    return idx[(c.op, c.dtype, json.dumps(c.shape, sort_keys=True))]


def _one(run, kind, comps, batch, price_per_kwh=None):
    built = modelstep.build([results.load(run)], [(kind, batch, model_step.needs(comps))], "fp32",
                            price_per_kwh=price_per_kwh)
    (_, (e,)), = built
    return built, e


def test_decode_j_per_token_is_the_sum_of_net_j_times_calls_over_the_batch(tmp_path):
    comps = _tiny_comps("decode", batch=4)
    run, idx = _tiny_run(tmp_path, comps)
    built, e = _one(run, "decode", comps, 4, price_per_kwh=0.12)
    want = sum(_net(_index(idx, c)) * c.count for c in comps) / 4
    err = sum(0.05 * _net(_index(idx, c)) * c.count for c in comps) / 4     # bounds add (5% each)
    pe = token_energy.of(e)
    assert pe.complete and pe.kinds["net"].j == pytest.approx(want)
    assert pe.kinds["net"].err_j == pytest.approx(err) and pe.kinds["net"].rel == pytest.approx(0.05)
    assert pe.kinds["gross"].j == pytest.approx(2 * want)
    row, = modelstep.rows(built)
    assert row["j_per_token"] == pytest.approx(want)
    assert row["tokens_per_kwh"] == pytest.approx(3.6e6 / want)
    assert row["usd_energy_per_1m_tokens"] == pytest.approx(0.12 * want * 1e6 / 3.6e6)
    assert row["usd_energy_per_1m_tokens_gross"] == pytest.approx(0.12 * 2 * want * 1e6 / 3.6e6)
    assert row["energy_complete"] is True and row["energy_lacking"] == ""


def test_prefill_j_per_prompt_token_divides_each_kernel_by_the_tokens_it_covers(tmp_path):
    comps = _tiny_comps("prefill")
    run, idx = _tiny_run(tmp_path, comps)
    _, e = _one(run, "prefill", comps, 128)
    want = sum(_net(_index(idx, c)) * c.count / c.per for c in comps)
    assert any(c.per == 128 for c in comps)
    assert token_energy.of(e).kinds["net"].j == pytest.approx(want)


def test_a_component_without_energy_makes_it_incomplete_and_is_named(tmp_path):
    comps = _tiny_comps("decode")
    cases = step.distinct_cases(comps)
    lacking_op = cases[1][0]
    run, _ = _tiny_run(tmp_path, comps, lambda i: None if i == 1 else _energy(_net(i), 2 * _net(i)))
    built, e = _one(run, "decode", comps, 4)
    pe = token_energy.of(e)
    assert not pe.complete and pe.kinds == {}
    assert {n for n, _ in pe.lacking} == {c.name for c in comps if c.op == lacking_op and c.shape == cases[1][2]}
    assert all("no --energy" in w for _, w in pe.lacking)
    row, = modelstep.rows(built)
    assert row["energy_complete"] is False and "j_per_token" not in row and "j_per_token_gross" not in row
    text = modelstep.render(built, "tiny", 64, 1, fmt="table")
    assert "INCOMPLETE (" in text and "energy INCOMPLETE, not summed" in text
    assert pe.lacking[0][0] in text.split("Energy per token (never a partial sum):")[1]


def test_unavailable_counters_say_why_and_give_no_number(tmp_path):
    comps = _tiny_comps("decode")
    run, _ = _tiny_run(tmp_path, comps, lambda i: {"status": "unavailable",
                                                   "reason": "no CPU energy counter: no powercap"})
    built, e = _one(run, "decode", comps, 4)
    doc = json.loads(modelstep.render(built, "tiny", 64, 1, fmt="json"))
    en = doc["devices"][0]["estimates"][0]["energy"]
    assert en["complete"] is False and "j_per_token" not in en
    assert all("energy unavailable: no CPU energy counter" in x["why"] for x in en["lacking"])


def test_no_idle_gives_the_gross_only_and_says_why_there_is_no_net(tmp_path):
    comps = _tiny_comps("decode")
    run, idx = _tiny_run(tmp_path, comps, lambda i: _energy(None, 2 * _net(i)))
    built, e = _one(run, "decode", comps, 4)
    pe = token_energy.of(e)
    assert pe.complete and pe.kinds["net"].j is None and "idle power not measured" in pe.kinds["net"].why
    assert pe.kinds["gross"].j == pytest.approx(sum(2 * _net(_index(idx, c)) * c.count for c in comps) / 4)
    j, tpk, _ = token_energy.cells(pe)
    assert j.endswith("gross ±4%") and tpk.endswith("gross")


def test_a_net_at_or_below_zero_keeps_its_bound_from_the_window_fields(tmp_path):
    """A call costing less than the idle noise has no relative uncertainty: the bound is
    rebuilt as (2r + (P + P_idle)·u) / calls and the sum still carries it."""
    comps = _tiny_comps("decode")
    neg = _energy(-1e-6, 1e-4)          # net below zero: net_uncertainty_rel is None
    run, idx = _tiny_run(tmp_path, comps, lambda i: neg if i == 0 else _energy(_net(i), 2 * _net(i)))
    _, e = _one(run, "decode", comps, 4)
    t = token_energy.of(e).kinds["net"]
    p, idle = neg["avg_w"], neg["idle_w"]
    dneg = (2e-3 + (p + idle) * 0.1) / 1000
    want, err = 0.0, 0.0
    for c in comps:
        i = _index(idx, c)
        j, dj = (-1e-6, dneg) if i == 0 else (_net(i), 0.05 * _net(i))
        want, err = want + j * c.count / 4, err + dj * c.count / 4
    assert t.j == pytest.approx(want) and t.err_j == pytest.approx(err)


def test_without_energy_the_rollup_is_unchanged(tmp_path):
    comps = _tiny_comps("decode")
    run, _ = _tiny_run(tmp_path, comps, lambda i: None)
    built, _ = _one(run, "decode", comps, 4, price_per_kwh=0.1)
    text = modelstep.render(built, "tiny", 64, 1, fmt="table", price_per_kwh=0.1)
    assert "J per token" not in text and "Energy" not in text and "energy/call" not in text
    doc = json.loads(modelstep.render(built, "tiny", 64, 1, fmt="json"))
    assert "energy" not in doc["devices"][0]["estimates"][0]
    assert "energy_complete" not in modelstep.render(built, "tiny", 64, 1, fmt="csv")


def test_model_cli_config_path_prints_energy_columns_and_the_price(tmp_path, capsys):
    cfgp = tmp_path / "tiny.json"
    cfgp.write_text(json.dumps(TINY))
    comps = _tiny_comps("decode", batch=1) + _tiny_comps("prefill")
    run, _ = _tiny_run(tmp_path, comps)
    argv = ["model", "--config", str(cfgp), "--run", run, "--batch", "1", "--context", "64", "--dtype", "fp32",
            "--prefill-tokens", "128", "--price-per-kwh", "0.15"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "J per token (kernel sum)" in out and "$0.15 per kWh" in out and "energy/call" in out
    dec = next(line for line in out.splitlines() if "decode, batch 1" in line)
    assert " net ±5% (" in dec and "$" in dec


def _legacy_run(tmp_path, energy_of):
    needs = rollup.decode_needs("llama3-8b", 1, 4096)
    recs = [_rec(n.op, "bf16", {**n.fixed, **n.prefer}, 10.0 + i, energy_of(i)) for i, n in enumerate(needs)]
    return _write(tmp_path / "l.jsonl", recs), needs


def test_legacy_rollup_json_has_energy_per_token_and_incomplete_prefill(tmp_path, capsys):
    run, needs = _legacy_run(tmp_path, lambda i: _energy(_net(i), 2 * _net(i)))
    assert cli.main(["model", "llama3-8b", "--run", run, "--batch", "1", "--price-per-kwh", "0.1",
                     "--format", "json"]) == 0
    dec, pre = json.loads(capsys.readouterr().out)["devices"][0]["estimates"]
    want = sum(_net(i) * n.count for i, n in enumerate(needs))       # batch 1: one token a step
    assert dec["energy"]["j_per_token"] == pytest.approx(want)
    assert dec["energy"]["tokens_per_kwh"] == pytest.approx(3.6e6 / want)
    assert dec["energy"]["usd_energy_per_1m_tokens"] == pytest.approx(0.1 * want / 3.6)
    # the prefill cases are not in the run: no time, and no energy either
    assert pre["energy"]["complete"] is False and "j_per_token" not in pre["energy"]
    assert {x["why"] for x in pre["energy"]["lacking"]} == {"not measured at all (not in the run)"}


def test_legacy_rollup_table_shows_incomplete_energy_without_a_number(tmp_path, capsys):
    run, needs = _legacy_run(tmp_path, lambda i: None if needs_name(i) == "attention" else
                             _energy(_net(i), 2 * _net(i)))
    assert cli.main(["model", "llama3-8b", "--run", run, "--batch", "1"]) == 0
    out = capsys.readouterr().out
    dec = next(line for line in out.splitlines() if "decode, batch 1" in line)
    assert "INCOMPLETE (1 lack energy)" in dec and " mJ" not in dec
    assert "attention: no energy measured" in out


def needs_name(i):
    return rollup.decode_needs("llama3-8b", 1, 4096)[i].name


@pytest.mark.parametrize("argv", [
    ["model", "llama3-8b", "--run", "x.jsonl", "--price-per-kwh", "0"],
    ["model", "llama-3.2-1b", "--run", "x.jsonl", "--price-per-kwh", "nan"],
])
def test_bad_price_per_kwh_exits_2_naming_the_option(argv, capsys):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "kernelmark: error: --price-per-kwh must be a positive" in err and "Traceback" not in err


def test_measure_energy_runs_the_missing_cases_with_energy(tmp_path, monkeypatch, capsys):
    cfgp = tmp_path / "tiny.json"
    cfgp.write_text(json.dumps(TINY))
    real, seen = cli.main, []

    def fake(argv):         # the `run` the roll-up starts: recorded, not run (its own tests run it)
        if argv and argv[0] == "run":
            seen.append(argv)
            return 2
        return real(argv)
    monkeypatch.setattr(cli, "main", fake)
    assert real(["model", "--config", str(cfgp), "--measure", "--energy", "--batch", "1", "--context", "64",
                 "--dtype", "fp32", "--prefill-tokens", "64"]) == 2
    assert len(seen) == 1 and "--energy" in seen[0]


def test_energy_without_measure_exits_2(capsys):
    assert cli.main(["model", "llama-3.1-8b", "--run", "x.jsonl", "--energy"]) == 2
    assert "kernelmark: error: --energy goes with --measure" in capsys.readouterr().err


def test_family_energy_adds_up_to_the_phase_and_is_withheld_when_incomplete(tmp_path):
    comps = _tiny_comps("decode", batch=2)
    run, idx = _tiny_run(tmp_path, comps)
    _, e = _one(run, "decode", comps, 2)
    fam = token_energy.by_family(e, token_energy.of(e))
    assert sum(v for v, _ in fam.values()) == pytest.approx(token_energy.of(e).kinds["net"].j)
    gemm = sum(_net(_index(idx, c)) * c.count for c in comps if c.family == "gemm") / 2
    assert fam["gemm"] == (pytest.approx(gemm), "net")
    run2, _ = _tiny_run(tmp_path, comps, lambda i: None if i == 0 else _energy(_net(i), 2 * _net(i)), "m2.jsonl")
    _, e2 = _one(run2, "decode", comps, 2)
    assert token_energy.by_family(e2, token_energy.of(e2)) == {}


def test_a_device_without_energy_beside_one_with_energy_is_incomplete_in_one_line(tmp_path, capsys):
    comps = _tiny_comps("decode")
    with_e, _ = _tiny_run(tmp_path, comps)
    cases = step.distinct_cases(comps)
    h = json.loads(json.dumps(HEADER))
    h["device"]["name"] = "Other GPU"
    other = tmp_path / "o.jsonl"
    other.write_text("".join(json.dumps(x) + "\n" for x in
                             [h, *[_rec(op, dt, s, 3.0) for op, dt, s in cases], {"type": "footer", "wall_s": 1}]))
    built = modelstep.build([results.load(with_e), results.load(str(other))],
                            [("decode", 4, model_step.needs(comps))], "fp32")
    text = modelstep.render(built, "tiny", 64, 1)
    other_row = next(x for x in text.splitlines() if x.startswith("Other GPU") and "decode" in x)
    assert "INCOMPLETE (" in other_row and " mJ" not in other_row
    assert "Other GPU, decode, batch 4: energy INCOMPLETE: no record it uses was measured with --energy" in text
