"""FlashInfer-Trace datasets as suites: parsing, mapping, constraints, safetensors inputs,
the reference never run, and `kernelmark run --suite DATASET` end to end."""
import copy
import json
import sys
from pathlib import Path

import pytest

from kernelmark import results
from kernelmark.suites import loader
from kernelmark.suites.fitrace import constraints as cons
from kernelmark.suites.fitrace import mapping

sys.path.insert(0, str(Path(__file__).parent))
from fitrace_data import DEFS, MOE_BF16, const, t, var, write_dataset, write_definition  # noqa: E402


EXTRA = {
    "gqa_ragged_prefill_h4_kv2_d16": {
        "op_type": "gqa_ragged", "tags": ["model:toy-llm", "stage:prefill"],
        "axes": {"total_q": var(), "total_kv": var(), "num_qo_heads": const(4), "num_kv_heads": const(2),
                 "head_dim": const(16), "len_indptr": var()},
        "inputs": {"q": t(["total_q", "num_qo_heads", "head_dim"]), "k": t(["total_kv", "num_kv_heads", "head_dim"]),
                   "v": t(["total_kv", "num_kv_heads", "head_dim"]), "qo_indptr": t(["len_indptr"], "int32"),
                   "kv_indptr": t(["len_indptr"], "int32"), "sm_scale": t(None, "float32")},
        "outputs": {"output": t(["total_q", "num_qo_heads", "head_dim"])},
        "workloads": [({"total_q": 24, "total_kv": 24, "len_indptr": 4},
                       {"q": {"type": "random"}, "k": {"type": "random"}, "v": {"type": "random"},
                        "qo_indptr": {"type": "random"}, "kv_indptr": {"type": "random"},
                        "sm_scale": {"type": "scalar", "value": 0.1}})],
    },
    "top_k_top_p_sampling_v128": {
        "op_type": "sampling", "tags": ["model:toy-llm"],
        "axes": {"batch_size": var(), "vocab_size": const(128)},
        "inputs": {"probs": t(["batch_size", "vocab_size"], "float32"), "top_k": t(None, "int32"),
                   "top_p": t(None, "float32")},
        "outputs": {"samples": t(["batch_size"], "int64")},
        "workloads": [({"batch_size": 2}, {"probs": {"type": "random"}, "top_k": {"type": "scalar", "value": 20},
                                           "top_p": {"type": "scalar", "value": 0.9}})],
    },
    "mla_paged_decode_h16_ckv512_kpe64_ps1": {
        "op_type": "mla_paged", "tags": ["model:deepseek-v3"],
        "axes": {"batch_size": var(), "num_qo_heads": const(16), "head_dim_ckv": const(512),
                 "head_dim_kpe": const(64), "num_pages": var(), "len_indptr": var(), "num_kv_indices": var()},
        "inputs": {"q_nope": t(["batch_size", "num_qo_heads", "head_dim_ckv"]),
                   "q_pe": t(["batch_size", "num_qo_heads", "head_dim_kpe"]),
                   "ckv_cache": t(["num_pages", "head_dim_ckv"]), "kpe_cache": t(["num_pages", "head_dim_kpe"]),
                   "kv_indptr": t(["len_indptr"], "int32"), "kv_indices": t(["num_kv_indices"], "int32")},
        "outputs": {"output": t(["batch_size", "num_qo_heads", "head_dim_ckv"])},
        "workloads": [({"batch_size": 2, "num_pages": 64, "len_indptr": 3, "num_kv_indices": 40},
                       {"q_nope": {"type": "random"}, "q_pe": {"type": "random"}, "ckv_cache": {"type": "random"},
                        "kpe_cache": {"type": "random"}, "kv_indptr": {"type": "random"},
                        "kv_indices": {"type": "random"}})],
    },
}


def _cases(root):
    s = loader.load(str(root))
    by = {}
    for c in s.cases:                   # the first workload of each definition
        by.setdefault(c.meta["definition"], c)
    return s, by


def test_every_mapped_op_type_becomes_the_matching_case(tmp_path):
    write_dataset(tmp_path)
    for name, spec in EXTRA.items():
        write_definition(tmp_path, name, spec)
    suite, by = _cases(tmp_path)
    assert len(suite.cases) == 10       # 2 gemm workloads + one each; moe's 2 workloads fold into one row
    g = by["gemm_n64_k32"]
    assert (g.op, g.dtype) == ("gemm", "fp32") and {k: g.shape[k] for k in "mnk"} == {"m": 4, "n": 64, "k": 32}
    assert g.shape["layout"] == "nt"    # B is [N, K]
    assert g.meta["tags"] == ["model:toy-llm", "stage:decode"] and g.meta["uuid"] == "gemm_n64_k32-0"
    assert g.meta["model"] == "toy-llm" and "toy-llm" in g.label
    assert by["rmsnorm_h64"].op == "rmsnorm" and by["rmsnorm_h64"].shape["eps"] == 1e-6   # the scalar input
    assert by["fused_add_rmsnorm_h64"].op == "fused_add_rmsnorm"      # from the residual input
    d = by["gqa_paged_decode_h4_kv2_d16_ps4"]
    assert d.op == "paged_decode_attention"
    assert {k: d.shape[k] for k in ("batch", "q_heads", "kv_heads", "head_dim", "page_size", "context")} == \
        {"batch": 2, "q_heads": 4, "kv_heads": 2, "head_dim": 16, "page_size": 4, "context": 12}  # 6 pages x 4 / 2
    r = by["rope_h4_kv2_d16"]
    assert r.op == "rope" and (r.shape["tokens"], r.shape["q_heads"], r.shape["kv_heads"]) == (5, 4, 2)
    v = by["gqa_ragged_prefill_h4_kv2_d16"]
    assert v.op == "prefill_attention_varlen" and (v.shape["batch"], v.shape["seq"]) == (3, 8)
    assert any("sm_scale 0.1" in n for n in v.meta["notes"])          # differs from 1/sqrt(16): said
    s = by["top_k_top_p_sampling_v128"]
    assert s.op == "top_k_top_p_sampling" and (s.shape["top_k"], s.shape["top_p"]) == (20, 0.9)
    m = by["mla_paged_decode_h16_ckv512_kpe64_ps1"]
    assert m.op == "mla_decode_attention" and (m.shape["heads"], m.shape["page_size"], m.shape["context"]) == (16, 1, 20)
    moe = by["moe_fp8_e8_h64"]
    assert moe.meta["unsupported"].startswith("op_type moe (moe_fp8_e8_h64)")


def test_gqa_paged_prefill_maps_to_paged_prefill_attention(tmp_path):
    spec = copy.deepcopy(DEFS["gqa_paged_decode_h4_kv2_d16_ps4"])
    spec["axes"].update(total_q=var())
    spec["inputs"]["q"] = t(["total_q", "num_qo_heads", "head_dim"], "float32")
    spec["inputs"]["qo_indptr"] = t(["len_indptr"], "int32")
    spec["workloads"] = [({"batch_size": 2, "total_q": 6, "num_pages": 8, "len_indptr": 3, "num_kv_indices": 6},
                          {"sm_scale": {"type": "scalar", "value": 0.25}}),
                         ({"batch_size": 2, "total_q": 40, "num_pages": 8, "len_indptr": 3, "num_kv_indices": 6}, {})]
    write_definition(tmp_path, "gqa_paged_prefill_causal_h4_kv2_d16_ps4", spec)
    cases = loader.load(str(tmp_path)).cases
    p = cases[0]
    assert p.op == "paged_prefill_attention"
    assert {k: p.shape[k] for k in ("batch", "q_tokens", "context", "q_heads", "kv_heads", "page_size", "causal")} == \
        {"batch": 2, "q_tokens": 3, "context": 12, "q_heads": 4, "kv_heads": 2, "page_size": 4, "causal": 1}
    assert any("causal (bottom-right) assumed" in n for n in p.meta["notes"])
    # 20 queries a sequence over a context of 12: the queries' keys cannot all be cached.
    assert "20 queries a sequence but a mean context of 12" in cases[1].meta["unsupported"]


def test_unknown_op_type_is_an_unsupported_row_naming_it(tmp_path):
    spec = copy.deepcopy(DEFS["gemm_n64_k32"])
    spec["op_type"] = "warp_specialised_frobnicate"
    write_definition(tmp_path, "frob_1", spec)
    suite, by = _cases(tmp_path)
    assert len(suite.cases) == 1 and by["frob_1"].meta["unsupported"] == "op_type warp_specialised_frobnicate (frob_1)"


# NVFP4 GEMM as newer datasets spell it: B packed two values a byte, its shape an expression.
FP4_GEMM = {
    "op_type": "gemm", "tags": ["model:toy-llm", "quantization:nvfp4"],
    "axes": {"M": var(), "N": const(64), "K": const(32)},
    "inputs": {"A": t(["M", "K"], "float4_e2m1"), "B": t(["N", "K // 2"], "uint8"),
               "B_scale": t(["N"], "float32")},
    "outputs": {"C": t(["M", "N"])},
    "workloads": [({"M": 4}, {"A": {"type": "random"}, "B": {"type": "safetensors", "path": "blob/fp4.safetensors",
                                                           "tensor_key": "B"}, "B_scale": {"type": "random"}}),
                  ({"M": 8}, {})],
}


def test_a_dtype_we_lack_is_one_unsupported_row_the_rest_runs(tmp_path):
    write_dataset(tmp_path, ["gemm_n64_k32"])
    write_definition(tmp_path, "gemm_fp4_n64_k32", FP4_GEMM)
    bf16_only = copy.deepcopy(DEFS["gemm_n64_k32"])         # a known dtype that gemm's op lacks
    for x in ("A", "B"):
        bf16_only["inputs"][x]["dtype"] = "float8_e5m2"
    write_definition(tmp_path, "gemm_e5m2_n64_k32", bf16_only)
    suite, by = _cases(tmp_path)
    assert [c.op for c in suite.cases if c.meta["definition"] == "gemm_n64_k32"] == ["gemm", "gemm"]
    fp4 = [c for c in suite.cases if c.meta["definition"] == "gemm_fp4_n64_k32"]
    assert len(fp4) == 1                                     # one row for the definition, not one a workload
    why = fp4[0].meta["unsupported"]
    assert why.startswith("dtype float4_e2m1 (gemm_fp4_n64_k32): input A") and "dtype uint8 (gemm_fp4_n64_k32)" in why
    assert by["gemm_e5m2_n64_k32"].meta["unsupported"].startswith("dtype float8_e5m2 (gemm_e5m2_n64_k32): input A")
    # Still a malformed file where it is one: a bad workload line of that definition stops the run.
    w = tmp_path / "workloads" / "gemm" / "gemm_fp4_n64_k32.jsonl"
    w.write_text(w.read_text() + "{oops\n")
    with pytest.raises(loader.SuiteError, match=r"gemm_fp4_n64_k32\.jsonl:3: malformed JSON"):
        loader.load(str(tmp_path))


def test_a_definition_without_workloads_is_a_row_in_a_dataset_an_error_alone(tmp_path):
    write_dataset(tmp_path, ["gemm_n64_k32", "rope_h4_kv2_d16"])
    (tmp_path / "workloads" / "rope" / "rope_h4_kv2_d16.jsonl").unlink()
    suite, by = _cases(tmp_path)
    assert by["rope_h4_kv2_d16"].meta["unsupported"].startswith("no workloads for rope_h4_kv2_d16")
    assert by["gemm_n64_k32"].op == "gemm"
    with pytest.raises(loader.SuiteError, match=r"rope_h4_kv2_d16\.json:1: no workload file"):
        loader.load(str(tmp_path / "definitions" / "rope" / "rope_h4_kv2_d16.json"))


def test_a_mapper_whose_op_lacks_its_params_says_so(monkeypatch):
    from kernelmark.ops.registry import all_ops
    ops = dict(all_ops())
    ops["gemm"] = type(ops["gemm"])(**{**ops["gemm"].__dict__, "params": ("m", "n")})
    monkeypatch.setattr(mapping, "all_ops", lambda: ops)
    with pytest.raises(mapping.Unmappable, match=r"op gemm has no parameter\(s\) k, layout"):
        mapping._mapped("gemm", {"m": 1, "n": 1, "k": 1, "layout": "nt"}, "fp32")
    monkeypatch.setattr(mapping, "all_ops", lambda: {})
    with pytest.raises(mapping.Unmappable, match="kernelmark has no op 'rope' in this build"):
        mapping._mapped("rope", {"tokens": 1}, "fp32")


def test_constraints_axes_only_evaluated_the_rest_listed():
    axes = {"M": 4, "K": 32}
    assert cons.evaluate("M >= 1 and K % 16 == 0", axes) is True
    assert cons.evaluate("0 < M <= 2", axes) is False
    assert cons.evaluate("K // M == 8 or not M", axes) is True
    for expr in ("A.shape[0] == M", "len(K) > 0", "__import__('os').system('true')", "Q == 1", "M ** 1000"):
        with pytest.raises(cons.NotAxesOnly):
            cons.evaluate(expr, axes)
    failed, not_checked = cons.check_all(["M > 8", "x.y == 1", "K == 32"], axes)
    assert failed == ["M > 8"] and len(not_checked) == 1 and not_checked[0].startswith("x.y == 1")


def test_a_workload_breaking_an_axes_constraint_is_an_error_with_its_line(tmp_path):
    spec = copy.deepcopy(DEFS["gemm_n64_k32"])
    spec["constraints"] = ["M <= 4"]
    write_definition(tmp_path, "gemm_n64_k32", spec)
    with pytest.raises(loader.SuiteError, match=r"gemm_n64_k32\.jsonl:2: workload gemm_n64_k32-1 breaks .*M <= 4"):
        loader.load(str(tmp_path))
    g = _cases(write_dataset(tmp_path / "ok", ["gemm_n64_k32"]))[1]["gemm_n64_k32"]
    assert g.meta["constraints_not_checked"][0].startswith("A.shape[0] == M")


@pytest.mark.parametrize("edit, where, what", [
    (lambda d, w: (d.write_text(d.read_text()[:-3]), None), "json:", "malformed JSON"),
    (lambda d, w: (None, w.write_text(w.read_text() + "{not json\n")), "jsonl:3", "malformed JSON"),
    (lambda d, w: (None, w.write_text(w.read_text().replace('"M": 8', '"M": -1'))), "jsonl:2", "axis M = -1"),
    (lambda d, w: (None, w.write_text(w.read_text().replace('"M": 8', '"Q": 8'))), "jsonl:2", "missing M"),
    (lambda d, w: (d.write_text(d.read_text().replace('"float32"', "32", 1)), None), "json:", "dtype must be a non-empty string"),
    (lambda d, w: (d.write_text(d.read_text().replace("def run(", "def walk(")), None), "json:",
     "defines no top-level function run"),
])
def test_malformed_files_name_file_and_line(tmp_path, edit, where, what):
    d = write_definition(tmp_path, "gemm_n64_k32", DEFS["gemm_n64_k32"])
    edit(d, tmp_path / "workloads" / "gemm" / "gemm_n64_k32.jsonl")
    with pytest.raises(loader.SuiteError) as e:
        loader.load(str(tmp_path))
    assert where in str(e.value) and what in str(e.value), str(e.value)


def test_definition_file_finds_its_workloads_or_takes_them_after_a_colon(tmp_path):
    d = write_definition(tmp_path, "gemm_n64_k32", DEFS["gemm_n64_k32"])
    assert len(loader.load(str(d)).cases) == 2
    w = tmp_path / "mine.jsonl"
    w.write_text((tmp_path / "workloads" / "gemm" / "gemm_n64_k32.jsonl").read_text().splitlines()[0] + "\n")
    assert len(loader.load(f"{d}:{w}").cases) == 1


def test_safetensors_blob_absent_noted_present_checked(tmp_path):
    root = write_dataset(tmp_path, ["gqa_paged_decode_h4_kv2_d16_ps4"])
    name = "gqa_paged_decode_h4_kv2_d16_ps4"
    notes = _cases(root)[1][name].meta["notes"]
    assert any("blob/decode.safetensors absent" in n and "kv_indptr" in n for n in notes)
    st = pytest.importorskip("safetensors.torch")
    import torch
    (root / "blob").mkdir()
    st.save_file({"kv_indptr": torch.tensor([0, 3, 6], dtype=torch.int32),
                  "kv_indices": torch.arange(6, dtype=torch.int32)}, str(root / "blob" / "decode.safetensors"))
    notes = _cases(root)[1][name].meta["notes"]
    assert any("kv_indptr fed from safetensors blob/decode.safetensors[kv_indptr]" in n for n in notes)
    st.save_file({"kv_indptr": torch.tensor([0, 3, 6, 9], dtype=torch.int32),
                  "kv_indices": torch.arange(6, dtype=torch.int32)}, str(root / "blob" / "decode.safetensors"))
    with pytest.raises(loader.SuiteError, match=r"\.jsonl:1: input kv_indptr: .*\[4\] int32; the definition says \[3\] int32"):
        loader.load(str(root))


HARM = ("import pathlib\npathlib.Path({p!r}).write_text('ran')\n"
        "def run(A, B):\n    import os\n    os.system('touch ' + {p!r} + '.run')\n    return A @ B.T\n")


def test_run_dataset_end_to_end_records_trace_and_never_runs_the_reference(tmp_path, capsys):
    from kernelmark import cli
    root = write_dataset(tmp_path / "ds", ["gemm_n64_k32", "moe_fp8_e8_h64"])
    harm = tmp_path / "harm"
    write_definition(root, "gemm_n64_k32", DEFS["gemm_n64_k32"], reference=HARM.format(p=str(harm)))
    write_definition(root, "moe_bf16_topk2_e8_h64_i32", MOE_BF16)      # a mapped MoE definition runs too
    write_definition(root, "gemm_fp4_n64_k32", FP4_GEMM)                # fp4: a row, the run goes on
    out = tmp_path / "run.jsonl"
    # In this process (a `python -m kernelmark` costs a torch import); its cases still run in a
    # worker process, as in any run, and neither may run the definition's reference.
    status = cli.main(["run", "--suite", str(root), "--out", str(out), "--budget", "0.01", "--backends", "torch"])
    stdout, err = capsys.readouterr()
    assert status == 0, err
    assert not harm.exists() and not Path(str(harm) + ".run").exists()
    run = results.load(str(out))
    gemm = [r for r in run.records if r["op"] == "gemm" and r["status"] != "unsupported"]
    assert [r["trace"]["uuid"] for r in gemm] == ["gemm_n64_k32-0", "gemm_n64_k32-1"]
    assert all(r["status"] == "ok" and r["check"]["passed"] and r["trace"]["definition"] == "gemm_n64_k32"
               and len(r["trace"]["reference_sha256"]) == 64 for r in gemm)
    moe = [r for r in run.records if r["op"] == "moe"]      # no expert weights: not an MoE fused_moe computes
    assert len(moe) == 1 and moe[0]["status"] == "unsupported"
    assert moe[0]["reason"].startswith("op_type moe (moe_fp8_e8_h64): no w1 or gemm1_weights")
    assert "unsupported x1: op_type moe (moe_fp8_e8_h64)" in stdout
    assert "gemm_n64_k32 · model toy-llm · op gemm" in stdout      # the definition's section in the table
    fused = [r for r in run.records if r["op"] == "fused_moe"]
    assert [r["trace"]["uuid"] for r in fused] == ["moe_bf16_topk2_e8_h64_i32-0", "moe_bf16_topk2_e8_h64_i32-1"]
    assert all(r["status"] == "ok" and r["check"]["passed"] for r in fused)
    fp4 = [r for r in run.records if r["trace"]["definition"] == "gemm_fp4_n64_k32"]
    assert len(fp4) == 1 and fp4[0]["status"] == "unsupported"
    assert fp4[0]["reason"].startswith("dtype float4_e2m1 (gemm_fp4_n64_k32)")
    assert "unsupported x1: dtype float4_e2m1 (gemm_fp4_n64_k32)" in stdout


def test_run_malformed_dataset_exits_2_with_one_line(tmp_path, capsys):
    from kernelmark import cli
    write_definition(tmp_path, "gemm_n64_k32", DEFS["gemm_n64_k32"])
    w = tmp_path / "workloads" / "gemm" / "gemm_n64_k32.jsonl"
    w.write_text(w.read_text() + '{"definition": "gemm_n64_k32", "workload": {"uuid": "x", "axes": {"M": "big"}}}\n')
    assert cli.main(["run", "--suite", str(tmp_path), "--out", str(tmp_path / "r.jsonl")]) == 2
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0 and err.startswith("kernelmark: error: ")
    assert f"{w}:3: axis M = 'big'" in err and not (tmp_path / "r.jsonl").exists()
