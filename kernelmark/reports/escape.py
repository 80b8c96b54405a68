"""Text from run files, made safe for the format it is written in.

Every name in a run file (device, suite, label, backend, reason, shape words) is input: a
run file can come from anyone. Each renderer passes such text through the function for its
format, at the point where a cell or line is written:

* ``csv_cell``: a text cell starting with ``= + - @``, a tab or a carriage return gets a
  leading ``'``, so a spreadsheet shows it instead of running it as a formula (OWASP's
  advice on CSV injection). Numbers stay numbers: only text is touched.
* ``md_text`` / ``md_cell``: Markdown. Backslash-escapes what would start markup a reader
  did not write (HTML tags, entities, links, images, code spans) and, in a table cell, the
  ``|`` that would split it; a line break becomes a space (a newline in a table cell starts
  a row of its own). Escaped characters render as themselves.
* ``md_link``: a link built by us; the target must be a relative path of plain characters
  (``published/index.md`` links to the tables beside it, never elsewhere).
* ``plain``: a terminal table; control characters (escape sequences) become spaces.

All of them drop NUL and the bidirectional controls (U+202A-U+202E, U+2066-U+2069 and the
marks U+200E, U+200F, U+061C), which make text display in an order other than the one it
is stored in.
"""

from __future__ import annotations

import re

_BIDI = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c"
_DROP = {ord(c): None for c in "\x00" + _BIDI}
# C0 and C1 controls (tab, newline and carriage return among them), and the Unicode line and
# paragraph separators: each becomes one space.
_CONTROLS = re.compile("[\x01-\x1f\x7f-\x9f\u2028\u2029]")
_MD_SPECIAL = re.compile(r"([\\`<>&\[\]])")
_CSV_FORMULA = ("=", "+", "-", "@", "\t", "\r")
_SAFE_HREF = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._/-]*")


def strip_unsafe(s: str) -> str:
    """``s`` without NUL and bidirectional controls."""
    return s.translate(_DROP)


def plain(x) -> str:
    """Text for a terminal: no NUL, no bidi controls, every other control a space."""
    s = _text(x)
    if s.isprintable():     # all it changes is unprintable (Cc, Cf, Zl, Zp): one C pass says none is here
        return s
    return _CONTROLS.sub(" ", strip_unsafe(s))


def one_line(obj):
    """A copy of ``obj`` (dicts, lists, strings) with every string through ``plain``: for text
    built from several fields (a title, a summary line) before it is split into lines, so a
    newline inside a name cannot add a line of its own."""
    if isinstance(obj, str):
        return plain(obj)
    if isinstance(obj, dict):
        return {k: one_line(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [one_line(v) for v in obj]
    return obj


def csv_cell(x):
    """A CSV cell: numbers (and None) as they are; text without NUL or bidi controls, with a
    ``'`` before a leading ``= + - @``, tab or carriage return."""
    t = type(x)
    if t is str:
        s = x
    elif x is None or isinstance(x, (bool, int, float)):
        return x
    else:
        s = str(x)
    if not s.isprintable():     # NUL and the bidi controls are unprintable: one C pass says none is here
        s = strip_unsafe(s)
    return "'" + s if s.startswith(_CSV_FORMULA) else s


def md_text(x) -> str:
    """Markdown prose (outside a table): markup characters escaped, one line."""
    return _MD_SPECIAL.sub(r"\\\1", plain(x))


def md_cell(x) -> str:
    """A Markdown table cell: md_text, and ``|`` escaped too."""
    return md_text(x).replace("|", "\\|")


def md_link(text, href: str) -> str:
    """``[text](href)`` for a link of ours: ``href`` a relative path of letters, digits and
    ``. _ / -`` (no scheme, no parent directory); the text escaped as a table cell."""
    if not _SAFE_HREF.fullmatch(href) or ".." in href.split("/"):
        raise ValueError(f"not a relative link kernelmark makes: {href!r}")
    return f"[{md_cell(text)}]({href})"


def _text(x) -> str:
    return "" if x is None else str(x)
