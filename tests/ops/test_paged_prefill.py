"""paged_prefill_attention (kernelmark/ops/paged_prefill.py): work counts, inputs, the check
of every CPU backend, spoiled backends failing it, FlashInfer's glue, and a run end to end."""
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from kernelmark.kernels import paged
from kernelmark.ops import attention_libs, paged_prefill
from kernelmark.ops.registry import get_op

ROOT = Path(__file__).resolve().parents[2]
CPU = torch.device("cpu")
OP = get_op("paged_prefill_attention")
BASE = {"batch": 2, "q_tokens": 21, "context": 37, "q_heads": 4, "kv_heads": 1, "head_dim": 16}
SHAPES = [
    BASE,                                                # q tail (21 = 16 + 5), context tail (37), GQA 4
    {**BASE, "batch": 3, "ragged": 1, "page_size": 8},   # ragged chunks and prefixes, tiles span pages
    {**BASE, "q_tokens": 19, "context": 19},             # no prefix: plain causal prefill
    {**BASE, "batch": 3, "q_tokens": 1, "ragged": 1},    # one token each: a decode
    {**BASE, "q_tokens": 9, "causal": 0},                # not causal: the whole context
]


def _inputs(shape, dtype, seed=3):
    return OP.make_inputs(OP.full_shape(shape), dtype, CPU, torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- work counts and inputs

def test_uniform_work_counts_closed_forms():
    s = OP.full_shape({"batch": 3, "q_tokens": 10, "context": 40, "q_heads": 8, "kv_heads": 2, "head_dim": 16})
    assert (s["page_size"], s["ragged"], s["causal"]) == (16, 0, 1)
    assert OP.flops(s) == 4 * 8 * 16 * 3 * (10 * 30 + 55)          # the prefix whole, the chunk's triangle
    assert OP.flops({**s, "causal": 0}) == 4 * 8 * 16 * 3 * 10 * 40
    qo, kv = 2 * 30 * 8 * 16 * 2, 2 * 120 * 2 * 16 * 2
    assert OP.nbytes(s, "bf16") == qo + kv + 4 * 3 * 3 + 4 * 3 + 4 * 4      # 3 pages a sequence
    assert OP.nbytes(s, "fp32") == 2 * (qo + kv) + 4 * 9 + 4 * 3 + 4 * 4


def test_ragged_lengths_follow_the_shape_and_make_inputs_uses_them():
    s = OP.full_shape({**BASE, "batch": 4, "q_tokens": 100, "context": 300, "ragged": 1})
    q_lens, ctx = paged_prefill.chunk_lengths(s)
    assert sorted(q_lens) == [62, 87, 112, 137] and q_lens != sorted(q_lens)
    assert sorted(c - q for c, q in zip(ctx, q_lens)) == [125, 175, 225, 275]   # prefixes: mean context - q_tokens
    assert paged_prefill.chunk_lengths(dict(s)) == (q_lens, ctx)
    pairs = sum(q * (c - q) + q * (q + 1) // 2 for q, c in zip(q_lens, ctx))
    assert OP.flops(s) == 4 * 4 * 16 * pairs
    x = _inputs(s, "fp16")
    assert x["cu_seqlens_q"].tolist() == [0] + torch.tensor(q_lens).cumsum(0).tolist()
    assert x["context_lens"].tolist() == ctx and x["q"].shape == (sum(q_lens), 4, 16)
    assert (x["max_q_len"], x["max_context_len"]) == (max(q_lens), max(ctx))
    paged.check_block_table(x["block_table"], x["context_lens"], x["k_cache"].shape[0], 16)
    pages = sum(paged.blocks_needed(n, 16) for n in ctx)
    assert x["k_cache"].shape[0] >= pages + 4
    # Pages at random places, not one after another.
    row = x["block_table"][0, :paged.blocks_needed(ctx[0], 16)]
    assert not torch.equal(row, row[0] + torch.arange(len(row), dtype=row.dtype))
    # No prefix where q_tokens == context, ragged or not.
    q_lens, ctx = paged_prefill.chunk_lengths({**s, "context": 100})
    assert q_lens == ctx


@pytest.mark.parametrize("shape, match", [
    ({**BASE, "q_tokens": 38}, "q_tokens must be at most context .* q_tokens=38 > context=37"),
    ({**BASE, "page_size": 12}, "page_size must be a power of two"),
    ({**BASE, "q_heads": 6, "kv_heads": 4}, "q_heads must be a multiple of kv_heads"),
    ({**BASE, "ragged": 2}, "ragged must be 0 or 1"),
    ({**BASE, "causal": True}, "causal must be 0 or 1"),
    ({**BASE, "q_tokens": 0}, "q_tokens must be a positive integer"),
])
def test_invalid_shapes_name_the_parameter(shape, match):
    with pytest.raises(ValueError, match=match):
        OP.check_shape(OP.full_shape(shape), "bf16")


def test_inputs_are_deterministic_fresh_and_untouched_by_the_reference():
    shape = SHAPES[1]
    a, b, c = _inputs(shape, "fp16"), _inputs(shape, "fp16"), _inputs(shape, "fp16", seed=4)
    for k in ("q", "k_cache", "v_cache"):
        assert torch.equal(a[k], b[k]) and a[k].data_ptr() != b[k].data_ptr() and not torch.equal(a[k], c[k])
    assert not torch.equal(a["block_table"], c["block_table"])
    before = {k: a[k].clone() for k in ("q", "k_cache", "v_cache", "block_table")}
    OP.reference(a)
    assert all(torch.equal(a[k], v) for k, v in before.items())


def test_triton_head_dims_match_the_kernel():
    from kernelmark.kernels import paged_prefill_attention
    assert paged_prefill.TRITON_HEAD_DIMS == paged_prefill_attention.HEAD_DIMS


# ---------------------------------------------------------------- backends pass, spoiled ones fail

@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
@pytest.mark.parametrize("shape", SHAPES)
def test_every_cpu_backend_passes_the_check(shape, dtype):
    x = _inputs(shape, dtype)
    ref = OP.reference(x)
    for name in ("triton", "torch-gather-sdpa"):
        res = OP.compare(OP.backend(name).run(_inputs(shape, dtype)), ref, dtype)
        assert res.passed, f"{name}: {res.detail}"


def _top_left_causal(x):
    """A copy of torch-gather-sdpa that ignores the prefix: masks as if the chunk were the
    sequence's first tokens (SDPA's own is_causal, top-left)."""
    outs, at = [], 0
    g = x["q_heads"] // x["kv_heads"]
    for i, (m, n) in enumerate(zip(x["q_lens"], x["context_lens_host"])):
        k = paged.gather_pages(x["k_cache"], x["block_table"][i], n).repeat_interleave(g, 1).transpose(0, 1)
        v = paged.gather_pages(x["v_cache"], x["block_table"][i], n).repeat_interleave(g, 1).transpose(0, 1)
        o = F.scaled_dot_product_attention(x["q"][at:at + m].transpose(0, 1), k, v, is_causal=True, scale=x["scale"])
        outs.append(o.transpose(0, 1))
        at += m
    return torch.cat(outs)


def _last_row_zeroed(run):
    def spoiled(x):
        o = run(x)
        o[-1] = 0
        return o
    return spoiled


def _contiguous_pages(run):
    """The backend fed a table of pages one after another from each sequence's first: what a
    kernel that assumes contiguous pages reads."""
    def spoiled(x):
        t = x["block_table"]
        cont = (t[:, :1] + torch.arange(t.shape[1], dtype=t.dtype)) % x["k_cache"].shape[0]
        return run({**x, "block_table": cont})
    return spoiled


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_spoiled_backends_fail_the_check(dtype):
    shape = SHAPES[1]                   # ragged, with prefixes
    x = _inputs(shape, dtype)
    ref = OP.reference(x)
    torch_run = OP.backend("torch-gather-sdpa").run
    assert OP.compare(torch_run(x), ref, dtype).passed
    spoiled = {"no causal offset": _top_left_causal, "last row zeroed": _last_row_zeroed(torch_run),
               "contiguous pages": _contiguous_pages(torch_run)}
    if dtype == "bf16":                 # the kernel too (the interpreter is slow: one dtype)
        spoiled["contiguous pages (triton)"] = _contiguous_pages(OP.backend("triton").run)
    passed = [name for name, run in spoiled.items() if OP.compare(run(x), ref, dtype).passed]
    assert passed == []


def test_the_causal_flag_reaches_the_backends():
    shape = OP.full_shape(SHAPES[0])
    ref = OP.reference(_inputs(shape, "fp32"))
    wrong = OP.backend("torch-gather-sdpa").run(_inputs({**shape, "causal": 0}, "fp32"))
    assert not OP.compare(wrong, ref, "fp32").passed


def test_unsupported_backends_say_why():
    shape = OP.full_shape(BASE)
    assert "head_dim" in OP.backend("triton").supports({**shape, "head_dim": 96}, "bf16", "cuda", (9, 0))
    fi = OP.backend("flashinfer")
    assert fi.dtypes == ("fp16", "bf16") and "NVIDIA" in fi.supports(shape, "bf16", "cpu", None)
    assert fi.available() is None or "not installed" in fi.available()


# ---------------------------------------------------------------- FlashInfer glue

class _FakePrefillWrapper:
    """Stands in for flashinfer.BatchPrefillWithPagedKVCacheWrapper: computes attention from
    the CSR tables it was planned with (kv_indptr, kv_indices, kv_last_page_len, qo_indptr),
    bottom-right causal as FlashInfer documents, so the glue's tables are checked by the result."""

    def __init__(self, workspace, kv_layout):
        assert kv_layout == "NHD"

    def plan(self, qo_indptr, kv_indptr, kv_indices, last_page_len, hq, hk, d, page_size, *, causal, sm_scale,
             pos_encoding_mode, q_data_type, kv_data_type):
        self.t = (qo_indptr.tolist(), kv_indptr.tolist(), kv_indices.tolist(), last_page_len.tolist())
        self.hq, self.hk, self.ps, self.causal, self.scale = hq, hk, page_size, causal, sm_scale

    def run(self, q, kv):
        qo, indptr, indices, last = self.t
        out = torch.empty_like(q)
        for s in range(len(qo) - 1):
            pages = indices[indptr[s]:indptr[s + 1]]
            n = (len(pages) - 1) * self.ps + last[s]
            k, v = (c[pages].flatten(0, 1)[:n].repeat_interleave(self.hq // self.hk, 1).transpose(0, 1) for c in kv)
            qs = q[qo[s]:qo[s + 1]].transpose(0, 1)
            m = qs.shape[1]
            mask = torch.arange(n)[None, :] <= torch.arange(n - m, n)[:, None] if self.causal else None
            out[qo[s]:qo[s + 1]] = F.scaled_dot_product_attention(qs, k, v, attn_mask=mask,
                                                                   scale=self.scale).transpose(0, 1)
        return out


def test_flashinfer_glue_plans_the_tables_it_documents(monkeypatch):
    fake = types.ModuleType("flashinfer")
    fake.BatchPrefillWithPagedKVCacheWrapper = _FakePrefillWrapper
    monkeypatch.setitem(sys.modules, "flashinfer", fake)
    monkeypatch.setattr(attention_libs, "_FLASHINFER_WORKSPACE", {CPU: torch.empty(0, dtype=torch.uint8)})
    attention_libs._import_error.cache_clear()
    try:
        for shape in (SHAPES[1], SHAPES[4]):
            x = _inputs(shape, "fp32")
            attention_libs._plan_flashinfer(x, prefill=True)
            assert not isinstance(x["_flashinfer"], str), x["_flashinfer"]
            res = OP.compare(OP.backend("flashinfer").run(x), OP.reference(x), "fp32")
            assert res.passed, res.detail
    finally:
        attention_libs._import_error.cache_clear()


# ---------------------------------------------------------------- a run, end to end

def test_a_run_of_one_case_times_torch_and_checks_triton(tmp_path):
    suite = tmp_path / "pp.toml"
    suite.write_text('name = "pp"\n[[case]]\nop = "paged_prefill_attention"\ndtypes = ["fp32"]\n'
                     'shapes = [{batch = 2, q_tokens = 21, context = 37, q_heads = 4, kv_heads = 1, head_dim = 16, '
                     'ragged = 1}]\n')
    out = tmp_path / "r.jsonl"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = str(ROOT)
    p = subprocess.run([sys.executable, "-m", "kernelmark", "run", "--suite", str(suite), "--budget", "0.1",
                        "--no-history", "--isolation", "none", "--device", "cpu", "--out", str(out)],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    recs = {r["backend"]: r for r in map(json.loads, out.read_text().splitlines()) if r["type"] == "record"}
    assert recs["torch-gather-sdpa"]["status"] == "ok" and recs["torch-gather-sdpa"]["timing"]["samples_us"]
    assert recs["triton"]["status"] == "checked" and recs["triton"]["check"]["passed"]
    assert recs["flashinfer"]["status"] != "ok"                     # GPU only: never timed here
    assert "paged_prefill_attention" in p.stdout and "checked" in p.stdout


def test_the_attention_suite_has_cpu_and_gpu_cases():
    from kernelmark.harness.runner import INTERPRETER_MAX_BYTES, INTERPRETER_MAX_FLOPS
    from kernelmark.suites import loader
    ours = [c for c in loader.load("attention").cases if c.op == "paged_prefill_attention"]
    cpu = [c for c in ours if c.runs_on("cpu")]
    gpu = [c for c in ours if c.runs_on("cuda")]
    assert cpu and gpu and not set(map(id, cpu)) & set(map(id, gpu))
    for c in cpu:       # small enough that the interpreter checks the Triton kernel
        assert OP.flops(c.shape) <= INTERPRETER_MAX_FLOPS and OP.nbytes(c.shape, c.dtype) <= INTERPRETER_MAX_BYTES
    llama = {"batch": 4, "q_tokens": 512, "context": 4096, "q_heads": 32, "kv_heads": 8, "head_dim": 128}
    assert any(all(c.shape[k] == v for k, v in llama.items()) and c.shape["page_size"] == 16 for c in gpu)
    assert {c.shape["ragged"] for c in gpu} == {0, 1} and all(OP.nbytes(c.shape, c.dtype) < 2 ** 30 for c in gpu)
