"""SentencePiece vocabularies (`tokenizer.ggml.model = "llama"`), as llama.cpp's
llm_tokenizer_spm.

Why not the `sentencepiece` library: llama.cpp does not run SentencePiece's encoder but
its own, and on the same vocabulary the two differ (checked with a ModelProto built from the
GGUF, see tests/test_tokenizer.py): llama.cpp matches user-defined tokens on the raw text,
before spaces become "▁", so Gemma's runs of spaces ("  " is id 138) are found where the
library sees only "▁▁"; it merges into *any* vocabulary entry, byte and unused tokens included
("<0x41>" typed as text can become the byte token for "A"); and it adds the space prefix
after every special token rather than once at the start. The library gives llama.cpp's
ids on plain text without whitespace runs, which the tests use as an independent check.

The algorithm, per text fragment: spaces -> "▁" (with one "▁" in front when the fragment
follows a special token or starts the text and add_space_prefix is set); one symbol per
code point; repeatedly merge the adjacent pair whose concatenation is a vocabulary entry
with the highest score (leftmost on ties); a final symbol that is not a token becomes its
UTF-8 bytes as <0xXX> tokens.
"""
from __future__ import annotations

import heapq

from . import Tokenizer
from .vocab import BYTE, CONTROL, NORMAL, UNKNOWN, USER_DEFINED, Vocab

# what llama.cpp assumes for a "llama" vocabulary when the metadata says nothing
DEFAULTS = {"special": {"bos": 1, "eos": 2, "unk": 0}, "add_bos": True,
            "add_space_prefix": True, "clean_spaces": False}


class SPMTokenizer(Tokenizer):
    kind = "spm"

    def __init__(self, metadata: dict, path: str = "model"):
        super().__init__(Vocab(metadata, path=path, piece=_piece, defaults=DEFAULTS))
        self._byte_ids: dict[int, int] = {}

    def _tokenize(self, text: str, prev_special: bool) -> list[int]:
        if self.vocab.add_space_prefix and prev_special:
            text = " " + text
        return self._merge(text.replace(" ", "\u2581"))

    def _merge(self, text: str) -> list[int]:
        ids, scores = self.vocab.ids, self.vocab.scores
        syms = list(text)                      # one symbol per code point
        n = len(syms)
        nxt = list(range(1, n)) + [-1]
        prv = list(range(-1, n - 1))
        heap = []                              # (-score, left, right, length of the pair)
        for i in range(n - 1):
            tid = ids.get(syms[i] + syms[i + 1])
            if tid is not None:
                heap.append((-scores[tid], i, i + 1, 2))
        heapq.heapify(heap)
        while heap:
            _, left, right, size = heapq.heappop(heap)
            a, b = syms[left], syms[right]
            if not a or not b or len(a) + len(b) != size:
                continue                       # one side changed since the pair was queued
            syms[left], syms[right] = a + b, ""
            nxt[left] = nxt[right]
            if nxt[right] >= 0:
                prv[nxt[right]] = left
            for x, y in ((prv[left], left), (left, nxt[left])):
                if x >= 0 and y >= 0:
                    tid = ids.get(syms[x] + syms[y])
                    if tid is not None:
                        heapq.heappush(heap, (-scores[tid], x, y, len(syms[x]) + len(syms[y])))
        out = []
        for s in syms:
            if not s:
                continue
            tid = ids.get(s)
            if tid is not None:
                out.append(tid)
            else:
                # only single code points can be missing (every merge makes a token), so
                # llama.cpp's rev_merge re-split never applies: byte fallback
                out += [self._byte_id(b) for b in s.encode("utf-8", "surrogatepass")]
        return out

    def _byte_id(self, b: int) -> int:
        """llama_vocab::byte_to_token: <0xXX>, else the byte itself as a token."""
        tid = self._byte_ids.get(b)
        if tid is None:
            ids = self.vocab.ids
            tid = ids.get(f"<0x{b:02X}>")
            if tid is None:
                tid = ids.get(bytes([b]).decode("utf-8", "surrogateescape"),
                              self.vocab.special["unk"])
            self._byte_ids[b] = tid
        return tid


def _piece(vocab: Vocab, i: int) -> bytes:
    """llama_token_to_piece(special=True) for a SentencePiece vocabulary."""
    attr, text = vocab.attrs[i], vocab.texts[i]
    if attr & (CONTROL | UNKNOWN | USER_DEFINED):
        return text.encode("utf-8", "surrogateescape")
    if attr & NORMAL:
        return text.replace("\u2581", " ").encode("utf-8", "surrogateescape")
    if attr & BYTE:
        return bytes([int(text[3:5], 16)])
    return b""
