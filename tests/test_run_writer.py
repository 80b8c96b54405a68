"""The run file's writer (kernelmark/results.py RunWriter): it claims its file before any work,
never overwrites one, refuses a second writer, and turns a failed write into RunFileError."""
import os

import pytest

from kernelmark import results


def _header():
    return {"device": {"name": "x", "kind": "cpu"}, "peaks": {"copy_gbps": 1.0, "tflops": {}},
            "suite": {"name": "s"}, "started": "now"}


def _record():
    return {"op": "gemm", "shape": {"m": 1}, "dtype": "fp32", "backend": "torch", "status": "checked"}


def test_an_existing_file_is_never_overwritten(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("precious\n")
    with pytest.raises(results.RunFileError, match="already exists: kernelmark does not overwrite"):
        results.RunWriter(str(notes))
    assert notes.read_text() == "precious\n"


def test_a_second_writer_of_the_same_file_is_refused_while_the_first_holds_it(tmp_path):
    p = tmp_path / "r.jsonl"
    first = results.RunWriter(str(p))
    first.header(_header())
    with pytest.raises(results.RunFileError, match="another kernelmark run is writing it now"):
        results.RunWriter(str(p))
    with pytest.raises(results.RunFileError, match="being written by another kernelmark run"):
        results.RunWriter(str(p), append=True)
    first.record(_record())
    first.close()
    # Once the first has let go, the file can be continued (and only continued).
    again = results.RunWriter(str(p), append=True, count=1)
    again.record(_record())
    again.close()
    assert len(results.load(str(p)).records) == 2


def test_a_file_created_but_never_written_is_removed_on_close(tmp_path):
    p = tmp_path / "r.jsonl"
    results.RunWriter(str(p)).close()         # stopped before its header: nothing left in the way
    assert not p.exists()
    w = results.RunWriter(str(p))
    w.header(_header())
    w.close()
    assert p.exists()


def test_replace_truncates_an_existing_file(tmp_path):
    p = tmp_path / "r.jsonl"
    p.write_text("old\n")
    w = results.RunWriter(str(p), replace=True)
    w.header(_header())
    w.close()
    assert results.load(str(p)).header["schema"] == results.SCHEMA_VERSION


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_a_failed_write_is_a_run_file_error_naming_the_file():
    w = results.RunWriter("/dev/full")       # open succeeds; every write fails with ENOSPC
    with pytest.raises(results.RunFileError, match="cannot write the run file /dev/full: No space left"):
        w.header(_header())
    w.close()                                # nothing raised again from the buffer it left
