"""The correctness check every backend passes before it is timed.

Two bounds, both must hold for every output tensor:

* relative L2 error ``||out - ref|| / ||ref||`` within the dtype's tolerance: the error
  spread over the whole output;
* elementwise, ``|out - ref| <= atol + rtol·|ref|`` for every element, with ``atol`` a
  multiple of the reference's RMS (kernelmark.dtypes.ELEMENTWISE): an error confined to a
  few elements (a masked tail row never written, one wrong page) is invisible to the L2
  norm of a large output but breaks this bound. A bf16 [4096, 64] GEMM output with its last
  row zeroed has relative L2 error 0.0157 (tolerance 0.016) while its zeroed elements are
  off by ~1 RMS against a bound of ~0.03 RMS.

A failed check says where: the output, how many elements are out of bound, the first bad
index and the values there. NaN or inf in an output never passes. Exact ops (copies)
compare bit for bit instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from kernelmark import dtypes


@dataclass(frozen=True)
class CheckResult:
    passed: bool
    rel_l2: float          # worst relative L2 error over the output tensors
    max_abs: float         # largest absolute difference
    max_rel: float         # largest |diff| / (|ref| + tiny), a diagnostic only
    tolerance: float       # the bound rel_l2 was held to (0 means exact)
    detail: str = ""       # why it failed, in words: which output, where, out vs ref
    bad_elements: int = 0  # elements outside the elementwise bound (or differing, for exact ops)
    # The elementwise bound applied, {"rtol": r, "atol_rms": a} (None for exact or custom checks).
    elementwise: dict | None = None

    def as_dict(self) -> dict:
        d = {"passed": self.passed, "rel_l2": _finite(self.rel_l2), "max_abs": _finite(self.max_abs),
             "max_rel": _finite(self.max_rel), "tolerance": self.tolerance, "detail": self.detail}
        if self.bad_elements:
            d["bad_elements"] = self.bad_elements
        if self.elementwise is not None:
            d["elementwise"] = dict(self.elementwise)
        return d


def _finite(x: float):
    return x if math.isfinite(x) else str(x)


def _as_tuple(x) -> tuple:
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


def index_text(flat_index: int, shape) -> str:
    """``[i, j, ...]`` of a flat index into a tensor of ``shape``."""
    idx, rest = [], int(flat_index)
    for n in reversed(tuple(shape)):
        idx.append(rest % n if n else 0)
        rest = rest // n if n else 0
    return "[" + ", ".join(str(i) for i in reversed(idx)) + "]"


def where_text(name: str, bad: torch.Tensor, out: torch.Tensor, ref: torch.Tensor, what: str) -> str:
    """"output 0: 64 of 262144 elements <what>; first at [4095, 0]: out 0 vs ref 1.23"."""
    flat = bad.reshape(-1)
    n_bad = int(flat.sum())
    first = int(torch.argmax(flat.to(torch.uint8)))
    o, r = out.reshape(-1)[first].item(), ref.reshape(-1)[first].item()
    return (f"{name}: {n_bad} of {flat.numel()} elements {what}; first at {index_text(first, out.shape)}: "
            f"out {o:.6g} vs ref {r:.6g}")


def compare(out, ref, tol: float, exact: bool = False, dtype: str | None = None,
            elementwise: tuple | None = None) -> CheckResult:
    """Compare an output (tensor or tuple) with the reference.

    ``exact``: bitwise equality, for copies. Otherwise the relative L2 error per tensor
    within ``tol`` and every element within ``atol_rms·rms(ref) + rtol·|ref|``, with
    ``(rtol, atol_rms)`` from ``elementwise`` or else the dtype's (dtypes.ELEMENTWISE).
    Computed in fp64 on the host.
    """
    outs, refs = _as_tuple(out), _as_tuple(ref)
    if len(outs) != len(refs):
        return CheckResult(False, math.inf, math.inf, math.inf, tol,
                           f"backend returned {len(outs)} tensors, the reference {len(refs)}")
    if not exact and elementwise is None:
        elementwise = dtypes.elementwise(dtype) if dtype is not None else None
    bound = None if exact or elementwise is None else {"rtol": elementwise[0], "atol_rms": elementwise[1]}
    worst_l2 = worst_abs = worst_rel = 0.0
    failures, n_bad = [], 0
    for i, (o, r) in enumerate(zip(outs, refs)):
        name = f"output {i}" if len(outs) > 1 else "output"
        if tuple(o.shape) != tuple(r.shape):
            return CheckResult(False, math.inf, math.inf, math.inf, tol,
                               f"{name} has shape {tuple(o.shape)}, reference {tuple(r.shape)}")
        if exact:
            if not (o.dtype == r.dtype and torch.equal(o, r.to(o.device))):
                od, rd = o.detach().cpu(), r.detach().cpu()
                if od.dtype != rd.dtype:
                    return CheckResult(False, math.inf, math.inf, math.inf, 0.0,
                                       f"{name} has dtype {od.dtype}, reference {rd.dtype}", 1)
                diff = od.double() - rd.double()
                differ = od != rd
                if od.is_floating_point():
                    differ &= ~(torch.isnan(od) & torch.isnan(rd))
                return CheckResult(False, math.inf, float(diff.abs().max()) if diff.numel() else 0.0, math.inf,
                                   0.0, where_text(name, differ, od, rd, "differ from an exact copy"),
                                   int(differ.sum()))
            continue
        od = o.detach().to("cpu", torch.float64)
        rd = r.detach().to("cpu", torch.float64)
        finite = torch.isfinite(od)
        if not bool(finite.all()):
            return CheckResult(False, math.nan, math.nan, math.nan, tol,
                               where_text(name, ~finite, od, rd, "are NaN or inf"), int((~finite).sum()), bound)
        diff = od - rd
        adiff = diff.abs()
        ref_norm = float(rd.norm())
        l2 = float(diff.norm()) / ref_norm if ref_norm > 0 else float(diff.norm())
        worst_l2 = max(worst_l2, l2)
        if not diff.numel():
            continue
        worst_abs = max(worst_abs, float(adiff.max()))
        worst_rel = max(worst_rel, float((adiff / (rd.abs() + 1e-6)).max()))
        if l2 > tol:
            failures.append(f"{name}: relative L2 error {l2:.3g} exceeds tolerance {tol:g}")
        if bound is not None:
            rms = ref_norm / math.sqrt(rd.numel())
            atol = bound["atol_rms"] * rms
            bad = adiff > atol + bound["rtol"] * rd.abs()
            if bool(bad.any()):
                n_bad += int(bad.sum())
                failures.append(where_text(name, bad, od, rd,
                                           f"outside |out - ref| <= {bound['atol_rms']:g}·rms(ref) + "
                                           f"{bound['rtol']:g}·|ref| (rms {rms:.4g})"))
    if exact:
        return CheckResult(True, 0.0, 0.0, 0.0, 0.0)
    return CheckResult(not failures, worst_l2, worst_abs, worst_rel, tol, "; ".join(failures), n_bad, bound)
