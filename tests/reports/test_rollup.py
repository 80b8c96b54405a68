"""kernelmark/reports/rollup.py and `kernelmark model`: the kernel-sum bound from run records."""
import json

import pytest

from kernelmark import cli, results
from kernelmark.reports import rollup
from kernelmark.suites import models

L8 = models.get_model("llama3-8b").layers      # 32


def _rec(op, shape, us, backend="torch", dtype="bf16", status="ok"):
    r = {"type": "record", "op": op, "label": "", "shape": shape, "dtype": dtype, "backend": backend,
         "status": status}
    if status == "ok":
        r["timing"] = {"median_us": us, "ci_rel": 0.01, "n": 10}
    else:
        r["reason"] = "differs from the reference"
    return r


def _decode_records(batch, context, times, tp=1):
    """Records for every component of a llama3-8b decode step at ``batch``; ``times`` by component."""
    out = []
    for name, (n, k) in models.get_model("llama3-8b").projections(tp).items():
        out.append(_rec("gemm", {"m": batch, "n": n, "k": k, "layout": "nt"}, times[name]))
    qh, kvh, hd = models.attention_heads("llama3-8b", tp)
    att = {"batch": batch, "context": context, "q_heads": qh, "kv_heads": kvh, "head_dim": hd, "page_size": 16,
           "ragged": 0}
    out.append(_rec("paged_decode_attention", att, times["attention"], backend="triton"))
    out.append(_rec("paged_decode_attention", att, times["attention"] * 1.5, backend="torch-gather-sdpa"))
    # A faster backend that failed its check must never be used.
    out.append(_rec("paged_decode_attention", att, None, backend="flash-attn", status="failed_check"))
    # Another page size of the same case: the preferred page size 16 is used, though slower.
    out.append(_rec("paged_decode_attention", {**att, "page_size": 64}, times["attention"] / 10, backend="triton"))
    out.append(_rec("kv_append", {"tokens": batch, "seq_tokens": 1, "kv_heads": kvh, "head_dim": hd,
                                  "page_size": 16, "num_blocks": 4096, "layout": "NHD", "padding": 0},
                    times["kv_append"]))
    n, k = models.lm_head("llama3-8b", tp)
    out.append(_rec("gemm", {"m": batch, "n": n, "k": k, "layout": "nt"}, times["lm_head"]))
    return out


TIMES = {"qkv": 10.0, "o": 5.0, "gate_up": 20.0, "down": 15.0, "attention": 7.0, "kv_append": 1.0, "lm_head": 30.0}


@pytest.fixture
def model_run(smoke_run, runlines, tmp_path):
    read, write = runlines
    header = read(smoke_run)[0]
    header["device"]["name"], header["device"]["kind"] = "Test GPU", "cuda"
    recs = _decode_records(1, 4096, TIMES)
    # batch 8: everything but the attention.
    recs += [r for r in _decode_records(8, 4096, TIMES) if r["op"] != "paged_decode_attention"]
    # prefill: GEMMs at M = 4096, attention over 4 sequences of 4096 (the suite's 16k-token batch).
    for name, (n, k) in models.get_model("llama3-8b").projections().items():
        recs.append(_rec("gemm", {"m": 4096, "n": n, "k": k, "layout": "nt"}, 4096 * TIMES[name]))
    recs.append(_rec("prefill_attention", {"batch": 4, "seq": 4096, "q_heads": 32, "kv_heads": 8, "head_dim": 128,
                                           "causal": 1}, 4 * 4096 * 2.0))
    return write(tmp_path / "model.jsonl", [header, *recs, {"type": "footer", "finished": "x", "wall_s": 1}])


def test_decode_step_is_the_layer_sum_times_layers_plus_lm_head(model_run):
    built = rollup.build([results.load(model_run)], "llama3-8b", [1], 4096, 4096, price_per_hour=2.0)
    (dev, (dec, pre)), = built
    layer = sum(TIMES[k] for k in ("qkv", "o", "gate_up", "down", "attention", "kv_append"))
    step = L8 * layer + TIMES["lm_head"]
    assert dec.complete and dec.dtype == "bf16"
    f = dec.figures()
    assert f["step_us"] == pytest.approx(step)
    assert f["tokens_per_s"] == pytest.approx(1 / (step * 1e-6))
    assert f["usd_per_1m_tokens"] == pytest.approx(2.0 / 3600 / f["tokens_per_s"] * 1e6)
    att = next(x for x in dec.found if x.need.name == "attention")
    assert att.rec["backend"] == "triton" and att.rec["shape"]["page_size"] == 16


def test_prefill_per_1k_tokens_normalises_each_kernel_per_token(model_run):
    (_, ests), = rollup.build([results.load(model_run)], "llama3-8b", [1], 4096, 4096)
    pre = ests[-1]
    assert pre.kind == "prefill" and pre.complete
    # lm_head runs once a sequence (M = 1, measured for decode): its time spread over the 4096 tokens.
    per_token = L8 * (TIMES["qkv"] + TIMES["o"] + TIMES["gate_up"] + TIMES["down"] + 2.0) + TIMES["lm_head"] / 4096
    assert pre.figures()["us_per_1k_prompt_tokens"] == pytest.approx(1000 * per_token)
    assert pre.extra_unmeasured == ["kv_append"]


def test_missing_cases_are_named_never_guessed(model_run):
    (dev, ests), = rollup.build([results.load(model_run)], "llama3-8b", [8, 32], 4096, 4096)
    b8, b32 = ests[0], ests[1]
    assert not b8.complete and b8.figures() == {}
    assert [f.need.name for f in b8.missing] == ["attention"]
    assert len(b32.missing) == 5            # four projections and the attention
    lines = rollup.missing_lines([(dev, ests)])
    assert any("paged_decode_attention batch=8 context=4096" in ln and "not in the run" in ln for ln in lines)


def test_failed_cases_are_named_with_their_status(model_run, runlines, tmp_path):
    read, write = runlines
    objs = read(model_run)
    for o in objs:
        if o.get("op") == "paged_decode_attention" and o["status"] == "ok":
            o["status"], o["reason"] = "failed_check", "wrong"
            del o["timing"]
    (_, ests), = rollup.build([results.load(write(tmp_path / "f.jsonl", objs))], "llama3-8b", [1], 4096, 4096)
    miss = ests[0].missing
    assert [f.need.name for f in miss] == ["attention"] and "no backend was timed" in miss[0].why
    assert "FAILED check" in miss[0].why


def test_several_devices_one_table(model_run, other_device, tmp_path, capsys):
    fast = other_device(model_run, tmp_path / "fast.jsonl", "Faster GPU", speed=2.0)
    assert cli.main(["model", "llama3-8b", "--run", model_run, "--run", fast, "--batch", "1",
                     "--price-per-hour", "3", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    a, b = (d["estimates"][0] for d in data["devices"])
    assert a["complete"] and b["complete"]
    assert a["step_us"] == pytest.approx(2 * b["step_us"])
    assert "kernel-sum lower bound" in data["label"] and "sampling" in " ".join(data["not_measured"])


def test_model_cli_table_labels_the_bound_and_names_what_is_missing(model_run, capsys):
    assert cli.main(["model", "llama3-8b", "--run", model_run, "--batch", "1,8", "--context", "4096"]) == 0
    out = capsys.readouterr().out
    assert "kernel-sum lower bound" in out and "no communication" in out
    assert "INCOMPLETE: 1 needed case(s)" in out
    assert "Cases not in the run (never guessed)" in out
    assert "Never measured by kernelmark" in out and "RMSNorm" in out
    assert "triton" in out      # the backend used is named per component


@pytest.mark.parametrize("argv, message", [
    (["model", "gpt-5", "--run", "x.jsonl"], "unknown model 'gpt-5'"),
    (["model", "llama3-8b", "--run", "x.jsonl", "--batch", "a,b"], "--batch must be integers"),
    (["model", "llama3-8b", "--run", "x.jsonl", "--batch", "0"], "must be positive"),
    (["model", "llama3-8b", "--run", "x.jsonl", "--price-per-hour", "-1"], "--price-per-hour"),
    (["model", "llama3-8b", "--run", "nosuch.jsonl"], "no such run file"),
])
def test_model_usage_errors(argv, message, capsys):
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("extra, message", [
    (["--tp", "3"], "--tp 3: llama3-8b's 32 query heads and 8 KV heads do not split evenly over 3 GPUs"),
    (["--tp", "16"], "--tp 16: llama3-8b's 8 KV heads do not split evenly over 16 GPUs"),
    (["--dtype", "fp64"], "--dtype fp64: the roll-up uses one of bf16, fp16, fp32, fp8_e4m3"),
    (["--price-per-hour", "nan"], "--price-per-hour must be a positive, finite number of dollars (got nan)"),
    (["--price-per-hour", "inf"], "(got inf)"),
    (["--context", "0"], "--context must be a positive integer (got 0)"),
    (["--prefill-tokens", "-5"], "--prefill-tokens must be a positive integer (got -5)"),
    (["--batch", "1,0"], "--batch must be positive integers"),
])
def test_model_options_the_rollup_cannot_use_exit_2_naming_the_option(extra, message, capsys):
    # Checked before any run file is read (this one does not exist).
    assert cli.main(["model", "llama3-8b", "--run", "nosuch.jsonl", *extra]) == 2
    out, err = capsys.readouterr()
    assert err.startswith("kernelmark: error: ") and message in err and err.count("\n") == 1 and not out


def test_tp_that_splits_the_heads_evenly_is_accepted(model_run, capsys):
    assert cli.main(["model", "llama3-70b", "--run", model_run, "--tp", "8", "--price-per-hour", "2"]) == 0
    assert "tensor parallel 8" in capsys.readouterr().out


def test_shape_sets_for_the_rollup_match_what_it_looks_for():
    need = rollup.decode_needs("llama3-70b", 8, 4096, tp=8)
    att = next(n for n in need if n.name == "attention")
    (_, shape), = models.SHAPE_SETS["llama3-70b.decode_attention"](batch=8, context=4096, tp=8)
    assert all(shape[k] == v for k, v in att.fixed.items())
    lm = next(n for n in need if n.name == "lm_head")
    (_, shape), = models.SHAPE_SETS["llama3-70b.lm_head"](m=8, tp=8)
    assert shape == lm.fixed
