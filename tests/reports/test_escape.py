"""kernelmark/reports/escape.py, and every renderer using it: names from a run file (device,
suite, label, backend, reason) cannot run as a spreadsheet formula, become Markdown markup or
a link, add a table row, or reorder what is shown."""
import csv
import io
import json
import re

import pytest

from kernelmark import cli, results
from kernelmark.reports import escape

BIDI = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"


@pytest.mark.parametrize("value, cell", [
    ("=HYPERLINK(\"http://x\")", "'=HYPERLINK(\"http://x\")"),
    ("+1+2", "'+1+2"), ("-2+3", "'-2+3"), ("@SUM(A1)", "'@SUM(A1)"), ("\tx", "'\tx"), ("\rx", "'\rx"),
    ("m=1 n=2", "m=1 n=2"), ("a=b", "a=b"), ("", ""),
    ("\u202e=1", "'=1"), ("x\x00y", "xy"),
    (-1.5, -1.5), (-3, -3), (None, None), (0.25, 0.25),        # numbers stay numbers
])
def test_csv_cell(value, cell):
    assert escape.csv_cell(value) == cell


@pytest.mark.parametrize("value, cell", [
    ("<script>alert(1)</script>", "\\<script\\>alert(1)\\</script\\>"),
    ("<img src=x onerror=alert(1)>", "\\<img src=x onerror=alert(1)\\>"),
    ("EPYC](javascript:alert(1))", "EPYC\\](javascript:alert(1))"),
    ("a|b", "a\\|b"), ("a\\|b", "a\\\\\\|b"), ("`code`", "\\`code\\`"), ("&amp;", "\\&amp;"),
    ("one\ntwo\r\nthree", "one two  three"), ("x\x00y" + BIDI + "z", "xyz"), ("\x1b[2Jx", " \\[2Jx"),
    ("gemm m=1 n=2 (nt)", "gemm m=1 n=2 (nt)"),
])
def test_md_cell(value, cell):
    assert escape.md_cell(value) == cell


def test_md_text_leaves_pipes_outside_tables_and_md_link_takes_our_paths_only():
    assert escape.md_text("a | b <i>") == "a | b \\<i\\>"
    assert escape.md_link("EPYC](javascript:alert(1))", "cpu-epyc/x_default.md") == \
        "[EPYC\\](javascript:alert(1))](cpu-epyc/x_default.md)"
    for bad in ("javascript:alert(1)", "https://example.com", "/etc/passwd", "../up.md", "a/../../b.md",
                "a b.md", "x.md)(y", ""):
        with pytest.raises(ValueError):
            escape.md_link("x", bad)


def test_plain_removes_terminal_controls():
    assert escape.plain("a\x1b[31mred\x07\x00" + BIDI + "\nb") == "a [31mred  b"
    assert escape.one_line({"a": ["x\ny", 1], "b": None}) == {"a": ["x y", 1], "b": None}


# ------------------------------------------------------------------ through the renderers

EVIL = {
    "device": "EPYC](javascript:alert(1))\n| forged | row |",
    "suite": "<script>alert('suite')</script>",
    "label": "<img src=x onerror=alert(1)>\x00\u202eevil",
    "backend": "=HYPERLINK(\"http://evil\",\"click\")",
    "reason": "gone\n| forged | row | here |\n<script>x</script>",
}


def _header(name, host="h"):
    return {"type": "header", "schema": 1, "kernelmark": "0.1.0", "command": ["kernelmark", "run"],
            "suite": {"name": EVIL["suite"]}, "started": "2026-11-24T00:00:00+0000", "run_id": name[:4] + host,
            "device": {"name": name, "kind": "cpu", "arch": "x86_64", "versions": {}, "git": {"commit": "ab"},
                       "cpu": {"torch_threads": 1}, "host": {"hostname": host}},
            "peaks": {"copy_gbps": 10.0, "tflops": {"fp32": 0.1}}}


def _records(scale=1.0):
    s = [round(scale * (10 + 0.01 * i), 4) for i in range(21)]
    ok = {"type": "record", "op": "gemm", "label": EVIL["label"], "shape": {"m": 4, "n": 4, "k": 4, "layout": "nn"},
          "dtype": "fp32", "backend": EVIL["backend"], "status": "ok", "flops": 128, "bytes": 192,
          "timing": {"median_us": s[10], "ci_low_us": s[6], "ci_high_us": s[14], "ci_rel": 0.004, "n": 21,
                     "samples_us": s, "method": "cpu_perf_counter"},
          "tflops": 1e-5, "gbps": 0.02, "pct_of_peak": 1.0, "bound": "memory"}
    failed = {**ok, "backend": "triton", "status": "error", "reason": EVIL["reason"], "timing": None}
    skipped = {**ok, "backend": "lib", "status": "skipped", "reason": EVIL["reason"], "timing": None}
    return [ok, failed, skipped]


def _write(path, name, host="h", scale=1.0):
    objs = [_header(name, host)] + _records(scale) + [{"type": "footer", "records": 3}]
    path.write_text("".join(json.dumps(o) + "\n" for o in objs))
    return str(path)


def _assert_inert_markdown(text):
    # every tag from the run file escaped: an odd number of backslashes before its "<" (an
    # even number is escaped backslashes, and the tag after them live: text escaped twice)
    assert not re.search(r"(?<!\\)(\\\\)*<(script|img|b>|/)", text), text
    assert not re.search(r"(?<!\\)\]\(javascript", text)
    assert "\x00" not in text and not any(c in text for c in BIDI)
    for target in re.findall(r"(?<!\\)\]\(([^)]*)\)", text):       # every link is one of ours
        assert re.fullmatch(r"[a-z0-9-]+/[0-9T]+_[a-z0-9-]+\.md", target), target


def _table_rows(md):
    return [line for line in md.splitlines() if line.startswith("|")]


def test_report_md_and_csv(tmp_path, capsys):
    run = _write(tmp_path / "evil.jsonl", EVIL["device"])
    assert cli.main(["report", run, "--format", "md"]) == 0
    md = capsys.readouterr().out
    _assert_inert_markdown(md)
    assert len(_table_rows(md)) == 2 + 1          # the default view: header, rule, the one case: no forged row
    assert "forged" in md                         # the text is shown, inert
    assert cli.main(["report", run, "--format", "md", "--long"]) == 0
    md = capsys.readouterr().out
    _assert_inert_markdown(md)
    assert len(_table_rows(md)) == 2 + 2          # --long: header, rule, the ok row and the error row
    assert cli.main(["report", run, "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(rows) == 3
    for row in rows:
        for value in row.values():
            assert not value.startswith(("=", "+", "-", "@", "\t", "\r")), row
    assert rows[0]["backend"].startswith("'=HYPERLINK") and float(rows[0]["median_us"]) == 10.1
    assert "\x00" not in rows[0]["label"] and "\u202e" not in rows[0]["label"]


def test_a_markdown_table_cell_is_escaped_once(tmp_path, capsys):
    # escaped twice, "\\<" is a literal backslash and then a live tag
    run = tmp_path / "r.jsonl"
    objs = [_header("dev")] + [{**_records()[0], "label": "a\\b<img src=x>c|d"}] + [{"type": "footer", "records": 1}]
    run.write_text("".join(json.dumps(o) + "\n" for o in objs))
    for extra in ([], ["--long"]):
        assert cli.main(["report", str(run), "--format", "md", *extra]) == 0
        md = capsys.readouterr().out
        assert "a\\\\b\\<img src=x\\>c\\|d" in md, extra
        _assert_inert_markdown(md)


def test_report_table_has_no_control_characters(tmp_path, capsys):
    assert cli.main(["report", _write(tmp_path / "evil.jsonl", EVIL["device"] + "\x1b[2J")]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x00" not in out and "| forged | row |" in out.splitlines()[1]


def test_cross_device_compare_and_rollup_md(tmp_path, capsys):
    a = _write(tmp_path / "a.jsonl", EVIL["device"])
    b = _write(tmp_path / "b.jsonl", "<b>Other</b>\u202e", host="other", scale=0.5)
    assert cli.main(["report", a, b, "--format", "md"]) == 0
    md = capsys.readouterr().out
    _assert_inert_markdown(md)
    assert "<b>" not in md and len(_table_rows(md)) == 2 + 3
    assert cli.main(["report", a, b, "--format", "csv"]) == 0
    for row in csv.DictReader(io.StringIO(capsys.readouterr().out)):
        assert not any(v.startswith(("=", "+", "-", "@")) for v in row.values()), row
    c = _write(tmp_path / "c.jsonl", EVIL["device"], scale=1.001)
    assert cli.main(["compare", a, c, "--format", "md"]) == 0
    md = capsys.readouterr().out
    _assert_inert_markdown(md)
    assert len(_table_rows(md)) == 2 + 3
    assert cli.main(["model", "llama3-8b", "--run", a, "--format", "md"]) == 0
    _assert_inert_markdown(capsys.readouterr().out)


def test_published_index_links_only_to_its_own_tables(tmp_path, capsys):
    root = tmp_path / "published"
    assert cli.main(["publish", _write(tmp_path / "evil.jsonl", EVIL["device"]), "--dir", str(root)]) == 0
    index = (root / "index.md").read_text()
    _assert_inert_markdown(index)
    assert len(re.findall(r"(?<!\\)\]\(", index)) == 1
    assert len(_table_rows(index)) == 3
    for table in root.glob("*/*.md"):
        _assert_inert_markdown(table.read_text())
    for table in root.glob("*/*.csv"):
        for row in csv.reader(io.StringIO(table.read_text())):
            assert not any(v.startswith(("=", "+", "-", "@")) for v in row), row
    json.loads((root / "index.json").read_text(), parse_constant=lambda t: pytest.fail(t))
    assert cli.main(["publish", "--check", "--dir", str(root)]) == 0


def test_published_index_refuses_a_run_file_name_it_would_not_make(tmp_path):
    from kernelmark.reports import publish
    root = tmp_path / "published"
    (root / "x)(javascript:alert(1)").mkdir(parents=True)
    _write(root / "x)(javascript:alert(1)" / "r.jsonl", "dev")
    with pytest.raises(publish.PublishError, match="would not make"):
        publish.generated(str(root))


def test_html_drops_nul_and_bidi(tmp_path, capsys):
    out = tmp_path / "r.html"
    assert cli.main(["report", _write(tmp_path / "evil.jsonl", EVIL["device"]), "--format", "html",
                     "--out", str(out)]) == 0
    page = out.read_text()
    assert "\x00" not in page and not any(c in page for c in BIDI)
    assert "<script" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page


def test_every_json_output_is_strict(tmp_path, capsys):
    a = _write(tmp_path / "a.jsonl", "dev")
    b = _write(tmp_path / "b.jsonl", "dev", scale=1.2)
    strict = dict(parse_constant=lambda t: pytest.fail(f"non-standard JSON token {t}"))
    for argv in (["report", a, "--format", "json"], ["report", a, b, "--format", "json"],
                 ["compare", a, b, "--format", "json"], ["model", "llama3-8b", "--run", a, "--format", "json"]):
        assert cli.main(argv) in (0, 1)
        json.loads(capsys.readouterr().out, **strict)
    assert cli.main(["export", a, "-o", str(tmp_path / "pb.json")]) == 0
    json.loads((tmp_path / "pb.json").read_text(), **strict)
    assert results.strict_json({"x": float("nan")}) == '{"x": null}'


def test_plain_leaves_printable_text_as_the_full_path_would():
    """plain's shortcut (printable text is returned as it is) gives what the full path gives,
    for every character of the Basic Multilingual Plane and beyond, alone and among others."""
    from kernelmark.reports.escape import _CONTROLS, plain, strip_unsafe
    chars = [chr(c) for c in range(0x30000) if not 0xD800 <= c < 0xE000]
    for c in chars:
        s = "a" + c + "b"
        assert plain(s) == _CONTROLS.sub(" ", strip_unsafe(s)), hex(ord(c))


def test_what_csv_cells_drop_is_unprintable():
    """csv_cell skips the translation of a printable cell: it holds none of what is dropped."""
    from kernelmark.reports.escape import _DROP
    assert all(not chr(c).isprintable() for c in _DROP)
    assert escape.csv_cell("a\u202eb\x00c") == "abc" and escape.csv_cell("=1\u202e") == "'=1"
