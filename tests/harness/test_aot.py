"""The pieces of the ahead-of-time compile check that need no compiler: the target table and
its limits, the fp8 format rule, the error line kept, the AMD metadata read, what is left out
of tuning. The compiles themselves are in tests/cli/test_compile.py and test_aot_targets.py."""
import pytest
import torch

from kernelmark.harness import aot, targets


def test_targets_cover_the_gpus_of_the_issue_with_sources():
    for name, gpu in (("cuda:80", "A100"), ("cuda:89", "L40S"), ("cuda:90", "H100"), ("cuda:100", "B200"),
                      ("hip:gfx942", "MI300X")):
        t = targets.TARGETS[name]
        assert gpu in t.gpus and t.source and t.max_shared_bytes > 0 and t.max_registers > 0
    assert targets.TARGETS["cuda:90"].max_shared_bytes == 227 * 1024
    assert targets.TARGETS["hip:gfx942"].max_shared_bytes == 64 * 1024
    assert targets.TARGETS["cuda:90"].capability == (9, 0) and targets.TARGETS["hip:gfx942"].kind == "rocm"


def test_parse_targets_names_the_unknown_one():
    assert [t.name for t in targets.parse_targets("cuda:90, hip:gfx942,cuda:90")] == ["cuda:90", "hip:gfx942"]
    with pytest.raises(ValueError, match="unknown target.*sm_90.*known: cuda:80"):
        targets.parse_targets("cuda:90,sm_90")


def test_fits_checks_each_limit_of_that_target_only():
    h100, mi300 = targets.TARGETS["cuda:90"], targets.TARGETS["hip:gfx942"]
    assert targets.fits(h100, 240 * 1024, 128)[0] is False
    assert "shared memory 245760 B > 232448 B per block" in targets.fits(h100, 240 * 1024, 128)[1]
    assert targets.fits(h100, 128 * 1024, 255) == (True, None)
    assert targets.fits(mi300, 128 * 1024, 100)[0] is False and "LDS" in targets.fits(mi300, 128 * 1024, 100)[1]
    assert "registers" in targets.fits(h100, 0, 300)[1]
    assert targets.fits(h100, None, None) == (True, None)     # unknown is not over


def _launch(*tensors):
    return aot.Launch(fn=None, args=tensors, kwargs={}, config="")


def test_fp8_follows_each_targets_format():
    if not hasattr(torch, "float8_e4m3fnuz"):
        pytest.skip("this torch has no float8_e4m3fnuz")
    fn = _launch(torch.empty(2, dtype=torch.float8_e4m3fn, device="meta"))
    fnuz = _launch(torch.empty(2, dtype=torch.float8_e4m3fnuz, device="meta"))
    mi300, h100, a100 = (targets.TARGETS[n] for n in ("hip:gfx942", "cuda:90", "cuda:80"))
    assert "uses float8_e4m3fnuz, not float8_e4m3fn" in aot.fp8_unsupported(fn, mi300)
    assert aot.fp8_unsupported(fnuz, mi300) is None
    assert aot.fp8_unsupported(fn, h100) is None and "not float8_e4m3fnuz" in aot.fp8_unsupported(fnuz, h100)
    assert "has no fp8" in aot.fp8_unsupported(fn, a100)
    assert aot.fp8_unsupported(_launch(torch.empty(2, device="meta")), a100) is None


def test_first_line_keeps_the_message_not_the_source():
    err = ValueError("at 3:13:\n    offs = tl.arange(0, BLOCK)\n             ^\narange's range must be a power of 2")
    assert aot.first_line(err) == "ValueError: arange's range must be a power of 2"
    assert aot.first_line(RuntimeError("PassManager::run failed")) == "RuntimeError: PassManager::run failed"


def test_amd_resources_read_from_the_kernel_descriptor():
    asm = ".vgpr_count:     96\n .agpr_count: 32\n .vgpr_spill_count: 2\n .sgpr_spill_count: 0\n" \
          ".group_segment_fixed_size: 16384\n"
    assert aot.amd_resources(asm) == {"registers": 128, "spills": 2, "lds": 16384}
    assert aot.amd_resources("") == {"registers": None, "spills": None, "lds": None}


def test_left_out_names_configs_per_target_and_not_plain_kernels():
    from kernelmark.reports import compile_table
    R = aot.Result
    rs = [R("op", "triton", "c", "k", "BLOCK=64 w4 s3", "hip:gfx942", "over_limit", error="LDS big"),
          R("op", "triton", "c", "k", "BLOCK=64 w4 s3", "cuda:90", "compiled"),
          R("op", "triton", "c2", "k", "BLOCK=64 w4 s3", "hip:gfx942", "over_limit", error="LDS big"),
          R("op", "triton", "c", "plain", "", "cuda:90", "failed", error="boom")]
    # the records the compile file holds, as `kernelmark compile` writes them
    assert compile_table.left_out([r.as_record() for r in rs]) == {"hip:gfx942": ["k BLOCK=64 w4 s3: LDS big"]}
