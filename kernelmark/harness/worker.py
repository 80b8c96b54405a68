"""A worker process: runs the cases it is sent and reports back, so that a crash, a hang
or a poisoned CUDA context costs only the case in flight.

Protocol (JSON lines). The supervisor writes to the worker's stdin: first an init
message ``{"device", "profile", "peaks", "timing", "budget_override", "seed"}``, then
one ``{"case": {...Case fields}}`` per case. The worker answers on the file descriptor
named by ``--fd`` (not stdout, which kernel libraries may print to):
``{"event": "ready"}`` once, then per case ``{"event": "start", "stage": S}`` before
each stage (``reference`` or a backend name), ``{"event": "record", "record": {...}}``
after each backend, and ``{"event": "done"}``. It exits when its stdin closes.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import signal
import sys


def _die_with_parent() -> None:
    """Linux: get SIGKILL when the supervisor dies, so no orphan keeps the GPU."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)   # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="kernelmark-worker")
    ap.add_argument("--fd", type=int, required=True)
    args = ap.parse_args(argv)
    _die_with_parent()
    out = os.fdopen(args.fd, "w", buffering=1, encoding="utf-8")

    def send(obj: dict) -> None:
        out.write(json.dumps(obj, allow_nan=False, default=str) + "\n")
        out.flush()

    init = json.loads(sys.stdin.readline())
    # Where the supervisor found its op modules (KERNELMARK_OP_MODULES): last, so they
    # import without shadowing the standard library or an installed package.
    sys.path.extend(p for p in init.get("sys_path_tail", ()) if p not in sys.path)
    # Import after the init: on a CPU the runner must set TRITON_INTERPRET before Triton.
    from kernelmark.harness import device as dev
    from kernelmark.harness import runner, timing
    from kernelmark.suites.loader import Case

    import torch
    if init.get("threads"):
        torch.set_num_threads(init["threads"])    # the supervisor's (and the profile's) thread count
    target = dev.resolve(init["device"])
    cfg = runner.RunConfig(timing=timing.TimingConfig(**init["timing"]),
                           budget_override=init.get("budget_override"), seed=init.get("seed"),
                           energy_window_s=init.get("energy_window_s"), left_out=tuple(init.get("left_out") or ()))
    r = runner.Runner(target, init["profile"], init["peaks"], cfg, emit=lambda rec: None)
    send({"event": "ready", "pid": os.getpid()})
    for line in sys.stdin:
        if not line.strip():
            continue
        c = json.loads(line)["case"]
        case = Case(**{**c, "backends": tuple(c["backends"]), "devices": tuple(c["devices"])})
        for rec in r.run_case(case, on_start=lambda stage: send({"event": "start", "stage": stage})):
            send({"event": "record", "record": rec})
        send({"event": "done"})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
