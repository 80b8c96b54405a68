import pytest

from kernelmark.suites import loader


def _write(tmp_path, text, name="s.toml"):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def test_every_builtin_suite_loads():
    names = loader.builtin_suites()
    assert {"smoke", "default", "llama3-8b", "llama3-70b"} <= set(names)
    for name in names:
        s = loader.load(name)
        assert s.cases, name


def test_grid_is_a_cartesian_product(tmp_path):
    s = loader.load(_write(tmp_path, """
name = "g"
[[case]]
op = "gemm"
dtypes = ["fp32", "bf16"]
[case.grid]
m = [1, 2, 3]
n = 8
k = 16
"""))
    assert len(s.cases) == 6
    assert {c.shape["m"] for c in s.cases} == {1, 2, 3}
    assert all(c.shape["layout"] == "nn" for c in s.cases)   # the op's default
    assert s.cases[0].line == 3 and s.cases[0].index == 1


def test_shape_set_expands_model_projections(tmp_path):
    s = loader.load(_write(tmp_path, """
[[case]]
op = "gemm"
shape_set = "llama3-70b.gemm"
[case.params]
m = [1, 16]
tp = 8
"""))
    assert len(s.cases) == 8
    qkv = [c for c in s.cases if c.label.startswith("llama3-70b.qkv")]
    assert qkv[0].shape["n"] == 10240 // 8


@pytest.mark.parametrize("text, match", [
    ('[[case]]\nop = "gemmm"\nshapes = [{m=1,n=1,k=1}]\n', r"s\.toml:1 \(case 1\): unknown op 'gemmm'; known: .*gemm"),
    ('[[case]]\nop = "gemm"\nbackends = ["cublas"]\nshapes = [{m=1,n=1,k=1}]\n', "no backend 'cublas'; known: torch, triton"),
    ('[[case]]\nop = "gemm"\ndtypes = ["fp64"]\nshapes = [{m=1,n=1,k=1}]\n', "no dtype 'fp64'"),
    ('[[case]]\nop = "gemm"\nshapes = [{m=0,n=1,k=1}]\n', "m must be a positive integer"),
    ('[[case]]\nop = "gemm"\nshapes = [{m=-4,n=1,k=1}]\n', "m must be a positive integer"),
    ('[[case]]\nop = "gemm"\nshapes = [{m=1,n=1,q=1}]\n', "no shape parameter 'q'"),
    ('[[case]]\nop = "gemm"\n', "has no shapes"),
    ('[[case]]\nop = "gemm"\nsize = 3\nshapes = [{m=1,n=1,k=1}]\n', "unknown key"),
    ('[[case]]\nop = "gemm"\ndevices = ["tpu"]\nshapes = [{m=1,n=1,k=1}]\n', "unknown device kind 'tpu'"),
    ('[[case]]\nop = "gemm"\nbudget_s = -1\nshapes = [{m=1,n=1,k=1}]\n', "budget_s must be a positive"),
    ('[[case]]\nop = "gemm"\nshape_set = "gpt5.gemm"\n', "unknown shape_set 'gpt5.gemm'"),
    ('name = "x"\n', "at least one"),
    ('name = "x"\n[[case]\nop = "gemm"\n', r"malformed TOML.*line 2"),
])
def test_bad_suites_get_clear_errors(tmp_path, text, match):
    with pytest.raises(loader.SuiteError, match=match):
        loader.load(_write(tmp_path, text))


def test_error_names_the_line_of_the_bad_case(tmp_path):
    text = ('[[case]]\nop = "gemm"\nshapes = [{m=1,n=1,k=1}]\n\n'
            '[[case]]\nop = "gemm"\nshapes = [{m=1,n=0,k=1}]\n')
    with pytest.raises(loader.SuiteError, match=r"s\.toml:5 \(case 2\)"):
        loader.load(_write(tmp_path, text))


def test_unknown_suite_lists_the_builtins():
    with pytest.raises(loader.SuiteError, match="unknown suite 'nope'; built-in suites: .*smoke"):
        loader.load("nope")


def test_missing_suite_file():
    with pytest.raises(loader.SuiteError, match="does not exist"):
        loader.load("/no/such/suite.toml")


@pytest.mark.parametrize("name", ["suites", "suites.toml"])
def test_a_directory_is_not_a_suite_file(tmp_path, name):
    (tmp_path / name).mkdir()
    with pytest.raises(loader.SuiteError, match=f"suite {tmp_path / name} is a directory, not a suite file"):
        loader.load(str(tmp_path / name))


def test_device_filter():
    c = loader.load("default").cases
    gpu = [x for x in c if x.runs_on("cuda")]
    cpu = [x for x in c if x.runs_on("cpu")]
    assert gpu and cpu and not set(map(id, gpu)) & set(map(id, cpu))
    assert all(x.runs_on("rocm") for x in gpu)


def test_suite_hash_changes_with_content(tmp_path):
    a = loader.load(_write(tmp_path, '[[case]]\nop = "gemm"\nshapes = [{m=1,n=1,k=1}]\n', "a.toml"))
    b = loader.load(_write(tmp_path, '[[case]]\nop = "gemm"\nshapes = [{m=2,n=1,k=1}]\n', "b.toml"))
    assert a.sha256 != b.sha256 and len(a.sha256) == 64


def test_a_grid_that_explodes_is_refused(tmp_path):
    text = '[[case]]\nop = "gemm"\n[case.grid]\n' + "".join(
        f"{k} = [{', '.join(str(i) for i in range(1, 40))}]\n" for k in ("m", "n", "k"))
    with pytest.raises(loader.SuiteError, match="expands to 59319 shapes"):
        loader.load(_write(tmp_path, text))


def test_float_shape_parameters_load_and_non_finite_ones_are_refused(tmp_path):
    case = '[[case]]\nop = "top_k_top_p_sampling"\nshapes = [{{batch = 2, vocab = 100, top_k = 10, top_p = {}}}]\n'
    s = loader.load(_write(tmp_path, case.format("0.9")))
    assert s.cases[0].shape["top_p"] == 0.9 and s.cases[0].shape["temperature"] == 1.0
    with pytest.raises(loader.SuiteError, match=r"s\.toml:1 \(case 1\): shape parameter top_p = inf: expected"):
        loader.load(_write(tmp_path, case.format("inf")))


@pytest.mark.parametrize("shape, match", [
    ("top_k = 10, top_p = 1.5", r"top_p must be in \(0, 1\], got 1\.5"),
    ("top_k = 10, top_p = 0.0", r"top_p must be in \(0, 1\], got 0\.0"),
    ("top_k = 0", r"top_k must be an integer in \[1, vocab\].*got 0"),
    ("top_k = 101", "got 101"),
    ("top_k = 10, temperature = 0", "temperature must be > 0, got 0"),
    ("top_k = 10, draws = 0", "draws must be a positive integer"),
])
def test_bad_sampling_parameters_are_suite_errors_with_the_line(tmp_path, shape, match):
    text = ('[[case]]\nop = "gemm"\nshapes = [{m=1,n=1,k=1}]\n\n'
            f'[[case]]\nop = "top_k_top_p_sampling"\nshapes = [{{batch = 2, vocab = 100, {shape}}}]\n')
    with pytest.raises(loader.SuiteError, match=r"s\.toml:5 \(case 2\): shape .*" + match):
        loader.load(_write(tmp_path, text))
