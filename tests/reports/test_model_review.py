"""`kernelmark model` as a new user meets it (issue 17 review): the documented `--run A B`,
the dtype picked from the runs, output paths refused before any work, $ and J per token of a
tensor-parallel step counting every GPU, what an incomplete phase shows, the hints for cases
that cannot be measured as asked, and sliding-window layers read from any config.
Synthetic run files (a header, records and a footer the schema accepts): no timing here."""
import json

import pytest

from kernelmark import cli, results
from kernelmark.cli import model_step
from kernelmark.reports import modelstep, rollup, token_energy
from kernelmark.suites import model_config as mc, step

TINY = {"architectures": ["LlamaForCausalLM"], "hidden_size": 64, "intermediate_size": 128,
        "num_attention_heads": 4, "num_key_value_heads": 2, "num_hidden_layers": 3, "vocab_size": 256,
        "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "max_position_embeddings": 512}


def _header(name="Test GPU", kind="cuda"):
    return {"type": "header", "schema": 1, "kernelmark": "0.1.0", "command": ["kernelmark", "run"],
            "suite": {"name": "synthetic"}, "started": "2026-12-01T00:00:00+0000", "run_id": name,
            "device": {"name": name, "kind": kind, "arch": "sm_90", "versions": {}, "git": {},
                       "host": {"hostname": name}},
            "peaks": {"copy_gbps": 1000.0, "tflops": {"fp32": 50.0}}}


def _write(path, recs, name="Test GPU"):
    lines = [_header(name), *recs, {"type": "footer", "finished": "x", "wall_s": 1}]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return str(path)


def _rec(op, dtype, shape, us, status="ok", energy=None):
    r = {"type": "record", "op": op, "label": "", "shape": shape, "dtype": dtype, "backend": "torch",
         "status": status}
    if status == "ok":
        r["timing"] = {"median_us": us, "ci_rel": 0.01, "n": 10}
    else:
        r["reason"] = "half-precision matmul on the CPU is emulated and too slow at this size"
    if energy is not None:
        r["energy"] = energy
    return r


def _cfg_file(tmp_path, **over):
    p = tmp_path / "tiny.json"
    p.write_text(json.dumps({**TINY, **over}))
    return str(p)


def _comps(dtype="fp32", tp=1, batch=1, context=16, prefill=16):
    cfg = mc.parse(TINY, "tiny")
    return (step.components(cfg, batch, context, dtype, tp)
            + step.components(cfg, 1, context, dtype, tp, "prefill", prefill_tokens=prefill))


def _full_run(tmp_path, dtype="fp32", name="m.jsonl", device="Test GPU", tp=1, drop=(), energy=None):
    recs = [_rec(op, dt, shape, 10.0, energy=energy) for op, dt, shape in step.distinct_cases(_comps(dtype, tp))
            if op not in drop]
    return _write(tmp_path / name, recs, device)


ARGS = ["--batch", "1", "--context", "16", "--prefill-tokens", "16", "--format", "json"]


def test_run_takes_several_files_after_one_flag_as_the_readme_writes_it(tmp_path, capsys):
    a = _full_run(tmp_path, name="a.jsonl", device="GPU A")
    b = _full_run(tmp_path, name="b.jsonl", device="GPU B")
    cfg = _cfg_file(tmp_path)
    assert cli.main(["model", "--config", cfg, "--run", a, b, *ARGS]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [d["device"] for d in doc["devices"]] == ["GPU A", "GPU B"]
    # the name after the list is taken as a run file: the error says so
    assert cli.main(["model", "--run", a, "llama-3.2-1b"]) == 2
    err = capsys.readouterr().err
    assert "put NAME before --run" in err and err.count("\n") == 1


def test_without_dtype_the_runs_dtype_is_used(tmp_path, capsys):
    run = _full_run(tmp_path, dtype="fp32")
    assert cli.main(["model", "--config", _cfg_file(tmp_path), "--run", run, *ARGS]) == 0
    out, err = capsys.readouterr()
    doc = json.loads(out)
    assert [r["dtype"] for r in doc["summary"]] == ["fp32", "fp32"]
    assert all(r["complete"] for r in doc["summary"]) and "using fp32" in err
    # an explicit --dtype is still what is used
    assert cli.main(["model", "--config", _cfg_file(tmp_path), "--run", run, *ARGS, "--dtype", "bf16"]) == 0
    assert not any(r["complete"] for r in json.loads(capsys.readouterr().out)["summary"])


@pytest.mark.parametrize("option", ["--emit-suite", "--out"])
def test_an_unwritable_output_is_exit_2_before_any_work(tmp_path, option, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")          # a file where a directory is needed: no one can write under it
    target = str(blocker / "x.out")
    argv = ["model", "--config", _cfg_file(tmp_path), "--measure", "--measure-out", str(tmp_path / "r.jsonl"),
            *ARGS, option, target]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"kernelmark: error: {option} {target}") and err.count("\n") == 1
    assert not (tmp_path / "r.jsonl").exists()      # nothing was measured
    assert cli.main(["model", "--config", _cfg_file(tmp_path), *ARGS, "--emit-suite", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err


def test_checking_an_output_path_leaves_no_file_behind(tmp_path):
    p = tmp_path / "sub" / "page.html"
    model_step.check_writable("--out", str(p))
    assert not p.exists()


def test_tensor_parallel_dollars_and_joules_count_every_gpu(tmp_path):
    en = {"status": "ok", "reason": None, "counter": "nvml total energy", "gross_j_per_call": 2e-3,
          "net_j_per_call": 1e-3, "idle_w": 1.0, "avg_w": 2.0, "window_s": 2.0, "calls": 1000, "energy_j": 2.0,
          "uncertainty_rel": 0.01, "net_uncertainty_rel": 0.02, "resolution_j": 1e-3, "update_interval_s": 0.1,
          "method": "synthetic"}
    run = results.load(_full_run(tmp_path, tp=2, energy=en))
    comps = step.components(mc.parse(TINY, "tiny"), 1, 16, "fp32", 2)
    out = {}
    for gpus in (1, 2):
        built = modelstep.build([run], [("decode", 1, model_step.needs(comps))], "fp32", 3.6, 0.1, gpus=gpus)
        (_, (e,)), = built
        out[gpus] = (e.figures(), token_energy.of(e).kinds["net"].j)
    (fig1, j1), (fig2, j2) = out[1], out[2]
    assert fig2["tokens_per_s"] == fig1["tokens_per_s"]             # the step time is one GPU's slice
    assert fig2["usd_per_1m_tokens"] == pytest.approx(2 * fig1["usd_per_1m_tokens"])
    assert fig2["usd_per_1m_tokens"] == pytest.approx(2 * 3.6 / 3600 / fig2["tokens_per_s"] * 1e6)
    assert j2 == pytest.approx(2 * j1)


def test_the_command_passes_tp_to_the_price(tmp_path, capsys):
    run = _full_run(tmp_path, tp=2)
    argv = ["model", "--config", _cfg_file(tmp_path), "--run", run, *ARGS, "--dtype", "fp32", "--price-per-hour", "3.6"]
    assert cli.main(argv + ["--tp", "2"]) == 0
    dec = json.loads(capsys.readouterr().out)["summary"][0]
    assert dec["complete"] and dec["usd_per_1m_tokens"] == pytest.approx(2 * 3.6 / 3600 / dec["tokens_per_s"] * 1e6)
    assert cli.main(argv[:-2] + ["--price-per-hour", "3.6", "--tp", "2", "--format", "table"]) == 0
    assert "× 2 GPUs in every $ figure" in capsys.readouterr().out


def test_an_incomplete_phase_names_what_it_lacks_and_shows_no_shares(tmp_path, capsys):
    run = _full_run(tmp_path, drop=("rope",))
    argv = ["model", "--config", _cfg_file(tmp_path), "--run", run, *ARGS[:-2], "--dtype", "fp32"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "INCOMPLETE, not measured: rope" in out
    fam = [ln for ln in out.splitlines() if ln.startswith("decode, batch 1 (INCOMPLETE")]
    assert fam and all(not ln.rstrip().endswith("%") for ln in fam)
    # a complete phase keeps its shares, and the totals say what they are per
    run2 = _full_run(tmp_path, name="full.jsonl")
    assert cli.main(argv[:4] + [run2] + argv[5:]) == 0
    out = capsys.readouterr().out
    assert any(ln.startswith("decode, batch 1") and ln.rstrip().endswith("%") for ln in out.splitlines())
    assert "µs per 1k prompt tokens" in out and " / 1k tokens" in out and "e+" not in out


def test_a_case_every_backend_refused_is_not_sent_back_to_be_measured_again(tmp_path, capsys):
    comps = _comps("bf16")
    recs = [_rec(op, dt, shape, 10.0, status="unsupported" if op == "gemm" and shape["m"] == 16 else "ok")
            for op, dt, shape in step.distinct_cases(comps)]
    run = _write(tmp_path / "r.jsonl", recs)
    assert cli.main(["model", "--config", _cfg_file(tmp_path), "--run", run, *ARGS[:-2], "--dtype", "bf16"]) == 0
    out = capsys.readouterr().out
    lines = [ln for ln in out.splitlines() if ln.startswith("- ")]
    assert lines and all("will not time it" in ln and "--dtype" in ln for ln in lines)


def test_a_missing_all_reduce_says_how_to_measure_it(tmp_path, capsys):
    run = _full_run(tmp_path, tp=2, drop=("all_reduce",))
    assert cli.main(["model", "--config", _cfg_file(tmp_path), "--run", run, *ARGS[:-2], "--dtype", "fp32",
                     "--tp", "2"]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("- ")]
    assert len(lines) == 2 and all("all_reduce" in ln and "torchrun" in ln for ln in lines)


def test_sliding_window_layers_from_mistral_qwen2_and_layer_types():
    base = {**TINY, "num_hidden_layers": 4}
    mistral = mc.parse({**base, "architectures": ["MistralForCausalLM"], "sliding_window": 4096}, "m")
    assert (mistral.sliding_layers, mistral.sliding_window) == (4, 4096)
    assert mc.parse({**base, "architectures": ["MistralForCausalLM"], "sliding_window": None}, "m").sliding_layers == 0
    qwen = {**base, "architectures": ["Qwen2ForCausalLM"], "sliding_window": 2048, "max_window_layers": 3}
    assert mc.parse(qwen, "q").sliding_layers == 0                # use_sliding_window false: every layer full
    assert mc.parse({**qwen, "use_sliding_window": True}, "q").sliding_layers == 1
    typed = {**base, "sliding_window": 8, "layer_types": ["sliding_attention", "full_attention"] * 2}
    assert mc.parse(typed, "t").sliding_layers == 2
    with pytest.raises(mc.ConfigError, match="layer_types"):
        mc.parse({**typed, "layer_types": ["full_attention"]}, "t")
    dec = {c.name: c for c in step.components(mistral, 1, 8192, "bf16")}
    assert dec["attention (window 4096)"].shape["context"] == 4096 and dec["attention (window 4096)"].count == 4


def test_sliding_window_prefill_counts_a_window_of_keys_per_query():
    cfg = mc.parse({**TINY, "num_hidden_layers": 2, "sliding_window": 64,
                    "layer_types": ["sliding_attention", "full_attention"]}, "w")
    pre = {c.name: c for c in step.components(cfg, 1, 320, "fp32", kind="prefill", prefill_tokens=320)}
    win = pre["attention (window 64)"]
    # full attention inside 64-token blocks, 320 / 64 of them a sequence: each query 64 keys,
    # as a sliding window of 64 gives all but the first 64 queries
    assert win.shape["causal"] == 0 and win.shape["seq"] == 64 and win.count == pytest.approx(320 / 64)
    assert pre["attention"].shape["causal"] == 1 and pre["attention"].count == 1


def test_a_tp_that_does_not_divide_names_the_ones_that_do(capsys):
    assert cli.main(["model", "qwen3-30b-a3b", "--tp", "8", "--emit-suite", "/nonexistent/x.toml"]) == 2
    err = capsys.readouterr().err
    assert "--tp 8" in err and "use 1, 2 or 4" in err and err.count("\n") == 1


def _check(stall=None):
    step_t = {"ci_rel": 0.02, "samples": 20, "converged": True, "stall": stall, "min_us": 90.0}
    return {"device": "CPU", "batch": 1, "context": 16, "measured_step_us": 100.0, "kernel_sum_us": 80.0,
            "step_over_kernel_sum": 1.25, "overhead_us": 20.0, "step": step_t, "accounting": [], "backends": {},
            "in_step": {"steps": 3, "step_us": 100.0, "kernel_calls_us": 90.0, "between_calls_us": 10.0,
                        "kernels_alone_us": 70.0, "kernels": []}}


def test_a_step_check_under_load_says_its_ratio_is_the_load_not_the_overhead():
    from tabulate import tabulate
    from kernelmark.reports import stepcheck
    loaded = "\n".join(stepcheck.table_lines([_check("9 of 20 samples waited for a CPU")], tabulate, "simple"))
    quiet = "\n".join(stepcheck.table_lines([_check()], tabulate, "simple"))
    assert "LOADED MACHINE" in loaded and "batch 1" in loaded and "quiet machine" in loaded
    assert "LOADED MACHINE" not in quiet
    # why a kernel is slower inside the step is not measured: never stated as the cause
    for text in (loaded, quiet):
        assert "why is not measured here" in text
    assert "which the step's timing saw: it stalled" in loaded and "it stalled" not in quiet


def test_csv_output_is_rows_of_one_width_with_no_blank_line(tmp_path, capsys):
    import csv
    import io
    a = _full_run(tmp_path, name="a.jsonl", device="GPU A")
    b = _full_run(tmp_path, name="b.jsonl", device="GPU B")
    assert cli.main(["model", "--config", _cfg_file(tmp_path), "--run", a, b, *ARGS[:-1], "csv"]) == 0
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert len(rows) == 1 + 2 * 2 and len({len(r) for r in rows}) == 1
    assert [r[0] for r in rows[1:]] == ["GPU A", "GPU A", "GPU B", "GPU B"]


@pytest.mark.parametrize("us, want", [(1.262e9, "1,262 s"), (8.878e7, "88.8 s"), (1068e3, "1.07 s"),
                                      (2118.0, "2.12 ms"), (4.81, "4.81 µs")])
def test_times_read_without_exponents(us, want):
    assert rollup._fmt_time(us) == want



def test_a_kernel_sum_from_stalled_cases_is_named_and_a_faster_step_explained():
    from tabulate import tabulate
    from kernelmark.cli import step_check
    from kernelmark.reports import stepcheck
    need = lambda name: rollup.Need(name, "gemm", {}, {}, 2, 1, family="gemm")    # noqa: E731
    rec = lambda us, stall=None: {"op": "gemm", "shape": {}, "dtype": "fp32", "backend": "torch",  # noqa: E731
                                  "status": "ok", "timing": {"median_us": us, "stall": stall}}
    est = rollup.Estimate("CPU", "fp32", "decode", 1, [rollup.Found(need("a"), rec(30.0, "stalls: busy")),
                                                       rollup.Found(need("b"), rec(10.0))])
    ks = step_check.stalled_share(est)
    assert ks == {"components": 1, "of": 2, "us": 60.0}
    c = {**_check(), "kernel_sum_us": 80.0, "measured_step_us": 60.0, "step_over_kernel_sum": 0.75,
         "overhead_us": -20.0, "kernel_sum_stalled": ks}
    text = "\n".join(stepcheck.table_lines([c], tabulate, "simple"))
    assert "LOADED MACHINE" in text and "1 of the 2 cases the kernel sum uses" in text and "(75% of its µs)" in text
    assert "ran faster than its kernel sum" in text
    calm = {**c, "kernel_sum_stalled": {"components": 0, "of": 2, "us": 0.0}}
    assert "LOADED MACHINE" not in "\n".join(stepcheck.table_lines([calm], tabulate, "simple"))


def test_the_legacy_llama3_roll_up_pays_for_every_gpu_too(tmp_path):
    needs = rollup.decode_needs("llama3-8b", 1, 64, tp=2)
    run = results.load(_write(tmp_path / "l.jsonl", [_rec(n.op, "bf16", {**n.fixed, **n.prefer}, 10.0) for n in needs]))
    (_, ests), = rollup.build([run], "llama3-8b", [1], 64, 64, "bf16", tp=2, price_per_hour=3.6)
    fig = ests[0].figures()
    assert ests[0].complete and fig["usd_per_1m_tokens"] == pytest.approx(2 * 3.6 / 3600 / fig["tokens_per_s"] * 1e6)
    text = rollup.render([run], "llama3-8b", [1], 64, 64, "bf16", tp=2, price_per_hour=3.6)
    assert "$3.6 per GPU-hour, × 2 GPUs in every $ figure" in text


def test_the_html_page_keeps_the_step_check(tmp_path):
    from kernelmark.reports import modelstep_html
    run = results.load(_full_run(tmp_path))
    comps = step.components(mc.parse(TINY, "tiny"), 1, 16, "fp32", 1)
    built = modelstep.build([run], [("decode", 1, model_step.needs(comps))], "fp32")
    page = modelstep_html.render(built, "tiny", 16, 1, checks=[_check("9 of 20 samples waited")])
    assert "Checked against a real decode step" in page and "LOADED MACHINE" in page and "1.250" in page
    assert "Checked against" not in modelstep_html.render(built, "tiny", 16, 1)


def test_a_prefill_chunk_that_is_not_whole_sequences_is_rounded_aloud(tmp_path, capsys):
    # 20 tokens at --context 16: one whole sequence, 16 tokens; said on stderr, not silently
    a = _full_run(tmp_path)
    cfg = _cfg_file(tmp_path)
    args = ["model", "--config", cfg, "--run", a, "--batch", "1", "--context", "16", "--format", "json"]
    assert cli.main([*args, "--prefill-tokens", "20"]) == 0
    out, err = capsys.readouterr()
    assert "kernelmark: note: --prefill-tokens 20 taken as 16: a prefill chunk is whole sequences" in err
    est = [e for e in json.loads(out)["devices"][0]["estimates"] if e["phase"] == "prefill"]
    assert len(est) == 1 and est[0]["prefill_tokens"] == 16, est
    assert cli.main([*args, "--prefill-tokens", "32"]) == 0
    assert "note: --prefill-tokens" not in capsys.readouterr().err
