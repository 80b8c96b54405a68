"""kernelmark/ops/rope.py: the rope op as the runner uses it — every backend that runs here
passes the check in both layouts with partial rotary and Llama 3.1 scaling; the check
covers q and k both; Llama 3.1's frequency scaling has its published shape; the cache
is rope_kv_append's table where both apply; bad shapes are suite errors with the line,
and `kernelmark run` exits 2 naming the file and line."""
import math

import pytest
import torch

from kernelmark import cli, dtypes
from kernelmark.ops import rope
from kernelmark.ops.registry import get_op
from kernelmark.ops.rope_kv_append import cos_sin_table
from kernelmark.suites import loader

CPU = torch.device("cpu")
OP = get_op("rope")


def _inputs(shape, dtype, seed=7):
    return OP.make_inputs(shape, dtype, CPU, torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("shape, dtype", [
    ({"tokens": 5, "q_heads": 3, "kv_heads": 1, "head_dim": 64, "rotary_dim": 32, "style": "neox",
      "theta": 500000, "scaling": "llama3", "max_position": 20000}, "bf16"),
    ({"tokens": 4, "q_heads": 4, "kv_heads": 1, "head_dim": 64, "rotary_dim": 64, "style": "gptj"}, "fp32"),
    ({"tokens": 3, "q_heads": 2, "kv_heads": 2, "head_dim": 80, "rotary_dim": 40, "style": "gptj"}, "fp16"),
])
def test_every_backend_that_runs_here_passes(shape, dtype):
    shape = OP.full_shape(shape)
    OP.check_shape(shape, dtype)
    ref = OP.reference(_inputs(shape, dtype))
    ran = []
    for b in OP.backends:
        if b.available() is not None or (b.devices and "cpu" not in b.devices):
            continue
        x = _inputs(shape, dtype)
        res = OP.compare(b.run(x), ref, dtype)
        assert res.passed, f"{b.name}: {res.detail}"
        ran.append(b.name)
    assert ran == ["triton", "torch"]


def test_the_check_covers_k_too_and_the_other_layout_fails():
    shape = OP.full_shape({"tokens": 6, "q_heads": 4, "kv_heads": 2, "head_dim": 64, "rotary_dim": 64})
    ref = OP.reference(_inputs(shape, "bf16"))
    x = _inputs(shape, "bf16")
    q, _ = OP.backend("torch").run({**x, "k": x["k"].clone()})       # q rotated, k left as it was
    res = OP.compare((q, x["k"]), ref, "bf16")
    assert not res.passed and res.detail.startswith("output 1:")
    gptj = OP.backend("torch").run({**_inputs(shape, "bf16"), "neox": False})
    assert not OP.compare(gptj, ref, "bf16").passed


def test_llama31_scaling_keeps_high_frequencies_and_divides_low_ones_by_8():
    plain = rope.inv_freq(128, 500000.0)
    scaled = rope.inv_freq(128, 500000.0, "llama3")
    wavelen = 2 * math.pi / plain
    high, low = wavelen < 2048, wavelen > 8192
    assert high.any() and low.any() and (~high & ~low).any()
    assert torch.equal(scaled[high], plain[high])
    assert torch.allclose(scaled[low], plain[low] / 8)
    mid = ~high & ~low                                   # blended: between the two, and decreasing
    assert bool(((scaled[mid] < plain[mid]) & (scaled[mid] > plain[mid] / 8)).all())
    assert bool((scaled[1:] <= scaled[:-1]).all())


def test_the_cache_is_rope_kv_appends_table_without_scaling():
    assert torch.equal(rope.cos_sin_cache(300, 64, 500000, "none", CPU), cos_sin_table(300, 64, CPU))


def test_bytes_are_the_rotated_elements_and_one_cache_row_per_token():
    shape = OP.full_shape({"tokens": 5, "q_heads": 3, "kv_heads": 1, "head_dim": 64, "rotary_dim": 48})
    x = _inputs(shape, "bf16")
    rotated = (x["q"][..., :48].numel() + x["k"][..., :48].numel()) * dtypes.itemsize("bf16")
    cache_rows = x["cos_sin_cache"][x["positions"]]
    assert OP.nbytes(shape, "bf16") == 2 * rotated + cache_rows.nbytes + x["positions"].nbytes


@pytest.mark.parametrize("shape, message", [
    ("{tokens = 4, q_heads = 2, kv_heads = 1, head_dim = 64, rotary_dim = 63}", "rotary_dim 63 must be even"),
    ("{tokens = 4, q_heads = 2, kv_heads = 1, head_dim = 64, rotary_dim = 128}",
     "rotary_dim 128 .* at most head_dim 64"),
    ('{tokens = 4, q_heads = 2, kv_heads = 1, head_dim = 64, rotary_dim = 64, style = "glm"}', "style 'glm'"),
    ('{tokens = 4, q_heads = 2, kv_heads = 1, head_dim = 64, rotary_dim = 64, scaling = "yarn"}', "scaling 'yarn'"),
])
def test_bad_shapes_are_suite_errors_with_the_line(tmp_path, shape, message):
    p = tmp_path / "s.toml"
    p.write_text(f'name = "s"\n[[case]]\nop = "gemm"\nshapes = [{{m = 1, n = 1, k = 1}}]\n\n'
                 f'[[case]]\nop = "rope"\nshapes = [{shape}]\n')
    with pytest.raises(loader.SuiteError, match=rf"s\.toml:6 \(case 2\): .*{message}"):
        loader.load(str(p))


def test_run_exits_2_naming_the_file_and_line(tmp_path, capsys):
    p = tmp_path / "bad.toml"
    p.write_text('[[case]]\nop = "rope"\nshapes = [{tokens = 4, q_heads = 2, kv_heads = 1, head_dim = 64, '
                 'rotary_dim = 63}]\n')
    assert cli.main(["run", "--suite", str(p), "--out", str(tmp_path / "r.jsonl")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("kernelmark: error: ") and "bad.toml:1 (case 1)" in err[0]
    assert "rotary_dim 63" in err[0] and "Traceback" not in err[0]
