"""Cross-check kernelmark's timing engine against triton.testing.do_bench, same process.

Prints both medians for a bf16 4096^3 torch.matmul (and any sizes given) on the GPU and
their ratio; the foundation issue asks for agreement within 3%. A benchmark that prints
figures, not a test: run it on a GPU machine,

    PYTHONPATH=. python3 scripts/crosscheck_do_bench.py [N ...]
"""

import sys

import torch
import triton.testing

from kernelmark.harness import device, timing


def main(sizes):
    target = device.resolve("cuda")
    prof = device.profile(target)
    print(f"device: {prof['name']} | torch {torch.__version__} | triton {prof['versions']['triton']}")
    for n in sizes:
        g = torch.Generator("cuda").manual_seed(0)
        a = torch.randn(n, n, device="cuda", generator=g).bfloat16()
        b = torch.randn(n, n, device="cuda", generator=g).bfloat16()
        t = timing.time_callable(lambda x: torch.matmul(*x), [(a, b)], target.torch_device,
                                 timing.TimingConfig(budget_s=2.0), l2_bytes=prof["l2_bytes"])
        db_ms = triton.testing.do_bench(lambda: torch.matmul(a, b), warmup=100, rep=2000, return_mode="median")
        km_us, db_us = t.summary.median_us, db_ms * 1e3
        print(f"bf16 {n}^3: kernelmark {km_us:.1f} us (n={t.summary.n}, ±{100 * t.summary.ci_rel:.2f}%, "
              f"{t.method}) | do_bench {db_us:.1f} us | ratio {km_us / db_us:.3f} | "
              f"{2 * n ** 3 / km_us / 1e6:.0f} TFLOP/s")


if __name__ == "__main__":
    main([int(x) for x in sys.argv[1:]] or [4096, 8192])
