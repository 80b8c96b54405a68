"""Run files for the report tests: one real smoke run of this machine, made once, and copies
of it dressed as other devices (header rewritten, times scaled) for cross-device tests.
The copies live in the tests' temporary directory only: never under published/."""
import contextlib
import io
import json
from pathlib import Path

import pytest



@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("smoke") / "smoke.jsonl"
    # The ops the reports care about most (a compute-bound op, attention, a data-movement op): a
    # quarter of the smoke suite's time, most of it the Triton interpreter's checks. In this
    # process, without workers (each python -m kernelmark or worker costs a torch import): the
    # reports need a real run file, not the command's process (tests/cli/test_cli.py runs that).
    from kernelmark import cli
    with contextlib.redirect_stdout(io.StringIO()):
        status = cli.main(["run", "--suite", "smoke", "--out", str(out), "--budget", "0.02", "--quiet",
                           "--isolation", "none", "--ops", "gemm,prefill_attention,paged_decode_attention,kv_append"])
    assert status == 0
    return str(out)


def read_lines(path) -> list:
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def write_lines(path, objs) -> str:
    Path(path).write_text("".join(json.dumps(o) + "\n" for o in objs))
    return str(path)


def as_device(src, dst, name, kind="cuda", host="other-host", speed=1.0, op_rename=None, started=None) -> str:
    """A copy of run ``src`` as if measured on device ``name``, ``speed`` times faster."""
    objs = read_lines(src)
    h = objs[0]
    h["device"]["name"], h["device"]["kind"] = name, kind
    h["device"]["host"]["hostname"] = host
    if started:
        h["started"] = started
    for r in objs[1:]:
        if r.get("type") != "record":
            continue
        if op_rename and r["op"] in op_rename:
            r["op"] = op_rename[r["op"]]
        if r["status"] == "ok":
            t = r["timing"]
            for k in ("median_us", "mean_us", "min_us", "max_us", "ci_low_us", "ci_high_us"):
                if k in t:
                    t[k] /= speed
            for k in ("tflops", "gbps"):
                if r.get(k):
                    r[k] *= speed
    return write_lines(dst, objs)


@pytest.fixture
def other_device():
    """as_device, for tests: other_device(src, dst, name, ...) -> path."""
    return as_device


@pytest.fixture
def runlines():
    """(read_lines, write_lines), to make malformed or synthetic run files."""
    return read_lines, write_lines
