"""Streaming detokenizer: token ids in, complete UTF-8 text out.

Pieces can end inside a UTF-8 character (byte tokens, byte-level BPE), so bytes are held
until their character is complete. The concatenation of everything `push` and `flush`
return equals `tok.decode(all ids)` with the same options, including llama.cpp's
detokenize rules that look at neighbouring tokens: the leading-space strip of SPM texts,
a trailing EOS dropped with skip_special, and clean_spaces (" ," -> ","), for which bytes
near a space or apostrophe wait until the next safe cut.
"""
from __future__ import annotations

import codecs

from .vocab import CONTROL, UNKNOWN, clean_spaces

_SPACE_OR_QUOTE = b" '"


class StreamDecoder:
    """dec = StreamDecoder(tok); text = dec.push(token_id) ...; text = dec.flush().
    Options as in Tokenizer.decode."""

    def __init__(self, tok, *, skip_special: bool = False, render_special: bool = True):
        self.vocab = tok.vocab
        self.skip_special = skip_special
        self.render_special = render_special
        self.reset()

    def reset(self):
        """Start a new text."""
        self._first = True            # the next token is the first of the text
        self._remove_space = False    # strip one leading space from the next piece
        self._held_eos = False        # an EOS that skip_special drops if it is the last token
        self._raw = bytearray()       # bytes not yet cleaned (clean_spaces vocabularies)
        self._checked = 0             # cut points below this are known not to be safe
        self._utf8 = codecs.getincrementaldecoder("utf-8")("replace")

    def push(self, token_id: int) -> str:
        """Add one token; return the text that is now complete (maybe "")."""
        v, out = self.vocab, []
        if self._first:
            self._first = False
            self._remove_space = v.add_space_prefix
            if self.skip_special and v.add_bos and token_id == v.special["bos"]:
                self._remove_space = False
                return ""
        if self._held_eos:
            self._held_eos = False
            out.append(self._piece(v.special["eos"]))
        if self.skip_special and v.add_eos and token_id == v.special["eos"]:
            self._held_eos = True
        else:
            out.append(self._piece(token_id))
        return "".join(self._emit(p) for p in out)

    def flush(self) -> str:
        """Whatever is left, invalid bytes replaced; the decoder can then be reused."""
        tail = clean_spaces(bytes(self._raw)) if self._raw else b""
        text = self._utf8.decode(tail, final=True)
        self.reset()
        return text

    def _piece(self, token_id: int) -> bytes:
        v = self.vocab
        if not self.render_special and v.attrs[token_id] & (CONTROL | UNKNOWN):
            p = b""
        else:
            p = v.piece(token_id)
            if self._remove_space and p.startswith(b" "):
                p = p[1:]
        self._remove_space = False
        return p

    def _emit(self, piece: bytes) -> str:
        if not self.vocab.clean_spaces:
            return self._utf8.decode(piece)
        # clean_spaces only removes spaces next to [?!.,'], within a few bytes; a cut at s
        # with raw[s-2:s+2] free of spaces and apostrophes cleans the same in two parts
        raw = self._raw
        raw += piece
        cut = 0
        for s in range(len(raw) - 2, max(self._checked, 2) - 1, -1):
            if not any(b in _SPACE_OR_QUOTE for b in raw[s - 2:s + 2]):
                cut = s
                break
        if not cut:
            self._checked = max(len(raw) - 3, 0)
            return ""
        done = clean_spaces(bytes(raw[:cut]))
        del raw[:cut]
        self._checked = 0
        return self._utf8.decode(done)
