"""Batched decode: one forward pass for the next token of several sequences, each with its
own KV cache and positions (continuous batching, as llama-server's slots share a batch).

The architectures are written for one sequence (`model(tokens, cache)`); a `BatchedCache`
stands in for the per-layer caches of several sessions: its `offset` is each row's position
(RoPE takes it per row) and the backend's attention splits the rows at `parts`, stores each
sequence's K/V in its own cache and attends all of them in one kernel call
(kernels.elementwise.attend_many). Norms, matmuls and activations take all rows at once, so the
weights are read once per step for every sequence. The kernels are batch-invariant (a row's
result does not depend on the other rows in its pass: tests/test_batch_invariance.py), so
each sequence's logits are bit-identical to its pass alone. A pass may also carry prompt
chunks of new requests (chunked prefill inside the decode batch, as llama-server and vLLM
do): only each sequence's last row goes through the vocabulary projection.
"""
from __future__ import annotations

import numpy as np

MAX_ROWS = 32  # decode and verify rows per batched pass (the matmul kernels serve ~24 rows per read of W)


class BatchedCache:
    """Layer i of several sessions' KV caches seen as one: rows parts[j] = (cache, a, b)
    are sequence j's new positions."""

    def __init__(self, caches: list, lengths: list[int]):
        self.parts, a = [], 0
        for c, n in zip(caches, lengths):
            self.parts.append((c, a, a + n))
            a += n
        # int64 (L,): the position of each row
        self.offset = np.concatenate([np.arange(c.offset, c.offset + n) for c, n in zip(caches, lengths)])


def supports(llm) -> bool:
    """Whether `evaluate_batch` can run several sessions of this model in one pass."""
    return getattr(llm, "backend", None) == "numpy" and hasattr(llm, "evaluate")


def evaluate_batch(llm, evals: list) -> list:
    """Run several streams' `engine.Eval`s in one forward pass: decode steps, verify steps
    and prompt chunks alike; each one's logits, as `llm.evaluate` would give them (float32
    (n_vocab,); (len(ids), n_vocab) for "verify"; None where `save` is None).

    The vocabulary projection runs only for the rows someone reads: every row of a verify
    pass, the last row of the others (a 256-token prompt chunk pays for one row, as
    `last_only` does for a pass alone). On an exception the sessions are rolled back to
    what they held."""
    if len(evals) == 1:
        return [llm.evaluate(evals[0])]
    sessions = [ev.session for ev in evals]
    lengths = [len(ev.ids) for ev in evals]
    n_layers = len(sessions[0].cache)
    cache = [BatchedCache([s.cache[i] for s in sessions], lengths) for i in range(n_layers)]
    tokens = np.asarray([t for ev in evals for t in ev.ids])
    rows, spans, end = [], [], 0  # rows that get logits; each eval's slice of them
    for ev, n in zip(evals, lengths):
        a = len(rows)
        rows.extend(range(end, end + n) if ev.save == "verify" else [end + n - 1])
        spans.append((a, len(rows)))
        end += n
    try:                                                    # (len(rows), n_vocab)
        logits = llm.model(tokens, cache, last_only=False if len(rows) == end else np.asarray(rows))
    except BaseException:
        for s in sessions:
            s.keep(len(s.tokens))  # layers that ran have moved their cache's offset on
        raise
    out = []
    for ev, (a, b) in zip(evals, spans):
        ev.session.tokens.extend(ev.ids)
        if ev.save == "verify":  # a token and its drafts: every position's logits
            out.append(np.array(logits[a:b], dtype=np.float32, copy=True))
        else:
            out.append(None if ev.save is None else
                       ev.session._save_logits(logits[b - 1], prefill=ev.save == "prefill"))
    return out
