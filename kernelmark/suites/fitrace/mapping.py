"""FlashInfer-Trace op_type -> the kernelmark op that computes the same thing, its shape
and dtype. One small mapper per op_type. A mapper looks its op up in the registry when it
runs, so a mapper whose op lands later starts working without a change here; where the op
is missing, or its parameters are not the ones the mapper sets, the workload becomes an
``unsupported`` row with the reason.

A mapper gets the definition, the workload and ``dims`` (every axis, const and var, as
integers) and returns a Mapped, or raises Unmappable(reason).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from kernelmark.ops.registry import all_ops
from kernelmark.suites.fitrace.format import dim

DTYPE = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16", "float8_e4m3fn": "fp8_e4m3"}
# Index tensors our ops make themselves from the shape; a captured one is not used.
INDEX_INPUTS = ("kv_indptr", "kv_indices", "kv_last_page_len", "qo_indptr", "positions", "kv_len_arr")


class Unmappable(ValueError):
    """This workload cannot be run by a kernelmark op (the message says why)."""


@dataclass
class Mapped:
    op: str
    shape: dict
    dtype: str
    notes: list = field(default_factory=list)
    # The definition's inputs the op can take as given tensors: definition input -> the op's
    # input (Op.given). A safetensors blob of one of these is fed; any other is only checked.
    feeds: dict = field(default_factory=dict)


def dims_of(defn, workload) -> dict:
    return {**defn.const_axes(), **workload.axes}


def tensor_shape(defn, dims: dict, name: str) -> list:
    t = defn.inputs.get(name)
    if t is None:
        raise Unmappable(f"{defn.op_type} definition {defn.name} has no input {name!r} "
                         f"(inputs: {', '.join(defn.inputs)})")
    return [dim(a, dims) for a in (t["shape"] or [])]


def our_dtype(defn, name: str) -> str:
    fi = defn.inputs[name]["dtype"]
    if fi not in DTYPE:
        raise Unmappable(f"dtype {fi} ({defn.name}): input {name}; kernelmark's op dtypes are "
                         f"{', '.join(DTYPE)}")
    return DTYPE[fi]


def scalar(workload, name: str):
    spec = workload.inputs.get(name)
    return spec["value"] if spec and spec.get("type") == "scalar" else None


def _op(name: str, params: tuple):
    """The registered op, checked to take ``params``; Unmappable where not."""
    op = all_ops().get(name)
    if op is None:
        raise Unmappable(f"kernelmark has no op {name!r} in this build")
    missing = [p for p in params if p not in op.params]
    if missing:
        raise Unmappable(f"op {name} has no parameter(s) {', '.join(missing)} (its parameters: "
                         f"{', '.join(op.params)})")
    return op


def _mapped(name: str, shape: dict, dtype: str, notes=None, feeds=None) -> Mapped:
    op = _op(name, tuple(shape))
    feeds = {k: v for k, v in (feeds or {}).items() if v in op.given}   # what this build's op takes
    return Mapped(name, shape, dtype, list(notes or []), feeds)


def map_gemm(defn, w, dims, blobs=None) -> Mapped:
    m, k = tensor_shape(defn, dims, "A")
    n, k2 = tensor_shape(defn, dims, "B")          # B is [N, K]: C = A·Bᵀ, our "nt" layout
    if k != k2:
        raise Unmappable(f"A is [{m}, {k}] and B is [{n}, {k2}]: K differs")
    return _mapped("gemm", {"m": m, "n": n, "k": k, "layout": "nt"}, our_dtype(defn, "A"),
                   feeds={"A": "a", "B": "b"})


def map_rmsnorm(defn, w, dims, blobs=None) -> Mapped:
    tokens, hidden = tensor_shape(defn, dims, "hidden_states")
    name = "fused_add_rmsnorm" if "residual" in defn.inputs else "rmsnorm"
    shape, notes = {"tokens": tokens, "hidden": hidden}, []
    eps = scalar(w, "eps")
    if eps is not None:
        shape["eps"] = float(eps)
    elif "eps" not in defn.inputs:
        notes.append("eps is not an input of the definition: the op's default eps used")
    return _mapped(name, shape, our_dtype(defn, "hidden_states"), notes,
                   feeds={"hidden_states": "x", "weight": "weight", "residual": "residual"})


def _kv_geometry(defn, dims, cache: str, heads_last: bool = True) -> tuple:
    """(page_size, kv_heads or None, head_dim) of a paged cache [pages, page_size, (heads,) dim];
    a 3-D cache without a page axis has pages of 1."""
    s = tensor_shape(defn, dims, cache)
    if len(s) == 4:
        return s[1], s[2], s[3]
    if len(s) == 3 and "page_size" in dims:
        return s[1], None, s[2]
    if len(s) == 3:
        return 1, s[1], s[2]
    raise Unmappable(f"{cache} has shape {s}: expected [pages, page_size, kv_heads, head_dim]")


def _mean_context(defn, w, dims, batch: int, page_size: int, notes: list) -> int:
    if "kv_indices" not in defn.inputs:
        raise Unmappable("no kv_indices input: the context lengths cannot be read from the axes")
    pages = tensor_shape(defn, dims, "kv_indices")[0]
    if batch < 1 or pages < 1:
        raise Unmappable(f"batch {batch}, {pages} pages: nothing to attend over")
    context = max(1, round(pages * page_size / batch))
    notes.append(f"contexts uniform at the mean ({pages} pages x {page_size} / batch {batch}); "
                 "kv_indptr/kv_indices synthesised from the axes")
    return context


def _sm_scale_note(w, head_dim: int, notes: list, dim_for_scale=None) -> None:
    s = scalar(w, "sm_scale")
    want = 1 / math.sqrt(dim_for_scale or head_dim)
    if s is not None and not math.isclose(s, want, rel_tol=1e-4):
        notes.append(f"sm_scale {s} given; the op scales by 1/sqrt({dim_for_scale or head_dim}) = {want:.6g} "
                     "(same cost, different values)")


def map_gqa_paged(defn, w, dims, blobs=None) -> Mapped:
    if "qo_indptr" in defn.inputs:
        return _gqa_paged_prefill(defn, w, dims)
    batch, q_heads, head_dim = tensor_shape(defn, dims, "q")
    page_size, kv_heads, d2 = _kv_geometry(defn, dims, "k_cache")
    if kv_heads is None or d2 != head_dim:
        raise Unmappable(f"k_cache {tensor_shape(defn, dims, 'k_cache')} does not match q [{batch}, "
                         f"{q_heads}, {head_dim}]")
    notes: list = []
    feeds = {"q": "q"}
    context = _given_context(defn, blobs or {}, batch, page_size, notes)
    if context is None:
        context = _mean_context(defn, w, dims, batch, page_size, notes)
    else:
        feeds.update({n: n for n in ("kv_indptr", "kv_indices", "k_cache", "v_cache")})
    _sm_scale_note(w, head_dim, notes)
    return _mapped("paged_decode_attention", {"batch": batch, "context": context, "q_heads": q_heads,
                                              "kv_heads": kv_heads, "head_dim": head_dim,
                                              "page_size": page_size, "ragged": 0},
                   our_dtype(defn, "q"), notes, feeds)


def _given_context(defn, blobs: dict, batch: int, page_size: int, notes: list):
    """The one context of a given page table (kv_indptr and kv_indices blobs, with
    kv_last_page_len where the definition has it), or None where there is none to feed: the
    op's contexts are uniform (its FLOPs and bytes are functions of the shape), so a table
    whose sequences differ is noted and not fed."""
    indptr, last = blobs.get("kv_indptr"), blobs.get("kv_last_page_len")
    if indptr is None or blobs.get("kv_indices") is None or len(indptr) != batch + 1:
        return None
    if "kv_last_page_len" in defn.inputs and last is None:
        notes.append("kv_last_page_len not given: the page table is not fed (its contexts are unknown)")
        return None
    pages = (indptr[1:] - indptr[:-1]).to(torch.int64)
    lens = pages * page_size if last is None else (pages - 1) * page_size + last.to(torch.int64)
    lo, hi = int(lens.min()), int(lens.max())
    if lo != hi or lo < 1:
        notes.append(f"the given kv_indptr's contexts run {lo}..{hi}: not fed (kernelmark's paged decode "
                     "counts its work from one context a sequence)")
        return None
    notes.append(f"page table from the given kv_indptr/kv_indices: every context {lo}")
    return lo


def _gqa_paged_prefill(defn, w, dims) -> Mapped:
    """q [total_q, Hq, D] in qo_indptr's sequences against a paged cache: paged_prefill_attention
    with each sequence's queries and context at the means (the op's are uniform)."""
    total_q, q_heads, head_dim = tensor_shape(defn, dims, "q")
    page_size, kv_heads, d2 = _kv_geometry(defn, dims, "k_cache")
    batch = tensor_shape(defn, dims, "qo_indptr")[0] - 1
    if kv_heads is None or d2 != head_dim:
        raise Unmappable(f"k_cache {tensor_shape(defn, dims, 'k_cache')} does not match q [{total_q}, "
                         f"{q_heads}, {head_dim}]")
    if batch < 1 or total_q < batch:
        raise Unmappable(f"{total_q} queries over {batch} sequences: nothing to attend with")
    notes: list = []
    context = _mean_context(defn, w, dims, batch, page_size, notes)
    q_len = total_q // batch
    if q_len > context:
        raise Unmappable(f"{q_len} queries a sequence but a mean context of {context}: the queries' own "
                         "keys must be in the cache")
    notes.append(f"queries uniform at the mean ({total_q} / batch {batch} = {q_len}); qo_indptr synthesised")
    causal = scalar(w, "causal")
    if causal is None:
        notes.append("causal (bottom-right) assumed: the definition states the mask only in its reference")
    _sm_scale_note(w, head_dim, notes)
    return _mapped("paged_prefill_attention", {"batch": batch, "q_tokens": q_len, "context": context,
                                               "q_heads": q_heads, "kv_heads": kv_heads, "head_dim": head_dim,
                                               "page_size": page_size, "ragged": 0,
                                               "causal": 1 if causal is None else int(bool(causal))},
                   our_dtype(defn, "q"), notes)


def map_gqa_ragged(defn, w, dims, blobs=None) -> Mapped:
    total_q, q_heads, head_dim = tensor_shape(defn, dims, "q")
    total_kv, kv_heads, _ = tensor_shape(defn, dims, "k")
    batch = tensor_shape(defn, dims, "qo_indptr")[0] - 1
    if batch < 1:
        raise Unmappable(f"qo_indptr of length {batch + 1}: no sequences")
    if total_kv != total_q:
        raise Unmappable(f"{total_kv} keys for {total_q} queries: prefill with a KV prefix is not a "
                         "kernelmark op yet (prefill_attention_varlen attends each sequence to itself)")
    notes = [f"{batch} sequences spread around the mean length {max(1, total_q // batch)} (kernelmark's "
             "own varlen spread); qo_indptr/kv_indptr synthesised from the axes"]
    _sm_scale_note(w, head_dim, notes)
    causal = scalar(w, "causal")
    return _mapped("prefill_attention_varlen", {"batch": batch, "seq": max(1, total_q // batch),
                                                "q_heads": q_heads, "kv_heads": kv_heads,
                                                "head_dim": head_dim, "causal": 1 if causal is None else int(causal)},
                   our_dtype(defn, "q"), notes)


def map_rope(defn, w, dims, blobs=None) -> Mapped:
    qs = tensor_shape(defn, dims, "q")
    ks = tensor_shape(defn, dims, "k")
    if len(qs) != 3 or len(ks) != 3:
        raise Unmappable(f"q {qs} and k {ks}: expected [tokens, heads, head_dim]")
    shape = {"tokens": qs[0], "q_heads": qs[1], "kv_heads": ks[1], "head_dim": qs[2],
             "rotary_dim": dims.get("rotary_dim", qs[2])}
    notes = []
    pos = (blobs or {}).get("positions")
    rope = all_ops().get("rope")
    if pos is not None and pos.numel() and rope and int(pos.max()) >= rope.defaults.get("max_position", 0):
        shape["max_position"] = int(pos.max()) + 1      # the cos/sin cache must cover the given positions
    neox = scalar(w, "is_neox")
    if neox is not None:
        shape["style"] = "neox" if neox else "gptj"
    theta = scalar(w, "rope_theta") if scalar(w, "rope_theta") is not None else scalar(w, "theta")
    if theta is not None:
        shape["theta"] = theta
    return _mapped("rope", shape, our_dtype(defn, "q"), notes,
                   feeds={"q": "q", "k": "k", "positions": "positions"})


def map_sampling(defn, w, dims, blobs=None) -> Mapped:
    name = "probs" if "probs" in defn.inputs else "logits"
    batch, vocab = tensor_shape(defn, dims, name)
    if "top_k" not in defn.inputs and "top_p" not in defn.inputs:
        return _mapped("argmax_sampling", {"batch": batch, "vocab": vocab}, our_dtype(defn, name))
    notes: list = []
    feeds: dict = {}
    top_k, top_p = (_threshold(defn, w, blobs or {}, n, notes, feeds) for n in ("top_k", "top_p"))
    shape = {"batch": batch, "vocab": vocab, "top_k": int(top_k) if top_k is not None else vocab}
    if top_p is not None:
        shape["top_p"] = float(top_p)
    return _mapped("top_k_top_p_sampling", shape, our_dtype(defn, name), notes, feeds)


def _threshold(defn, w, blobs: dict, name: str, notes: list, feeds: dict):
    """The shape's top_k / top_p (None where the definition has no such input). A per-row
    tensor needs values: a blob. One whose rows all hold one value is that value (every
    backend runs it); one whose rows differ is fed as the op's per-row input (Op.given) and
    the shape holds its largest value (only the torch backend and the reference take per-row
    thresholds; the others are unsupported rows saying so). Random or absent: Unmappable."""
    if name not in defn.inputs:
        return None
    v = scalar(w, name)
    if v is not None:
        return v
    spec = w.inputs.get(name, {"type": "random"})
    t = blobs.get(name)
    if t is None or not t.numel():
        why = "its blob is absent" if spec["type"] == "safetensors" else f"given as {spec['type']}, no values"
        raise Unmappable(f"per-row {name} tensor ({why}): nothing to run; kernelmark's top_k_top_p_sampling "
                         "needs the values")
    where = f"{name} per-row tensor {spec['path']}[{spec['tensor_key']}]"
    flat = t.reshape(-1)
    if bool((flat == flat[0]).all()):
        notes.append(f"{where}: every row {flat[0].item():g}, run as one value for the batch")
        return flat[0].item()
    feeds[name] = name
    notes.append(f"{where}: rows {flat.min().item():g}..{flat.max().item():g}, fed per row (the shape shows "
                 "the largest); only the torch backend takes per-row values")
    return flat.max().item()


def map_mla_paged(defn, w, dims, blobs=None) -> Mapped:
    if "qo_indptr" in defn.inputs:
        raise Unmappable("MLA paged prefill: kernelmark has an MLA decode op only")
    batch, heads, ckv_dim = tensor_shape(defn, dims, "q_nope")
    pe_dim = tensor_shape(defn, dims, "q_pe")[2]
    if (ckv_dim, pe_dim) != (512, 64):
        raise Unmappable(f"q_nope dim {ckv_dim}, q_pe dim {pe_dim}: kernelmark's MLA is DeepSeek's 512 + 64")
    cs = tensor_shape(defn, dims, "ckv_cache")
    page_size = cs[1] if len(cs) == 3 else 1
    notes: list = []
    context = _mean_context(defn, w, dims, batch, page_size, notes)
    _sm_scale_note(w, ckv_dim, notes, dim_for_scale=ckv_dim + pe_dim)
    return _mapped("mla_decode_attention", {"batch": batch, "context": context, "heads": heads,
                                            "page_size": page_size, "ragged": 0},
                   our_dtype(defn, "q_nope"), notes)


MAPPERS = {
    "gemm": map_gemm,
    "rmsnorm": map_rmsnorm,
    "gqa_paged": map_gqa_paged,
    "gqa_ragged": map_gqa_ragged,
    "rope": map_rope,
    "sampling": map_sampling,
    "mla_paged": map_mla_paged,
}


def map_workload(defn, w, blobs=None) -> Mapped:
    """``blobs``: the workload's safetensors tensors that were read, by definition input."""
    fn = MAPPERS.get(defn.op_type)
    if fn is None:
        raise Unmappable(f"op_type {defn.op_type} ({defn.name})")
    try:
        return fn(defn, w, dims_of(defn, w), blobs or {})
    except (KeyError, IndexError, TypeError, ValueError) as e:
        if isinstance(e, Unmappable):
            raise
        raise Unmappable(f"op_type {defn.op_type} ({defn.name}): definition not in the expected form "
                         f"({type(e).__name__}: {e})") from None
