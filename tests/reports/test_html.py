"""kernelmark/reports/html.py (and plots.py): a self-contained page, every run-file string
escaped, checked in a real headless browser where one is installed."""
import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from kernelmark import cli, results
from kernelmark.reports import html, plots

HOSTILE_DEVICE = "<script>alert(1)</script> $GPU$ & \"quotes\""
HOSTILE_OP = "<img src=x onerror=alert(2)>"


class Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.text = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def parse(page: str) -> Tags:
    t = Tags()
    t.feed(page)
    return t


@pytest.fixture
def hostile_pair(smoke_run, other_device, tmp_path):
    evil = other_device(smoke_run, tmp_path / "evil.jsonl", HOSTILE_DEVICE, speed=3.0,
                        op_rename={"gemm": HOSTILE_OP})
    return smoke_run, evil


needs_matplotlib = pytest.mark.skipif(plots.available() is not None, reason="matplotlib is not installed")


@needs_matplotlib
def test_page_is_self_contained_and_escapes_every_run_string(hostile_pair):
    page = html.page([results.load(p) for p in hostile_pair])
    t = parse(page)
    names = [tag for tag, _ in t.tags]
    assert "script" not in names and "iframe" not in names and "link" not in names
    assert "<script>alert" not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "&lt;img src=x onerror=alert(2)&gt;" in page
    imgs = [a for tag, a in t.tags if tag == "img"]
    assert imgs and all(a["src"].startswith("data:image/png;base64,") for a in imgs)
    assert not any(tag for tag, a in t.tags if any(k.startswith("on") for k in a))
    assert "http://" not in page and "https://" not in page
    assert sum("roofline" in a["class"] for a in imgs) == 2           # one per device
    assert sum("bars" in a["class"] for a in imgs) >= 2                # per op
    assert any(a.get("id") == "cross-device" for tag, a in t.tags if tag == "table")
    assert "Content-Security-Policy" in page


def test_page_without_matplotlib_still_has_the_tables(smoke_run, monkeypatch):
    monkeypatch.setattr(plots, "available", lambda: "plots need matplotlib (pip install matplotlib)")
    page = html.page([results.load(smoke_run)])
    t = parse(page)
    assert "plots need matplotlib" in page and not [1 for tag, _ in t.tags if tag == "img"]
    assert any(a.get("id") == "device-table-0" for tag, a in t.tags if tag == "table")


@needs_matplotlib
def test_roofline_leaves_data_movement_off_and_says_so(smoke_run):
    recs = results.load(smoke_run).records
    moved = [dict(r, op="kv_append", flops=0, intensity=0.0, tflops=0.0) for r in recs if r["status"] == "ok"][:3]
    _, before = plots.roofline_points(recs)
    pts, no_flops = plots.roofline_points(recs + moved)
    assert no_flops == before + 3 and all(p[2] != "kv_append" for p in pts) and pts


def _browser():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


BROWSER_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars"]


@needs_matplotlib
@pytest.mark.skipif(_browser() is None, reason="no headless browser: install Debian's chromium "
                                               "(apt-get install -y chromium) to render the HTML report")
def test_page_renders_in_a_headless_browser(hostile_pair, tmp_path):
    out = tmp_path / "report.html"
    assert cli.main(["report", *hostile_pair, "--format", "html", "--out", str(out)]) == 0
    flags = [_browser(), *BROWSER_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run(flags + ["--dump-dom", out.as_uri()], capture_output=True, text=True, timeout=120).stdout
    t = parse(dom)
    tables = {a.get("id") for tag, a in t.tags if tag == "table"}
    assert {"cross-device", "device-table-0", "device-table-1"} <= tables
    assert len([1 for tag, _ in t.tags if tag == "tr"]) > 20
    imgs = [a for tag, a in t.tags if tag == "img"]
    assert sum("roofline" in a.get("class", "") for a in imgs) == 2 and any("bars" in a["class"] for a in imgs)
    assert "script" not in [tag for tag, _ in t.tags]              # the hostile name stayed text
    assert any(HOSTILE_DEVICE in s for s in t.text) and any(HOSTILE_OP in s for s in t.text)
    shot = tmp_path / "shot.png"
    subprocess.run(flags + ["--window-size=1280,2400", f"--screenshot={shot}", out.as_uri()],
                   capture_output=True, timeout=120)
    assert shot.exists()
    from PIL import Image
    im = Image.open(shot).convert("RGB")
    assert im.size == (1280, 2400)
    colours = im.resize((160, 300)).getcolors(maxcolors=1 << 16)
    assert colours is None or len(colours) > 50                   # tables and plots, not a blank page
    keep = Path(__import__("os").environ.get("KERNELMARK_KEEP_SCREENSHOT", ""))
    if keep.name:
        shutil.copyfile(shot, keep)


@needs_matplotlib
@pytest.mark.parametrize("intensities", [[0.5, 2.0], [5000.0, 9000.0]])
def test_roofline_draws_left_and_right_of_the_ridge(intensities):
    header = {"device": {"name": "X", "kind": "cuda", "datasheet": {"name": "X", "copy_gbps": 3000.0,
                                                                       "tflops": {"bf16": 900.0}}},
              "peaks": {"copy_gbps": 2500.0, "tflops": {"bf16": 700.0}}}
    recs = [{"op": "gemm", "backend": "torch", "dtype": "bf16", "status": "ok", "flops": 1, "intensity": x,
             "tflops": min(700.0, 2.5 * x) / 2} for x in intensities]
    png = plots.roofline(header, recs, "t $x$ <b>")
    assert png and png[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_inputs_still_make_a_page(smoke_run, runlines, tmp_path, capsys):
    read, write = runlines
    objs = read(smoke_run)
    empty = write(tmp_path / "empty.jsonl", [dict(objs[0], device=dict(objs[0]["device"], name="Empty GPU"))])
    v2 = write(tmp_path / "v2.jsonl", [dict(objs[0], schema=2)] + objs[1:])
    out = tmp_path / "r.html"
    assert cli.main(["report", smoke_run, empty, v2, "--format", "html", "--out", str(out)]) == 0
    page = out.read_text()
    assert "Not included:" in page and "schema version 2" in page
    assert "Empty GPU (CPU): the run holds no records" in page
    assert "No roofline for Empty GPU (CPU)" in page


@needs_matplotlib
def test_bars_skip_a_series_with_nothing_to_draw():
    assert plots.bars("t", ["a"], {"x": [None], "y": [None]}, "GB/s") is None
    png = plots.bars("t", ["a", "b"], {"x": [1.0, 2.0], "empty": [None, None]}, "GB/s")
    assert png and png[:4] == b"\x89PNG"


# Run in a copy of the page (its CSP allows no script): every <details> opened, then how far
# right each table cell reaches against the window, and the scale each plot is shown at.
MEASURE = """<script>
window.addEventListener("load", () => {
  document.querySelectorAll("details").forEach(d => { d.open = true; });
  const vw = document.documentElement.clientWidth;
  const past = [...document.querySelectorAll("table.km th, table.km td")]
    .filter(c => c.getBoundingClientRect().right > vw + 0.5).map(c => c.textContent.slice(0, 40));
  const speedups = [...document.querySelectorAll("#cross-device thead th")].filter(c => c.textContent.startsWith("vs "))
    .map(c => c.getBoundingClientRect().right);
  const plots = [...document.querySelectorAll("img.km-plot")].map(i => [i.className, i.width / i.naturalWidth]);
  document.body.setAttribute("data-measured", JSON.stringify({vw, past, speedups, plots}));
});
</script>"""


@needs_matplotlib
@pytest.mark.skipif(_browser() is None, reason="no headless browser: install Debian's chromium "
                                               "(apt-get install -y chromium) to render the HTML report")
def test_tables_fit_1280_px_and_plot_labels_are_10_px(hostile_pair, tmp_path):
    page = html.page([results.load(p) for p in hostile_pair])
    probe = tmp_path / "probe.html"
    probe.write_text(page.replace(f'<meta http-equiv="Content-Security-Policy" content="{html.CSP}">', "")
                     .replace("</body>", MEASURE + "</body>"), encoding="utf-8")
    flags = [_browser(), *BROWSER_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,2000",
             "--virtual-time-budget=10000", "--dump-dom", probe.as_uri()]
    dom = subprocess.run(flags, capture_output=True, text=True, timeout=120).stdout
    attrs = next(a for tag, a in parse(dom).tags if tag == "body")
    m = json.loads(attrs["data-measured"])
    assert m["vw"] >= 1200
    assert m["past"] == [], f"cells past the right edge at {m['vw']} px: {m['past'][:5]}"
    assert m["speedups"] and max(m["speedups"]) <= m["vw"]
    label_px = plots.LABEL_PT * plots.DPI / 72
    assert len(m["plots"]) >= 4
    for cls, scale in m["plots"]:
        assert label_px * scale >= 10, f"{cls}: labels shown at {label_px * scale:.1f} px"


@needs_matplotlib
def test_roofline_legend_names_op_dtype_and_backend(monkeypatch):
    monkeypatch.setattr(plots, "_png", lambda fig: fig)            # keep the figure to read its legend
    header = {"device": {"name": "X", "kind": "cuda"}, "peaks": {"copy_gbps": 2500.0,
                                                                 "tflops": {"bf16": 700.0, "fp16": 690.0}}}
    recs = [{"op": "gemm", "backend": b, "dtype": dt, "status": "ok", "flops": 1, "intensity": 100.0,
             "tflops": 50.0} for b in ("torch", "triton") for dt in ("bf16", "fp16")]
    fig = plots.roofline(header, recs, "t")
    texts = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert {"gemm bf16 / torch", "gemm fp16 / torch", "gemm bf16 / triton", "gemm fp16 / triton"} <= set(texts)
    # fp16 and bf16 ceilings 1.4% apart: one label, not two drawn on each other.
    notes = [t.get_text() for t in fig.axes[0].texts if "TFLOP/s" in t.get_text()]
    assert notes == ["measured bf16 700, fp16 690 TFLOP/s"]
