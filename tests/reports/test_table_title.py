"""kernelmark/reports/table.py, the title's load-average warning: the load may be our own."""
from kernelmark.reports import table


def _header(load, cpus=2, kind="cpu"):
    return {"kernelmark": "0.1.0", "suite": {"name": "s"}, "started": "now", "peaks": {"copy_gbps": 1.0},
            "device": {"name": "Test CPU", "kind": kind, "load_avg": load, "cpu": {"logical_cpus": cpus}}}


def test_a_high_load_is_flagged_without_blaming_other_work():
    # The 1-minute average of a run started right after another kernelmark run counts that
    # run: the warning must not say other work shared the cores.
    text = table.title(_header([2.04, 1.5, 1.0]))
    warn = [line for line in text.splitlines() if line.startswith("WARNING")]
    assert warn == ["WARNING: load average 2.04 over 2 CPUs when the run started (any recent process counts, "
                    "an earlier kernelmark run too): CPU timings may be inflated"]
    assert "other work" not in text


def test_no_warning_for_a_quiet_machine_or_a_gpu():
    assert "WARNING" not in table.title(_header([0.5, 0.5, 0.5]))
    assert "WARNING" not in table.title(_header([8.0, 8.0, 8.0], kind="cuda"))
