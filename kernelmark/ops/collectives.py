"""Collective communication: all_reduce, all_gather, reduce_scatter, all_to_all and
broadcast through torch.distributed (NCCL on NVIDIA GPUs, RCCL on AMD ones, gloo on the
CPU). They run only inside a process group, i.e. launched by torchrun (see
kernelmark/multi/distributed.py and docs/multi-gpu.md); anywhere else they are skipped. LINK_PEAKS
holds what busbw is held against: each GPU's link to its peers, from vendors' datasheets.

Sizes and bandwidths follow nccl-tests (NVIDIA/nccl-tests, doc/PERFORMANCE.md). The shape's
``bytes`` is S, the size of the whole array the collective is about:

    all_reduce      each rank's buffer, reduced in place
    all_gather      the gathered output; each rank contributes S/n
    reduce_scatter  each rank's input; each rank receives S/n of the sum
    all_to_all      each rank's send buffer (and its receive buffer); S/n goes to each peer
    broadcast       the buffer rank 0 sends to all

``nbytes`` is S (rounded down to whole elements per rank: exact for power-of-two sizes and
rank counts), so a record's ``gbps`` = S / time is nccl-tests' algorithm bandwidth (algbw),
and its bus bandwidth is busbw = algbw x ``bus_factor(op, n)`` (see BUS_FACTOR). The ops do
no arithmetic that counts as FLOPs.

Inputs: rank r's data is drawn from its own generator, seeded from (seed, r); to know what the
collective must produce, every rank regenerates the other ranks' data (one array at a time).
The values are small positive integers: a sum of up to 256 of them is exact in bf16 (8
significant bits) and in fp32, in whatever order the library adds them, so the check is
bitwise. A relative-L2 tolerance would let one wrong chunk of a 1 GB message through; an
exact check does not. Output buffers start at -1, a value no collective can produce here, so
an element left unwritten fails too.

Timing repeats the call on the same buffers. torch.distributed has no out-of-place
all_reduce, so after the check the all_reduce values grow n-fold per call up to +inf (the data
is positive: never NaN); a sum costs the same whatever the values (no denormals arise).
"""

from __future__ import annotations

import re
from typing import Optional

import torch
import torch.distributed as dist

from kernelmark import dtypes
from kernelmark.ops.base import Backend, Op, compare, positive_ints

# Exact integer sums need n * MAX_VALUE <= 256 (bf16); beyond 256 ranks the reductions fall
# back to the dtype's tolerance.
MAX_VALUE = 4
BF16_EXACT = 256

# nccl-tests' bus bandwidth factors (doc/PERFORMANCE.md, "Summary"): the share of the array
# each rank must move over its link, so busbw can be held against the link's peak whatever n.
BUS_FACTOR = {
    "all_reduce": lambda n: 2 * (n - 1) / n,      # reduce-scatter then all-gather: 2(n-1)/n
    "all_gather": lambda n: (n - 1) / n,
    "reduce_scatter": lambda n: (n - 1) / n,
    "all_to_all": lambda n: (n - 1) / n,
    "broadcast": lambda n: 1.0,                   # all of S leaves the root through its one link
}

_NEED_TORCHRUN = ("needs a torch.distributed process group: launch with "
                  "torchrun --nproc-per-node N -m kernelmark run --suite collectives (N >= 2)")

# torch 2.13 renamed the tensor forms; torch 2.11 has only the old names.
_all_gather = getattr(dist, "all_gather_single", None) or getattr(dist, "all_gather_into_tensor", None)
_reduce_scatter = getattr(dist, "reduce_scatter_single", None) or getattr(dist, "reduce_scatter_tensor", None)


# Per-GPU link peaks, GB/s in one direction (nccl-tests' busbw is a one-way figure). Only
# parts whose form factor fixes the topology; PCIe H100/A100/H100 NVL nodes may or may not
# have NVLink bridges, so they stay unknown. Multi-node runs are bounded by the network: unknown.
# With NVLink SHARP (NVLS, reductions inside the NVSwitch) an all_reduce's busbw can pass 100%.
LINK_PEAKS = [
    (r"H100.*(SXM|HBM3)", "NVLink 4 (18 links)", 450.0,
     "NVIDIA H100 Tensor Core GPU datasheet (2023): NVLink 900 GB/s, both directions"),
    (r"(?<!G)H200(?!.*NVL)", "NVLink 4 (18 links)", 450.0,
     "NVIDIA H200 Tensor Core GPU datasheet (2024): NVLink 900 GB/s, both directions"),
    (r"B200", "NVLink 5 (18 links)", 900.0,
     "NVIDIA HGX B200 datasheet (2024): NVLink 1.8 TB/s per GPU, both directions"),
    (r"A100.*SXM", "NVLink 3 (12 links)", 300.0, "NVIDIA A100 Tensor Core GPU datasheet (2021): NVLink 600 GB/s"),
    (r"MI300X|MI325X", "Infinity Fabric (7 links)", 448.0,
     "AMD Instinct MI300X / MI325X data sheets: 896 GB/s peak aggregate Infinity Fabric, both directions"),
    (r"L40S|\bL4\b", "PCIe Gen4 x16", 31.5, "NVIDIA L40S / L4 datasheets: PCIe Gen4 x16, 64 GB/s both directions"),
]


def link_peak(names: list, hosts: list, kind: str) -> dict:
    """The link every rank's traffic goes through, or why it is unknown."""
    if kind == "cpu":
        return {"name": "unknown", "gbps": None, "why": "gloo on the CPU: no link peak"}
    if len(set(hosts)) > 1:
        return {"name": "unknown", "gbps": None,
                "why": f"ranks on {len(set(hosts))} hosts: the network between nodes bounds it; its peak is not known"}
    found = []
    for name in set(names):
        hit = next((row for row in LINK_PEAKS if re.search(row[0], name or "", re.IGNORECASE)), None)
        if hit is None:
            return {"name": "unknown", "gbps": None, "why": f"no link peak known for {name}"}
        found.append(hit)
    _, link, gbps, source = min(found, key=lambda r: r[2])
    return {"name": link, "gbps": gbps, "source": source}


def bus_factor(op: str, n: int) -> float:
    return BUS_FACTOR[op](n)


def busbw_gbps(op: str, algbw_gbps: float, n: int) -> float:
    return algbw_gbps * bus_factor(op, n)


def world() -> tuple:
    """(rank, number of ranks) of the process group; (0, 1) outside one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _available() -> Optional[str]:
    if not dist.is_available():
        return f"this torch build ({torch.__version__}) has no torch.distributed"
    if not dist.is_initialized():
        return _NEED_TORCHRUN
    return None


def count(shape: dict, dtype: str) -> int:
    """Elements of the whole array S: rounded down to a multiple of the rank count."""
    n = world()[1]
    return shape["bytes"] // dtypes.itemsize(dtype) // n * n


def nbytes(shape: dict, dtype: str) -> int:
    return count(shape, dtype) * dtypes.itemsize(dtype)


def flops(shape: dict) -> int:
    return 0


def _supports(shape, dtype, device_kind, capability) -> Optional[str]:
    n = world()[1]
    if shape["bytes"] // dtypes.itemsize(dtype) < n:
        return f"{shape['bytes']} bytes hold fewer than one {dtype} element per rank ({n} ranks)"
    return None


def _validate(shape, dtype) -> None:
    positive_ints(shape, ("bytes",))


def rank_data(seed: int, rank: int, numel: int, dtype: str, device) -> torch.Tensor:
    """Rank ``rank``'s contribution: integers in 1..amplitude, the same on every rank that asks."""
    n = max(world()[1], 1)
    amp = max(1, min(MAX_VALUE, BF16_EXACT // n))
    g = torch.Generator(device).manual_seed((seed * 1_000_003 + rank) % (1 << 62))
    return torch.randint(1, amp + 1, (numel,), generator=g, device=device, dtype=dtypes.torch_dtype(dtype))


def _inputs(op: str):
    def make(shape, dtype, device, gen):
        r, n = world()
        total = count(shape, dtype)
        chunk = total // n
        seed = gen.initial_seed()
        own = chunk if op == "all_gather" else total
        x = {"x": rank_data(seed, r, own, dtype, device), "seed": seed, "dtype": dtype, "rank": r,
             "ranks": n, "total": total, "chunk": chunk}
        if op in ("all_gather", "reduce_scatter", "all_to_all"):
            size = chunk if op == "reduce_scatter" else total
            x["out"] = torch.full((size,), -1, device=device, dtype=dtypes.torch_dtype(dtype))
        return x
    return make


def _reference(op: str):
    def ref(x):
        r, n, total, chunk, dev = x["rank"], x["ranks"], x["total"], x["chunk"], x["x"].device

        def data(j, numel):
            return rank_data(x["seed"], j, numel, x["dtype"], dev)
        if op == "broadcast":
            return data(0, total)
        if op == "all_reduce":
            out = data(0, total)
            for j in range(1, n):
                out += data(j, total)        # integer sums: exact in the dtype itself
            return out
        out = torch.empty(chunk if op == "reduce_scatter" else total, device=dev, dtype=x["x"].dtype)
        for j in range(n):
            if op == "all_gather":
                out[j * chunk:(j + 1) * chunk] = data(j, chunk)
            elif op == "all_to_all":        # peer j sends me chunk r of its buffer
                out[j * chunk:(j + 1) * chunk] = data(j, total)[r * chunk:(r + 1) * chunk]
            elif j == 0:                    # reduce_scatter: my chunk of the sum
                out.copy_(data(j, total)[r * chunk:(r + 1) * chunk])
            else:
                out += data(j, total)[r * chunk:(r + 1) * chunk]
        return out
    return ref


def _check(out, ref, dtype):
    """Bitwise where integer sums are exact (see MAX_VALUE), else the dtype's tolerance."""
    n = world()[1]
    exact = dtype != "bf16" or n * max(1, min(MAX_VALUE, BF16_EXACT // n)) <= BF16_EXACT
    return compare(out, ref, 0.0 if exact else dtypes.tolerance(dtype), exact=exact, dtype=dtype)


def _run_all_reduce(x):
    dist.all_reduce(x["x"])
    return x["x"]


def _run_all_gather(x):
    _all_gather(x["out"], x["x"])
    return x["out"]


def _run_reduce_scatter(x):
    _reduce_scatter(x["out"], x["x"])
    return x["out"]


def _run_all_to_all(x):
    dist.all_to_all_single(x["out"], x["x"])
    return x["out"]


def _run_broadcast(x):
    dist.broadcast(x["x"], 0)
    return x["x"]


_DESCRIPTIONS = {
    "all_reduce": ("every rank ends with the sum of all ranks' buffers (in place)", _run_all_reduce,
                   "dist.all_reduce (SUM)"),
    "all_gather": ("every rank ends with every rank's chunk, in rank order", _run_all_gather,
                   "dist.all_gather_into_tensor"),
    "reduce_scatter": ("rank r ends with chunk r of the sum of all ranks' buffers", _run_reduce_scatter,
                       "dist.reduce_scatter_tensor (SUM)"),
    "all_to_all": ("rank r sends chunk j of its buffer to rank j", _run_all_to_all,
                   "dist.all_to_all_single, equal splits"),
    "broadcast": ("rank 0's buffer is copied to every rank", _run_broadcast, "dist.broadcast from rank 0"),
}


def _op(name: str) -> Op:
    what, run, call = _DESCRIPTIONS[name]
    reduction = name in ("all_reduce", "reduce_scatter")
    return Op(
        name=name,
        description=f"{what}; bytes = nccl-tests' S",
        params=("bytes",),
        dtypes=("bf16", "fp32"),
        make_inputs=_inputs(name),
        reference=_reference(name),
        flops=flops,
        nbytes=nbytes,
        validate=_validate,
        exact=not reduction,
        check=_check if reduction else None,
        # Bounded by the link between devices, not device memory: this is also how
        # kernelmark.multi.distributed tells a collective from a per-device kernel.
        memory_peak="link",
        backends=(Backend("torch", run, available=_available, supports=_supports,
                          description=f"{call} on the launch's process group (NCCL/RCCL on GPUs, gloo on CPU)"),),
    )


OPS = [_op(name) for name in BUS_FACTOR]
NAMES = tuple(BUS_FACTOR)


def is_collective(op: Op) -> bool:
    return op.memory_peak == "link"
