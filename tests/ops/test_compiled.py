"""kernelmark/ops/compiled.py: the torch-compile backends. Inductor is too slow to compile
on this CPU (the backends are GPU-only), so what is checked here is what a GPU run relies
on: TorchDynamo captures each op's eager function whole (fullgraph: no graph break that
would error on the GPU), the captured function passes the op's check, and a process
that runs many shapes compiles each one rather than falling back to eager code past
torch's recompile limit."""
import pytest
import torch
from torch._dynamo.testing import CompileCounter

from kernelmark.ops import compiled
from kernelmark.ops.registry import all_ops, get_op
from kernelmark.suites import loader

CPU = torch.device("cpu")
OPS = ("rmsnorm", "fused_add_rmsnorm", "silu_and_mul", "gelu_tanh_and_mul", "rope", "embedding",
       "argmax_sampling", "top_k_top_p_sampling", "fp8_group_quant", "gemm_fp8_blockwise")
# Ops the smoke suite leaves out (fp8 and sampling run on GPUs only there): small shapes with tails.
SHAPES = {"argmax_sampling": ({"batch": 3, "vocab": 1000}, "fp32"),
          "top_k_top_p_sampling": ({"batch": 2, "vocab": 300, "draws": 4000, "top_k": 20, "top_p": 0.9,
                                    "temperature": 0.7}, "fp32"),
          "fp8_group_quant": ({"tokens": 5, "hidden": 384, "group": 128}, "bf16"),
          "gemm_fp8_blockwise": ({"m": 5, "n": 256, "k": 384}, "fp8_e4m3")}


def _smoke(name):
    if name in SHAPES:
        return SHAPES[name]
    return next((c.shape, c.dtype) for c in loader.load("smoke").cases if c.op == name)


def test_every_torch_compile_backend_is_a_fresh_compile_per_signature():
    """A plain torch.compile'd function raises (fullgraph) or runs eagerly past torch's
    recompile limit: every torch-compile backend must be a compiled.Compiled, and be tested here."""
    names = {op.name for op in all_ops().values() if any(b.name == "torch-compile" for b in op.backends)}
    assert names == set(OPS)
    for name in names:
        assert isinstance(get_op(name).backend("torch-compile").run, compiled.Compiled), name


@pytest.mark.parametrize("name", OPS)
def test_the_eager_function_is_captured_whole_and_passes_the_check(name):
    op = get_op(name)
    shape, dtype = _smoke(name)
    backend = op.backend("torch-compile")
    assert backend.devices == compiled.GPU and "torch.compile" in backend.description
    captured = compiled.Compiled(backend.run.fn, backend.run.key, backend=CompileCounter())
    assert backend.run.fn is op.backend("torch").run          # the same function the torch backend runs
    gen = lambda: torch.Generator().manual_seed(1)              # noqa: E731
    ref = op.reference(op.make_inputs(shape, dtype, CPU, gen()))
    res = op.compare(captured(op.make_inputs(shape, dtype, CPU, gen())), ref, dtype)
    assert res.passed, res.detail
    assert captured.backend.frame_count == 1 and captured.compiles == 1


def test_every_new_shape_is_compiled_even_past_the_recompile_limit():
    fn = get_op("silu_and_mul").backend("torch").run
    counter = CompileCounter()
    c = compiled.Compiled(fn, compiled.tensor_key("x"), backend=counter)
    limit = 2                               # torch's default is 8; a lower one makes the test quick
    with torch._dynamo.config.patch(recompile_limit=limit):
        for tokens in range(1, limit + 3):
            x = {"x": torch.randn(tokens, 16)}
            for _ in range(2):              # a second call of the same shape reuses the compile
                assert torch.allclose(c(x), fn(x))
    assert c.compiles == limit + 2
    # Without the reset, the 9th shape raises FailOnRecompileLimitHit (fullgraph) or runs eagerly.
    assert counter.frame_count == limit + 2


def test_the_key_sees_shapes_dtypes_and_scalars():
    key = compiled.tensor_key("x", scalars=("eps",))
    a = {"x": torch.zeros(2, 3), "eps": 1e-5}
    assert key(a) == key({"x": torch.ones(2, 3), "eps": 1e-5})
    assert key(a) != key({"x": torch.zeros(2, 4), "eps": 1e-5})
    assert key(a) != key({"x": torch.zeros(2, 3).half(), "eps": 1e-5})
    assert key(a) != key({"x": torch.zeros(2, 3), "eps": 1e-6})
