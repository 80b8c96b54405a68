"""torch SDPA backends of the prefill attention ops (kernelmark.ops.attention), one per
SDPA kernel forced with sdpa_kernel: math, efficient, flash, cudnn.

GQA (q_heads a multiple of kv_heads) goes through ``enable_gqa=True`` (torch >= 2.5).
Which SDPA kernels accept it varies by torch version and device; one that refuses it
for a case is recorded ``unsupported`` with torch's reason. Only that refusal is caught:
SDPA's "No available kernel" together with its warning that q and k/v head counts must
match; any other error is the backend's error. The ``-repeat-kv`` backends measure the
same kernels with K/V repeated to q_heads in set-up (``Backend.prepare``, not timed),
under their own name, so a row never hides a repeat_interleave inside the timed call.
"""

from __future__ import annotations

import warnings
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from kernelmark.ops.base import Backend, Unsupported

_HAS_ENABLE_GQA = torch.torch_version.TorchVersion(torch.__version__) >= "2.5"
# Math SDPA materialises [batch, heads, seq, seq] scores: skipped above this many.
_MATH_MAX_SCORES = 2 ** 30

_SDPA = {"math": SDPBackend.MATH, "efficient": SDPBackend.EFFICIENT_ATTENTION,
         "flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION}


def _gqa_refusal(call: Callable[[], object]) -> Optional[str]:
    """Why SDPA refuses ``call`` (which just raised "No available kernel"), if the refusal is
    about GQA: the dispatcher gives its reasons as warnings with that error, and for GQA
    one says that q and k/v must have the same num_heads. The call is made again to
    collect them (it fails in dispatch, before any work): the successful, timed path never
    pays for catching warnings. None for any other refusal."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            call()
        except RuntimeError:
            pass
        else:
            return None
    why = [str(w.message).split(" instead.")[0] for w in caught if "num_heads" in str(w.message)]
    return why[0] if why else None


def _sdpa(kind, q, k, v, causal, scale):
    """q [b, hq, s, d], k/v [b, hk, s, d] -> [b, hq, s, d] through one SDPA backend, GQA
    through enable_gqa=True (torch >= 2.5). Where the backend refuses enable_gqa for this
    case, that refusal, and only it, becomes Unsupported; the -repeat-kv backends measure
    the case with K/V repeated in set-up instead."""
    with sdpa_kernel(_SDPA[kind]):
        if q.shape[1] == k.shape[1]:
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale)

        def call():
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale, enable_gqa=True)
        try:
            return call()
        except RuntimeError as e:
            why = _gqa_refusal(call) if "No available kernel" in str(e) else None
            if why is None:
                raise
    raise Unsupported(f"{kind} SDPA refuses enable_gqa=True here (torch {torch.__version__}: {why}); "
                      f"torch-sdpa-{kind}-repeat-kv times it with K/V repeated in set-up")


def _repeat_kv(x, names):
    """Set-up of the -repeat-kv backends: K and V with each kv head repeated for its
    q heads (heads on dim 1 of the bhsd views, dim 1 of the packed varlen tensors)."""
    group = x["q_heads"] // x["kv_heads"]
    return {**x, **{f"{n}_rep": x[n].repeat_interleave(group, dim=1) for n in names}}


def _sdpa_plain(kind, q, k, v, causal, scale):
    with sdpa_kernel(_SDPA[kind]):
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale)


def _sdpa_prefill(kind, repeated=False):
    if repeated:
        def run(x):
            return _sdpa_plain(kind, x["q_t"], x["k_t_rep"], x["v_t_rep"], x["causal"], x["scale"]).transpose(1, 2)
        return run

    def run(x):
        return _sdpa(kind, x["q_t"], x["k_t"], x["v_t"], x["causal"], x["scale"]).transpose(1, 2)
    return run


def _sdpa_varlen(kind, repeated=False):
    attend = _sdpa_plain if repeated else _sdpa
    kn, vn = ("k_rep", "v_rep") if repeated else ("k", "v")

    def run(x):
        q, k, v = x["q"], x[kn], x[vn]
        out = torch.empty_like(q)
        at = 0
        for n in x["seq_lens"]:
            qs, ks, vs = (t[at:at + n].transpose(0, 1)[None] for t in (q, k, v))
            out[at:at + n] = attend(kind, qs, ks, vs, x["causal"], x["scale"])[0].transpose(0, 1)
            at += n
        return out
    return run


def _sdpa_supports(kind, score_elements, repeated=False):
    def supports(shape, dtype, device_kind, capability):
        if repeated and shape["q_heads"] == shape["kv_heads"]:
            return f"not a GQA shape (q_heads = kv_heads): nothing to repeat; see torch-sdpa-{kind}"
        if not repeated and not _HAS_ENABLE_GQA and shape["q_heads"] != shape["kv_heads"]:
            return (f"torch {torch.__version__} has no enable_gqa (2.5+); "
                    f"torch-sdpa-{kind}-repeat-kv times GQA with K/V repeated in set-up")
        if kind == "math":
            scores = score_elements(shape)
            if device_kind != "cpu" and scores > _MATH_MAX_SCORES:
                return (f"math SDPA materialises the [batch, heads, seq, seq] scores ({scores} elements "
                        f"here, over {_MATH_MAX_SCORES}); skipped at this size")
            return None
        if kind == "flash":
            if device_kind == "cpu":
                return None     # torch's own CPU flash kernel, any float dtype
            if dtype == "fp32":
                return "flash SDPA on a GPU supports fp16 and bf16 only"
        if kind == "cudnn" and dtype == "fp32":
            return "cuDNN SDPA supports fp16 and bf16 only"
        if device_kind == "cuda" and (capability is None or capability < (8, 0)):
            return f"{kind} SDPA is measured on compute capability 8.0 or newer"
        if shape["head_dim"] > 256 or shape["head_dim"] % 8:
            return f"{kind} SDPA needs head_dim a multiple of 8, at most 256"
        return None
    return supports


_SDPA_DEVICES = {"math": None, "flash": None, "efficient": ("cuda", "rocm"), "cudnn": ("cuda",)}
_SDPA_WHAT = {"math": "the unfused math path (materialises the scores)",
              "efficient": "the memory-efficient (xformers/cutlass) kernel",
              "flash": "FlashAttention-2 (on a CPU: torch's own CPU flash kernel)",
              "cudnn": "cuDNN's fused attention"}


def sdpa_backends(op_kind: str, score_elements: Callable[[dict], int]) -> tuple:
    """The SDPA backends of "prefill" (bhsd views q_t/k_t/v_t) or "varlen" (packed q/k/v,
    one call per sequence); ``score_elements(shape)``: the largest score matrix a call makes."""
    make = _sdpa_prefill if op_kind == "prefill" else _sdpa_varlen
    names = ("k_t", "v_t") if op_kind == "prefill" else ("k", "v")
    loop = "" if op_kind == "prefill" else "; one SDPA call per sequence (the loop is timed)"
    native = tuple(
        Backend(f"torch-sdpa-{k}", make(k), devices=_SDPA_DEVICES[k], supports=_sdpa_supports(k, score_elements),
                description=f"F.scaled_dot_product_attention forced to {_SDPA_WHAT[k]} on bhsd views; "
                            f"GQA via enable_gqa=True (unsupported where the backend refuses it){loop}")
        for k in _SDPA)
    # Where a backend refuses enable_gqa, this is what a user of it pays with K/V already
    # repeated (the repeat is set-up, not timed). GPU only: on a CPU both SDPA backends
    # here take enable_gqa.
    repeated = tuple(
        Backend(f"torch-sdpa-{k}-repeat-kv", make(k, repeated=True),
                devices=("cuda", "rocm") if _SDPA_DEVICES[k] is None else _SDPA_DEVICES[k],
                supports=_sdpa_supports(k, score_elements, repeated=True),
                prepare=lambda x, names=names: _repeat_kv(x, names),
                description=f"F.scaled_dot_product_attention forced to {_SDPA_WHAT[k]} on bhsd views, GQA "
                            f"shapes only, K/V heads repeated with repeat_interleave in set-up (not timed){loop}")
        for k in _SDPA)
    return native + repeated
