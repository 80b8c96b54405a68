"""published/ and kernelmark/reports/publish.py: every published table regenerates from its
run file unchanged, for any number of devices (none included)."""
import json
import shutil
from pathlib import Path

import pytest

from kernelmark import cli, results
from kernelmark.reports import publish

PUBLISHED = Path(__file__).resolve().parents[2] / "published"


def test_every_published_table_regenerates_unchanged():
    assert (PUBLISHED / "README.md").exists()
    assert publish.check(str(PUBLISHED)) == []
    runs = publish.published_runs(str(PUBLISHED))
    index = (PUBLISHED / "index.md").read_text()
    if not runs:
        assert publish.NO_DEVICES in index
    for run in runs:
        assert run.complete, f"{run.path}: published runs must be complete"
        assert Path(run.path).with_suffix(".md").name in index
        if publish.is_cpu_fallback(run):
            assert "CPU fallback" in index


def test_empty_tree_says_no_devices_yet(tmp_path, capsys):
    assert cli.main(["publish", "--dir", str(tmp_path)]) == 0
    assert publish.NO_DEVICES in (tmp_path / "index.md").read_text()
    assert json.loads((tmp_path / "index.json").read_text()) == {"devices": [], "runs": []}
    assert cli.main(["publish", "--dir", str(tmp_path), "--check"]) == 0


def test_publish_adds_a_run_then_check_catches_an_edited_table(smoke_run, other_device, tmp_path, capsys):
    root = tmp_path / "pub"
    root.mkdir()
    gpu = other_device(smoke_run, tmp_path / "gpu.jsonl", "NVIDIA H100 80GB HBM3", speed=5.0)
    assert cli.main(["publish", smoke_run, gpu, "--dir", str(root)]) == 0
    dirs = sorted(p.name for p in root.iterdir() if p.is_dir())
    assert dirs == ["cpu-amd-epyc", "cuda-nvidia-h100-80gb-hbm3"]
    index = (root / "index.md").read_text()
    assert "CPU fallback" in index and "NVIDIA H100 80GB HBM3 (cuda)" in index
    data = json.loads((root / "index.json").read_text())
    assert len(data["runs"]) == 2 and all(r["commit"] for r in data["runs"])
    assert (root / "cross-device.md").exists()
    assert publish.check(str(root)) == []
    table = next((root / "cpu-amd-epyc").glob("*.md"))
    table.write_text(table.read_text().replace("torch", "TORCH", 1))
    assert cli.main(["publish", "--dir", str(root), "--check"]) == 1
    assert "differs from what its run file makes" in capsys.readouterr().err
    assert cli.main(["publish", "--dir", str(root)]) == 0
    assert publish.check(str(root)) == []
    # Publishing the same file again is a no-op; a different file under the same name is refused.
    assert cli.main(["publish", smoke_run, "--dir", str(root)]) == 0
    shutil.rmtree(root / "cuda-nvidia-h100-80gb-hbm3")
    assert not (root / "cross-device.md").exists() or publish.check(str(root))
    assert cli.main(["publish", "--dir", str(root)]) == 0
    assert not (root / "cross-device.md").exists()


def test_publish_refuses_interrupted_and_untimed_runs(smoke_run, runlines, tmp_path, capsys):
    read, write = runlines
    objs = read(smoke_run)
    cut = write(tmp_path / "cut.jsonl", [o for o in objs if o.get("type") != "footer"])
    assert cli.main(["publish", cut, "--dir", str(tmp_path / "p")]) == 2
    assert "interrupted" in capsys.readouterr().err
    untimed = [objs[0]] + [dict(o, status="skipped") for o in objs[1:] if o.get("type") == "record"] + [objs[-1]]
    assert cli.main(["publish", write(tmp_path / "u.jsonl", untimed), "--dir", str(tmp_path / "p")]) == 2
    assert "no case was timed" in capsys.readouterr().err


def test_headline_figures(smoke_run):
    h = publish.headline(results.load(smoke_run))
    assert h["cpu_fallback"] and h["timed"] > 0 and h["best_gemm_tflops"] > 0
    assert h["best_gemm_case"].startswith("gemm ")


def test_the_readme_sample_is_what_report_prints_for_its_run_file(capsys):
    """README's "What it prints" quotes a published run file rendered by `kernelmark report`:
    it must stay exactly what today's report prints for that file (its first lines)."""
    import re
    readme = (PUBLISHED.parent / "README.md").read_text()
    section = readme[readme.index("## What it prints"):]
    run_file = re.search(r"`kernelmark report (published/\S+\.jsonl)`", section).group(1)
    sample = section.split("```")[1].strip("\n")
    assert sample.endswith("\n...")
    capsys.readouterr()
    assert cli.main(["report", str(PUBLISHED.parent / run_file)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith(sample[:-len("\n...")] + "\n"), "README sample differs from `kernelmark report`"
