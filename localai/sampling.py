"""Token sampling: llama.cpp's default sampler chain over one row of logits.

    sampler = make_sampler(SamplingParams(temperature=0.7, seed=1))
    token = sampler(logits, history)      # logits: (n_vocab,) float32

The chain is llama.cpp's (common/sampling.cpp, default `samplers`):

    penalties -> top_k -> top_p -> min_p -> temperature -> dist

typical_p, DRY, XTC and top-n-sigma are off by default there and absent here. top_p and
min_p look at the untempered logits (temperature comes after them, as in llama.cpp), and
temperature <= 0 is greedy: the argmax of the penalized logits, first index on ties.

Cost on a 262,144-token vocabulary: top_k uses `argpartition` (no sort of the vocabulary);
min_p is a threshold; only the survivors are sorted for top_p. With top_k and min_p both
off, top_p sorts the top 1,024 tokens, and the whole vocabulary only when those hold less
than top_p of the probability mass.
"""
from __future__ import annotations

import math
import numbers
import secrets
from dataclasses import dataclass, fields, replace
from typing import Sequence

import numpy as np

from .errors import InvalidRequest


@dataclass
class SamplingParams:
    """Sampling settings; the defaults are llama.cpp's (common/common.h).

    Each filter has an "off" value: top_k <= 0, top_p = 1, min_p = 0, repeat_penalty = 1,
    frequency/presence_penalty = 0, repeat_last_n = 0 (-1 = the whole history).
    seed None (or -1, llama.cpp's spelling) draws a random seed; the sampler reports it.
    Invalid values raise `InvalidRequest`.
    """

    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    repeat_penalty: float = 1.0
    repeat_last_n: int = 64
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    seed: int | None = None

    def __post_init__(self):
        if self.seed == -1:
            self.seed = None
        for name, (ok, must) in _RULES.items():
            value = getattr(self, name)
            if not ok(value):
                raise InvalidRequest(f"sampling parameter {name}={value!r} is invalid: it must be {must}")

    @classmethod
    def from_dict(cls, d: dict) -> "SamplingParams":
        """Build from a request's fields: None means "the default", unknown names raise
        `InvalidRequest`."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise InvalidRequest(
                f"unknown sampling parameter(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**{k: v for k, v in d.items() if v is not None})


def _real(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


def _int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


# field -> (check, what the message says it must be)
_RULES = {
    "temperature": (_real, "a finite number (<= 0 means greedy)"),
    "top_k": (_int, "an integer (<= 0 turns top-k off)"),
    "top_p": (lambda v: _real(v) and 0 <= v <= 1, "a number in [0, 1] (1 turns top-p off)"),
    "min_p": (lambda v: _real(v) and 0 <= v <= 1, "a number in [0, 1] (0 turns min-p off)"),
    "repeat_penalty": (lambda v: _real(v) and v > 0, "a number > 0 (1 turns it off)"),
    "repeat_last_n": (lambda v: _int(v) and v >= -1,
                      "an integer >= -1 (0 turns penalties off, -1 means the whole history)"),
    "frequency_penalty": (_real, "a finite number (0 turns it off)"),
    "presence_penalty": (_real, "a finite number (0 turns it off)"),
    "seed": (lambda v: v is None or (_int(v) and v >= 0), "a non-negative integer, or null for a random seed"),
}


def apply_penalties(logits: np.ndarray, history: Sequence[int], repeat_penalty: float = 1.0,
                    last_n: int = 64, frequency: float = 0.0, presence: float = 0.0) -> np.ndarray:
    """llama.cpp's penalties sampler; returns `logits` itself when there is nothing to do,
    else a penalized copy (the caller's array is never written)."""
    off = repeat_penalty == 1.0 and frequency == 0.0 and presence == 0.0
    if off or last_n == 0 or len(history) == 0:
        return logits
    recent = np.asarray(history[-last_n:] if last_n > 0 else history, dtype=np.int64)
    ids, counts = np.unique(recent, return_counts=True)
    in_vocab = (ids >= 0) & (ids < logits.shape[0])
    ids, counts = ids[in_vocab], counts[in_vocab]
    x = logits[ids]
    # Dividing a negative logit would make the token *more* likely, hence the multiply.
    x = np.where(x <= 0, x * repeat_penalty, x / repeat_penalty)
    x = x - (counts * frequency + presence).astype(logits.dtype)
    out = logits.copy()
    out[ids] = x
    return out


def top_k_ids(logits: np.ndarray, k: int) -> np.ndarray | None:
    """Ids of the k largest logits, unordered; None when top-k is off or keeps everything."""
    n = logits.shape[0]
    if k <= 0 or k >= n:
        return None
    return np.argpartition(logits, n - k)[n - k:]


_TOP_P_HEAD = 1024    # tokens sorted first when top_p has the whole vocabulary to cut


def _top_p_order(z: np.ndarray, total: float, top_p: float) -> np.ndarray:
    # Indices into z, descending, of the smallest prefix holding top_p of the mass.
    order = None
    if len(z) > 4 * _TOP_P_HEAD:
        # Usually a small head of the vocabulary holds top_p of the mass: sort only it.
        head = np.argpartition(z, len(z) - _TOP_P_HEAD)[len(z) - _TOP_P_HEAD:]
        order = head[np.argsort(-z[head], kind="stable")]
        cum = np.cumsum(np.exp(z[order])) / total
        if cum[-1] < top_p:
            order = None
    if order is None:
        order = np.argsort(-z, kind="stable")
        cum = np.cumsum(np.exp(z[order])) / total
    return order[:int(np.searchsorted(cum, top_p)) + 1]


def candidates(logits: np.ndarray, params: SamplingParams) -> tuple[np.ndarray | None, np.ndarray]:
    """The tokens that survive top_k, top_p and min_p, and their probabilities after
    temperature (temperature > 0; penalties already applied): (ids or None for the whole
    vocabulary in id order, probs), both (n,), in no particular order."""
    p = params
    ids = top_k_ids(logits, p.top_k)                    # (k,) or None = whole vocab
    z = (logits if ids is None else logits[ids]).astype(np.float64)
    z -= z.max()                                        # the top token: z = 0, kept by all

    # top_p normalizes over the top-k survivors, before min_p has removed any.
    total = np.exp(z).sum() if p.top_p < 1 else 1.0
    if p.min_p > 0:
        # llama.cpp's test: p_i >= min_p * p_max  <=>  z_i >= log(min_p)
        keep = np.flatnonzero(z >= math.log(p.min_p))
        ids = keep if ids is None else ids[keep]
        z = z[keep]
    if p.top_p < 1:
        # Both filters keep a prefix of the descending order, so top_p over min_p's
        # survivors cuts where it would have cut over all of them.
        order = _top_p_order(z, total, p.top_p)
        ids = order if ids is None else ids[order]
        z = z[order]

    w = np.exp(z / p.temperature)
    return ids, w / w.sum()


class Sampler:
    """One request's sampler: `sampler(logits, history) -> token id`.

    `seed` is the seed in use (drawn at random when the params have none), so a response
    can report it and the same call can be replayed.
    """

    def __init__(self, params: SamplingParams):
        self.params = params
        self.seed = params.seed if params.seed is not None else secrets.randbits(63)
        self.rng = np.random.Generator(np.random.PCG64(self.seed))

    def __call__(self, logits: np.ndarray, history: Sequence[int] = ()) -> int:
        p = self.params
        if logits.ndim != 1:
            raise ValueError(f"expected one row of logits (n_vocab,), got shape {logits.shape}")
        logits = apply_penalties(logits, history, p.repeat_penalty, p.repeat_last_n,
                                 p.frequency_penalty, p.presence_penalty)
        if p.temperature <= 0 or not np.isfinite(logits.max()):
            # A NaN or +inf logit has no distribution; argmax is still an answer.
            return int(np.argmax(logits))
        ids, probs = candidates(logits, p)
        i = int(np.searchsorted(np.cumsum(probs), self.rng.random(), side="right"))
        i = min(i, len(probs) - 1)                          # rounding: cumsum may end below 1
        return i if ids is None else int(ids[i])


    def verify(self, logits: np.ndarray, history: Sequence[int], draft: int) -> int:
        """Sample the next token given that a draft proposed `draft` for it (speculative
        decoding, localai/speculative.py). Greedy: the argmax, as `__call__`. Otherwise the
        rejection rule for a deterministic proposal (q = one-hot at `draft`): accept it with
        probability p(draft), else sample from p with `draft` removed and renormalized
        (Leviathan et al. 2023, "Fast Inference from Transformers via Speculative Decoding",
        algorithm 1), so each token still follows p; the random stream differs from `__call__`'s."""
        p = self.params
        logits = apply_penalties(logits, history, p.repeat_penalty, p.repeat_last_n,
                                 p.frequency_penalty, p.presence_penalty)
        if p.temperature <= 0 or not np.isfinite(logits.max()):
            return int(np.argmax(logits))
        ids, probs = candidates(logits, p)
        at = draft if ids is None else np.flatnonzero(ids == draft)
        p_d = float(probs[at]) if ids is None else (float(probs[at[0]]) if len(at) else 0.0)
        if self.rng.random() < p_d:
            return int(draft)
        probs = probs.copy()
        if p_d > 0:
            probs[at] = 0.0
        total = probs.sum()
        if total <= 0:  # p was one-hot at the draft: unreachable (the draft was accepted)
            return int(draft)
        i = int(np.searchsorted(np.cumsum(probs / total), self.rng.random(), side="right"))
        i = min(i, len(probs) - 1)
        return i if ids is None else int(ids[i])


def make_sampler(params: SamplingParams | None = None, **overrides) -> Sampler:
    """A sampler for `params` (llama.cpp's defaults when None), with keyword overrides:
    `make_sampler(temperature=0)` is greedy."""
    params = params or SamplingParams()
    if overrides:
        params = replace(params, **overrides)
    return Sampler(params)


def logprobs_entry(logits: np.ndarray, token: int, k: int, piece) -> dict:
    """The log-probability of `token` and of the `k` likeliest tokens under the model's
    distribution before sampling, log_softmax(logits) (no penalties, temperature or grammar
    mask), in OpenAI's shape: {"id", "token", "bytes", "logprob", "top_logprobs": [...]}.
    `piece(id) -> bytes` names the tokens. Costs one pass over the vocabulary."""
    x = logits.astype(np.float64)
    m = x.max()
    lse = m + math.log(np.exp(x - m).sum())

    def one(i: int) -> dict:
        b = piece(i)
        return {"id": i, "token": b.decode("utf-8", "replace"), "bytes": list(b),
                "logprob": float(x[i] - lse)}

    out = one(int(token))
    k = max(0, min(int(k), x.shape[0]))
    top = np.argpartition(-x, k - 1)[:k] if k else np.empty(0, np.int64)
    top = top[np.argsort(-x[top], kind="stable")]
    out["top_logprobs"] = [one(int(i)) for i in top]
    return out
