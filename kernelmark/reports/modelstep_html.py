"""`kernelmark model ... --format html`: the model roll-up as one self-contained page.

The buyer's table (one row a device and phase) and, per device, a stacked bar of where a
step's time goes by kernel family: one bar a phase, each family a segment as long as its
share. The bars are inline SVG written here (no plotting library, no script), so the page
renders the same anywhere; every string from a run file or a config goes through
``html.esc`` and the page carries the same no-script Content Security Policy as the run
report. An incomplete phase gets no bar: its measured part is not its step.
"""

from __future__ import annotations

from kernelmark.reports import modelstep, rollup, token_energy
from kernelmark.reports.html import CSP, STYLE, esc

# Colour-blind-safe (Okabe-Ito), one a family in order of first appearance; then greys.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
BAR_W, BAR_H, LABEL_W = 560, 22, 190


def family_colours(built: list) -> dict:
    names: list = []
    for _, ests in built:
        for e in ests:
            names += [k for k in modelstep.families(e) if k not in names]
    return {k: PALETTE[i] if i < len(PALETTE) else f"hsl(0,0%,{35 + 8 * (i - len(PALETTE)) % 50}%)"
            for i, k in enumerate(names)}


def stacked_bars(ests: list, colours: dict) -> str:
    """One SVG: a bar per complete phase, segments by family share (the numbers are in titles
    and in the table below it, the bar is for the eye)."""
    bars = [(e, modelstep.families(e)) for e in ests if e.complete]
    if not bars:
        return "<p>No phase is complete: no bar (a partial sum is not a step).</p>"
    h = len(bars) * (BAR_H + 10) + 10
    parts = [f'<svg class="stack" role="img" width="{LABEL_W + BAR_W + 10}" height="{h}" '
             f'viewBox="0 0 {LABEL_W + BAR_W + 10} {h}" xmlns="http://www.w3.org/2000/svg">']
    for i, (e, fam) in enumerate(bars):
        y = 10 + i * (BAR_H + 10)
        total = sum(fam.values()) or 1.0
        parts.append(f'<text x="0" y="{y + BAR_H * 0.7:.1f}" font-size="12">{esc(rollup._phase(e))}</text>')
        x = float(LABEL_W)
        for name, us in sorted(fam.items(), key=lambda kv: -kv[1]):
            w = BAR_W * us / total
            parts.append(f'<rect x="{x:.2f}" y="{y}" width="{w:.2f}" height="{BAR_H}" fill="{colours[name]}">'
                         f'<title>{esc(name)}: {us:,.1f} µs, {100 * us / total:.1f}%</title></rect>')
            x += w
    parts.append("</svg>")
    return "".join(parts)


def legend(colours: dict) -> str:
    return '<p class="legend">' + " ".join(
        f'<span style="display:inline-block;width:0.9em;height:0.9em;background:{c};vertical-align:middle"></span>'
        f" {esc(name)}&nbsp;&nbsp;" for name, c in colours.items()) + "</p>"


def _table(head: list, body: list) -> str:
    th = "".join(f"<th>{esc(h)}</th>" for h in head)
    rows = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in body)
    return f'<table class="km"><thead><tr>{th}</tr></thead><tbody>{rows}</tbody></table>'


def render(built: list, model: str, context: int, tp: int, price_per_hour=None, price_per_kwh=None,
           checks=None) -> str:
    """``checks``: --check-step's measured steps (kernelmark.reports.stepcheck), shown as its text."""
    colours = family_colours(built)
    heads, summary = modelstep.summary_table(built, price_per_kwh, token_energy.any_shown(built))
    price = modelstep.price_text(price_per_hour, tp)
    body = [f"<h1>{esc(model)}</h1>",
            f"<p>{esc(modelstep.LABEL)}. Context {context} tokens a sequence; tensor parallel {tp}{esc(price)}.</p>",
            _table(heads, summary)]
    for dev, ests in built:
        body += [f"<h2>{esc(dev.label)}: where a step's time goes</h2>", legend(colours), stacked_bars(ests, colours),
                 f"<p>{esc(modelstep.BREAKDOWN_NOTE)}.</p>",
                 _table(["phase", "component", "case used", "backend", "median µs", "count", "µs in total"],
                        rollup.breakdown_rows(ests))]
    if checks:
        from tabulate import tabulate
        from kernelmark.reports import stepcheck
        body.append("<h2>Checked against a real decode step</h2><pre>"
                    + esc("\n".join(stepcheck.table_lines(checks, tabulate, "simple")).strip()) + "</pre>")
    miss = rollup.missing_lines(built)
    if miss:
        body.append("<h2>Cases not in the run</h2><ul>" + "".join(f"<li>{esc(m)}</li>" for m in miss) + "</ul>")
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            f"<title>kernelmark model {esc(model)}</title><style>{STYLE}</style></head><body>"
            + "\n".join(body) + "</body></html>\n")
