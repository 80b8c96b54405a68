"""Which autotune configs were left out of tuning, per kernel, for the launch each kernel made
last: what a run's record names (`pruned`); and which configs a compile check asks tuning to
leave out for the call being made (`kernelmark run --compile-check FILE`). Imports nothing
(not even Triton), so that the op definitions can use it before the runner has decided
whether Triton runs interpreted.

The autotuners of kernelmark/kernels/autotune_prune.py write here on every launch, also on
the launches that reuse a tuning result (Triton prunes and tunes only at the first launch of
each key): a record made after a case's first call names what was left out when that key was
tuned, however long ago.
"""

from __future__ import annotations

_calls = 0
_last: dict = {}        # kernel name -> (call number, [(config, why), ...] or None: not known)
_asked: dict = {}       # target name -> {kernel name: {config name: why}}: the compile check's word


def ask(table: dict) -> None:
    """Leave these configs out when tuning from now on: {target: {kernel: {config: why}}}
    (the compile check's findings for the case about to run; {} for none)."""
    global _asked
    _asked = table or {}


def asked(target: str, kernel: str) -> dict:
    """{config name: why} that tuning `kernel` on `target` is asked to leave out."""
    return _asked.get(target, {}).get(kernel, {})


def note(kernel: str, left_out) -> None:
    """A launch of `kernel` happened; `left_out` is what tuning its key left out (None: the
    autotuner never pruned this key, e.g. it has a single config)."""
    global _calls
    _calls += 1
    _last[kernel] = (_calls, left_out)


def mark() -> int:
    """A point in time: since(mark()) later gives what the launches after it left out."""
    return _calls


def since(m: int) -> list:
    """[{"kernel", "config", "why"}, ...] for the last launch of each kernel launched after
    mark `m`, in kernel order; [] when none left anything out."""
    out = []
    for kernel, (n, left_out) in sorted(_last.items()):
        if n > m:
            out += [{"kernel": kernel, "config": c, "why": w} for c, w in left_out or ()]
    return out


def launched_since(m: int) -> bool:
    """Whether any autotuned kernel was launched after mark `m`."""
    return any(n > m for n, _ in _last.values())
