"""MLA decode backends from optional libraries: FlashMLA, FlashInfer's MLA wrapper and
vLLM's Triton MLA decode. Each is used only where importable and on a device it runs
on, and says why not otherwise. Their set-up (FlashMLA's tile-scheduler metadata,
FlashInfer's plan, vLLM's scratch) is ``Backend.prepare``: once per input set, never in
the timed call.

All three take the same combined cache [num_blocks, page_size, 576] (as a view with one
KV head where they want 4-D) and return the LSE in their own convention; each backend
hands back (out [batch, heads, 512], lse [batch, heads] natural log) like the op.
"""

from __future__ import annotations

import inspect
import math
from functools import lru_cache

import torch

from kernelmark.kernels import paged
from kernelmark.ops.attention_libs import _import_error
from kernelmark.ops.base import Backend, Unsupported

_RANK = 512
_ROPE = 64


def _gpu(name, dtypes_ok, min_cap, page_sizes=None):
    def supports(shape, dtype, device_kind, capability):
        if device_kind != "cuda":
            return f"{name} runs on NVIDIA GPUs only"
        if capability is None or capability < min_cap:
            return f"{name} needs compute capability {min_cap[0]}.{min_cap[1]} or newer"
        if dtype not in dtypes_ok:
            return f"{name} supports {', '.join(dtypes_ok)} only"
        if page_sizes is not None and shape["page_size"] not in page_sizes:
            return f"{name} needs page_size {' or '.join(map(str, page_sizes))}"
        return None
    return supports


# ---------------------------------------------------------------- FlashMLA

def _flash_mla_prepare(x):
    from flash_mla import get_mla_metadata
    # One query token per sequence and one KV head: heads q rows per KV head.
    meta, splits = get_mla_metadata(x["context_lens"], x["heads"], 1)
    return {**x, "_flash_mla": (meta, splits)}


def _flash_mla(x):
    from flash_mla import flash_mla_with_kvcache
    meta, splits = x["_flash_mla"]
    o, lse = flash_mla_with_kvcache(x["q"][:, None], x["kv_cache"][:, :, None], x["block_table"],
                                    x["context_lens"], _RANK, meta, splits, softmax_scale=x["scale"], causal=False)
    return o[:, 0], lse[:, :, 0]          # o [b, 1, h, 512], lse [b, h, 1] (natural log)


def flash_mla_backend() -> Backend:
    return Backend("flash-mla", _flash_mla, dtypes=("bf16",), devices=("cuda",),
                   available=lambda: _import_error("flash_mla"),
                   supports=_gpu("FlashMLA", ("bf16",), (9, 0), page_sizes=(64,)), prepare=_flash_mla_prepare,
                   description="flash_mla.flash_mla_with_kvcache (get_mla_metadata in set-up), page 64")


# ---------------------------------------------------------------- FlashInfer

_WORKSPACE: dict = {}


def _flashinfer_prepare(x):
    import flashinfer
    dev = x["q"].device
    if dev not in _WORKSPACE:          # float scratch, shared: runs are serial
        _WORKSPACE.clear()
        _WORKSPACE[dev] = torch.empty(128 << 20, dtype=torch.uint8, device=dev)
    w = flashinfer.mla.BatchMLAPagedAttentionWrapper(_WORKSPACE[dev])
    ps, lens = x["page_size"], x["context_lens_host"]
    pages = [paged.blocks_needed(n, ps) for n in lens]
    table = x["block_table"].cpu()
    indices = torch.cat([table[i, :p] for i, p in enumerate(pages)]).to(torch.int32)
    kv_indptr = torch.tensor([0] + torch.tensor(pages).cumsum(0).tolist(), dtype=torch.int32)
    qo_indptr = torch.arange(len(lens) + 1, dtype=torch.int32)
    w.plan(qo_indptr.to(dev), kv_indptr.to(dev), indices.to(dev), x["context_lens"], x["heads"], _RANK, _ROPE,
           ps, False, x["scale"], x["q"].dtype, x["kv_cache"].dtype)
    # q split into its latent and rope parts once, here; the cache parts are views.
    return {**x, "_flashinfer": w, "_q_nope": x["q"][..., :_RANK].contiguous(),
            "_q_pe": x["q"][..., _RANK:].contiguous()}


def _flashinfer_mla(x):
    kv = x["kv_cache"]
    o, lse = x["_flashinfer"].run(x["_q_nope"], x["_q_pe"], kv[..., :_RANK], kv[..., _RANK:], return_lse=True)
    return o, lse * math.log(2.0)        # FlashInfer's LSE is base 2


def flashinfer_mla_backend() -> Backend:
    return Backend("flashinfer-mla", _flashinfer_mla, dtypes=("fp16", "bf16"), devices=("cuda",),
                   available=lambda: _import_error("flashinfer"),
                   supports=_gpu("FlashInfer MLA", ("fp16", "bf16"), (8, 0)), prepare=_flashinfer_prepare,
                   description="flashinfer.mla.BatchMLAPagedAttentionWrapper, planned in set-up; cache parts "
                               "passed as views of the 576-wide rows")


# ---------------------------------------------------------------- vLLM

_VLLM_MODULE = "vllm.attention.ops.triton_decode_attention"
_VLLM_SPLITS = 4          # what vLLM's TritonMLA backend passes


@lru_cache(maxsize=None)
def _vllm_takes_lse() -> bool:
    from vllm.attention.ops.triton_decode_attention import decode_attention_fwd
    return "lse" in inspect.signature(decode_attention_fwd).parameters


def _vllm_prepare(x):
    q = x["q"]
    b, h, _ = q.shape
    return {**x, "_vllm_o": torch.empty((b, h, _RANK), dtype=q.dtype, device=q.device),
            "_vllm_lse": torch.empty((b, h), dtype=torch.float32, device=q.device),
            "_vllm_logits": torch.empty((b, h, _VLLM_SPLITS, _RANK + 1), dtype=torch.float32, device=q.device)}


def _vllm_triton_mla(x):
    from vllm.attention.ops.triton_decode_attention import decode_attention_fwd
    if not _vllm_takes_lse():
        raise Unsupported("this vLLM's decode_attention_fwd returns no LSE (vLLM >= 0.9 does)")
    kv = x["kv_cache"][:, :, None]              # [blocks, page, 1 kv head, 576]
    o, lse = x["_vllm_o"], x["_vllm_lse"]
    decode_attention_fwd(x["q"], kv, kv[..., :_RANK], o, lse, x["block_table"], x["context_lens"],
                         x["_vllm_logits"], _VLLM_SPLITS, x["scale"], x["page_size"])
    return o, lse


def _vllm_available():
    why = _import_error("vllm")
    if why is None and _import_error(_VLLM_MODULE):
        return f"vLLM has no {_VLLM_MODULE} (moved or renamed in this version)"
    return why


def vllm_triton_mla_backend() -> Backend:
    return Backend("vllm-triton-mla", _vllm_triton_mla, dtypes=("fp16", "bf16"), devices=("cuda", "rocm"),
                   available=_vllm_available, prepare=_vllm_prepare,
                   description=f"{_VLLM_MODULE}.decode_attention_fwd ({_VLLM_SPLITS} KV splits, as vLLM's "
                               f"TritonMLA backend), scratch allocated in set-up")
