"""kernelmark/harness/cpu.py: ISA features from /proc/cpuinfo text, the CPUs a process can
get (affinity, cgroup quotas), and the default thread count with its reason."""
import pytest

from kernelmark.harness import cpu

AVX2_EPYC = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC
flags\t\t: fpu vme sse sse2 ssse3 fma cx16 sse4_1 sse4_2 avx f16c avx2 bmi2 sha_ni

processor\t: 1
model name\t: AMD EPYC
flags\t\t: fpu vme sse sse2 ssse3 fma cx16 sse4_1 sse4_2 avx f16c avx2 bmi2 sha_ni
"""
AVX512_EPYC = AVX2_EPYC.replace("avx2 bmi2", "avx2 bmi2 avx512f avx512dq avx512_vnni avx512_bf16")
SAPPHIRE_RAPIDS = AVX2_EPYC.replace("avx2 bmi2", "avx2 avx512f avx512_bf16 avx512_fp16 amx_bf16 amx_tile amx_int8")
GRAVITON = """processor\t: 0
BogoMIPS\t: 2100.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid sve sve2 bf16 i8mm
"""


def test_isa_features_name_what_decides_matmul_speed():
    assert cpu.isa_features(AVX2_EPYC) == ["avx2", "fma"]
    assert cpu.isa_features(AVX512_EPYC) == ["avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16"]
    assert cpu.isa_features(SAPPHIRE_RAPIDS) == ["avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16",
                                                "amx_tile", "amx_bf16", "amx_int8"]
    assert cpu.isa_features(GRAVITON) == ["asimd", "asimdhp", "sve", "sve2", "bf16", "i8mm"]
    assert cpu.isa_features("") == []


def test_a_feature_only_some_cores_have_is_not_counted():
    hybrid = AVX2_EPYC.replace("avx2 bmi2 sha_ni\n\nprocessor", "avx2 bmi2 sha_ni avx512f\n\nprocessor", 1)
    assert "avx512f" in hybrid and cpu.isa_features(hybrid) == ["avx2", "fma"]


@pytest.mark.parametrize("text, cpus", [("max 100000\n", None), ("200000 100000\n", 2.0),
                                        ("150000 100000", 1.5), ("", None), ("garbage", None)])
def test_cgroup_v2_cpu_max(text, cpus):
    assert cpu.parse_cpu_max(text) == cpus


def test_cgroup_quota_v2_takes_the_tightest_along_the_path(tmp_path):
    root = tmp_path / "cg"
    (root / "ci" / "job").mkdir(parents=True)
    (root / "cgroup.controllers").write_text("cpu memory\n")
    (root / "ci" / "cpu.max").write_text("300000 100000\n")
    (root / "ci" / "job" / "cpu.max").write_text("max 100000\n")
    proc = tmp_path / "cgroup"
    proc.write_text("0::/ci/job\n")
    assert cpu.cgroup_cpu_quota(root, proc) == 3.0
    proc.write_text("0::/elsewhere\n")              # a path not under the mount: the mount's own files
    assert cpu.cgroup_cpu_quota(root, proc) is None
    (root / "cpu.max").write_text("200000 100000\n")
    assert cpu.cgroup_cpu_quota(root, proc) == 2.0


def test_cgroup_quota_v1(tmp_path):
    root = tmp_path / "cg"
    d = root / "cpu,cpuacct" / "docker" / "abc"
    d.mkdir(parents=True)
    (d / "cpu.cfs_quota_us").write_text("150000\n")
    (d / "cpu.cfs_period_us").write_text("100000\n")
    (root / "cpu,cpuacct" / "cpu.cfs_quota_us").write_text("-1\n")
    proc = tmp_path / "cgroup"
    proc.write_text("4:cpu,cpuacct:/docker/abc\n1:name=systemd:/\n")
    assert cpu.cgroup_cpu_quota(root, proc) == 1.5
    proc.write_text("4:cpu,cpuacct:/\n")
    assert cpu.cgroup_cpu_quota(root, proc) is None


def _avail(cpus, affinity=None, quota=None):
    return {"cpus": cpus, "affinity": affinity or cpus, "cgroup_quota": quota}


def test_default_threads_leave_a_cpu_for_the_rest_of_the_machine():
    two = cpu.choose_threads(None, _avail(2), torch_default=2, env={})
    assert two["chosen"] == 1 and two["reduced"] and two["source"] == "default"
    assert "1 instead of torch's 2" in two["reason"] and "can get 2 CPUs" in two["reason"]
    # torch counts the host's cores; a quota of 2 CPUs is what the process gets.
    quota = cpu.choose_threads(None, _avail(2, affinity=64, quota=2.0), torch_default=32, env={})
    assert quota["chosen"] == 1 and "cgroup quota 2" in quota["reason"]
    big = cpu.choose_threads(None, _avail(64), torch_default=32, env={})
    assert big["chosen"] == 32 and not big["reduced"]
    assert cpu.choose_threads(None, _avail(1), torch_default=1, env={})["chosen"] == 1


def test_threads_asked_for_are_kept():
    asked = cpu.choose_threads(4, _avail(2), torch_default=2, env={})
    assert asked["chosen"] == 4 and asked["source"] == "--threads" and not asked["reduced"]
    omp = cpu.choose_threads(None, _avail(2), torch_default=2, env={"OMP_NUM_THREADS": "2"})
    assert omp["chosen"] == 2 and omp["source"] == "OMP_NUM_THREADS"
    # Set after torch started (torch's default is still 2): the variable is what counts.
    late = cpu.choose_threads(None, _avail(2), torch_default=2, env={"OMP_NUM_THREADS": "1"})
    assert late["chosen"] == 1 and late["source"] == "OMP_NUM_THREADS"
    bad = cpu.choose_threads(None, _avail(2), torch_default=2, env={"OMP_NUM_THREADS": "lots"})
    assert bad["source"] == "default" and bad["chosen"] == 1


def test_cpus_available_is_within_the_affinity_mask():
    got = cpu.cpus_available()
    assert 1 <= got["cpus"] <= got["affinity"]
