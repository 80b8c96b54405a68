"""Compile Triton kernels for an NVIDIA GPU on a machine that has none, and report each
one's registers and spills (ptxas stack), so that a kernel that would not compile on the GPU
(a non-constexpr global, a loop-carried value changing type) or a tile config that spills is
caught before a GPU session. The Triton interpreter, which the tests use, checks neither.

    TRITON_INTERPRET= PYTHONPATH=. python3 scripts/compile_sm90.py [--arch 90]

Covers the sampling, fp8 group-quantisation and block-scaled fp8 GEMM kernels, every
autotune config, with the argument specialisation a real launch gets (pointers and strides
divisible by 16, unit strides constant). Exit 1 if any fails to compile or spills.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
    sys.exit("unset TRITON_INTERPRET: this compiles for the GPU")

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from kernelmark.kernels import fp8_group_quant, gemm_fp8_blockwise, sampling  # noqa: E402

CUOBJDUMP = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")


def _resources(cubin: bytes) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        out = subprocess.run([CUOBJDUMP, "--dump-resource-usage", f.name], capture_output=True, text=True).stdout
    line = next((ln for ln in out.splitlines() if "REG:" in ln), "")
    return {k: int(v) for k, v in (t.split(":") for t in line.split() if ":" in t and t.split(":")[1].isdigit())}


def compile_one(fn, signature: dict, constexprs: dict, divisible: tuple, warps: int, stages: int, arch: int):
    attrs = {(fn.arg_names.index(a),): [["tt.divisibility", 16]]
             for a, t in signature.items() if a not in constexprs and (t.startswith("*") or a in divisible)}
    sig = {a: ("constexpr" if a in constexprs else t) for a, t in signature.items()}
    k = triton.compile(ASTSource(fn=fn, signature=sig, constexprs=constexprs, attrs=attrs),
                       target=GPUTarget("cuda", arch, 32), options={"num_warps": warps, "num_stages": stages})
    return _resources(k.asm["cubin"]), k.metadata.shared


def cases():
    sample = {"x_ptr": "*fp32", "out_ptr": "*i64", "V": "i32", "stride_row": "i32", "inv_temp": "fp32", "top_k": "i32",
              "top_p": "fp32", "draws": "i32", "seed": "i32", "USE_TOP_K": "", "USE_TOP_P": "", "BLOCK": "",
              "BLOCK_W": "", "BLOCK_D": "", "DRAW_BLOCK": "", "WAYS_": "", "ITERS": ""}
    for draws, block_d in ((1, 4096), (64, 64)):
        yield (f"top_k_top_p draws block {draws}", sampling._top_k_top_p_kernel, sample,
               {"USE_TOP_K": True, "USE_TOP_P": True, "BLOCK": 4096, "BLOCK_W": 512, "BLOCK_D": block_d,
                "DRAW_BLOCK": draws, "WAYS_": sampling.WAYS, "ITERS": sampling.SEARCH_ITERS}, ("V", "stride_row"), 8, 3)
    argmax = {"x_ptr": "*bf16", "out_ptr": "*i64", "val_ptr": "*fp32", "idx_ptr": "*i32", "V": "i32",
              "stride_row": "i32", "seg_len": "i32", "splits": "i32", "BLOCK": "", "FINAL": ""}
    for final in (True, False):
        yield f"argmax final={final}", sampling._argmax_kernel, argmax, {"BLOCK": 2048, "FINAL": final}, ("stride_row",), 8, 3
    yield ("argmax combine", sampling._argmax_combine_kernel,
           {"val_ptr": "*fp32", "idx_ptr": "*i32", "out_ptr": "*i64", "splits": "i32", "BLOCK_S": ""}, {"BLOCK_S": 16}, (), 1, 1)
    quant = {"x_ptr": "*bf16", "q_ptr": "*fp8e4nv", "s_ptr": "*fp32", "rows": "i32", "groups": "i32", "stride_xt": "i32",
             "stride_qt": "i32", "stride_st": "i32", "GROUP": "", "BLOCK_R": ""}
    for c in fp8_group_quant._configs():
        yield (f"group quant {c.kwargs}", fp8_group_quant._group_quant_kernel.fn, quant, {"GROUP": 128, **c.kwargs},
               ("stride_xt", "stride_qt"), c.num_warps, c.num_stages)
    gemm = {"a_ptr": "*fp8e4nv", "b_ptr": "*fp8e4nv", "c_ptr": "*bf16", "as_ptr": "*fp32", "bs_ptr": "*fp32", "M": "i32",
            "N": "i32", "K": "i32", "stride_am": "i32", "stride_ak": "i32", "stride_bn": "i32", "stride_bk": "i32",
            "stride_cm": "i32", "stride_cn": "i32", "stride_asm": "i32", "stride_ask": "i32", "stride_bsn": "i32",
            "stride_bsk": "i32", "BLOCK_M": "", "BLOCK_N": "", "GROUP_M": "", "UPCAST_DOT": ""}
    unit = {"stride_ak": 1, "stride_bk": 1, "stride_cn": 1, "stride_ask": 1, "stride_bsk": 1, "UPCAST_DOT": False}
    for c in gemm_fp8_blockwise._configs():
        yield (f"block fp8 gemm {c.kwargs} w{c.num_warps} s{c.num_stages}", gemm_fp8_blockwise._block_fp8_gemm_kernel.fn,
               gemm, {**c.kwargs, **unit}, ("N", "K", "stride_am", "stride_bn", "stride_cm", "stride_bsn"),
               c.num_warps, c.num_stages)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", type=int, default=90, help="compute capability x10 (default 90: H100/H200)")
    args = ap.parse_args()
    bad = 0
    for name, fn, sig, consts, div, warps, stages in cases():
        try:
            res, shared = compile_one(fn, sig, consts, div, warps, stages, args.arch)
        except Exception as e:  # a compile error is what this script is for: report it, go on
            print(f"FAIL  {name}: {type(e).__name__}: {str(e).strip().splitlines()[-1][:300]}")
            bad += 1
            continue
        spills = res.get("STACK", 0) or res.get("LOCAL", 0)
        bad += bool(spills)
        print(f"{'SPILL' if spills else 'ok   '} {name}: {res.get('REG')} registers, stack {res.get('STACK')}, "
              f"shared {shared} B")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
