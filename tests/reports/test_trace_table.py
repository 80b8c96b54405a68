"""The table of a FlashInfer-Trace run: a section per definition (with its model and our op),
rows its workloads; the long table and csv with a workload column; other runs unchanged."""
from kernelmark.reports import table, wide

HEADER = {"kernelmark": "0.1.0", "started": "2026-12-01T12:00:00+0000", "suite": {"name": "flashinfer-trace:ds"},
          "device": {"name": "Test GPU", "kind": "cuda", "arch": "sm_90", "versions": {"torch": "2", "triton": "3"}},
          "peaks": {"copy_gbps": 1000.0, "tflops": {"bf16": 500.0}}}


def _rec(op, backend, us, definition=None, uuid="", axes=None, model="toy-llm", label=None, shape=None):
    r = {"op": op, "label": label if label is not None else (f"{definition} ({model})" if definition else ""),
         "shape": shape or {"m": (axes or {}).get("M", 1), "n": 64, "k": 32, "layout": "nt"}, "dtype": "bf16",
         "backend": backend, "status": "ok", "timing": {"median_us": us, "ci_rel": 0.01}, "pct_of_peak": 10.0,
         "health": {}}
    if definition:
        r["trace"] = {"definition": definition, "op_type": "gemm", "uuid": uuid, "axes": axes or {}, "model": model}
    return r


U1, U2, U3 = ("0a1b2c3d-0000-4000-8000-000000000001", "0a1b2c3e-0000-4000-8000-000000000002",
              "9f9f9f9f-0000-4000-8000-000000000003")
RECORDS = [
    _rec("gemm", "torch", 5.0, "gemm_n64_k32", U1, {"M": 1}), _rec("gemm", "triton", 4.0, "gemm_n64_k32", U1, {"M": 1}),
    # a second workload with the same axes (serving captures repeat them): a row of its own
    _rec("gemm", "torch", 6.0, "gemm_n64_k32", U2, {"M": 1}), _rec("gemm", "triton", 7.0, "gemm_n64_k32", U2, {"M": 1}),
    # another definition mapped onto the same op: a section of its own
    _rec("gemm", "torch", 9.0, "gemm_n128_k32", U3, {"M": 8}, model="other-llm"),
]


def test_wide_view_has_a_section_per_definition_rows_its_workloads():
    secs = wide.sections(RECORDS)
    assert [s.title for s in secs] == ["gemm_n64_k32 · model toy-llm · op gemm",
                                       "gemm_n128_k32 · model other-llm · op gemm"]
    assert [r.label for r in secs[0].rows] == ["M=1 #0a1b2c3d", "M=1 #0a1b2c3e"]
    assert [r.cells["torch"]["timing"]["median_us"] for r in secs[0].rows] == [5.0, 6.0]   # not merged
    assert secs[1].backends == ["torch"] and [r.label for r in secs[1].rows] == ["M=8 #9f9f9f9f"]
    text = wide.render(HEADER, RECORDS)
    lines = text.splitlines()
    i, j = lines.index(secs[0].title), lines.index(secs[1].title)
    assert i < j and any(line.startswith("workload") for line in lines[i:j])
    assert sum("M=1 #" in line for line in lines[i:j]) == 2 and "M=8 #9f9f9f9f" in "\n".join(lines[j:])
    md = wide.render(HEADER, RECORDS, "md")
    assert "### gemm_n64_k32 · model toy-llm · op gemm" in md and "| workload | shape |" in md


def test_other_runs_keep_a_section_per_op_and_no_workload_column():
    plain = [_rec("gemm", "torch", 5.0, label="decode"), _rec("gemm", "torch", 6.0, label="prefill",
                                                             shape={"m": 64, "n": 64, "k": 32, "layout": "nt"})]
    secs = wide.sections(plain)
    assert [(s.title, s.label_head) for s in secs] == [("gemm", "label")]
    assert [r.label for r in secs[0].rows] == ["decode", "prefill"]
    heads, _ = table.cells(plain)
    assert "workload" not in heads and "workload" not in table.render(HEADER, plain, "csv").splitlines()[0]


def test_long_table_and_csv_carry_the_workload():
    heads, body = table.cells(RECORDS)
    col = heads.index("workload")
    assert heads[col - 1] == "label" and [r[col] for r in body][:3] == ["M=1 #0a1b2c3d"] * 2 + ["M=1 #0a1b2c3e"]
    csv_lines = table.render(HEADER, RECORDS, "csv").splitlines()
    assert csv_lines[0].startswith("device,op,label,workload,shape") and ",M=8 #9f9f9f9f," in csv_lines[-1]
    # A uuid that is not a uuid4 is shown whole (the first 8 characters may be shared).
    assert table.workload_text({"uuid": "gemm_n64_k32-0", "axes": {"M": 4}}) == "M=4 #gemm_n64_k32-0"


def test_run_file_text_in_headings_and_workloads_is_escaped():
    evil = [_rec("gemm", "torch", 5.0, "x|y*z\nfake heading", "u\x1b[31m", {"M": 1}, model="m`1`")]
    md = wide.render(HEADER, evil, "md")
    assert "### x\\|y*z fake heading · model m\\`1\\` · op gemm" in md
    text = wide.render(HEADER, evil)
    assert "x|y*z fake heading · model m`1` · op gemm" in text and "\x1b" not in text


def test_html_long_table_heads_each_definition():
    from kernelmark.reports import html
    page = html.device_table(RECORDS, "t")
    assert page.count('<tr class="op">') == 2
    assert ">gemm_n64_k32 · model toy-llm · op gemm</th>" in page and "<th>workload</th>" in page
    evil = html.device_table([_rec("gemm", "torch", 5.0, "<script>x</script>", U1, {"M": 1})], "t")
    assert "<script>" not in evil and "&lt;script&gt;x&lt;/script&gt; · model toy-llm" in evil


def test_a_definitions_notes_are_under_its_section_shared_once_the_rest_counted():
    recs = [_rec("gemm", "torch", 5.0, "gemm_n64_k32", U1, {"M": 1}), _rec("gemm", "torch", 6.0, "gemm_n64_k32", U2,
                                                                          {"M": 2}),
            _rec("gemm", "torch", 9.0, "gemm_n128_k32", U3, {"M": 8})]
    recs[0]["trace"]["notes"] = ["routing: kernelmark's own", "contexts uniform at 12"]
    recs[1]["trace"]["notes"] = ["routing: kernelmark's own", "contexts uniform at 20"]
    secs = wide.sections(recs)
    assert wide.section_notes(secs[0]) == ["note: routing: kernelmark's own",
                                           "note: 2 more vary by workload (trace.notes in the run file)"]
    assert wide.section_notes(secs[1]) == []
    text = wide.render(HEADER, recs)
    assert text.count("note: routing: kernelmark's own") == 1
    assert text.index("note: routing") < text.index("gemm_n128_k32 · model")      # under its own section
    md = wide.render(HEADER, recs, "md")
    assert "\n- note: routing: kernelmark's own\n" in md
    recs[0]["trace"]["notes"] = recs[1]["trace"]["notes"] = ["<b>x</b> [l](http://e)"]
    assert "- note: \\<b\\>x\\</b\\> \\[l\\](http://e)" in wide.render(HEADER, recs, "md")   # escaped
