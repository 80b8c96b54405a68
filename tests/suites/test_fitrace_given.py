"""FlashInfer-Trace safetensors inputs fed to the ops: a blob the mapped op can take becomes
its actual input, for the reference and every backend; the others are checked and noted."""
import copy
import dataclasses
import sys
from pathlib import Path

import pytest

from kernelmark.harness import device, runner, timing
from kernelmark.ops.registry import get_op
from kernelmark.suites import loader

sys.path.insert(0, str(Path(__file__).parent))
from fitrace_data import DEFS, write_dataset, write_definition  # noqa: E402

torch = pytest.importorskip("torch")
st = pytest.importorskip("safetensors.torch")


def _blob(name):
    return {"type": "safetensors", "path": "blob/given.safetensors", "tensor_key": name}


@pytest.fixture()
def given_root(tmp_path):
    """gemm, rmsnorm and rope workloads whose dense and index inputs are blobs we write."""
    g = torch.Generator().manual_seed(7)
    blobs = {"A": torch.randn(4, 32, generator=g), "B": torch.randn(64, 32, generator=g),
             "hidden_states": torch.randn(3, 64, generator=g), "weight": torch.rand(64, generator=g) + 0.5,
             "q": torch.randn(5, 4, 16, generator=g), "k": torch.randn(5, 2, 16, generator=g),
             # 9000 is past the op's default cos/sin cache (8192 rows): the case must grow it.
             "positions": torch.tensor([0, 3, 9000, 2, 1], dtype=torch.int64)}
    (tmp_path / "blob").mkdir()
    st.save_file(blobs, str(tmp_path / "blob" / "given.safetensors"))
    gemm = copy.deepcopy(DEFS["gemm_n64_k32"])
    gemm["workloads"] = [({"M": 4}, {"A": _blob("A"), "B": _blob("B")})]
    norm = copy.deepcopy(DEFS["rmsnorm_h64"])
    norm["workloads"][0][1].update(hidden_states=_blob("hidden_states"), weight=_blob("weight"))
    rope = copy.deepcopy(DEFS["rope_h4_kv2_d16"])
    rope["workloads"] = [({"num_tokens": 5}, {"q": _blob("q"), "k": _blob("k"), "positions": _blob("positions")})]
    for name, spec in (("gemm_n64_k32", gemm), ("rmsnorm_h64", norm), ("rope_h4_kv2_d16", rope)):
        write_definition(tmp_path, name, spec)
    write_dataset(tmp_path, ["gqa_paged_decode_h4_kv2_d16_ps4"])     # its index blobs: not fed (below)
    st.save_file({"kv_indptr": torch.tensor([0, 3, 6], dtype=torch.int32),
                  "kv_indices": torch.arange(6, dtype=torch.int32)}, str(tmp_path / "blob" / "decode.safetensors"))
    return tmp_path, blobs


def _runner(out):
    cfg = runner.RunConfig(timing=timing.TimingConfig(budget_s=0.02, min_samples=3), seed=1)
    return runner.Runner(device.resolve("cpu"), {"l2_bytes": 1 << 20, "datasheet": None},
                         {"copy_gbps": 10.0, "tflops": {}}, cfg, out.append)


def test_blobs_become_the_ops_inputs_and_the_check_runs_on_them(given_root):
    root, blobs = given_root
    by = {c.meta["definition"]: c for c in loader.load(str(root)).cases}
    r = _runner([])
    cpu = torch.device("cpu")

    g = by["gemm_n64_k32"]
    assert set(g.meta["given"]) == {"a", "b"} and g.meta["given"]["b"]["input"] == "B"
    assert any(n == "A fed from safetensors blob/given.safetensors[A]" for n in g.meta["notes"])
    op = get_op("gemm")
    x = r._inputs(op, g, cpu, seed=1)
    assert torch.equal(x["a"], blobs["A"]) and torch.equal(x["b"].t(), blobs["B"])    # nt: b is W [N, K]ᵀ
    assert torch.allclose(op.reference(x), (blobs["A"].double() @ blobs["B"].double().T).float())
    assert torch.equal(r._inputs(op, g, cpu, seed=2)["a"], blobs["A"])      # every input set: the blob

    n = by["rmsnorm_h64"]
    x = r._inputs(get_op("rmsnorm"), n, cpu, seed=1)
    assert torch.equal(x["x"], blobs["hidden_states"]) and torch.equal(x["weight"], blobs["weight"])

    p = by["rope_h4_kv2_d16"]
    assert p.shape["max_position"] == 9001
    x = r._inputs(get_op("rope"), p, cpu, seed=1)
    assert torch.equal(x["positions"], blobs["positions"]) and torch.equal(x["q"], blobs["q"])
    assert not any("synthesised" in n for n in p.meta["notes"])

    # Run for real: the reference, torch (timed) and triton (checked in the interpreter) all
    # compute on the given tensors and agree.
    out = []
    _runner(out).run([dataclasses.replace(c, backends=("torch", "triton")) for c in (g, n, p)])
    assert [(rec["op"], rec["backend"], rec["status"]) for rec in out] == [
        (o, b, s) for o in ("gemm", "rmsnorm", "rope") for b, s in (("torch", "ok"), ("triton", "checked"))]
    assert all(rec["check"]["passed"] and rec["trace"]["given"] for rec in out)


def _decode(root, indptr, indices, num_pages=16):
    spec = copy.deepcopy(DEFS["gqa_paged_decode_h4_kv2_d16_ps4"])
    axes, inputs = spec["workloads"][0]
    axes.update(num_pages=num_pages, num_kv_indices=len(indices))
    inputs["q"] = {"type": "safetensors", "path": "blob/decode.safetensors", "tensor_key": "q"}
    spec["workloads"] = [(axes, inputs)]
    write_definition(root, "gqa_paged_decode_h4_kv2_d16_ps4", spec)
    st.save_file({"kv_indptr": torch.tensor(indptr, dtype=torch.int32),
                  "kv_indices": torch.tensor(indices, dtype=torch.int32),
                  "q": torch.randn(2, 4, 16, generator=torch.Generator().manual_seed(3))},
                 str(root / "blob" / "decode.safetensors"))
    return next(c for c in loader.load(str(root)).cases if c.meta["definition"] == "gqa_paged_decode_h4_kv2_d16_ps4")


def test_a_uniform_page_table_is_fed_and_attended_over(given_root):
    root, _ = given_root
    # Page 15 is past the op's own cache (6 pages needed + 4 spare): its pages are repeated up to it.
    d = _decode(root, [0, 3, 6], [15, 2, 9, 11, 0, 13])
    assert d.shape["context"] == 12 and set(d.meta["given"]) == {"q", "kv_indptr", "kv_indices"}
    assert any("every context 12" in n for n in d.meta["notes"])
    op = get_op("paged_decode_attention")
    x = _runner([])._inputs(op, d, torch.device("cpu"), seed=1)
    assert x["block_table"].tolist() == [[15, 2, 9], [11, 0, 13]] and x["k_cache"].shape[0] == 16
    # The reference reads the given pages: attention of q[0] over pages 15, 2, 9 by hand.
    k, v = (x[c][[15, 2, 9]].reshape(12, 2, 16).double() for c in ("k_cache", "v_cache"))
    q0 = x["q"][0].double().view(2, 2, 16)                         # kv head, its 2 query heads, dim
    p = torch.softmax(torch.einsum("hgd,nhd->hgn", q0, k) / 4.0, -1)
    assert torch.allclose(op.reference(x)[0].double(), torch.einsum("hgn,nhd->hgd", p, v).reshape(4, 16))
    out = []
    _runner(out).run([dataclasses.replace(d, backends=("torch-gather-sdpa", "triton"))])
    assert [(r["status"], r["check"]["passed"]) for r in out] == [("ok", True), ("checked", True)]


def test_a_ragged_page_table_is_checked_noted_and_not_fed(given_root):
    root, _ = given_root
    d = _decode(root, [0, 2, 6], [1, 2, 3, 4, 5, 6], num_pages=8)
    assert set(d.meta["given"]) == {"q"}                           # q still fed; the table not
    assert any("contexts run 8..16: not fed" in n for n in d.meta["notes"])
    assert any("checked (shape, dtype) but not fed: op paged_decode_attention makes its own kv_indptr" in n
               for n in d.meta["notes"])


def test_a_given_tensor_the_op_does_not_take_or_of_another_shape_is_refused():
    op = get_op("rmsnorm")
    shape = op.full_shape({"tokens": 2, "hidden": 8})
    x = op.make_inputs(shape, "fp32", torch.device("cpu"), torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="cannot take given input"):
        op.use_given(x, {"eps": torch.ones(())})
    with pytest.raises(ValueError, match=r"given input x is \[3, 8\]; the op's is \[2, 8\]"):
        op.use_given(x, {"x": torch.ones(3, 8)})
    rope = get_op("rope")
    s = rope.full_shape({"tokens": 2, "q_heads": 1, "kv_heads": 1, "head_dim": 8, "rotary_dim": 8,
                         "max_position": 16})
    x = rope.make_inputs(s, "fp32", torch.device("cpu"), torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="positions span 0..16; the cos/sin cache has max_position 16"):
        rope.use_given(x, {"positions": torch.tensor([0, 16])})


PER_ROW_SAMPLING = {
    "op_type": "sampling", "tags": ["model:toy-llm"],
    "axes": {"batch_size": {"type": "var"}, "vocab_size": {"type": "const", "value": 128}},
    "inputs": {"probs": {"shape": ["batch_size", "vocab_size"], "dtype": "float32"},
               "top_k": {"shape": ["batch_size"], "dtype": "int32"},
               "top_p": {"shape": ["batch_size"], "dtype": "float32"}},
    "outputs": {"samples": {"shape": ["batch_size"], "dtype": "int64"}},
}


def _sampling(tmp_path, name, top_k, top_p):
    st.save_file({"top_k": top_k, "top_p": top_p}, str(tmp_path / "blob" / f"{name}.safetensors"))
    blob = {"type": "safetensors", "path": f"blob/{name}.safetensors"}
    spec = {**PER_ROW_SAMPLING, "workloads": [({"batch_size": len(top_k)}, {
        "probs": {"type": "random"}, "top_k": {**blob, "tensor_key": "top_k"},
        "top_p": {**blob, "tensor_key": "top_p"}})]}
    write_definition(tmp_path, name, spec)


def test_per_row_sampling_parameters_one_value_or_fed_per_row_else_unsupported(tmp_path):
    (tmp_path / "blob").mkdir()
    _sampling(tmp_path, "same_rows", torch.tensor([20, 20, 20], dtype=torch.int32), torch.full((3,), 0.5))
    _sampling(tmp_path, "rows_differ", torch.tensor([20, 5, 40], dtype=torch.int32), torch.tensor([0.9, 1.0, 0.6]))
    spec = {**PER_ROW_SAMPLING, "workloads": [({"batch_size": 2}, {})]}      # random per-row values
    write_definition(tmp_path, "random_rows", spec)
    by = {c.meta["definition"]: c for c in loader.load(str(tmp_path)).cases}
    s = by["same_rows"]
    assert (s.op, s.shape["top_k"], s.shape["top_p"]) == ("top_k_top_p_sampling", 20, 0.5) and "given" not in s.meta
    assert any("top_k per-row tensor blob/same_rows.safetensors[top_k]: every row 20" in n for n in s.meta["notes"])
    assert "per-row top_k tensor (given as random, no values)" in by["random_rows"].meta["unsupported"]

    d = by["rows_differ"]
    assert d.shape["top_k"] == 40 and set(d.meta["given"]) == {"top_k", "top_p"}
    op = get_op("top_k_top_p_sampling")
    x = _runner([])._inputs(op, d, torch.device("cpu"), seed=1)
    assert x["top_k"].tolist() == [20, 5, 40]
    ref = op.reference(x)
    assert [int(n) for n in (ref.probs > 0).sum(-1)][1] <= 5          # row 1's own k, not the shape's 40
    bad = ref.order[:, :1].clone()
    bad[1, 0] = ref.order[1, 10]                 # rank 10: inside rows 0 and 2's sets, outside row 1's top 5
    assert op.compare(ref.order[:, :1], ref, "fp32").passed
    c = op.compare(bad, ref, "fp32")
    assert not c.passed and "outside the top-k/top-p set" in c.detail
    out = []
    _runner(out).run([dataclasses.replace(d, backends=("torch", "triton"))])
    assert out[0]["status"] == "ok" and out[0]["check"]["passed"]     # torch: per-row thresholds, checked
    assert out[1]["status"] == "unsupported" and out[1]["reason"].startswith("per-row top_k/top_p: kernelmark's Triton")
