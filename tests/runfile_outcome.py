"""What reading a run file gives, as one comparable string: the orjson and Python json paths
of kernelmark/results.py must give the same (tests/test_results.py, tests/test_fuzz.py)."""
import warnings

from kernelmark import results


def outcome(path) -> str:
    """The file's header, records, footer and warnings as repr (so 1, 1.0 and True differ),
    or the refusal's message."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            run = results.load(str(path))
        return repr((run.header, run.records, run.footer, run.warnings))
    except results.RunFileError as e:
        return "refused: " + str(e)
