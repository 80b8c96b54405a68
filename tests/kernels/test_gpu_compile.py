"""The decode-step kernels (rmsnorm, activation, rope, embedding) and paged prefill attention
(one Hopper tile of its autotune list) compile for an H100 (sm_90)
on this machine, which has no GPU: Triton's own compiler, down to PTX and a cubin with the
ptxas its wheel ships. The interpreter that checks them everywhere else accepts code the
compiler refuses (a global that is not a tl.constexpr, for one: the interpreter runs it,
the compiler stops with a CompilationError), so without this a kernel could pass every
test here and fail on its first GPU. It also checks that, given what the JIT specialises
(16-byte-aligned tensors, sizes and strides divisible by 16), loads are 16-byte vectors.

The compile runs in a subprocess without TRITON_INTERPRET (under it, @triton.jit makes
interpreted functions, which cannot be compiled)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# (kernel, dtypes of its arguments, constexprs, num_warps): the configs the tuners would keep.
JOBS = [
    ("rmsnorm", {"x_ptr": "*bf16", "res_ptr": "*bf16", "w_ptr": "*bf16", "out_ptr": "*bf16", "M": "i32",
                 "N": "i32", "eps": "fp32", "stride_x": "i32", "stride_r": "i32", "stride_o": "i32"},
     {"HAS_RESIDUAL": True, "ROWS": 2, "BLOCK_N": 4096, "CHUNKS": 1}, 8),
    ("rmsnorm", {"x_ptr": "*fp16", "res_ptr": "*fp16", "w_ptr": "*fp32", "out_ptr": "*fp16", "M": "i32",
                 "N": "i32", "eps": "fp32", "stride_x": "i32", "stride_r": "i32", "stride_o": "i32"},
     {"HAS_RESIDUAL": False, "ROWS": 1, "BLOCK_N": 2048, "CHUNKS": 3}, 4),
    ("activation", {"x_ptr": "*bf16", "out_ptr": "*bf16", "M": "i32", "I": "i32", "stride_x": "i32",
                    "stride_o": "i32"}, {"ACT": 1, "ROWS": 2, "BLOCK_N": 1024}, 4),
    ("rope", {"q_ptr": "*bf16", "k_ptr": "*bf16", "pos_ptr": "*i64", "cache_ptr": "*fp32", "T": "i32", "HQ": "i32",
              "HK": "i32", "stride_qt": "i32", "stride_qh": "i32", "stride_kt": "i32", "stride_kh": "i32",
              "stride_cache": "i32"}, {"HALF": 64, "HALF_BLOCK": 64, "ROT_BLOCK": 128, "NEOX": True, "BLOCK_H": 8}, 2),
    ("rope", {"q_ptr": "*bf16", "k_ptr": "*bf16", "pos_ptr": "*i64", "cache_ptr": "*fp32", "T": "i32", "HQ": "i32",
              "HK": "i32", "stride_qt": "i32", "stride_qh": "i32", "stride_kt": "i32", "stride_kh": "i32",
              "stride_cache": "i32"}, {"HALF": 32, "HALF_BLOCK": 32, "ROT_BLOCK": 64, "NEOX": False, "BLOCK_H": 8}, 1),
    ("paged_prefill_attention",
     {"Q": "*bf16", "K_cache": "*bf16", "V_cache": "*bf16", "block_table": "*i32", "cu_seqlens_q": "*i32",
      "context_lens": "*i32", "O": "*bf16", "qk_scale": "fp32",
      **{f"stride_{n}": "i32" for n in ("qt", "qh", "kb", "kt", "kh", "vb", "vt", "vh", "btb", "ot", "oh")},
      "kv_heads": "i32", "MAX_Q_LEN": "i32", "MAX_CONTEXT": "i32"},
     {"GROUP": 4, "HEAD_DIM": 128, "PAGE_SIZE": 16, "CAUSAL": True, "UPCAST_DOT": False, "IEEE_FP32": False,
      "BLOCK_M": 128, "BLOCK_N": 64}, 8),
    ("embedding", {"ids_ptr": "*i64", "table_ptr": "*bf16", "out_ptr": "*bf16", "M": "i32", "N": "i32",
                   "VOCAB": "i32", "stride_table": "i32", "stride_out": "i32"}, {"ROWS": 2, "BLOCK_N": 1024}, 4),
]
KERNELS = {"rmsnorm": "_rmsnorm_kernel", "activation": "_act_and_mul_kernel", "rope": "_rope_kernel",
           "embedding": "_embedding_kernel", "paged_prefill_attention": "_paged_prefill_kernel"}
# Sizes and strides the JIT would see divisible by 16 (token and head counts are arbitrary).
DIVISIBLE = ("N", "I")


def _probe() -> dict:
    """Compile every job; {"skip": why} where this Triton cannot compile for NVIDIA here."""
    import importlib

    import triton
    try:
        from triton.backends.compiler import GPUTarget
        from triton.compiler import ASTSource
        from triton.compiler.errors import CompilationError
    except ImportError as e:
        return {"skip": f"this triton has no ahead-of-time compile API ({e})"}
    if "nvidia" not in getattr(triton.backends, "backends", {}):
        return {"skip": "this triton has no NVIDIA backend"}
    results = []
    for family, sig, consts, warps in JOBS:
        fn = getattr(importlib.import_module(f"kernelmark.kernels.{family}"), KERNELS[family])
        if hasattr(fn, "configs"):          # an autotuned kernel: its JIT function
            fn = fn.fn
        attrs = {(i,): [["tt.divisibility", 16]] for i, n in enumerate(sig)
                 if sig[n].startswith("*") or n.startswith("stride") or n in DIVISIBLE}
        try:
            src = ASTSource(fn, signature={**sig, **{k: "constexpr" for k in consts}}, constexprs=consts,
                            attrs=attrs)
        except TypeError as e:
            return {"skip": f"this triton's ASTSource takes other arguments ({e})"}
        try:
            k = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": warps})
        except CompilationError as e:
            results.append({"job": f"{family} {consts}", "error": str(e)[:2000]})
            continue
        except Exception as e:  # ptxas missing or unusable: not the kernel's fault
            if "ptxas" in str(e).lower():
                return {"skip": f"no usable ptxas: {str(e)[:200]}"}
            raise
        ptx = k.asm["ptx"]
        results.append({"job": f"{family} {consts}", "cubin": len(k.asm.get("cubin", b"")),
                        "vector_loads": "ld.global.v4" in ptx or "ld.global.nc.v4" in ptx})
    return {"results": results}


def test_decode_step_kernels_compile_for_sm90_with_vector_loads(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.update(PYTHONPATH=str(ROOT), TRITON_CACHE_DIR=str(tmp_path / "triton-cache"), TRITON_DEFAULT_FP_FUSION="1")
    p = subprocess.run([sys.executable, __file__], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    if "skip" in out:
        pytest.skip(out["skip"])
    errors = [r for r in out["results"] if "error" in r]
    assert not errors, errors
    assert all(r["cubin"] > 0 for r in out["results"])
    assert [r["job"] for r in out["results"] if not r["vector_loads"]] == []


if __name__ == "__main__":
    print(json.dumps(_probe()))
