"""kernelmark/suites/step.py (every kernel of a step), reports/modelstep.py (its roll-up) and
`kernelmark model NAME|--config` with --emit-suite / --measure."""
import json
import statistics
import re

import pytest

from kernelmark import cli, results
from kernelmark.ops.registry import get_op
from kernelmark.reports import modelstep
from kernelmark.suites import loader, model_config as mc, reference_decoder as rd, step
from kernelmark.cli import model_step

TINY = {"architectures": ["LlamaForCausalLM"], "hidden_size": 64, "intermediate_size": 128,
        "num_attention_heads": 4, "num_key_value_heads": 2, "num_hidden_layers": 3, "vocab_size": 256,
        "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "max_position_embeddings": 512}


def tiny(**over):
    return mc.parse({**TINY, **over}, "tiny")


@pytest.mark.parametrize("name", sorted(mc.known()))
def test_every_component_of_every_shipped_model_is_a_valid_case(name):
    cfg = mc.load(name)
    for dt in ("bf16", "fp8"):
        for kind in ("decode", "prefill"):
            for op, dtype, shape in step.distinct_cases(step.components(cfg, 8, 4096, dt, 1, kind)):
                o = get_op(op)
                o.check_shape(o.full_shape(shape), dtype)
                assert o.dtypes is None or dtype in o.dtypes, (op, dtype)


def test_dense_step_counts_each_kernel_once_per_layer():
    cfg = tiny()
    comps = step.components(cfg, 2, 64, "fp32")
    by = {c.name: c for c in comps}
    L = cfg.layers
    assert by["embedding"].count == 1 and by["input norm (layer 1)"].count == 1
    assert by["add + norm"].count == 2 * L        # 2 a layer, less the first, plus the final norm
    for name in ("qkv", "rope", "kv_append", "attention", "o", "mlp gate_up", "mlp silu·mul", "mlp down"):
        assert by[name].count == L, name
    assert by["lm_head"].count == 1 and by["sampling (argmax)"].count == 1
    assert by["qkv"].shape == {"m": 2, "n": (4 + 2 * 2) * 16, "k": 64, "layout": "nt"}
    assert by["attention"].shape["context"] == 64 and by["attention"].shape["batch"] == 2
    assert len(by) == len(comps)          # no component twice
    assert not any(c.family == "communication" for c in comps)


def test_tensor_parallel_splits_and_names_the_all_reduces():
    comps = {c.name: c for c in step.components(tiny(), 1, 64, "bf16", tp=2)}
    assert comps["qkv"].shape["n"] == (2 + 2 * 1) * 16 and comps["o"].shape["k"] == 2 * 16
    ar = comps["all_reduce (after o and after the MLP)"]
    assert ar.op == "all_reduce" and ar.count == 2 * 3 and ar.shape == {"bytes": 64 * 2}


def test_prefill_chunk_covers_its_tokens_and_samples_each_sequence_once():
    comps = {c.name: c for c in step.components(tiny(), 1, 64, "fp32", kind="prefill", prefill_tokens=128)}
    assert all(c.per == 128 for c in comps.values())
    assert comps["attention"].op == "prefill_attention" and comps["attention"].shape["batch"] == 2
    assert comps["lm_head"].shape["m"] == 2 and comps["kv_append"].shape["seq_tokens"] == 64


def test_moe_mla_and_qk_norm_components():
    ds = {c.name: c for c in step.components(mc.load("deepseek-v3"), 1, 4096)}
    assert ds["dense mlp gate_up"].count == 3 and ds["experts + shared expert"].count == 58
    assert ds["attention (MLA)"].op == "mla_decode_attention" and ds["q_nope·W_UK (bmm over heads)"].count == 61
    assert ds["route (top-k)"].shape["n_group"] == 8 and ds["align"].shape["experts"] == 257
    q = {c.name for c in step.components(mc.load("qwen3-8b"), 1, 4096)}
    assert {"q_norm (per head)", "k_norm (per head)"} <= q
    g = {c.name: c for c in step.components(mc.load("gpt-oss-120b"), 1, 4096)}
    assert g["attention"].count == 18 and g["attention (window 128)"].shape["context"] == 128
    fp8 = {c.op for c in step.components(mc.load("llama-3.1-8b"), 1, 4096, "fp8")}
    assert {"gemm_fp8_blockwise", "fp8_group_quant"} <= fp8
    pre = step.components(mc.load("deepseek-v3"), 1, 4096, kind="prefill")
    assert any(c.op is None for c in pre)     # MLA prefill attention: no op, named


@pytest.mark.parametrize("dtype", ["bf16", "fp8"])
def test_deepseek_v3_absorbed_products_are_one_bmm_over_the_heads_a_layer(dtype):
    # vLLM and SGLang run q_nope·W_UK and ·W_UV as one torch.bmm over the 128 heads a layer:
    # 2·61 calls a step, where per-head GEMMs would count 2·128·61 that never happen.
    cfg = mc.load("deepseek-v3")
    comps = step.components(cfg, 8, 4096, dtype)
    bmms = [c for c in comps if c.op == "bmm"]
    assert sum(c.count for c in bmms) == 2 * cfg.layers
    assert {c.name: c.shape for c in bmms} == {
        "q_nope·W_UK (bmm over heads)": {"batch": 128, "m": 8, "n": 512, "k": 128, "layout": "nt"},
        "·W_UV (bmm over heads)": {"batch": 128, "m": 8, "n": 128, "k": 512, "layout": "nt"}}
    # in bf16 even in an fp8 step (the engines' absorbed weights are dequantised), attention's family
    assert all(c.dtype == "bf16" and c.family == "attention" and c.count == cfg.layers for c in bmms)
    # no per-head GEMM is left: every GEMM runs once a layer (or once a step) at most
    assert not any("per head" in c.name for c in comps)
    assert all(c.count <= cfg.layers for c in comps if c.op in ("gemm", "gemm_fp8_blockwise"))
    # tensor parallelism splits the heads, so the batch of the bmm
    tp8 = [c for c in step.components(cfg, 8, 4096, dtype, tp=8) if c.op == "bmm"]
    assert {c.shape["batch"] for c in tp8} == {16}


def test_deepseek_v3_emitted_suite_round_trips_its_bmm_cases(tmp_path):
    cases = step.distinct_cases(step.components(mc.load("deepseek-v3"), 2, 4096))
    p = tmp_path / "ds.toml"
    p.write_text(step.suite_toml("ds", "d", [c for c in cases if c[0] == "bmm"]))
    got = loader.load(str(p)).cases
    assert [(c.op, c.dtype, c.shape) for c in got] == [
        ("bmm", "bf16", {"batch": 128, "m": 2, "n": 512, "k": 128, "layout": "nt"}),
        ("bmm", "bf16", {"batch": 128, "m": 2, "n": 128, "k": 512, "layout": "nt"})]


@pytest.mark.parametrize("kw, message", [
    (dict(tp=3), "--tp 3"), (dict(dtype="fp7"), "--dtype fp7"), (dict(batch=0), "--batch"),
    (dict(context=-1), "--context"),
])
def test_bad_options_name_the_option(kw, message):
    args = {"batch": 1, "context": 64, "dtype": "bf16", "tp": 1, **kw}
    with pytest.raises(ValueError, match=message):
        step.components(tiny(), **args)


def test_emitted_suite_loads_as_exactly_the_distinct_cases(tmp_path):
    comps = step.components(tiny(), 1, 64, "fp32") + step.components(tiny(), 1, 64, "fp32", kind="prefill")
    cases = step.distinct_cases(comps)
    p = tmp_path / "s.toml"
    p.write_text(step.suite_toml("t", "d", cases))
    got = loader.load(str(p)).cases
    assert len(got) == len(cases)
    for c, (op, dt, shape) in zip(got, cases):
        assert (c.op, c.dtype) == (op, dt) and all(c.shape[k] == v for k, v in shape.items())


def _run_with(tmp_path, smoke_run, runlines, comps, us_of, drop=(), min_share=None):
    read, write = runlines
    header = read(smoke_run)[0]
    extra = lambda op, shape: {} if min_share is None else {"min_us": min_share * us_of(op, shape)}  # noqa: E731
    recs = [{"type": "record", "op": op, "label": "", "shape": shape, "dtype": dt, "backend": "torch",
             "status": "ok", "timing": {"median_us": us_of(op, shape), "ci_rel": 0.01, "n": 10, **extra(op, shape)}}
            for op, dt, shape in step.distinct_cases(comps) if op not in drop]
    return write(tmp_path / "m.jsonl", [header, *recs, {"type": "footer", "finished": "x", "wall_s": 1}])


def test_rollup_is_the_sum_of_every_component_times_its_count(tmp_path, smoke_run, runlines):
    cfg = tiny()
    comps = step.components(cfg, 2, 64, "fp32")
    us = lambda op, shape: 1.0 + len(op)      # noqa: E731  a distinct time per op
    run = _run_with(tmp_path, smoke_run, runlines, comps, us)
    built = modelstep.build([results.load(run)], [("decode", 2, model_step.needs(comps))], "fp32", 3.6)
    (dev, (e,)), = built
    want = sum(us(c.op, c.shape) * c.count for c in comps)
    assert e.complete and e.total_us == pytest.approx(want)
    assert sum(modelstep.families(e).values()) == pytest.approx(want)
    row, = modelstep.rows(built)
    assert row["tokens_per_s"] == pytest.approx(2 / (want * 1e-6))
    assert row["tokens_per_s_per_seq"] == pytest.approx(1 / (want * 1e-6))
    assert row["usd_per_1m_tokens"] == pytest.approx(3.6 / 3600 / row["tokens_per_s"] * 1e6)


def test_a_missing_component_makes_it_incomplete_and_is_emitted(tmp_path, smoke_run, runlines, capsys):
    cfgp = tmp_path / "tiny.json"
    cfgp.write_text(json.dumps(TINY))
    comps = step.components(tiny(), 1, 64, "fp32")
    run = _run_with(tmp_path, smoke_run, runlines, comps, lambda op, s: 5.0, drop=("rope",))
    suite = tmp_path / "missing.toml"
    argv = ["model", "--config", str(cfgp), "--run", run, "--batch", "1", "--context", "64", "--dtype", "fp32",
            "--prefill-tokens", "64", "--format", "json"]
    assert cli.main(argv + ["--emit-suite", str(suite)]) == 0
    doc = json.loads(capsys.readouterr().out)
    dec = doc["devices"][0]["estimates"][0]
    assert not dec["complete"] and "ms_per_output_token" not in dec
    assert [c["name"] for c in dec["components"] if c["missing"]] == ["rope"]
    emitted = {(c.op, c.shape.get("tokens")) for c in loader.load(str(suite)).cases}
    assert ("rope", 1) in emitted and ("rope", 64) in emitted       # decode's and prefill's
    assert ("embedding", 1) not in emitted and ("embedding", 64) in emitted   # what the run has is not asked again


def test_deepseek_v3_rollup_counts_each_bmm_once_a_layer_and_emits_it_when_missing(tmp_path, smoke_run, runlines,
                                                                                    capsys):
    cfg = mc.load("deepseek-v3")
    comps = step.components(cfg, 1, 256, "bf16")
    us = lambda op, shape: 1.0 + len(op)      # noqa: E731  a distinct time per op
    run = _run_with(tmp_path, smoke_run, runlines, comps, us)
    (dev, (e,)), = modelstep.build([results.load(run)], [("decode", 1, model_step.needs(comps))], "bf16", 3.6)
    assert e.complete and e.total_us == pytest.approx(sum(us(c.op, c.shape) * c.count for c in comps))
    # the two bmm a layer are attention's: 2 x 61 x t_bmm in that family, beside MLA attention's 61 x t
    att = modelstep.families(e)["attention"]
    assert att == pytest.approx(cfg.layers * (2 * us("bmm", {}) + us("mla_decode_attention", {})))
    # without the bmm records the step is incomplete, names both, and --emit-suite asks for both
    run = _run_with(tmp_path, smoke_run, runlines, comps, us, drop=("bmm",))
    suite = tmp_path / "missing.toml"
    assert cli.main(["model", "deepseek-v3", "--run", run, "--batch", "1", "--context", "256", "--dtype", "bf16",
                     "--format", "json", "--emit-suite", str(suite)]) == 0
    dec = json.loads(capsys.readouterr().out)["devices"][0]["estimates"][0]
    assert not dec["complete"]
    assert [c["name"] for c in dec["components"] if c["missing"]] == ["q_nope·W_UK (bmm over heads)",
                                                                      "·W_UV (bmm over heads)"]
    emitted = [(c.shape["n"], c.shape["k"]) for c in loader.load(str(suite)).cases if c.op == "bmm"]
    assert emitted == [(512, 128), (128, 512)]


@pytest.mark.parametrize("extra, message", [
    (["--tp", "3"], "--tp 3"), (["--dtype", "fp7"], "--dtype fp7"), (["--price-per-hour", "nan"], "--price-per-hour"),
    (["--price-per-hour", "-2"], "--price-per-hour"), (["--batch", "0"], "--batch"), (["--context", "0"], "--context"),
    (["--batch", "x"], "--batch"),
])
def test_model_cli_bad_options_exit_2(extra, message, capsys):
    assert cli.main(["model", "llama-3.2-1b", "--emit-suite", "/nonexistent/x.toml", *extra]) == 2
    out, err = capsys.readouterr()
    assert err.startswith("kernelmark: error: ") and message in err and err.count("\n") == 1 and not out


def test_model_cli_unknown_architecture_exits_2(tmp_path, capsys):
    p = tmp_path / "c.json"
    p.write_text(json.dumps({**TINY, "architectures": ["FooForCausalLM"]}))
    assert cli.main(["model", "--config", str(p), "--emit-suite", str(tmp_path / "s.toml")]) == 2
    assert "unknown architecture 'FooForCausalLM'" in capsys.readouterr().err


def test_measure_end_to_end_on_this_cpu(tmp_path, capsys):
    # the whole command on a tiny config of our own: derive, write the suite, run it with the
    # `run` command's runner, roll up; every component is measured, so the step is complete
    cfgp = tmp_path / "tiny.json"
    cfgp.write_text(json.dumps(TINY))
    out = tmp_path / "run.jsonl"
    assert cli.main(["model", "--config", str(cfgp), "--measure", "--measure-out", str(out), "--batch", "1",
                     "--context", "16", "--prefill-tokens", "16", "--dtype", "fp32", "--budget", "0.01",
                     "--format", "json"]) == 0
    stdout, err = capsys.readouterr()
    doc = json.loads(stdout)
    dec, pre = doc["devices"][0]["estimates"]
    assert dec["complete"] and pre["complete"], [c for c in dec["components"] + pre["components"] if c["missing"]]
    # the run's own CSV table is not printed (a wall of every backend's row): `report` shows it
    assert "device,op,label,shape" not in err and f"kernelmark report {out}" in err
    assert dec["tokens_per_s"] > 0 and set(dec["families_us"]) >= {"gemm", "attention", "norm", "rope", "embedding"}
    assert results.load(str(out)).records      # the run file is kept where asked


def test_html_page_has_a_bar_per_complete_phase_with_each_family_share(tmp_path, smoke_run, runlines, capsys):
    """--format html: the stacked bar's segments are the families' shares of the step (widths add
    up to the bar), an incomplete phase gets no bar, and run-file text is escaped."""
    import re
    cfgp = tmp_path / "tiny.json"
    cfgp.write_text(json.dumps(TINY))
    comps = step.components(tiny(), 1, 64, "fp32")
    us = lambda op, shape: 1.0 + len(op)      # noqa: E731
    run = _run_with(tmp_path, smoke_run, runlines, comps, us)       # decode complete; prefill's cases absent
    argv = ["model", "--config", str(cfgp), "--run", run, "--batch", "1", "--context", "64", "--dtype", "fp32",
            "--prefill-tokens", "64", "--format", "html"]
    assert cli.main(argv) == 0
    page = capsys.readouterr().out
    assert page.startswith("<!DOCTYPE html>") and "Content-Security-Policy" in page and "<script" not in page
    bars = re.findall(r"<svg class=\"stack\".*?</svg>", page)
    assert len(bars) == 1                                             # decode only: prefill is incomplete
    widths = [float(w) for w in re.findall(r'<rect x="[\d.]+" y="\d+" width="([\d.]+)"', bars[0])]
    fams = modelstep.families(modelstep.build([results.load(run)], [("decode", 1, model_step.needs(comps))],
                                              "fp32")[0][1][0])
    assert len(widths) == len(fams) and sum(widths) == pytest.approx(560, abs=0.05)
    total = sum(fams.values())
    assert sorted(widths) == pytest.approx(sorted(560 * v / total for v in fams.values()), abs=0.01)
    assert "INCOMPLETE" in page


def test_html_escapes_the_device_name(tmp_path, smoke_run, runlines, capsys):
    read, write = runlines
    lines = read(smoke_run)
    lines[0]["device"]["name"] = "<img src=x onerror=alert(1)>"
    evil = write(tmp_path / "evil_smoke.jsonl", lines)
    cfgp = tmp_path / "tiny.json"
    cfgp.write_text(json.dumps(TINY))
    comps = step.components(tiny(), 1, 64, "fp32")
    run = _run_with(tmp_path, evil, runlines, comps, lambda op, s: 2.0)
    assert cli.main(["model", "--config", str(cfgp), "--run", run, "--batch", "1", "--context", "64",
                     "--dtype", "fp32", "--prefill-tokens", "64", "--format", "html"]) == 0
    page = capsys.readouterr().out
    assert "<img" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page


def test_check_step_times_real_steps_beside_the_kernel_sum(tmp_path, smoke_run, runlines, capsys):
    # every case in a run already (so nothing is measured but the steps): the roll-up's kernel
    # sum, and whole decode steps of the reference decoder timed here, side by side
    cfgp = tmp_path / "tiny.json"
    cfgp.write_text(json.dumps({**TINY, "num_hidden_layers": 2}))
    cfg = mc.load(str(cfgp))
    comps = [c for b in (1, 2) for c in step.components(cfg, b, 16, "fp32")]
    comps += step.components(cfg, 1, 16, "fp32", kind="prefill", prefill_tokens=16)
    run = _run_with(tmp_path, smoke_run, runlines, comps, lambda op, s: 7.0, min_share=0.5)
    argv = ["model", "--config", str(cfgp), "--run", run, "--measure", "--check-step", "--batch", "1,2",
            "--context", "16", "--prefill-tokens", "16", "--dtype", "fp32", "--budget", "0.02"]
    assert cli.main(argv + ["--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    checks = doc["step_check"]["checks"]
    decode = {e["batch"]: e for e in doc["devices"][0]["estimates"] if e["phase"] == "decode"}
    assert [c["batch"] for c in checks] == [1, 2]
    for c in checks:
        assert c["accounting"] == [] and c["measured_step_us"] > 0 and c["step"]["samples"] >= 1
        assert c["kernel_sum_us"] == pytest.approx(decode[c["batch"]]["measured_us"])
        assert c["kernel_sum_us"] == pytest.approx(7.0 * sum(x.count for x in step.components(cfg, c["batch"], 16,
                                                                                              "fp32")))
        assert c["step_over_kernel_sum"] == pytest.approx(c["measured_step_us"] / c["kernel_sum_us"])
        # the fastest step beside the sum of each case's fastest sample (half its median here)
        assert c["fastest"]["kernel_sum_us"] == pytest.approx(c["kernel_sum_us"] / 2)
        assert c["fastest"]["step_us"] == c["step"]["min_us"] <= c["measured_step_us"]
        # every distinct kernel of the step re-timed here on the step's tensors, counted as often as it ran
        here = c["kernels_here"]
        assert sum(k["count"] for k in here["kernels"]) == sum(x.count for x in step.components(cfg, c["batch"], 16,
                                                                                              "fp32"))
        # ... in rounds paired with whole steps (CPU): the ratio is the median of the rounds' ratios
        rounds = here["samples"]
        assert here["rounds"] == len(rounds["step_us"]) == len(rounds["kernel_sum_us"]) >= 5
        used = [i for i, s in enumerate(rounds["stalled"]) if not s]
        used = used if len(used) >= 5 else list(range(here["rounds"]))
        assert here["rounds_used"] == len(used)
        ratios = sorted(rounds["step_us"][i] / rounds["kernel_sum_us"][i] for i in used)
        assert here["step_over_kernel_sum"] == pytest.approx(statistics.median(ratios), rel=1e-3)
        assert here["kernel_sum_us"] == pytest.approx(statistics.median(rounds["kernel_sum_us"][i] for i in used),
                                                      rel=1e-3)
        lo, hi = here["ci"]
        assert lo <= here["step_over_kernel_sum"] <= hi and ratios[0] <= lo and hi <= ratios[-1]
        assert here["within"]["holds"] == (0.9 <= lo and hi <= 1.1)
        assert c["backends"]["paged_decode_attention"] == ["torch-gather-sdpa"]
        # the run's records say "torch" for paged attention, which has no such backend: named
        assert c["substituted"] == {"paged_decode_attention torch": "torch-gather-sdpa"}
        # where the step's time went: its kernel calls timed inside it, and what ran between them
        gap = c["in_step"]
        assert gap["kernel_calls_us"] + gap["between_calls_us"] == pytest.approx(gap["step_us"])
        assert 0 < gap["kernel_calls_us"] < gap["step_us"]
        assert sum(k["in_step_us"] for k in gap["kernels"]) == pytest.approx(gap["kernel_calls_us"])
        assert {k["kernel"] for k in gap["kernels"]} == {rd._text(rd._key(k["op"], k["dtype"], k["shape"]))
                                                         for k in here["kernels"]}
        assert all(k["alone_us"] is not None for k in gap["kernels"])
        assert gap["kernels_alone_us"] == pytest.approx(sum(k["median_us"] * k["count"] for k in here["kernels"]))
    assert cli.main(argv + ["--format", "csv"]) == 0
    head, *lines = capsys.readouterr().out.splitlines()
    cols = head.split(",")
    assert {"measured_step_us", "kernel_sum_us", "step_over_kernel_sum"} <= set(cols)
    dec = [dict(zip(cols, ln.split(","))) for ln in lines if ",decode," in ln]
    assert len(dec) == 2 and all(float(r["step_over_kernel_sum"]) > 0 for r in dec)
    assert all(float(r["fastest_step_over_kernel_sum"]) > 0 for r in dec)
    assert all(float(r["beside_ci_low"]) <= float(r["beside_step_over_kernel_sum"]) <= float(r["beside_ci_high"])
               for r in dec)
    assert cli.main(argv) == 0
    text = capsys.readouterr().out
    section = text[text.index("Checked against a real decode step"):]
    assert "step / kernel sum" in section and "decode, batch 2" in section and "CUDA graph" not in section
    assert "ACCOUNTING MISMATCH" not in section
    assert "Where the step's time goes (decode, batch 1;" in section and "between the calls" in section
    assert "Paired with the step (each round a whole step" in section and "at batch 1 (" in section
    assert "over the kernel sum beside the step: " in section


@pytest.mark.parametrize("extra, message", [
    ([], "give --measure too"), (["--measure", "--tp", "2"], "--check-step --tp 2"),
    (["--measure", "--dtype", "fp8"], "--check-step --dtype fp8"),
])
def test_check_step_bad_options_exit_2(extra, message, capsys):
    assert cli.main(["model", "llama-3.2-1b", "--check-step", *extra]) == 2
    out, err = capsys.readouterr()
    assert err.startswith("kernelmark: error: ") and message in err and err.count("\n") == 1 and not out


def test_check_step_names_an_architecture_it_cannot_build_or_fit(capsys):
    assert cli.main(["model", "deepseek-v3", "--measure", "--check-step"]) == 2
    assert "not supported for this architecture: deepseek-v3 uses multi-head latent attention" in \
        capsys.readouterr().err
    # 405B parameters in bf16 fit no device this runs on (the check is before anything is measured)
    assert cli.main(["model", "llama-3.1-405b", "--measure", "--check-step", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert re.fullmatch(r"kernelmark: error: --check-step: llama-3.1-405b in bf16 needs (\d+)\.\d GiB \(weights "
                        r"and KV cache\); this device has [\d.]+ GiB free\n", err), err
    assert int(re.search(r"needs (\d+)", err).group(1)) > 405e9 * 2 / 2**30     # the weights alone


def test_a_case_that_cannot_fit_is_oom_and_its_phase_incomplete(tmp_path, smoke_run, runlines, capsys):
    """Cases are one layer's kernels (said in the output); one that ran out of memory is named
    with its status and its phase is INCOMPLETE, never estimated."""
    read, write = runlines
    cfgp = tmp_path / "tiny.json"
    cfgp.write_text(json.dumps(TINY))
    comps = step.components(tiny(), 1, 64, "fp32")
    run = _run_with(tmp_path, smoke_run, runlines, comps, lambda op, s: 3.0)
    lines = read(run)
    for o in lines:
        if o.get("type") == "record" and o["op"] == "gemm" and o["shape"].get("n") == 256:    # lm_head
            o.update(status="oom", reason="out of memory allocating the inputs")
            o.pop("timing")
    run = write(tmp_path / "oom.jsonl", lines)
    assert cli.main(["model", "--config", str(cfgp), "--run", run, "--batch", "1", "--context", "64",
                     "--dtype", "fp32", "--prefill-tokens", "64"]) == 0
    out = capsys.readouterr().out
    assert "no case holds the whole model" in out
    assert "decode, batch 1" in out and "INCOMPLETE" in out.split("decode, batch 1")[1].splitlines()[0]
    assert "oom" in out


def test_check_step_times_enough_steps_for_its_median():
    from kernelmark.cli import step_check
    # 5 steps of half a second gave a ±21% interval: the budget now holds STEP_SAMPLES of them
    assert step_check.step_budget(2.0, 0.5) == pytest.approx(1.1 * step_check.STEP_SAMPLES * 0.5)
    assert step_check.step_budget(2.0, 0.001) == 2.0                           # never below the asked budget
    assert step_check.step_budget(2.0, 30.0) == step_check.STEP_BUDGET_CAP_S  # capped a batch


def _check(**over):
    c = {"batch": 1, "step": {"stall": None}, "kernel_sum_us": 1000.0, "step_over_kernel_sum": 1.1,
         "kernel_sum_stalled": {"components": 2, "of": 13, "us": 0.0}}
    c.update(over)
    return c


def test_a_stall_in_a_negligible_case_is_not_called_a_loaded_machine():
    from kernelmark.reports import stepcheck
    # on a quiet machine 2 of 13 tiny cases stalled, 0% of the sum: no LOADED MACHINE line
    assert stepcheck.load_lines([_check()]) == []
    loaded = stepcheck.load_lines([_check(kernel_sum_stalled={"components": 2, "of": 13, "us": 50.0})])
    assert loaded and loaded[1].startswith("LOADED MACHINE: at batch 1, 2 of the 13 cases") and "(5% of its µs)" in \
        loaded[1]


def test_kernels_faster_inside_the_step_than_alone_read_less_not_a_negative_more():
    from kernelmark.reports import stepcheck
    gap = {"steps": 3, "step_us": 430.0, "kernel_calls_us": 420.0, "between_calls_us": 10.0,
           "kernels_alone_us": 460.0, "kernels": []}
    text = " ".join(stepcheck.gap_lines(_check(in_step=gap)))
    assert "took 40.0 µs less inside the step" in text and "-40" not in text
    text = " ".join(stepcheck.gap_lines(_check(in_step={**gap, "kernels_alone_us": 400.0})))
    assert "took 20.0 µs more inside the step" in text
