"""Our plain-text table is tabulate's "simple" table of text cells, exactly."""
from hypothesis import given, settings
from hypothesis import strategies as st
from tabulate import tabulate

from kernelmark.reports import textable

cells = st.text(alphabet=list("ab 1.-[],x:µé=\u3000\xa0"), max_size=12) | st.sampled_from(["0.5", "1e3", "", "  "])


@settings(max_examples=120, deadline=None, database=None)
@given(st.integers(1, 6).flatmap(lambda k: st.tuples(st.lists(cells, min_size=k, max_size=k),
                                                      st.lists(st.lists(cells, min_size=k, max_size=k),
                                                               max_size=6))))
def test_simple_is_tabulates(table):
    headers, rows = table
    assert textable.simple(rows, headers) == tabulate(rows, headers=headers, tablefmt="simple",
                                                      disable_numparse=True)


def test_a_compare_like_table():
    headers = ["verdict", "op", "shape", "BASE µs", "ratio", "99% CI", "note"]
    rows = [["slower", "gemm", "m=1 n=2", "12.00", "1.100", "[1.050, 1.150]", ""],
            ["not timed", "kv_append", "", "", "", "", "not timed: checked"],
            ["unchanged", "gemm", "m=4096 n=4096 k=4096", "123456.78", "0.999", "[0.990, 1.010]", "a, b"]]
    got = textable.simple(rows, headers)
    assert got == tabulate(rows, headers=headers, tablefmt="simple", disable_numparse=True)
    assert got.splitlines()[1].startswith("---------  ---------  ") and textable.simple([], headers).count("\n") == 1
