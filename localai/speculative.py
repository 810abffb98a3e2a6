"""Drafts for speculative decoding: tokens the model is likely to generate next, which one
batched forward pass verifies (engine.LLM.stream, `draft=`).

`PromptLookup` copies from text the request already has (prompt lookup decoding, as
llama.cpp's `--lookup` / Saxena's prompt-lookup-decoding): the selection a rewrite repeats, a
`prediction`, the code after a completion's cursor. `DraftModel` asks a small model (greedy).
A drafter only proposes: the sampler accepts the longest prefix it agrees with, so the output
is the same as without drafts (greedy), or follows the same distribution (sampling).
"""
from __future__ import annotations

import numpy as np

K_START, K_MAX = 4, 16  # draft tokens per verify pass: start, most (doubles while all are accepted)
NGRAM = (4, 3, 2)        # match lengths tried, longest first
PAUSE_MAX = 32           # most tokens decoded without drafts after failed verify passes


class Adaptive:
    """k, the draft length: doubled after a pass that accepted every draft, else one more
    than the accepted count. A pass that accepted none also pauses drafting for 1, 2, 4, ...
    up to `PAUSE_MAX` tokens (doubling while passes keep failing, reset by a success): when
    the model does not copy, k falls to 0 and the request decodes at its plain speed, paying
    a verify pass only now and then to see whether drafts agree again."""

    def __init__(self):
        self.k = K_START
        self.pause = 0   # tokens to decode without drafts, after passes that accepted nothing
        self.wait = 0    # of those, the ones left

    def update(self, proposed: int, accepted: int) -> None:
        self.k = min(K_MAX, 2 * self.k) if accepted == proposed else max(1, accepted + 1)
        self.pause = 0 if accepted else min(PAUSE_MAX, 2 * self.pause or 1)
        self.wait = self.pause

    def next_k(self) -> int:
        """Draft tokens to propose before the next token (0 while paused); once per token."""
        if self.wait:
            self.wait -= 1
            return 0
        return self.k


class PromptLookup(Adaptive):
    """Propose the tokens that followed an occurrence of the context's last n-gram in `source`
    (token ids): the first one at or after where the copy has got to in `source` (text is
    copied in order, and repetitive code has the same n-gram on many lines), else the last
    one. Where the copy has got to moves on only with accepted drafts: a draft taken from
    elsewhere that the model rejected (the new name of a renamed identifier matched in the
    instruction) does not move it."""

    def __init__(self, source: list[int]):
        super().__init__()
        self.src = np.asarray(source, dtype=np.int64)
        self.start = None  # index in src where the last draft started
        self.pos = None    # index in src the accepted copy has reached

    def update(self, proposed: int, accepted: int) -> None:
        super().update(proposed, accepted)
        if accepted and self.start is not None:
            self.pos = self.start + accepted

    def propose(self, history: list[int], k: int) -> list[int]:
        src = self.src
        if k <= 0 or len(src) == 0:
            return []
        for n in NGRAM:
            if len(history) < n or len(src) <= n:
                continue
            tail = np.asarray(history[-n:], dtype=np.int64)
            hit = np.flatnonzero(src[: len(src) - n] == tail[0])  # a token must follow the match
            for j in range(1, n):
                hit = hit[src[hit + j] == tail[j]]
            if len(hit) == 0:
                continue
            starts = hit + n
            after = starts[starts >= self.pos] if self.pos is not None else starts[:0]
            self.start = int(after[0]) if len(after) else int(starts[-1])
            return src[self.start:self.start + k].tolist()
        return []


class DraftModel(Adaptive):
    """A small model of the same vocabulary proposes k tokens greedily, continuing its own
    session (it evaluates only what it has not seen)."""

    def __init__(self, llm):
        super().__init__()
        self.llm = llm
        self.session = llm.new_session()
        self.logits = None  # after the session's last token

    def propose(self, history: list[int], k: int) -> list[int]:
        from .engine import Eval

        s, llm = self.session, self.llm
        if k <= 0 or len(history) + k >= llm.n_ctx:
            return []
        keep = s.common_prefix(history)
        if keep == len(history) and self.logits is not None and len(s.tokens) == keep:
            logits = self.logits
        else:
            keep = min(keep, len(history) - 1)
            s.keep(keep)
            logits = llm.evaluate(Eval(s, list(history[keep:]), "prefill"))
        out = []
        for _ in range(k):
            t = int(np.argmax(logits))
            out.append(t)
            if len(out) < k:
                logits = llm.evaluate(Eval(s, [t], "decode"))
        # the session now holds history + out[:-1]: next time the common prefix is reused
        self.logits = None
        return out
