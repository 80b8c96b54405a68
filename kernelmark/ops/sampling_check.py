"""The reference and the check of a random sampler (top_k_top_p_sampling).

A sampler's output cannot equal a reference's: its check is statistical, and stated here.

Reference: for every row b, the exact distribution p_b the sampler must draw from, in
fp64: softmax(logits / T) restricted to the top-k tokens (ties with the k-th kept),
renormalised, then restricted to the smallest set of the most likely of those whose
probability reaches top_p (the token that crosses top_p is kept, and its ties),
renormalised again. Tokens whose membership is decided by rounding (a logit within 2**-20
of the k-th, a cumulative probability within 1e-4 of top_p: an fp32 kernel may put them on
either side) are *allowed* but get no probability in p_b; ``ambiguous`` is their
renormalised probability, averaged over rows.

Check, over the backend's draws (a [batch, draws] tensor of token ids, N = batch·draws):

1. every draw is a token of its row's allowed set (an out-of-set token, e.g. one outside
   the top k, fails whatever N is);
2. the draws' frequencies are close to the exact distribution. Bins are ranks: bin j < m−1
   holds each row's j-th most likely token, bin m−1 the rest of the row's allowed set, with
   m = min(16, largest allowed-set size), fixed before looking at the draws. The check
   fails when the total variation distance between the pooled empirical bin frequencies q̂
   and the exact ones q̄ (the mean over rows of each row's bin probabilities) exceeds

       ε(N, m) = sqrt((m·ln 2 + ln(1/δ)) / (2N)) + ambiguous,    δ = 1e-6.

Why ε holds (false-failure probability at most δ for an honest sampler): on m bins,
TV(q̂, q̄) = max over the 2**m subsets A of (q̂(A) − q̄(A)). For one A, q̂(A) is the mean of
N independent indicators (one per draw; draws of different rows have different
distributions, which Hoeffding's inequality allows) whose expected mean is q̄(A), so
P(q̂(A) − q̄(A) ≥ t) ≤ exp(−2Nt²). A union bound over the 2**m subsets gives
P(TV ≥ t) ≤ 2**m·exp(−2Nt²); setting that to δ gives t = ε (the Bretagnolle–Huber–Carol
bound). Binning can only lower the TV, so the test stays valid for any choice of bins made
without the draws. A sampler that includes or drops an ambiguous token moves the
distribution by at most that token's renormalised probability: hence the added term.

What it catches: a sampler that always returns the most likely token has TV = 1 − mean_b
max p_b (0.74 on the smoke case's logits: top_k 40, top_p 0.9, T 0.8), above ε from N ≈ 25;
one that returns the most likely token a quarter of the time and samples honestly otherwise
has TV ≈ 0.2 there, above ε from N ≈ 300 (tests/ops/test_sampling.py runs both at N = 1024,
where ε = 0.11; an honest torch sampler's TV there was 0.043 on average over 300 seeds,
0.068 at most). At N = 1 (batch 1, one
draw) only the membership test has force: the detail says so.

Stored in the record: ``rel_l2`` holds the TV and ``tolerance`` the bound ε.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from kernelmark.ops.check import CheckResult, index_text

FALSE_FAILURE = 1e-6
MAX_BINS = 16
K_SLACK = 2.0 ** -20      # relative band around the k-th largest scaled logit
P_SLACK = 1e-4            # band of cumulative probability above top_p


class SamplingReference(NamedTuple):
    probs: torch.Tensor       # [B, V] fp64: exact p_b, 0 outside the set
    order: torch.Tensor       # [B, V] int64: tokens by decreasing probability (stable)
    allowed: torch.Tensor     # [B, V] bool: the set plus the tokens rounding may add
    ambiguous: float          # mean over rows of the allowed-but-unweighted probability


def tv_bound(n: int, bins: int, delta: float = FALSE_FAILURE) -> float:
    """ε(N, m) without the ambiguity term: see the module docstring."""
    return math.sqrt((bins * math.log(2.0) + math.log(1.0 / delta)) / (2.0 * n))


def exact_distribution(logits: torch.Tensor, top_k, top_p, temperature: float) -> SamplingReference:
    """The distribution a top_k-first, then top_p sampler draws from, per row, in fp64.
    top_k / top_p: one value for the batch, or a tensor of one per row."""
    l = logits.double() / float(temperature)
    order = torch.sort(l, dim=-1, descending=True, stable=True).indices
    ls = l.gather(-1, order)
    if isinstance(top_k, torch.Tensor):
        kth = ls.gather(-1, (top_k.to(l.device, torch.int64) - 1).view(-1, 1))
    else:
        kth = ls[:, top_k - 1:top_k]
    if isinstance(top_p, torch.Tensor):
        top_p = top_p.to(l.device, torch.float64).view(-1, 1)
    in_k = ls >= kth
    near_k = ls >= kth - K_SLACK * kth.abs() - 1e-300
    e = torch.where(near_k, torch.exp(ls - ls[:, :1]), 0.0)
    pk = torch.where(in_k, e, 0.0)
    pk = pk / pk.sum(-1, keepdim=True)
    before = pk.cumsum(-1) - pk
    # Sets are prefixes of the sorted row; extend each to every tie of its last value.
    n_keep = (in_k & (before < top_p)).sum(-1, keepdim=True).clamp(min=1)
    n_near = (near_k & (before < top_p + P_SLACK)).sum(-1, keepdim=True).clamp(min=1)
    strict = ls >= ls.gather(-1, n_keep - 1)
    loose = (ls >= ls.gather(-1, n_near - 1)) | strict
    w = torch.where(strict, e, 0.0)
    z = w.sum(-1, keepdim=True)
    ambiguous = float((torch.where(loose & ~strict, e, 0.0).sum(-1, keepdim=True) / z).mean())
    probs = torch.zeros_like(l).scatter_(-1, order, w / z)
    allowed = torch.zeros_like(l, dtype=torch.bool).scatter_(-1, order, loose)
    return SamplingReference(probs, order, allowed, ambiguous)


def _fail(detail: str, n_bad: int = 0, tv: float = math.inf, bound: float = 0.0) -> CheckResult:
    return CheckResult(False, tv, math.inf, math.inf, bound, detail, n_bad)


def check_samples(out, ref: SamplingReference, dtype: str | None = None) -> CheckResult:
    """Membership, then the TV bound (module docstring). ``out``: int token ids [batch, draws]."""
    if not isinstance(out, torch.Tensor):
        return _fail(f"expected one tensor of token ids, got {type(out).__name__}")
    probs, order, allowed, ambiguous = ref
    b, v = probs.shape
    if out.dim() != 2 or out.shape[0] != b or out.shape[1] < 1:
        return _fail(f"token ids have shape {tuple(out.shape)}, expected ({b}, draws)")
    if out.dtype not in (torch.int64, torch.int32):
        return _fail(f"token ids have dtype {out.dtype}, expected int64 or int32")
    tok = out.detach().to(probs.device, torch.int64)
    n = tok.numel()
    outside = (tok < 0) | (tok >= v)
    if bool(outside.any()):
        first = int(torch.argmax(outside.reshape(-1).to(torch.uint8)))
        return _fail(f"{int(outside.sum())} of {n} draws are not token ids in [0, {v}); first at "
                     f"{index_text(first, tok.shape)}: {int(tok.reshape(-1)[first])}", int(outside.sum()))
    inside = allowed.gather(-1, tok)
    if not bool(inside.all()):
        bad = ~inside
        first = int(torch.argmax(bad.reshape(-1).to(torch.uint8)))
        row, t = first // tok.shape[1], int(tok.reshape(-1)[first])
        rank = int((order[row] == t).nonzero()[0, 0])
        return _fail(f"{int(bad.sum())} of {n} draws are outside the top-k/top-p set; first at "
                     f"{index_text(first, tok.shape)}: token {t}, rank {rank} in its row "
                     f"(the set holds {int(allowed[row].sum())})", int(bad.sum()))
    sizes = (probs > 0).sum(-1)
    m = int(min(MAX_BINS, int(sizes.max())))
    rank = torch.empty_like(order).scatter_(-1, order, torch.arange(v, device=order.device).expand(b, v).contiguous())
    bins = rank.gather(-1, tok).clamp(max=m - 1)
    q = probs.gather(-1, order[:, :m]).clone()
    q[:, m - 1] = 1.0 - q[:, :m - 1].sum(-1)
    expected = q.mean(0)
    seen = torch.bincount(bins.reshape(-1), minlength=m).double() / n
    tv = 0.5 * float((seen - expected).abs().sum())
    bound = tv_bound(n, m) + ambiguous
    what = (f"{n} draws: total variation {tv:.3g} from the exact distribution over {m} rank bins, "
            f"bound {bound:.3g} (false-failure probability {FALSE_FAILURE:g})")
    if bound >= 1.0:
        what += "; too few draws for the bound to have force: membership alone was checked"
    if tv > bound:
        # Say which bin is most off, so that a bias shows where it is.
        j = int(torch.argmax((seen - expected).abs()))
        return _fail(f"{what} exceeded: bin {j} ({'rank ' + str(j) if j < m - 1 else 'the rest'}) drew "
                     f"{float(seen[j]):.3g} of the draws against {float(expected[j]):.3g}", 0, tv, bound)
    return CheckResult(True, tv, 0.0, 0.0, bound, what)
