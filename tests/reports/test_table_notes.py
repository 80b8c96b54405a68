"""kernelmark/reports/table.py, the parts issue 14 added: a stalled row never reads ok, and the
notes under the table (CPU threads and why, what % peak was measured against)."""
from kernelmark.reports import table

THREADS = {"chosen": 1, "torch_default": 2, "cpus_available": 2, "source": "default", "reduced": True,
           "reason": "1 instead of torch's 2: this process can get 2 CPUs (affinity 2, no cgroup quota) and one "
                     "is left for the rest of the machine"}
HEADER = {"kernelmark": "0.1.0", "suite": {"name": "smoke"}, "started": "2026-12-01T00:00:00+0000",
          "device": {"kind": "cpu", "name": "AMD EPYC", "arch": "x86_64", "versions": {}, "git": {},
                     "cpu": {"torch_threads": 1, "logical_cpus": 2, "threads": THREADS}},
          "peaks": {"copy_gbps": 16.8, "tflops": {"fp32": 0.155, "bf16": 0.0013}, "roof": {"bf16": "fp32"}}}


def _rec(dtype="fp32", pct=50.0, bound="compute", **timing):
    return {"op": "gemm", "label": "", "shape": {"m": 32, "n": 48, "k": 64}, "dtype": dtype, "backend": "torch",
            "status": "ok", "tflops": 0.01, "gbps": 1.0, "pct_of_peak": pct, "bound": bound,
            "timing": {"median_us": 7985.0, "ci_rel": 0.003, "method": "cpu_perf_counter", **timing},
            **({"roof_dtype": "fp32"} if dtype == "bf16" else {})}


def test_a_stalled_row_reads_noisy_not_ok():
    rec = _rec(stall="stalls: median 7985 µs is 1331x the fastest samples (6 µs)")
    assert table.status_text(rec) == "noisy (stalls: median 7985 µs is 1331x the fastest samples (6 µs))"
    assert table.status_text(_rec()) == "ok"
    out = table.render(HEADER, [rec])
    (row,) = [line for line in out.splitlines() if line.startswith("gemm")]
    assert row.rstrip().endswith("noisy (stalls: median 7985 µs is 1331x the fastest samples (6 µs))")
    assert " ok" not in row


def test_a_stalled_row_on_a_throttled_card_says_both():
    # the stall used to hide the throttling: a reader of a GPU table needs both
    hot = {"throttled": True, "throttle_reasons": ["sw_thermal_slowdown"], "below_app_clocks": True}
    rec = {**_rec(stall="stalls: median 8 µs is 1.6x the fastest samples (5 µs)"), "health": hot}
    assert table.status_text(rec) == ("noisy (stalls: median 8 µs is 1.6x the fastest samples (5 µs)); "
                                      "THROTTLED: sw_thermal_slowdown")
    assert table.status_text({**_rec(), "health": hot}) == "ok (THROTTLED: sw_thermal_slowdown)"
    slow = {"throttled": False, "below_app_clocks": True}
    assert table.status_text({**_rec(stall="stalls: x"), "health": slow}) == "noisy (stalls: x); below app clocks"
    assert table.status_text({**_rec(), "health": slow}) == "ok (below app clocks)"


def test_notes_say_the_threads_and_what_percent_of_peak_is_against():
    recs = [_rec(), _rec("bf16", pct=20.0), _rec(pct=161.0), _rec(pct=136.0, bound="memory")]
    out = table.render(HEADER, recs)
    assert "CPU threads: 1 (1 instead of torch's 2: this process can get 2 CPUs" in out
    assert "% peak of bf16 rows is against the fp32 matmul rate (0.155 TFLOP/s): this device computes them " \
           "faster that way than natively (bf16 0.0013)" in out
    assert "161†" in out and "136†" in out and "50.0†" not in out
    note = next(line for line in out.splitlines() if line.startswith("† over 100% of the measured peak (2 rows)"))
    assert "memory-bound: the copy peak counts" in note and "compute-bound: the case ran faster" in note
    csv = table.render(HEADER, recs, "csv")
    assert "†" not in csv and "161.0" in csv          # the machine-readable formats keep the numbers
    # the default (wide) view marks the cells too, or its note explains a mark no cell has
    from kernelmark.reports import wide
    rows = [{**r, "shape": {"m": 32 + i, "n": 48, "k": 64}} for i, r in enumerate(recs)]
    for fmt in ("table", "md"):
        out = wide.render(HEADER, rows, fmt)
        assert "161†" in out and "136†" in out and "50.0†" not in out and "over 100% of the measured peak" in out


def test_no_notes_where_nothing_needs_saying():
    gpu = {**HEADER, "device": {**HEADER["device"], "kind": "cuda", "cpu": {"torch_threads": 8}},
           "peaks": {"copy_gbps": 3000.0, "tflops": {"bf16": 700.0}}}
    assert table.notes(gpu, [_rec()]) == ""
    stalled = {**gpu, "peaks": {**gpu["peaks"], "stalled": {"tflops.bf16": "stalls: ..."}}}
    assert table.notes(stalled, [_rec()]).startswith("WARNING: peaks measured while the machine was busy (tflops.bf16)")


PRUNED = [{"kernel": "_gemm_kernel", "config": "BLOCK_M=16 BLOCK_N=64 BLOCK_K=256 GROUP_M=1 w4 s4",
           "why": "shared memory 245760 B > 232448 B per block on cuda:90"}]


def test_the_configs_left_out_of_tuning_are_named_in_the_notes_of_both_views():
    from kernelmark.reports import wide
    gpu = {**HEADER, "device": {**HEADER["device"], "kind": "cuda", "name": "NVIDIA H100", "cpu": {}}}
    recs = [{**_rec(), "backend": "triton", "pruned": PRUNED}, {**_rec(), "backend": "triton", "pruned": PRUNED},
            {**_rec("bf16"), "backend": "triton", "pruned": []}, _rec()]
    note = ("left out of autotuning here: _gemm_kernel BLOCK_M=16 BLOCK_N=64 BLOCK_K=256 GROUP_M=1 w4 s4: "
            "shared memory 245760 B > 232448 B per block on cuda:90 (gemm fp32 x2)")
    assert note in table.notes(gpu, recs).splitlines()
    assert note in table.render(gpu, recs)
    assert "left out of autotuning here: _gemm_kernel" in " ".join(wide.render(gpu, recs, "table").split())
    assert "left out" not in table.notes(gpu, [{**r, "pruned": []} for r in recs])
