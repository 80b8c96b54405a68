"""The llama3 suites hold every case `kernelmark model` needs at its defaults, so a GPU run
of the suite gives a complete roll-up (no 'not in the run')."""
import pytest

from kernelmark.reports import rollup
from kernelmark.suites import loader


@pytest.mark.parametrize("model, tp", [("llama3-8b", 1), ("llama3-70b", 1), ("llama3-70b", 8)])
def test_model_suite_covers_the_roll_up(model, tp):
    cases = [c for c in loader.load(model).cases if c.runs_on("cuda") and c.dtype == "bf16"]
    needs = [n for b in (1, 8, 32) for n in rollup.decode_needs(model, b, 4096, tp)]
    needs += rollup.prefill_needs(model, 4096, 4096, tp)
    missing = []
    for need in needs:
        if not any(c.op == need.op and all(c.shape.get(k) == v for k, v in need.fixed.items()) for c in cases):
            missing.append(rollup.case_text(need, "bf16"))
    assert not missing, missing
