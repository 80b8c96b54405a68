"""Next-token sampling from the logits of a decode step: argmax_sampling (greedy) and
top_k_top_p_sampling (temperature, then top-k, then top-p: vLLM's, Hugging Face's and
FlashInfer's "top_k_first" order). The kernels are kernels/sampling.py's.

Inputs: logits [batch, vocab] (fp32, or bf16 as they leave the LM head), random with
standard deviation 2 (a few tokens clearly ahead, as in a language model's output). Every
row's smallest logit sits in column 0, so a token id 0 (an output never written) is never
the answer: outside the allowed set of a sampler, never the argmax.

argmax_sampling: int64 [batch], the index of each row's largest logit; ties go to the lowest
index (torch.argmax's rule, which our kernel follows), but the inputs have a unique maximum
(the largest logit is raised by 1), so a library that breaks ties another way is not failed
for it. Checked exactly. Bytes: B·V·s read + 8·B written; FLOPs 0 (memory bound).

top_k_top_p_sampling: shape parameters top_k (an integer in [1, vocab]; vocab switches
top-k off), top_p in (0, 1] (1 switches it off), temperature > 0 and draws (default 1).
The timed call draws ``draws`` tokens per row (int [batch, draws]) from each row's one
distribution: draws = 1 is a decode step, draws > 1 parallel sampling (vLLM's n, FlashInfer's
``indices`` reusing a row). The check pools every draw of every row, N = batch·draws, and
holds them to a total-variation bound derived from N (ops/sampling_check.py, which says
why the bound holds); so the draws the check needs are the timed call's own, and a case
with few draws gets a weak (stated) bound. Bytes: B·V·s read + 8·B·draws written, FLOPs 0:
judged in % of copy bandwidth (a sampler rereads the row from cache; the minimum is one read).

Backends: ``triton`` (ours), ``torch`` (eager: topk, softmax, sort for top-p, multinomial),
``torch-compile`` (the same function through torch.compile; GPU only: on this project's
2-core CPU a first compile in a fresh process took 17-42 s, over the 20 s allowed),
``flashinfer`` (flashinfer.sampling.top_k_top_p_sampling_from_logits, fp32 logits; its
rejection sampling needs no sort) and ``sgl-kernel`` (sgl_kernel.top_k_top_p_sampling_from_probs
after a softmax, as SGLang calls it). vLLM has no sampling kernel of its own: its sampler
calls FlashInfer or torch. Neither library has an argmax kernel (serving stacks call
torch.argmax), so argmax_sampling has ours and torch's.
"""

from __future__ import annotations

import importlib.util
import inspect
import math

import torch

from kernelmark import dtypes
from kernelmark.ops import compiled
from kernelmark.ops.base import Backend, Op, Unsupported, positive_ints, shape_str
from kernelmark.ops.sampling_check import check_samples, exact_distribution

LOGIT_STD = 2.0
SAMPLING_DTYPES = ("fp32", "bf16")
GPU = ("cuda", "rocm")
TRITON_MAX_VOCAB = 1 << 24      # kernels/sampling.py MAX_VOCAB (kept here: no Triton import)


def _logits(shape, dtype, device, gen, unique_max: bool) -> torch.Tensor:
    b, v = shape["batch"], shape["vocab"]
    x = torch.randn(b, v, device=device, generator=gen) * LOGIT_STD
    # The row's smallest logit to column 0 (see the module docstring).
    lo = x.argmin(-1, keepdim=True)
    smallest = x.gather(-1, lo)
    x.scatter_(-1, lo, x[:, :1].clone())
    x[:, :1] = smallest
    if unique_max:
        x.scatter_add_(-1, x.argmax(-1, keepdim=True), torch.ones(b, 1, device=device))
    return x.to(dtypes.torch_dtype(dtype))


def _number(shape, name, low, high, low_open: bool):
    v = shape[name]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ValueError(f"shape {shape_str(shape)}: {name} must be a number, got {v!r}")
    if (v <= low if low_open else v < low) or v > high:
        span = f"> {low:g}" if high == math.inf else f"in {'(' if low_open else '['}{low:g}, {high:g}]"
        raise ValueError(f"shape {shape_str(shape)}: {name} must be {span}, got {v!r}")


# ---------------------------------------------------------------------------------------
# argmax_sampling

def argmax_validate(shape, dtype):
    positive_ints(shape, ("batch", "vocab"))


def argmax_make_inputs(shape, dtype, device, gen):
    return {"logits": _logits(shape, dtype, device, gen, unique_max=True)}


def argmax_reference(x):
    return torch.argmax(x["logits"].double(), dim=-1)


def argmax_nbytes(shape, dtype):
    return shape["batch"] * (shape["vocab"] * dtypes.itemsize(dtype) + 8)


def _argmax_torch(x):
    return torch.argmax(x["logits"], dim=-1)


# Compiled afresh for each new signature (ops/compiled.py: past torch's recompile limit a
# plain torch.compile would raise or run eagerly under this backend's name).
_argmax_compile = compiled.Compiled(_argmax_torch, compiled.tensor_key("logits"))


def _argmax_triton(x):
    from kernelmark.kernels.sampling import argmax
    return argmax(x["logits"])


def _triton_vocab(shape, dtype, device_kind, capability):
    if shape["vocab"] > TRITON_MAX_VOCAB:
        return f"vocab {shape['vocab']} is above the {TRITON_MAX_VOCAB} the Triton sampler counts exactly"
    return None


# ---------------------------------------------------------------------------------------
# top_k_top_p_sampling

def sampling_validate(shape, dtype):
    positive_ints(shape, ("batch", "vocab", "draws"))
    k = shape["top_k"]
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= shape["vocab"]:
        raise ValueError(f"shape {shape_str(shape)}: top_k must be an integer in [1, vocab] "
                         f"(vocab: no top-k), got {k!r}")
    _number(shape, "top_p", 0.0, 1.0, low_open=True)
    _number(shape, "temperature", 0.0, math.inf, low_open=True)


def sampling_make_inputs(shape, dtype, device, gen):
    b, d = shape["batch"], shape["draws"]
    seed = int(torch.randint(0, 2 ** 31 - 1, (1,), device=device, generator=gen).item())
    return {
        "logits": _logits(shape, dtype, device, gen, unique_max=False),
        "top_k": shape["top_k"], "top_p": float(shape["top_p"]),
        "temperature": float(shape["temperature"]), "draws": d, "seed": seed,
        # FlashInfer's and sgl-kernel's ``indices``: the row each output draws from.
        "row_of_draw": torch.arange(b, device=device, dtype=torch.int32).repeat_interleave(d),
    }


def sampling_reference(x):
    return exact_distribution(x["logits"], x["top_k"], x["top_p"], x["temperature"])


def sampling_nbytes(shape, dtype):
    return shape["batch"] * (shape["vocab"] * dtypes.itemsize(dtype) + 8 * shape["draws"])


def sample_torch(logits: torch.Tensor, top_k, top_p, temperature: float, draws: int) -> torch.Tensor:
    """Plain torch: temperature, top-k (torch.topk, then top-p on the k sorted values, no
    full sort), or top-p alone (a full sort), then torch.multinomial with replacement.
    top_k / top_p may be tensors of one value per row (a FlashInfer-Trace workload's): top-k
    at the largest k, each row's values past its own k masked out."""
    l = logits.float()
    if temperature != 1.0:
        l = l / temperature
    rows_k, rows_p = isinstance(top_k, torch.Tensor), isinstance(top_p, torch.Tensor)
    kmax = int(top_k.max()) if rows_k else top_k
    if rows_p:
        top_p = top_p.view(-1, 1)
    if kmax < l.shape[-1] or rows_k:
        vals, idx = torch.topk(l, kmax, dim=-1)
        if rows_k:
            past = torch.arange(kmax, device=l.device)[None, :] >= top_k.view(-1, 1)
            vals = vals.masked_fill(past, float("-inf"))
        p = torch.softmax(vals, dim=-1)
        if rows_p or top_p < 1.0:
            p = p.masked_fill(p.cumsum(-1) - p >= top_p, 0.0)
        return idx.gather(-1, torch.multinomial(p, draws, replacement=True))
    p = torch.softmax(l, dim=-1)
    if rows_p or top_p < 1.0:
        ps, idx = torch.sort(p, dim=-1, descending=True)
        ps = ps.masked_fill(ps.cumsum(-1) - ps >= top_p, 0.0)
        p = torch.zeros_like(p).scatter_(-1, idx, ps)
    return torch.multinomial(p, draws, replacement=True)


def _sampling_args(x) -> tuple:
    return x["logits"], x["top_k"], x["top_p"], x["temperature"], x["draws"]


def sampling_take_given(x, given):
    """Per-row top_k (int, [batch], in [1, vocab]) and top_p (float, [batch], in (0, 1]) in
    place of the shape's one value: only the torch backend and the reference take them."""
    b, v = x["logits"].shape
    for name, t in given.items():
        if tuple(t.shape) != (b,):
            raise ValueError(f"given {name} is {list(t.shape)}; per-row values are [{b}]")
        if name == "top_k":
            t = t.to(x["logits"].device, torch.int64, copy=True)
            bad = bool((t < 1).any() or (t > v).any())
        else:
            t = t.to(x["logits"].device, torch.float32, copy=True)
            bad = bool((t <= 0).any() or (t > 1).any())
        if bad:
            raise ValueError(f"given {name} has values {t.min().item():g}..{t.max().item():g}, outside "
                             + (f"[1, {v}]" if name == "top_k" else "(0, 1]"))
        x[name] = t
    return x


def _one_threshold(run, who: str):
    """``run`` where the batch has one top_k and one top_p; Unsupported for per-row tensors."""
    def wrapped(x):
        rows = [n for n in ("top_k", "top_p") if isinstance(x[n], torch.Tensor)]
        if rows:
            raise Unsupported(f"per-row {'/'.join(rows)}: {who} is measured with one value for the batch "
                              "here (the torch backend takes per-row values)")
        return run(x)
    return wrapped


def _sampling_torch(x):
    return sample_torch(*_sampling_args(x))


def _sampling_compile_key(x):
    # Checked in the key (called before each compile or call): per-row tensors would give
    # a fresh signature per input set; the compiled backend is measured with one value.
    _one_threshold(lambda x: None, "torch-compile")(x)
    return _SAMPLING_KEY(x)


_SAMPLING_KEY = compiled.tensor_key("logits", scalars=("top_k", "top_p", "temperature", "draws"))
_sampling_compile = compiled.Compiled(_sampling_torch, _sampling_compile_key)


def _sampling_triton(x):
    from kernelmark.kernels.sampling import top_k_top_p_sample
    return top_k_top_p_sample(*_sampling_args(x), seed=x["seed"])


def _flashinfer_available():
    if importlib.util.find_spec("flashinfer") is None:
        return "flashinfer is not installed"
    return None


def _sgl_available():
    if importlib.util.find_spec("sgl_kernel") is None:
        return "sgl-kernel is not installed"
    return None


def _takes(fn, names) -> list:
    """Those of ``names`` that ``fn``'s signature lacks."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return []
    return [n for n in names if n not in params]


def _library_supports(fn_of, what: str):
    def supports(shape, dtype, device_kind, capability):
        try:
            fn = fn_of()
        except Exception as e:   # a broken install: say so rather than fail the run
            return f"{what} does not import: {type(e).__name__}: {e}"
        if fn is None:
            return f"this version has no {what}"
        if "uniform_samples" in inspect.signature(fn).parameters:
            return f"this {what} takes pre-drawn uniform samples (an older API): not measured"
        need = ["filter_apply_order"] + (["indices"] if shape["draws"] > 1 else [])
        missing = _takes(fn, need)
        if missing:
            return f"this {what} has no {', '.join(missing)} parameter"
        return None
    return supports


def _flashinfer_fn():
    import flashinfer.sampling as s
    return getattr(s, "top_k_top_p_sampling_from_logits", None)


def _sgl_fn():
    import sgl_kernel
    return getattr(sgl_kernel, "top_k_top_p_sampling_from_probs", None)


def _scaled(x) -> torch.Tensor:
    return x["logits"] if x["temperature"] == 1.0 else x["logits"] / x["temperature"]


def _sampling_flashinfer(x):
    # flashinfer.sampling.top_k_top_p_sampling_from_logits(logits, top_k, top_p, indices=None,
    # filter_apply_order="top_k_first", deterministic=True, generator=None, ...) -> int32 [B or len(indices)]
    kw = {"indices": x["row_of_draw"]} if x["draws"] > 1 else {}
    out = _flashinfer_fn()(_scaled(x), x["top_k"], x["top_p"], filter_apply_order="top_k_first", **kw)
    return out.view(x["logits"].shape[0], x["draws"])


def _sampling_sgl(x):
    # sgl_kernel.top_k_top_p_sampling_from_probs(probs, top_k, top_p, indices=None,
    # filter_apply_order="top_k_first", deterministic=True, ...): SGLang takes the softmax first.
    probs = torch.softmax(_scaled(x).float(), dim=-1)
    kw = {"indices": x["row_of_draw"]} if x["draws"] > 1 else {}
    out = _sgl_fn()(probs, x["top_k"], x["top_p"], filter_apply_order="top_k_first", **kw)
    return out.view(x["logits"].shape[0], x["draws"])


OPS = [
    Op(
        name="argmax_sampling",
        description="greedy decoding: each row's largest logit (lowest index on ties), int64 [batch]",
        params=("batch", "vocab"),
        dtypes=SAMPLING_DTYPES,
        make_inputs=argmax_make_inputs,
        reference=argmax_reference,
        flops=lambda shape: 0,
        nbytes=argmax_nbytes,
        validate=argmax_validate,
        exact=True,
        backends=(
            Backend("triton", _argmax_triton, triton=True, supports=_triton_vocab,
                    description="kernelmark's Triton argmax, rows split over SMs at small batch "
                                "(kernels/sampling.py)"),
            Backend("torch", _argmax_torch, description="torch.argmax over the vocabulary"),
            Backend("torch-compile", _argmax_compile, devices=GPU,
                    description="torch.compile of the torch backend (first compile outside timing)"),
        ),
    ),
    Op(
        name="top_k_top_p_sampling",
        description="draws from softmax(logits/T) restricted to top-k then top-p, int [batch, draws]; "
                    "checked statistically (total variation bound from N draws)",
        params=("batch", "vocab", "top_k", "top_p", "temperature", "draws"),
        defaults={"top_p": 1.0, "temperature": 1.0, "draws": 1},
        dtypes=SAMPLING_DTYPES,
        make_inputs=sampling_make_inputs,
        reference=sampling_reference,
        flops=lambda shape: 0,
        nbytes=sampling_nbytes,
        validate=sampling_validate,
        check=check_samples,
        given=("top_k", "top_p"), take_given=sampling_take_given,
        backends=(
            Backend("triton", _one_threshold(_sampling_triton, "kernelmark's Triton sampler"), triton=True,
                    supports=_triton_vocab,
                    description="kernelmark's Triton sampler: exact thresholds by a 16-way search on "
                                "the logits' bits, then a blocked inverse-CDF draw (kernels/sampling.py)"),
            Backend("torch", _sampling_torch,
                    description="torch.topk, softmax, sort (top-p), torch.multinomial"),
            Backend("torch-compile", _sampling_compile, devices=GPU,
                    description="torch.compile of the torch backend (first compile outside timing)"),
            Backend("flashinfer", _one_threshold(_sampling_flashinfer, "flashinfer"), dtypes=("fp32",), devices=("cuda",),
                    available=_flashinfer_available,
                    supports=_library_supports(_flashinfer_fn, "flashinfer.sampling.top_k_top_p_sampling_from_logits"),
                    description="flashinfer.sampling.top_k_top_p_sampling_from_logits (rejection "
                                "sampling; temperature applied as a division before it)"),
            Backend("sgl-kernel", _one_threshold(_sampling_sgl, "sgl-kernel"), dtypes=("fp32",), devices=("cuda",), available=_sgl_available,
                    supports=_library_supports(_sgl_fn, "sgl_kernel.top_k_top_p_sampling_from_probs"),
                    description="softmax, then sgl_kernel.top_k_top_p_sampling_from_probs"),
        ),
    ),
]
