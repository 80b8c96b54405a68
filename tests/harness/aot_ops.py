"""Ops for the ahead-of-time compile tests (named in KERNELMARK_OP_MODULES): a reduction
autotuned over three configs, one of which cannot compile (tl.arange of 48: not a power of
two), and a plain kernel after it, so a test can see the failure reported and the rest go on, and a transpose whose shared
memory fits an H100 block but not an MI300 workgroup."""
import torch

from kernelmark.ops.base import Backend, Op


def _kernels():
    import triton
    import triton.language as tl

    @triton.autotune(configs=[triton.Config({"BLOCK": 64}, num_warps=4), triton.Config({"BLOCK": 48}, num_warps=4),
                              triton.Config({"BLOCK": 256}, num_warps=8)], key=["n"])
    @triton.jit
    def aot_row_sum(x_ptr, out_ptr, n, BLOCK: tl.constexpr):
        offs = tl.arange(0, BLOCK)
        acc = tl.zeros((BLOCK,), tl.float32)
        for start in range(0, n, BLOCK):
            acc += tl.load(x_ptr + start + offs, mask=start + offs < n, other=0.0).to(tl.float32)
        tl.store(out_ptr, tl.sum(acc, axis=0))

    @triton.jit
    def aot_scale(x_ptr, out_ptr, n, BLOCK: tl.constexpr):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        tl.store(out_ptr + offs, tl.load(x_ptr + offs, mask=offs < n) * 2, mask=offs < n)

    @triton.jit
    def aot_transpose(x_ptr, out_ptr, R: tl.constexpr, C: tl.constexpr):
        # A transposed store goes through shared memory: R*C*4 bytes of it, 128 KiB here,
        # more than an MI300 workgroup's 64 KiB of LDS and less than an H100 block's 227 KiB.
        r, c = tl.arange(0, R), tl.arange(0, C)
        x = tl.load(x_ptr + r[:, None] * C + c[None, :])
        tl.store(out_ptr + c[:, None] * R + r[None, :], tl.trans(x))
    return aot_row_sum, aot_scale, aot_transpose


_K = []


def _run(x):
    if not _K:
        _K.extend(_kernels())
    row_sum, scale, transpose = _K
    out = torch.empty(1, device=x.device, dtype=torch.float32)
    row_sum[(1,)](x, out, x.numel())
    y = torch.empty_like(x)
    scale[(x.numel() + 127) // 128,](x, y, x.numel(), BLOCK=128)
    t = torch.empty(128 * 256, device=x.device, dtype=torch.float32)
    transpose[(1,)](t, t, R=128, C=256)
    return out, y


def _inputs(shape, dtype, device, gen):
    return torch.randn(shape["n"], generator=gen, device=device).to(getattr(torch, {"fp16": "float16"}.get(dtype, "float32")))


OPS = [Op(name="aot_test", description="test op for kernelmark compile", params=("n",), dtypes=("fp32", "fp16"),
          make_inputs=_inputs, reference=lambda x: x, flops=lambda s: 0, nbytes=lambda s, d: 0,
          backends=(Backend("triton", run=_run, triton=True),))]
