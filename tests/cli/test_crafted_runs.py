"""Crafted and damaged run files through every command that reads them: each is refused with
exit status 2 and one line, `kernelmark: error: FILE:LINE: ...`, never a traceback, a
verdict or an output file. And sampling options that make no sense are refused before a
run file exists."""
import json
import math

import pytest

from kernelmark import cli

HEADER = {"type": "header", "schema": 1, "kernelmark": "0.1.0", "command": ["kernelmark", "run"],
          "suite": {"name": "crafted"}, "started": "2026-11-24T00:00:00+0000", "run_id": "c0ffee",
          "device": {"name": "Test CPU", "kind": "cpu", "arch": "x86_64", "versions": {}, "git": {},
                     "cpu": {"torch_threads": 1}, "host": {"hostname": "h"}},
          "peaks": {"copy_gbps": 10.0, "tflops": {"fp32": 0.1}}}


def _record(m: int, scale: float = 1.0) -> dict:
    s = [round(scale * (10 + 0.01 * i), 4) for i in range(21)]
    return {"type": "record", "op": "gemm", "label": "sq", "shape": {"m": m, "n": m, "k": m, "layout": "nn"},
            "dtype": "fp32", "backend": "torch", "status": "ok", "flops": 2 * m ** 3, "bytes": 12 * m * m,
            "timing": {"method": "cpu_perf_counter", "n": len(s), "median_us": s[10], "ci_low_us": s[6],
                       "ci_high_us": s[14], "ci_rel": 0.004, "samples_us": s, "inner": 1},
            "tflops": 2 * m ** 3 / s[10] / 1e6, "gbps": 12 * m * m / s[10] / 1e3, "pct_of_peak": 1.0,
            "bound": "memory"}


def _text(records, footer=True) -> str:
    lines = [json.dumps(HEADER)] + [json.dumps(r) for r in records]
    if footer:
        lines.append(json.dumps({"type": "footer", "records": len(records)}))
    return "\n".join(lines) + "\n"


def _with_timing(**kw):
    r = _record(32)
    r["timing"].update(kw)
    return r


# Each: (name, the second record line as text). json.dumps writes NaN and Infinity for the
# non-finite floats, as Python's json module would for a careless writer.
CRAFTED = {
    "nan-samples": json.dumps(_with_timing(samples_us=[math.nan] * 21)),
    "inf-median": json.dumps(_with_timing(median_us=math.inf)),
    "nan-tflops": json.dumps({**_record(32), "tflops": math.nan}),
    "text-ci-low": json.dumps(_with_timing(ci_low_us="abc")),
    "huge-int": json.dumps(_record(32)).replace('"flops": 65536', '"flops": ' + "9" * 5000),
    "deep-nesting": json.dumps(_record(32)).replace('"label": "sq"', '"label": ' + "[" * 100_000 + "]" * 100_000),
    "overflowing-float": json.dumps(_record(32)).replace('"pct_of_peak": 1.0', '"pct_of_peak": 1e999'),
}


@pytest.fixture
def files(tmp_path):
    good = tmp_path / "good.jsonl"
    good.write_text(_text([_record(16), _record(32)]))
    crafted = {}
    for name, line in CRAFTED.items():
        p = tmp_path / f"{name}.jsonl"
        p.write_text(_text([_record(16)]).split("\n", 2)[0] + "\n" + json.dumps(_record(16)) + "\n" + line + "\n")
        crafted[name] = p
    return good, crafted


def _commands(good, bad, tmp_path):
    out = tmp_path / "out"
    return {
        "report": ["report", str(bad)],
        "report md": ["report", str(bad), "--format", "md"],
        "report csv": ["report", str(bad), "--format", "csv"],
        "report json": ["report", str(bad), "--format", "json"],
        "report html": ["report", str(bad), "--format", "html", "--out", str(out / "r.html")],
        "compare head": ["compare", str(good), str(bad)],
        "compare base": ["compare", str(bad), str(good), "--format", "json"],
        "export": ["export", str(bad), "-o", str(out / "pb.json")],
        "model": ["model", "llama3-8b", "--run", str(bad)],
        "history": ["history", "--ingest", str(bad), "--db", str(out / "h.sqlite")],
        "publish": ["publish", str(bad), "--dir", str(out / "published")],
    }


@pytest.mark.parametrize("name", sorted(CRAFTED))
def test_crafted_run_files_exit_2_with_one_line(name, files, tmp_path, capsys, json_parser):
    good, crafted = files
    bad = crafted[name]
    for what, argv in _commands(good, bad, tmp_path).items():
        status = cli.main(argv)
        out, err = capsys.readouterr()
        lines = err.strip().splitlines()
        assert status == 2, (what, status, out[-300:], err[-500:])
        assert len(lines) == 1 and lines[0].startswith("kernelmark: error: "), (what, err[-500:])
        assert f"{bad}:3" in lines[0], (what, lines[0])
        assert out == "", what
    assert not (tmp_path / "out" / "pb.json").exists() and not (tmp_path / "out" / "r.html").exists()


def test_a_good_file_beside_a_bad_one_is_reported_and_the_bad_one_named(files, capsys):
    good, crafted = files
    assert cli.main(["report", str(good), str(crafted["nan-samples"]), "--format", "csv"]) == 0
    out, err = capsys.readouterr()
    assert out.count("\n") == 3 and f"{crafted['nan-samples']}:3" in err


def test_good_file_passes_every_command(files, tmp_path, capsys, json_parser):
    """The fixture itself is a valid run: each refusal above is about the crafted line."""
    good, _ = files
    for what, argv in _commands(good, good, tmp_path).items():
        status = cli.main(argv)
        _, err = capsys.readouterr()
        assert status == 0, (what, err[-300:])


@pytest.mark.parametrize("option, isolation", [("--budget=nan", "process"), ("--budget=inf", "none"),
                                              ("--budget=-inf", "process"), ("--timeout=nan", "process"),
                                              ("--timeout=inf", "none"), ("--target-ci=nan", "process")])
def test_nonsense_sampling_options_exit_2_before_a_run_file_exists(option, isolation, tmp_path, capsys):
    out = tmp_path / "runs" / "r.jsonl"
    status = cli.main(["run", "--suite", "smoke", "--ops", "gemm", "--out", str(out), "--no-history",
                       "--isolation", isolation, option])
    err = capsys.readouterr().err.strip().splitlines()
    name = option.split("=")[0]
    assert status == 2 and len(err) == 1 and err[0].startswith(f"kernelmark: error: {name} must be"), err
    assert not out.exists() and not out.parent.exists()
