"""Plots for the HTML report, as PNG bytes (matplotlib, Agg; imported only when a plot is made).

* ``roofline``: one device, arithmetic intensity (FLOP/byte) against achieved TFLOP/s,
  log-log, one point per timed (case, backend), coloured by backend, marked by op and
  dtype (the legend names all three: the dtype picks the ceiling a point sits under); the
  measured ceilings solid (copy bandwidth, matmul peak per dtype present), the datasheet
  ones dashed. Data-movement cases (no FLOPs) have no place on it: the caller is told
  how many were left off.
* ``bars``: one op, a horizontal bar per (case, series) of an achieved rate, log scale;
  a series is a backend (one device) or a device (several).

Strings from run files reach matplotlib only as text: '$' is escaped so that a device
or op name cannot switch on mathtext (a parse error, not an injection, but a crash).
"""

from __future__ import annotations

import io
import textwrap

MAX_BARS = 48           # categories a bar chart shows; the rest are counted in its title
# The page shows a PNG at its own size up to the content width (1280 px less the margins),
# so a point at DPI is DPI/72 px: 8 pt labels are 10.7 px. Figures are sized to stay
# under MAX_WIDTH_PX, so the browser never scales them (and their text) down.
DPI = 96
LABEL_PT = 8
MAX_WIDTH_PX = 1200
LABEL_CHARS = 44        # a bar's label wraps onto lines of at most this many characters

_MARKERS = "osD^vPX<>*"      # shapes that stay apart at the plotted size


def available() -> str | None:
    """Why plots cannot be made here, or None."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return "plots need matplotlib (pip install matplotlib); the tables are complete without them"
    return None


def _plt():
    import matplotlib
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    return plt


def text(s) -> str:
    """A run-file string made safe for matplotlib text: no mathtext, no control characters
    (a NUL has no glyph), no bidi controls."""
    from kernelmark.reports.escape import plain
    return plain(s).replace("$", r"\$")


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    _plt().close(fig)
    return buf.getvalue()


def roofline_points(records: list) -> tuple:
    """(points [(intensity, tflops, op, backend, dtype)], how many timed records had no FLOPs)."""
    pts, no_flops = [], 0
    for r in records:
        if r["status"] != "ok":
            continue
        if not r.get("flops") or not r.get("intensity") or not r.get("tflops"):
            no_flops += 1
            continue
        pts.append((float(r["intensity"]), float(r["tflops"]), r["op"], r["backend"], r["dtype"]))
    return pts, no_flops


def roofline(header: dict, records: list, title: str):
    """PNG bytes, or None when no timed record has FLOPs."""
    pts, _ = roofline_points(records)
    if not pts:
        return None
    plt = _plt()
    peaks = header.get("peaks") or {}
    sheet = header["device"].get("datasheet") or {}
    dtypes_used = sorted({p[4] for p in pts})
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    xs = [p[0] for p in pts]
    ceilings = [(peaks.get("copy_gbps"), peaks.get("tflops") or {}, "-", "measured")]
    if sheet:
        ceilings.append((sheet.get("copy_gbps"), sheet.get("tflops") or {}, "--", "datasheet"))
    ridges = [tf.get(dt, 0) * 1e3 / bw for bw, tf, _, _ in ceilings if bw for dt in dtypes_used if tf.get(dt)]
    lo = min(xs) / 2
    hi = max([max(xs) * 2] + [r * 4 for r in ridges])
    grid = [lo * (hi / lo) ** (i / 200) for i in range(201)]
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    # Ceilings in greys, named on the line itself, so the legend's colours are the points'.
    for ci, (bw, tf, style, what) in enumerate(ceilings):
        grey = "0.25" if ci == 0 else "0.55"
        tops = [tf[dt] for dt in dtypes_used if tf.get(dt)]
        top = max(tops) if tops else None
        # Empty when every point is right of the ridge: the memory roof is then off the plot.
        mem = [x for x in grid if top is None or bw * x / 1e3 <= top] if bw else []
        if mem:
            ax.plot(mem, [bw * x / 1e3 for x in mem], style, color=grey, lw=1.2)
            at = mem[len(mem) // 4]         # below and right of the rising line: clear of it and the axis
            ax.annotate(f"{what} {bw:.3g} GB/s", (at, bw * at / 1e3), xytext=(4, -2), textcoords="offset points",
                        fontsize=LABEL_PT, color=grey, ha="left", va="top")
        for dt in dtypes_used:
            if tf.get(dt):
                start = tf[dt] * 1e3 / bw if bw else lo
                seg = [x for x in grid if x >= start] or [hi]
                ax.plot(seg, [tf[dt]] * len(seg), style, color=grey, lw=1.2)
        # One label per cluster of close ceilings (fp16 and bf16 are often within a few %):
        # labels drawn one on another read as neither.
        for level, names in _ceiling_labels({dt: tf[dt] for dt in dtypes_used if tf.get(dt)}):
            ax.annotate(f"{what} {names} TFLOP/s", (hi, level), fontsize=LABEL_PT, color=grey,
                        ha="right", va="bottom")
    ax.plot([], [], "-", color="0.25", label="measured ceilings")
    if sheet:
        ax.plot([], [], "--", color="0.55", label="datasheet ceilings")
    backends = sorted({p[3] for p in pts})
    kinds = sorted({(p[2], p[4]) for p in pts})           # (op, dtype): one marker each
    for bi, be in enumerate(backends):
        for ki, (op, dt) in enumerate(kinds):
            sel = [p for p in pts if p[3] == be and (p[2], p[4]) == (op, dt)]
            if sel:
                # Past the markers, the same shapes again but hollow: no two kinds look alike.
                hollow = (ki // len(_MARKERS)) % 2 == 1
                ax.scatter([p[0] for p in sel], [p[1] for p in sel], s=28, marker=_MARKERS[ki % len(_MARKERS)],
                           color="none" if hollow else colors[bi % len(colors)], zorder=3,
                           edgecolors=colors[bi % len(colors)] if hollow else "black",
                           linewidths=1.2 if hollow else 0.4, label=f"{text(op)} {text(dt)} / {text(be)}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (FLOP/byte)")
    ax.set_ylabel("achieved TFLOP/s")
    ax.set_title(text(title), fontsize=10)
    ax.grid(True, which="both", alpha=0.25)
    entries = len(ax.get_legend_handles_labels()[1])
    ax.legend(fontsize=LABEL_PT, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False,
              ncol=1 if entries <= 24 else 2)
    return _png(fig)


def _ceiling_labels(tops: dict) -> list:
    """[(level, "bf16 700, fp16 690")]: ceilings within 25% of each other share one label,
    placed at the highest of them."""
    out = []
    for dt, v in sorted(tops.items(), key=lambda kv: -kv[1]):
        if out and out[-1][0] / v < 1.25:
            out[-1][1].append(f"{text(dt)} {v:.3g}")
        else:
            out.append((v, [f"{text(dt)} {v:.3g}"]))
    return [(level, ", ".join(names)) for level, names in out]


def bars(title: str, categories: list, series: dict, unit: str):
    """PNG bytes of a horizontal grouped bar chart.

    ``categories``: category names, top to bottom; ``series``: name -> [value or None]
    aligned with ``categories``. Categories past MAX_BARS are dropped and counted in the
    title. None when there is nothing to draw. Labels wrap at LABEL_CHARS and the legend
    sits above the axes, so the image stays within MAX_WIDTH_PX at LABEL_PT."""
    if not categories or not any(v for vals in series.values() for v in vals):
        return None
    plt = _plt()
    dropped = max(0, len(categories) - MAX_BARS)
    cats = categories[:MAX_BARS]
    names = [k for k, vals in series.items() if any(vals[:MAX_BARS])]     # an empty series has no legend colour
    n = len(names)
    height = 0.8 / max(n, 1)
    labels = [textwrap.fill(text(c), LABEL_CHARS, break_on_hyphens=False) for c in cats]
    # Each category gets room for its bars and for its label's lines (8 pt is 0.11 in a line).
    rows = [max(0.16 * max(1, n * 0.6), 0.14 * (lab.count("\n") + 1)) for lab in labels]
    fig, ax = plt.subplots(figsize=(8.0, max(2.2, sum(rows) + 1.4 + 0.18 * ((n + 3) // 4))))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for si, name in enumerate(names):
        vals = series[name][:MAX_BARS]
        ys = [ci + (si - (n - 1) / 2) * height for ci in range(len(cats))]
        ax.barh([y for y, v in zip(ys, vals) if v], [v for v in vals if v], height=height * 0.95,
                color=colors[list(series).index(name) % len(colors)], label=text(name))   # stable per series
    ax.set_yticks(range(len(cats)))
    ax.set_yticklabels(labels, fontsize=LABEL_PT)
    ax.set_ylim(len(cats) - 0.5, -0.5)          # top to bottom, no empty band
    # Linear from zero unless the values span orders of magnitude: log bars that start near
    # the smallest value make a 30% gap look like 10x.
    vals = [v for name in names for v in series[name][:MAX_BARS] if v]
    if max(vals) / min(vals) > 50:
        ax.set_xscale("log")
        ax.set_xlim(left=min(vals) / 5)
    else:
        ax.set_xlim(left=0)
    ax.set_xlabel(f"achieved {unit} (higher is better)" + (", log scale" if max(vals) / min(vals) > 50 else ""))
    ax.tick_params(axis="x", labelsize=LABEL_PT + 1)
    ax.set_title(text(title) + (f" (first {MAX_BARS} cases; {dropped} more in the table)" if dropped else ""),
                 fontsize=10, pad=6 + 14 * ((n + 3) // 4))
    ax.grid(True, axis="x", which="both", alpha=0.25)
    ax.legend(fontsize=LABEL_PT, loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=min(n, 4), frameon=False,
              borderaxespad=0.2)
    return _png(fig)
