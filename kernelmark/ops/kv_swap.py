"""kv_swap_out / kv_swap_in: cache blocks (K and V) between the device cache and a
pinned host swap space, for a list of (src, dst) block pairs (vLLM's swap_blocks,
preemption by swapping).

Bounded by the host link, not device memory: ``memory_peak`` is "d2h" (swap out) or
"h2d" (swap in). Bytes ``2·pairs·page_size·H·D·s``: each K and V block counted once, as
the bytes carried across the link (the h2d/d2h peaks count a transfer that way; the read
at one end and the write at the other are the same bytes). FLOPs 0.

Backends (torch only: a Triton kernel would have to address pinned host memory through
unified addressing, which it does not do as a matter of course):

* ``torch-per-block``: one non_blocking ``copy_`` per block and tensor, as vLLM's
  swap_blocks issues one cudaMemcpyAsync per block. Asynchronous.
* ``torch-batched``: gather the blocks into one contiguous staging buffer, one bulk
  transfer, scatter at the other end. The host-side gather/scatter runs on the CPU, and
  swap-out must wait for its transfer before scattering: this backend synchronises (both
  directions, so a CUDA graph can never capture it without its host work), and its time
  includes the host work.
* ``vllm``: vllm._custom_ops.swap_blocks, where installed.

The backends need a GPU (pinned memory and a host link); the index logic runs on the CPU
too (device and "host" both CPU tensors), which is how it is tested without one.
"""

from __future__ import annotations

import torch

from kernelmark.ops import kv_cache
from kernelmark.ops import kv_inputs as kvi
from kernelmark.ops.base import Backend, Op, shape_str

PARAMS = ("pairs", "kv_heads", "head_dim", "page_size", "num_blocks", "host_blocks")
GPU = kv_cache.GPU


def validate(shape, dtype):
    kvi.validate_cache_shape(shape, ("kv_heads", "head_dim", "page_size", "num_blocks", "host_blocks", "pairs"))
    if shape["pairs"] > min(shape["num_blocks"], shape["host_blocks"]):
        raise ValueError(f"shape {shape_str(shape)}: {shape['pairs']} pairs need that many distinct blocks "
                         f"on both sides (num_blocks, host_blocks)")


def _host(t: torch.Tensor, device) -> torch.Tensor:
    t = t.cpu()
    return t.pin_memory() if torch.device(device).type == "cuda" else t


def _make_inputs(direction: str):
    def make_inputs(shape, dtype, device, gen):
        dev_k, dev_v = kvi.random_cache(shape, dtype, device, gen)
        host_k, host_v = kvi.random_cache({**shape, "num_blocks": shape["host_blocks"]}, dtype, device, gen)
        g = kvi.host_generator(gen)
        n = shape["pairs"]
        dev_ids = torch.randperm(shape["num_blocks"], generator=g)[:n]
        host_ids = torch.randperm(shape["host_blocks"], generator=g)[:n]
        src, dst = (dev_ids, host_ids) if direction == "d2h" else (host_ids, dev_ids)
        stage = (n,) + tuple(dev_k.shape[1:])
        return {
            "direction": direction,
            "dev_k": dev_k, "dev_v": dev_v, "host_k": _host(host_k, device), "host_v": _host(host_v, device),
            "pairs": list(zip(src.tolist(), dst.tolist())),      # host ints, for per-block copies
            "block_mapping": torch.stack([src, dst], dim=1),      # CPU int64 [pairs, 2], as vLLM wants
            "dev_ids": dev_ids.to(device), "host_ids": host_ids,
            # Staging for the batched backend (scratch, random like every buffer).
            "dev_stage": [kvi.random_tensor(stage, dtype, device, gen) for _ in range(2)],
            "host_stage": [_host(kvi.random_tensor(stage, dtype, device, gen), device) for _ in range(2)],
        }
    return make_inputs


def _ends(x):
    """(sources, destinations): the K and V caches each side of the transfer."""
    dev, host = (x["dev_k"], x["dev_v"]), (x["host_k"], x["host_v"])
    return (dev, host) if x["direction"] == "d2h" else (host, dev)


def reference(x):
    srcs, dsts = _ends(x)
    out = []
    for s, d in zip(srcs, dsts):
        r = d.clone()
        src, dst = x["block_mapping"][:, 0], x["block_mapping"][:, 1]
        r[dst.to(r.device)] = s[src.to(s.device)].to(r.device)
        out.append(r)
    return tuple(out)


def nbytes(shape, dtype):
    return 2 * shape["pairs"] * kvi.cache_block_bytes(shape, dtype)


def _per_block(x):
    srcs, dsts = _ends(x)
    for s, d in zip(srcs, dsts):
        for i, j in x["pairs"]:
            d[j].copy_(s[i], non_blocking=True)
    return dsts


def _batched(x):
    dk, dv = x["dev_stage"]
    hk, hv = x["host_stage"]
    if x["direction"] == "d2h":
        torch.index_select(x["dev_k"], 0, x["dev_ids"], out=dk)
        torch.index_select(x["dev_v"], 0, x["dev_ids"], out=dv)
        hk.copy_(dk, non_blocking=True)
        hv.copy_(dv)  # blocking: the stream has finished both transfers when it returns
        x["host_k"].index_copy_(0, x["host_ids"], hk)
        x["host_v"].index_copy_(0, x["host_ids"], hv)
        return x["host_k"], x["host_v"]
    torch.index_select(x["host_k"], 0, x["host_ids"], out=hk)
    torch.index_select(x["host_v"], 0, x["host_ids"], out=hv)
    dk.copy_(hk, non_blocking=True)
    dv.copy_(hv)  # blocking, as in swap-out: never graph-captured without its host gather
    x["dev_k"].index_copy_(0, x["dev_ids"], dk)
    x["dev_v"].index_copy_(0, x["dev_ids"], dv)
    return x["dev_k"], x["dev_v"]


def _vllm(x):
    swap = kv_cache.vllm_ops("swap_blocks")
    srcs, dsts = _ends(x)
    for s, d in zip(srcs, dsts):
        swap(s, d, x["block_mapping"])
    return dsts


def _backends():
    return (
        Backend("torch-per-block", _per_block, devices=GPU,
                description="one non_blocking copy_ per block and tensor (as vLLM's swap_blocks)"),
        Backend("torch-batched", _batched, devices=GPU,
                description="device gather + one bulk transfer + host scatter (or the reverse); synchronises"),
        Backend("vllm", _vllm, devices=GPU, available=kv_cache.vllm_available("swap_blocks"),
                description="vllm._custom_ops.swap_blocks"),
    )


def _op(name, direction, what):
    return Op(
        name=name,
        description=f"cache blocks (K and V) {what}, for (src, dst) block pairs",
        params=PARAMS,
        dtypes=kv_cache.COPY_DTYPES,
        make_inputs=_make_inputs(direction),
        reference=reference,
        flops=lambda shape: 0,
        nbytes=nbytes,
        validate=validate,
        exact=True,
        memory_peak=direction,
        backends=_backends(),
    )


OPS = [
    _op("kv_swap_out", "d2h", "from the device cache to pinned host memory"),
    _op("kv_swap_in", "h2d", "from pinned host memory to the device cache"),
]
