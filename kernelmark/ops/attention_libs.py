"""Attention backends from optional libraries (flash-attn, FlashInfer) and torch's own
varlen attention: each is used only when importable, and says why not otherwise."""

from __future__ import annotations

from functools import lru_cache

import torch

from kernelmark.kernels import paged


@lru_cache(maxsize=None)
def _import_error(module: str):
    try:
        __import__(module)
    except Exception as e:
        return f"{module.replace('_', '-')} is not installed ({type(e).__name__})"
    return None


def _gpu_half_only(name):
    def supports(shape, dtype, device_kind, capability):
        if device_kind != "cuda":
            return f"{name} runs on NVIDIA GPUs only"
        if capability is None or capability < (8, 0):
            return f"{name} needs compute capability 8.0 or newer"
        if dtype not in ("fp16", "bf16"):
            return f"{name} supports fp16 and bf16 only"
        return None
    return supports


def _flash_attn_prefill(x):
    from flash_attn import flash_attn_func
    return flash_attn_func(x["q"], x["k"], x["v"], softmax_scale=x["scale"], causal=x["causal"])


def _flash_attn_varlen(x):
    from flash_attn import flash_attn_varlen_func
    cu, n = x["cu_seqlens"], x["max_seqlen"]
    return flash_attn_varlen_func(x["q"], x["k"], x["v"], cu, cu, n, n, softmax_scale=x["scale"], causal=x["causal"])


def _flash_attn_decode(x):
    from flash_attn import flash_attn_with_kvcache
    o = flash_attn_with_kvcache(x["q"][:, None], x["k_cache"], x["v_cache"], cache_seqlens=x["context_lens"],
                                block_table=x["block_table"], softmax_scale=x["scale"], causal=False)
    return o[:, 0]


def _flash_attn_decode_supports(shape, dtype, device_kind, capability):
    if shape["page_size"] % 256:
        return "flash-attn 2's paged KV cache needs page_size a multiple of 256"
    return _gpu_half_only("flash-attn")(shape, dtype, device_kind, capability)


@lru_cache(maxsize=None)
def _varlen_attn_params() -> frozenset:
    import inspect
    from torch.nn.attention.varlen import varlen_attn
    return frozenset(inspect.signature(varlen_attn).parameters)


def _torch_varlen_attn(x):
    from torch.nn.attention.varlen import varlen_attn
    params = _varlen_attn_params()
    q, k, v = x["q"], x["k"], x["v"]
    kw = {}
    if "window_size" in params:           # torch >= 2.11 spells causal as a window
        kw["window_size"] = (-1, 0) if x["causal"] else (-1, -1)
    else:
        kw["is_causal"] = x["causal"]
    if "scale" in params:
        kw["scale"] = x["scale"]
    if x["q_heads"] != x["kv_heads"]:
        if "enable_gqa" in params:
            kw["enable_gqa"] = True
        else:   # part of the timed cost
            k = k.repeat_interleave(x["q_heads"] // x["kv_heads"], dim=1)
            v = v.repeat_interleave(x["q_heads"] // x["kv_heads"], dim=1)
    cu, n = x["cu_seqlens"], x["max_seqlen"]
    return varlen_attn(q, k, v, cu, cu, n, n, **kw)


def _varlen_attn_available():
    if _import_error("torch.nn.attention.varlen"):
        return f"torch {torch.__version__} has no torch.nn.attention.varlen (torch >= 2.10)"
    return None


_FLASHINFER_WORKSPACE: dict = {}


def paged_kv_csr(x) -> tuple:
    """FlashInfer's paged-KV tables on the host, from the block table and context lengths:
    (kv_indptr [batch + 1]: each sequence's first entry in kv_indices, kv_indices: the
    used pages in sequence order, kv_last_page_len [batch]: tokens in each last page)."""
    ps, lens = x["page_size"], x["context_lens_host"]
    pages = [paged.blocks_needed(n, ps) for n in lens]
    table = x["block_table"].cpu()
    indices = torch.cat([table[i, :p] for i, p in enumerate(pages)]).to(torch.int32)
    indptr = torch.tensor([0] + list(torch.tensor(pages).cumsum(0).tolist()), dtype=torch.int32)
    last = torch.tensor([(n - 1) % ps + 1 for n in lens], dtype=torch.int32)
    return indptr, indices, last


def _plan_flashinfer(x, prefill: bool = False) -> None:
    """FlashInfer plans a batch on the host before running it; planning is set-up, not
    the op, so it is done here, once per inputs set, and never in the timed call. The
    plan, or why it failed, is kept in the inputs under "_flashinfer". ``prefill``: the
    BatchPrefillWithPagedKVCacheWrapper of paged prefill (x["cu_seqlens_q"] is its
    qo_indptr, x["causal"] its causal), else the decode wrapper."""
    if _import_error("flashinfer"):
        return
    try:
        import flashinfer
        dev = x["q"].device
        if dev not in _FLASHINFER_WORKSPACE:     # float scratch, shared: runs are serial
            _FLASHINFER_WORKSPACE.clear()
            _FLASHINFER_WORKSPACE[dev] = torch.empty(128 << 20, dtype=torch.uint8, device=dev)
        indptr, indices, last = (t.to(dev) for t in paged_kv_csr(x))
        heads = (x["q_heads"], x["kv_heads"], x["q"].shape[-1], x["page_size"])
        kw = {"pos_encoding_mode": "NONE", "sm_scale": x["scale"], "q_data_type": x["q"].dtype,
              "kv_data_type": x["q"].dtype}
        if prefill:
            w = flashinfer.BatchPrefillWithPagedKVCacheWrapper(_FLASHINFER_WORKSPACE[dev], kv_layout="NHD")
            w.plan(x["cu_seqlens_q"], indptr, indices, last, *heads, causal=x["causal"], **kw)
        else:
            w = flashinfer.BatchDecodeWithPagedKVCacheWrapper(_FLASHINFER_WORKSPACE[dev], kv_layout="NHD")
            w.plan(indptr, indices, last, *heads, **kw)
        x["_flashinfer"] = w
    except Exception as e:      # recorded by the backend, never breaks the other backends
        x["_flashinfer"] = f"flashinfer planning failed: {type(e).__name__}: {e}"


def _flashinfer_run(x):
    """The timed call of a planned FlashInfer wrapper (decode or paged prefill)."""
    w = x.get("_flashinfer")
    if w is None or isinstance(w, str):
        raise RuntimeError(w or "flashinfer was not planned for these inputs (needs a CUDA device)")
    return w.run(x["q"], (x["k_cache"], x["v_cache"]))
