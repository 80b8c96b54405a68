"""Vendor datasheet peaks for known devices: dense (no sparsity) TFLOP/s per dtype and
memory bandwidth in GB/s (1 GB = 1e9 bytes).

These are marketing maxima at boost clock; tables quote them beside the *measured* peaks
and compute "% of peak" against the measured ones. Sources, as published by the vendors:

* H100 SXM / PCIe / NVL: NVIDIA H100 Tensor Core GPU datasheet (2023). Sparse figures halved.
* H200 SXM: NVIDIA H200 Tensor Core GPU datasheet (2024): H100 SXM compute, 4.8 TB/s HBM3e.
* B200: NVIDIA DGX B200 / HGX B200 datasheet (2024), per GPU: 2.25 PF dense BF16, 4.5 PF dense FP8.
* A100 SXM4 80GB / 40GB, PCIe: NVIDIA A100 Tensor Core GPU datasheet (2021).
* L40S: NVIDIA L40S datasheet (2023). L4: NVIDIA L4 datasheet (2023).
* MI300X: AMD Instinct MI300X data sheet (2023). MI325X: AMD Instinct MI325X data sheet (2024).

fp32 is the non-tensor-core (CUDA core / vector) rate: it is what IEEE fp32 matmul can reach.
"""

from __future__ import annotations

import re
from typing import Optional

# (pattern on the device name, canonical name, {dtype: dense TFLOP/s}, memory GB/s)
_TABLE = [
    (r"H100.*(SXM|HBM3)", "H100 SXM", {"fp32": 67, "fp16": 989.4, "bf16": 989.4, "fp8_e4m3": 1978.9}, 3350),
    (r"H100.*NVL", "H100 NVL", {"fp32": 60, "fp16": 835, "bf16": 835, "fp8_e4m3": 1670}, 3900),
    (r"H100.*PCIe", "H100 PCIe", {"fp32": 51, "fp16": 756, "bf16": 756, "fp8_e4m3": 1513}, 2000),
    (r"H200", "H200 SXM", {"fp32": 67, "fp16": 989.4, "bf16": 989.4, "fp8_e4m3": 1978.9}, 4800),
    (r"B200", "B200", {"fp32": 75, "fp16": 2250, "bf16": 2250, "fp8_e4m3": 4500}, 8000),
    (r"A100.*80GB.*PCIe|A100.*PCIe.*80GB", "A100 PCIe 80GB", {"fp32": 19.5, "fp16": 312, "bf16": 312}, 1935),
    (r"A100.*SXM.*80GB", "A100 SXM 80GB", {"fp32": 19.5, "fp16": 312, "bf16": 312}, 2039),
    (r"A100", "A100 40GB", {"fp32": 19.5, "fp16": 312, "bf16": 312}, 1555),
    (r"L40S", "L40S", {"fp32": 91.6, "fp16": 362.05, "bf16": 362.05, "fp8_e4m3": 733}, 864),
    (r"\bL4\b", "L4", {"fp32": 30.3, "fp16": 121, "bf16": 121, "fp8_e4m3": 242.5}, 300),
    (r"MI300X", "MI300X", {"fp32": 163.4, "fp16": 1307.4, "bf16": 1307.4, "fp8_e4m3": 2614.9}, 5300),
    (r"MI325X", "MI325X", {"fp32": 163.4, "fp16": 1307.4, "bf16": 1307.4, "fp8_e4m3": 2614.9}, 6000),
]


def lookup(device_name: str) -> Optional[dict]:
    """Datasheet peaks for a device name as the driver reports it, or None if unknown."""
    for pattern, name, tflops, gbps in _TABLE:
        if re.search(pattern, device_name or "", re.IGNORECASE):
            return {"name": name, "tflops": dict(tflops), "copy_gbps": float(gbps)}
    return None


def known_devices() -> list:
    return [name for _, name, _, _ in _TABLE]
