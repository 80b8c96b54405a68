"""The one error every command shares: bad usage or bad input, exit status 2.

It lives apart from cli/ so that the modules cli/ drives (multi/, harness/) can raise it
without importing the command line."""

USAGE_ERROR = 2


class UsageError(Exception):
    """Bad usage or input: the message names what is wrong; the command exits with 2."""


class RunFileError(ValueError):
    """A run file that cannot be read: names the file and the line. (results.RunFileError:
    it lives here so that kernelmark/runcheck.py, which results.py uses, can raise it too.)"""
