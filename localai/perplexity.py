"""Perplexity and KL divergence of a model on a text, computed the way `llama-perplexity` does.

Source of every formula: llama.cpp `tools/perplexity/perplexity.cpp` (`perplexity()`,
`kl_divergence()`):

- the text is tokenized once (BOS added when the vocabulary adds it), cut into
  `n_chunk = len(tokens) // n_ctx` chunks of `n_ctx` tokens; the tail is dropped;
- each chunk is evaluated from an empty KV cache; when the vocabulary adds BOS, the chunk's
  first token is *replaced* by BOS (not prepended);
- only the second half is scored: positions `first = n_ctx // 2 .. n_ctx - 2` predict tokens
  `first + 1 .. n_ctx - 1`, i.e. `n_ctx - 1 - first` tokens per chunk;
- `nll = -log_softmax(logits)[next]` in float64; PPL = exp(mean nll), printed after every chunk
  as `[i]ppl,`; the error is `PPL * sqrt((mean(nll²) - mean(nll)²) / (count - 1))`.

KL divergence (`--kl-divergence`): llama.cpp first saves the base model's log-probs to a file
(uint16-quantized) and reads them back; here both models run on the same chunk in one pass and
the base log-probs stay float64 (so our KLD lacks llama.cpp's ~1e-5 quantization noise). As in
llama.cpp, base tokens with log p <= -16 do not enter the KLD sum.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import numpy as np

from .errors import InvalidRequest

ROWS = 64  # logits rows turned into float64 log-probs at a time (Gemma: 64 x 262144 x 8 B = 134 MB)


@dataclass
class PerplexityResult:
    ppl: float              # exp(mean nll) over every scored token
    ppl_error: float        # llama.cpp's +/- (one standard error, propagated through exp)
    n_chunks: int
    n_ctx: int
    n_tokens: int           # tokens in the text (BOS included when the vocabulary adds it)
    n_scored: int           # n_chunks * (n_ctx - 1 - n_ctx // 2)
    chunk_ppl: list[float] = field(default_factory=list)  # running estimate after each chunk
    kld: dict | None = None  # KLD statistics (see `kl_stats`) when a base model was given

    def as_dict(self) -> dict:
        return asdict(self)


def _mean_unc(s: float, s2: float, n: int) -> tuple[float, float]:
    """llama.cpp's mean_and_uncertainty: mean and its standard error (0 for n <= 10)."""
    if n < 1:
        return 0.0, 0.0
    f = s / n
    df = s2 / n - f * f
    return f, (math.sqrt(df / (n - 1)) if df > 0 and n > 10 else 0.0)


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    """float64 log-softmax over the last axis: (rows, n_vocab) -> (rows, n_vocab)."""
    x = logits.astype(np.float64)
    x -= x.max(axis=-1, keepdims=True)
    x -= np.log(np.exp(x).sum(axis=-1, keepdims=True))
    return x


def chunk_logits(llm, ids: Sequence[int], first: int) -> np.ndarray:
    """Logits of positions first..len(ids)-2 of one chunk from an empty cache: (len-1-first, n_vocab).

    The first half is prefilled keeping only the last position's logits (memory: Gemma's
    262144-entry vocabulary makes full-chunk logits large); the second half returns all rows.
    """
    from .engine import N_BATCH

    session = llm.new_session()
    if first > 0:
        llm.prefill(session, ids[:first])
    rest = ids[first:len(ids) - 1]  # the last token predicts nothing that is scored
    out = [llm.model(np.asarray(rest[i:i + N_BATCH]), session.cache) for i in range(0, len(rest), N_BATCH)]
    return np.concatenate(out, axis=0)


def chunks(llm, text: str, n_ctx: int, n_chunks: int | None = None) -> tuple[list[int], list[list[int]]]:
    """Tokenize `text` as llama-perplexity does and cut it into chunks (BOS overwrites token 0)."""
    if n_ctx < 4:
        raise InvalidRequest(f"--ctx {n_ctx} is too small (at least 4)")
    tokens = llm.tokenize(text)
    if len(tokens) < 2 * n_ctx:
        raise InvalidRequest(f"the text tokenizes to only {len(tokens)} tokens; perplexity with --ctx {n_ctx} "
                             f"needs at least {2 * n_ctx} (give a longer text or a smaller --ctx)")
    n = len(tokens) // n_ctx
    if n_chunks is not None and n_chunks > 0:
        n = min(n, n_chunks)
    tok = llm.tokenizer
    out = []
    for i in range(n):
        ids = list(tokens[i * n_ctx:(i + 1) * n_ctx])
        if tok.add_bos and tok.bos_id is not None:
            ids[0] = tok.bos_id
        out.append(ids)
    return tokens, out


def perplexity(llm, text: str, n_ctx: int = 512, *, n_chunks: int | None = None, base=None,
               on_chunk: Callable[[int, float], None] | None = None) -> PerplexityResult:
    """Perplexity of `llm` on `text` (llama-perplexity's method, see the module docstring).

    `base`: a second loaded model (same vocabulary) for KL-divergence statistics of `llm`
    against it. `on_chunk(i, running_ppl)` is called after each chunk (i from 1).
    Raises InvalidRequest when the text is shorter than 2 * n_ctx tokens, or the context
    exceeds the model's, or the vocabularies differ.
    """
    for m in (llm, base):
        if m is not None and n_ctx > m.n_ctx:
            raise InvalidRequest(f"--ctx {n_ctx} exceeds {m.name}'s context of {m.n_ctx}")
    if base is not None and base.n_vocab != llm.n_vocab:
        raise InvalidRequest(f"{llm.name} ({llm.n_vocab} tokens) and {base.name} ({base.n_vocab} tokens) "
                             f"have different vocabularies; KL divergence needs the same one")
    tokens, cks = chunks(base if base is not None else llm, text, n_ctx, n_chunks)
    first = n_ctx // 2
    nll = nll2 = 0.0
    count = 0
    running = []
    k = _KLD() if base is not None else None
    for ci, ids in enumerate(cks):
        logits = chunk_logits(llm, ids, first)             # (n_ctx - 1 - first, n_vocab)
        base_logits = chunk_logits(base, ids, first) if base is not None else None
        targets = np.asarray(ids[first + 1:])              # the scored tokens
        for r in range(0, len(targets), ROWS):
            lp = _log_softmax(logits[r:r + ROWS])
            t = targets[r:r + ROWS]
            v = -lp[np.arange(len(t)), t]
            nll += float(v.sum())
            nll2 += float((v * v).sum())
            if k is not None:
                k.add(lp, _log_softmax(base_logits[r:r + ROWS]), t)
        count += len(targets)
        running.append(math.exp(nll / count))
        if on_chunk:
            on_chunk(ci + 1, running[-1])
    mean = nll / count
    var = nll2 / count - mean * mean
    ppl = math.exp(mean)
    err = ppl * math.sqrt(var / (count - 1)) if var > 0 else float("nan")
    return PerplexityResult(ppl=ppl, ppl_error=err, n_chunks=len(cks), n_ctx=n_ctx, n_tokens=len(tokens),
                            n_scored=count, chunk_ppl=running, kld=k.stats() if k is not None else None)


class _KLD:
    """Running sums of llama.cpp's kl_divergence_result, plus per-token KLD and Δp for percentiles."""

    def __init__(self):
        self.s = dict.fromkeys(("nll", "nll2", "nllb", "nllb2", "nllnllb", "kld", "kld2",
                                "pd", "pd2", "pd4"), 0.0)
        self.same_top = 0
        self.count = 0
        self.klds: list[np.ndarray] = []
        self.pdiffs: list[np.ndarray] = []

    def add(self, lp: np.ndarray, lpb: np.ndarray, t: np.ndarray) -> None:
        rows = np.arange(len(t))
        v, vb = -lp[rows, t], -lpb[rows, t]
        pb = np.exp(lpb)
        kld = np.where(lpb > -16.0, pb * (lpb - lp), 0.0).sum(axis=-1)
        pdiff = np.exp(-v) - np.exp(-vb)
        s = self.s
        s["nll"] += v.sum(); s["nll2"] += (v * v).sum()
        s["nllb"] += vb.sum(); s["nllb2"] += (vb * vb).sum(); s["nllnllb"] += (v * vb).sum()
        s["kld"] += kld.sum(); s["kld2"] += (kld * kld).sum()
        s["pd"] += pdiff.sum(); s["pd2"] += (pdiff ** 2).sum(); s["pd4"] += (pdiff ** 4).sum()
        self.same_top += int((lp.argmax(axis=-1) == lpb.argmax(axis=-1)).sum())
        self.count += len(t)
        self.klds.append(kld)
        self.pdiffs.append(pdiff)

    def stats(self) -> dict:
        """The numbers llama-perplexity --kl-divergence prints in its final tables (Δp in fractions, not %)."""
        s, n = self.s, self.count
        lq, lq_u = _mean_unc(s["nll"], s["nll2"], n)
        lb, lb_u = _mean_unc(s["nllb"], s["nllb2"], n)
        cov = (s["nllnllb"] / n - (s["nll"] / n) * (s["nllb"] / n)) / (n - 1) if n >= 10 else 0.0
        ratio_u = math.sqrt(max(lq_u ** 2 + lb_u ** 2 - 2 * cov, 0.0))
        kl, kl_u = _mean_unc(s["kld"], s["kld2"], n)
        pd, pd_u = _mean_unc(s["pd"], s["pd2"], n)
        mse, mse_u = _mean_unc(s["pd2"], s["pd4"], n)
        rms = math.sqrt(mse)
        top = self.same_top / n
        kv = np.sort(np.concatenate(self.klds))
        pv = np.sort(np.concatenate(self.pdiffs))

        def pct(v, f):  # llama.cpp's percentile: linear between neighbours
            p = f * (len(v) - 1)
            i = int(p)
            return float((1 - (p - i)) * v[i] + (p - i) * v[min(i + 1, len(v) - 1)])

        return {
            "count": n,
            "ppl_q": math.exp(lq), "ppl_q_error": math.exp(lq) * lq_u,
            "ppl_base": math.exp(lb), "ppl_base_error": math.exp(lb) * lb_u,
            "ln_ppl_ratio": lq - lb, "ln_ppl_ratio_error": ratio_u,
            "kld_mean": kl, "kld_error": kl_u, "kld_max": float(kv[-1]), "kld_median": float(np.median(kv)),
            "kld_p99": pct(kv, 0.99), "kld_p90": pct(kv, 0.90), "kld_p10": pct(kv, 0.10),
            "same_top": top, "same_top_error": math.sqrt(top * (1 - top) / (n - 1)),
            "dp_mean": pd, "dp_error": pd_u, "dp_rms": rms, "dp_rms_error": (0.5 / rms * mse_u) if rms else 0.0,
            "dp_max": float(pv[-1]), "dp_min": float(pv[0]), "dp_median": float(np.median(pv)),
            "dp_p99": pct(pv, 0.99), "dp_p1": pct(pv, 0.01),
        }


def format_kld(st: dict) -> str:
    """The final statistics as llama-perplexity --kl-divergence lays them out."""
    return "\n".join([
        "====== Perplexity statistics ======",
        f"Mean PPL(Q)                   : {st['ppl_q']:10.6f} ± {st['ppl_q_error']:10.6f}",
        f"Mean PPL(base)                : {st['ppl_base']:10.6f} ± {st['ppl_base_error']:10.6f}",
        f"Mean ln(PPL(Q)/PPL(base))     : {st['ln_ppl_ratio']:10.6f} ± {st['ln_ppl_ratio_error']:10.6f}",
        f"Mean PPL(Q)/PPL(base)         : {math.exp(st['ln_ppl_ratio']):10.6f}",
        "",
        "====== KL divergence statistics ======",
        f"Mean    KLD: {st['kld_mean']:10.6f} ± {st['kld_error']:10.6f}",
        f"Maximum KLD: {st['kld_max']:10.6f}",
        f"99.0%   KLD: {st['kld_p99']:10.6f}",
        f"90.0%   KLD: {st['kld_p90']:10.6f}",
        f"Median  KLD: {st['kld_median']:10.6f}",
        f"10.0%   KLD: {st['kld_p10']:10.6f}",
        "",
        "====== Token probability statistics ======",
        f"Mean    Δp: {100 * st['dp_mean']:6.3f} ± {100 * st['dp_error']:5.3f} %",
        f"Maximum Δp: {100 * st['dp_max']:6.3f}%",
        f"99.0%   Δp: {100 * st['dp_p99']:6.3f}%",
        f"Median  Δp: {100 * st['dp_median']:6.3f}%",
        f" 1.0%   Δp: {100 * st['dp_p1']:6.3f}%",
        f"Minimum Δp: {100 * st['dp_min']:6.3f}%",
        f"RMS Δp    : {100 * st['dp_rms']:6.3f} ± {100 * st['dp_rms_error']:5.3f} %",
        f"Same top p: {100 * st['same_top']:6.3f} ± {100 * st['same_top_error']:5.3f} %",
    ])
