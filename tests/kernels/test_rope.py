"""kernels/rope.py in the Triton interpreter against rotary embeddings written here
independently — Hugging Face's rotate_half (NeoX) and GPT-J's rotate_every_two — with
partial rotary, odd head counts (BLOCK_H = 2 there) and rotary widths that are not powers
of two; the pass-through part untouched; a kernel that rotates q but not k, or uses the
wrong position, fails the check; bad input is a ValueError naming it before any launch."""
import pytest
import torch
import triton

from kernelmark import dtypes
from kernelmark.kernels import rope as k
from kernelmark.ops.check import compare
from kernelmark.ops.rope import cos_sin_cache

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def _inputs(t, hq, hk, d, rd, dt, seed=0, max_pos=4096):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(t, hq, d, generator=g).to(dt)
    kk = torch.randn(t, hk, d, generator=g).to(dt)
    pos = torch.randint(0, max_pos, (t,), generator=g)
    pos[0] = 0                                   # the identity rotation
    return q, kk, pos, cos_sin_cache(max_pos, rd, 10000, "none", "cpu")


def _hf_angles(pos, rd, theta=10000.0):
    """Angles in fp32, as Hugging Face computes them (at position 4000 fp32 rounding moves an
    angle by ~1e-4 rad, beyond fp32's check: the cache has the same fp32 angles)."""
    inv = 1.0 / (theta ** (torch.arange(0, rd, 2, dtype=torch.int64).float() / rd))
    return (pos.float()[:, None, None] * inv[None, None, :]).double()           # [T, 1, rd/2]


def _neox(x, pos, rd):
    """Hugging Face's Llama: x·cos + rotate_half(x)·sin with cos of cat(freqs, freqs)."""
    f = _hf_angles(pos, rd)
    emb = torch.cat((f, f), dim=-1)
    r = x[..., :rd].double()
    half = torch.cat((-r[..., rd // 2:], r[..., : rd // 2]), dim=-1)
    return torch.cat((r * emb.cos() + half * emb.sin(), x[..., rd:].double()), dim=-1)


def _gptj(x, pos, rd):
    """GPT-J: x·cos + rotate_every_two(x)·sin with each angle repeated for its pair."""
    f = _hf_angles(pos, rd).repeat_interleave(2, dim=-1)
    r = x[..., :rd].double()
    every_two = torch.stack((-r[..., 1::2], r[..., 0::2]), dim=-1).flatten(-2)
    return torch.cat((r * f.cos() + every_two * f.sin(), x[..., rd:].double()), dim=-1)


def _ok(out, ref, name):
    res = compare(out, ref, dtypes.tolerance(name), dtype=name)
    assert res.passed, res.detail


CASES = [(name, neox, *shape) for name in ("fp32", "bf16") for neox in (True, False)
         for shape in [(3, 1, 64, 64), (5, 3, 64, 48), (4, 2, 96, 32)]] + [("fp16", True, 5, 3, 64, 48),
                                                                          ("fp16", False, 3, 1, 64, 64)]


@pytest.mark.parametrize("name, neox, hq, hk, d, rd", CASES)
def test_rope_matches_independent_formulas(name, neox, hq, hk, d, rd):
    q, kk, pos, cache = _inputs(5, hq, hk, d, rd, DTYPES[name], seed=hq * d + rd)
    q0, k0 = q.clone(), kk.clone()
    out_q, out_k = k.rope(q, kk, pos, cache, neox)
    assert out_q.data_ptr() == q.data_ptr() and out_k.data_ptr() == kk.data_ptr()     # in place
    form = _neox if neox else _gptj
    _ok((q, kk), (form(q0, pos, rd), form(k0, pos, rd)), name)
    assert torch.equal(q[..., rd:], q0[..., rd:]) and torch.equal(kk[..., rd:], k0[..., rd:])   # passed through
    assert torch.equal(q[0], q0[0])                                                          # position 0


def test_rope_keeps_the_norm_of_every_pair():
    q, kk, pos, cache = _inputs(4, 2, 2, 32, 32, torch.float32, seed=3)
    q0 = q.clone()
    k.rope(q, kk, pos, cache, neox=False)
    pair = lambda x: x[..., 0::2] ** 2 + x[..., 1::2] ** 2          # noqa: E731
    assert torch.allclose(pair(q), pair(q0), rtol=1e-5, atol=1e-6) and not torch.allclose(q[1:], q0[1:])


def test_a_kernel_that_leaves_k_alone_fails_the_check():
    q, kk, pos, cache = _inputs(5, 4, 2, 64, 64, torch.bfloat16, seed=4)
    ref = (_neox(q, pos, 64), _neox(kk, pos, 64))
    k._rope[lambda meta: (5, triton.cdiv(4, meta["BLOCK_H"]))](
        q, kk, pos, cache, 5, 4, 0, q.stride(0), q.stride(1), kk.stride(0), kk.stride(1), cache.stride(0),
        HALF=32, HALF_BLOCK=32, ROT_BLOCK=64, NEOX=True)
    res = compare((q, kk), ref, dtypes.tolerance("bf16"), dtype="bf16")
    assert not res.passed and res.detail.startswith("output 1:")


def test_positions_off_by_one_fail_the_check():
    q, kk, pos, cache = _inputs(6, 2, 1, 64, 64, torch.bfloat16, seed=5)
    ref = (_neox(q, pos, 64), _neox(kk, pos, 64))
    k.rope(q, kk, pos + 1, cache)
    assert not compare((q, kk), ref, dtypes.tolerance("bf16"), dtype="bf16").passed


class _NoLaunch:
    def __getitem__(self, grid):
        raise AssertionError("the kernel was launched")


def _args(**change):
    q, kk, pos, cache = _inputs(4, 2, 1, 64, 64, torch.float16)
    args = {"q": q, "k": kk, "positions": pos, "cos_sin_cache": cache}
    args.update({n: f(args) for n, f in change.items()})
    return args


@pytest.mark.parametrize("change, message", [
    ({"cos_sin_cache": lambda a: torch.zeros(16, 63)}, "rotary_dim 63 .* is not supported"),
    ({"cos_sin_cache": lambda a: torch.zeros(16, 66)}, "rotary_dim 66 .* at most|rotary_dim 66 .*2..head_dim=64"),
    ({"q": lambda a: torch.zeros(4, 2, 2048).half(), "k": lambda a: torch.zeros(4, 1, 2048).half()},
     "head_dim 2048 is not supported"),
    ({"q": lambda a: a["q"].double(), "k": lambda a: a["k"].double()}, r"q has dtype torch\.float64"),
    ({"k": lambda a: a["k"].float()}, "k is torch.float32 but q is torch.float16"),
    ({"k": lambda a: torch.zeros(4, 1, 32).half()}, "k has head_dim 32, q has 64"),
    ({"cos_sin_cache": lambda a: a["cos_sin_cache"].half()}, "cos_sin_cache must be float32"),
    ({"positions": lambda a: a["positions"].float()}, "positions must be int32 or int64"),
    ({"positions": lambda a: a["positions"][:3]}, r"positions must be \[tokens=4\]"),
    ({"positions": lambda a: a["positions"].index_fill(0, torch.tensor([2]), 4096)},
     r"positions\[2\] = 4096 is outside cos_sin_cache \(max_position = 4096\)"),
])
def test_bad_input_is_refused_before_any_launch(monkeypatch, change, message):
    monkeypatch.setattr(k, "_rope", _NoLaunch())
    with pytest.raises(ValueError, match=message):
        k.rope(**_args(**change))


def test_prune_keeps_head_blocks_that_fit_the_heads_and_the_threads():
    cfgs = [triton.Config({"BLOCK_H": h}, num_warps=w) for h in (1, 2, 4, 8, 16, 32) for w in (1, 2, 4, 8)]
    q = torch.empty(1, 1, 64, dtype=torch.bfloat16)
    kept = k.prune(cfgs, {"q_ptr": q, "HQ": 128, "HK": 1}, ROT_BLOCK=64)          # DeepSeek-V3's rope part
    assert kept and all(c.kwargs["BLOCK_H"] * 64 * 2 >= 16 * 32 * c.num_warps for c in kept)
    few = k.prune(cfgs, {"q_ptr": q, "HQ": 3, "HK": 1}, ROT_BLOCK=128)
    assert few and max(c.kwargs["BLOCK_H"] for c in few) <= 4
