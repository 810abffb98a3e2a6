"""GPT-2 byte-level BPE (`tokenizer.ggml.model = "gpt2"`), as llama.cpp's llm_tokenizer_bpe.

encode: special-token partition -> pre-tokenizer regexes (pretokenize.py) -> each word's
UTF-8 bytes mapped to GPT-2's printable byte alphabet -> merges applied by rank (lowest
first, leftmost on ties) -> token ids. A final symbol that is not a token falls back to
its single bytes looked up as one-byte texts; bytes without a token are dropped, as in
llama.cpp (SmolLM2 has none for 0x04, 0x06, ...). Words are cached (LRU).

Gemma 4's vocabulary (`tokenizer.ggml.model = "gemma4"`, Gemma4Tokenizer) is the same
algorithm on SentencePiece-style text: spaces become "▁" first, words stay in raw UTF-8
(no byte alphabet), only runs of newlines are split off, and the byte fallback is <0xXX>.
"""
from __future__ import annotations

import functools
import heapq

from . import Tokenizer
from .pretokenize import pre_type, split
from .vocab import BYTE, CONTROL, NORMAL, UNKNOWN, USER_DEFINED, Vocab


def _bytes_to_unicode() -> list[str]:
    """GPT-2's byte -> printable character table (unicode_byte_to_utf8_map)."""
    keep = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    table, n = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + n)
            n += 1
    return [table[b] for b in range(256)]


BYTE_TO_CHAR = _bytes_to_unicode()
CHAR_TO_BYTE = {c: b for b, c in enumerate(BYTE_TO_CHAR)}
# latin-1 char of a byte -> its GPT-2 character, for str.translate
_ENCODE_TABLE = {b: c for b, c in enumerate(BYTE_TO_CHAR)}

# what llama.cpp defaults to for a gpt2 vocabulary when the metadata says nothing
DEFAULT_BOS = DEFAULT_EOS = 11


class BPETokenizer(Tokenizer):
    kind = "bpe"
    # tokenizer.ggml.pre forced by the tokenizer kind (None: read it from the file), and the
    # special ids llama.cpp assumes when the file names none
    forced_pre: str | None = None
    default_special = {"bos": DEFAULT_BOS, "eos": DEFAULT_EOS}

    def __init__(self, metadata: dict, path: str = "model"):
        self.pre = self.forced_pre or metadata.get("tokenizer.ggml.pre") or "default"
        self.regexes, flags = pre_type(self.pre)
        self.ignore_merges = flags["ignore_merges"]
        self.byte_encode = flags["byte_encode"]
        self.escape_whitespaces = flags["escape_whitespaces"]
        self.newline_words = flags["newline_words"]
        special = dict(self.default_special)
        if "default_bos" in flags:
            special["bos"] = flags["default_bos"]
        super().__init__(Vocab(metadata, path=path, piece=_piece, defaults={
            "special": special, "add_bos": flags.get("add_bos", False),
            "clean_spaces": flags["clean_spaces"],
            "escape_whitespaces": self.escape_whitespaces}))
        if flags["force_bos"]:
            self.vocab.add_bos = True          # llama.cpp overrides add_bos_token=false
        # merges "a b" -> rank; the first occurrence wins, as with llama.cpp's emplace
        pairs = []
        for m in metadata.get("tokenizer.ggml.merges") or []:
            pos = m.find(" ", 1)
            pairs.append((m[:pos], m[pos + 1:]) if pos != -1 else ("", ""))
        self.ranks = {p: r for r, p in reversed(list(enumerate(pairs)))}
        self._word = functools.lru_cache(maxsize=1 << 16)(self._bpe_word)

    def _tokenize(self, text: str, prev_special: bool) -> list[int]:
        if self.escape_whitespaces:
            text = text.replace(" ", "\u2581")
        out: list[int] = []
        for word in split(text, self.regexes):
            if self.byte_encode:
                word = (word.encode("utf-8", "surrogatepass").decode("latin-1")
                        .translate(_ENCODE_TABLE))
            out += self._word(word)
        return out

    def _bpe_word(self, word: str) -> tuple[int, ...]:
        ids, ranks = self.vocab.ids, self.ranks
        if self.ignore_merges and word in ids:
            return (ids[word],)
        if self.newline_words and word in ids and not word.strip("\n"):
            return (ids[word],)                # Gemma 4: a run of newlines is one token
        # one symbol per GPT-2 character (one byte), or per code point without byte_encode
        syms = list(word)
        n = len(syms)
        nxt = list(range(1, n)) + [-1]
        prv = list(range(-1, n - 1))

        def pair(left: int, right: int):       # (rank, left, merged text) or None
            rank = ranks.get((syms[left], syms[right]))
            return None if rank is None else (rank, left, syms[left] + syms[right])

        heap = [p for p in map(pair, range(n - 1), range(1, n)) if p]
        heapq.heapify(heap)
        while heap:                            # lowest rank first, leftmost on ties
            _, left, text = heapq.heappop(heap)
            right = nxt[left]
            if right < 0 or not syms[left] or syms[left] + syms[right] != text:
                continue                       # outdated pair
            syms[left], syms[right] = text, ""
            nxt[left] = nxt[right]
            if nxt[right] >= 0:
                prv[nxt[right]] = left
            for a, b in ((prv[left], left), (left, nxt[left])):
                p = pair(a, b) if a >= 0 and b >= 0 else None
                if p:
                    heapq.heappush(heap, p)
        out = []
        for s in filter(None, syms):
            tid = ids.get(s)
            if tid is not None:
                out.append(tid)
                continue
            # not a token: its UTF-8 bytes one by one as one-byte texts (or <0xXX> tokens
            # without byte_encode), missing ones dropped
            for byte in s.encode("utf-8", "surrogatepass"):
                tid = ids.get(bytes([byte]).decode("utf-8", "surrogateescape")
                              if self.byte_encode else f"<0x{byte:02X}>")
                if tid is not None:
                    out.append(tid)
        return tuple(out)


class Gemma4Tokenizer(BPETokenizer):
    """`tokenizer.ggml.model = "gemma4"`: BPE merges over SentencePiece-style text (spaces as
    "▁", raw UTF-8, <0xXX> byte fallback), pre-tokenizer "gemma4", no default special ids."""

    forced_pre = "gemma4"
    default_special: dict = {}


def _piece(vocab: Vocab, i: int) -> bytes:
    """llama_token_to_piece(special=True) for a BPE vocabulary."""
    attr, text = vocab.attrs[i], vocab.texts[i]
    if attr & (CONTROL | UNKNOWN | USER_DEFINED):
        return text.encode("utf-8", "surrogateescape")
    if attr & NORMAL and vocab.escape_whitespaces:       # SentencePiece-style BPE
        return text.replace("\u2581", " ").encode("utf-8", "surrogateescape")
    if attr & NORMAL:
        out = bytearray()
        for c in text:
            b = CHAR_TO_BYTE.get(c)
            if b is not None:
                out.append(b)
            else:                              # llama_decode_text's marker for a foreign char
                utf8 = c.encode("utf-8", "surrogateescape")
                out += (b"[UNK_BYTE_0x" + utf8.hex().encode()
                        + text.encode("utf-8", "surrogateescape") + b"]")
        return bytes(out)
    if attr & BYTE:
        return bytes([int(text[3:5], 16)])
    return b""
