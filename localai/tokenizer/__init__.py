"""Tokenizers that split and join text exactly as llama.cpp does for the same GGUF file.

    tok = from_gguf(gguf_file)           # kind chosen by tokenizer.ggml.model (TOKENIZERS)
    ids = tok.encode("Hello", special=True)
    text = tok.decode(ids)
    dec = StreamDecoder(tok); dec.push(id) -> str; dec.flush() -> str

Modules: vocab.py (what llama.cpp's vocabulary loader computes: attributes, special ids,
end-of-generation set, special-token partition, pieces, detokenize), bpe.py + pretokenize.py
(GPT-2 byte-level BPE), spm.py (SentencePiece vocabularies), stream.py (streaming decode).
"""
from __future__ import annotations

import importlib

from ..errors import UnsupportedModel

# tokenizer.ggml.model -> "module:class"
TOKENIZERS = {
    "gpt2": "localai.tokenizer.bpe:BPETokenizer",
    "gemma4": "localai.tokenizer.bpe:Gemma4Tokenizer",
    "llama": "localai.tokenizer.spm:SPMTokenizer",
}


class Tokenizer:
    """One GGUF vocabulary. Subclasses implement `_tokenize` for a text fragment without
    special tokens; everything else follows llama.cpp's llama_vocab."""

    kind = "?"

    def __init__(self, vocab):
        self.vocab = vocab

    # -- facts ----------------------------------------------------------------------------

    @property
    def n_vocab(self) -> int:
        return self.vocab.n_vocab

    @property
    def bos_id(self) -> int | None:
        return self.vocab.special["bos"]

    @property
    def eos_id(self) -> int | None:
        return self.vocab.special["eos"]

    @property
    def eot_id(self) -> int | None:
        return self.vocab.special["eot"]

    @property
    def eog_ids(self) -> set[int]:
        """Tokens that end generation, as llama_vocab_is_eog."""
        return set(self.vocab.eog_ids)

    @property
    def add_bos(self) -> bool:
        return self.vocab.add_bos

    @property
    def fim(self) -> dict[str, int]:
        """Fill-in-the-middle tokens found in the file: keys among prefix, suffix, middle,
        pad, rep, sep."""
        s = self.vocab.special
        slots = {"prefix": "prefix", "suffix": "suffix", "middle": "middle", "pad": "pad_fim",
                 "rep": "rep", "sep": "sep_fim"}
        return {k: s[v] for k, v in slots.items() if s[v] is not None}

    def is_eog(self, token_id: int) -> bool:
        return token_id in self.vocab.eog_ids

    def token_to_id(self, text: str) -> int | None:
        """The id of the token whose vocabulary text is exactly `text`."""
        return self.vocab.ids.get(text)

    def token_text(self, token_id: int) -> str:
        """The token's text as stored in the vocabulary (e.g. "Ġthe", "▁the", "<0x0A>")."""
        return self.vocab.texts[token_id]

    # -- encode / decode ------------------------------------------------------------------

    def encode(self, text: str, *, add_bos: bool | None = None, add_eos: bool | None = None,
               special: bool = False) -> list[int]:
        """Token ids of `text`, as llama_tokenize. `add_bos`/`add_eos` None: the file's
        add_bos_token / add_eos_token (add_eos only when add_bos is also None), i.e. both
        None = llama.cpp's add_special=true. `special`: parse control-token text such as
        "<|im_start|>" into its id (user-defined tokens are always matched)."""
        return self._encode_fragments(self.vocab.partition(text, special), add_bos, add_eos)

    def encode_parts(self, parts, *, add_bos: bool | None = None, add_eos: bool | None = None) -> list[int]:
        """Token ids of the text `"".join(t for t, _ in parts)` where control-token text
        becomes a control token only inside parts marked `special` (the markup a chat
        template writes); the other parts (message content) stay plain text, as with
        `encode(special=False)`. parts: [(text, special: bool)]. Text on both sides of a
        part boundary is tokenized as one piece, so content free of control-token text
        gives exactly `encode(whole_text, special=True)`. add_bos/add_eos as in `encode`."""
        frags: list = []
        for text, special in parts:
            for f in self.vocab.partition(text, True, user_defined=False) if special else [text]:
                if isinstance(f, str) and frags and isinstance(frags[-1], str):
                    frags[-1] += f
                else:
                    frags.append(f)
        frags = [g for f in frags for g in ([f] if isinstance(f, int) else self.vocab.partition(f, False))]
        return self._encode_fragments(frags, add_bos, add_eos)

    def _encode_fragments(self, frags: list, add_bos: bool | None, add_eos: bool | None) -> list[int]:
        if add_eos is None:
            add_eos = self.vocab.add_eos if add_bos is None else False
        if add_bos is None:
            add_bos = self.vocab.add_bos
        out: list[int] = []
        if add_bos and self.bos_id is not None:
            out.append(self.bos_id)
        prev_special = True                    # SPM adds its space prefix after a special token
        for frag in frags:
            if isinstance(frag, int):
                out.append(frag)
                prev_special = True
            else:
                out += self._tokenize(frag, prev_special)
                prev_special = False
        if add_eos and self.eos_id is not None:
            out.append(self.eos_id)
        return out

    def _tokenize(self, text: str, prev_special: bool) -> list[int]:
        raise NotImplementedError

    def decode_bytes(self, ids, *, skip_special: bool = False,
                     render_special: bool = True) -> bytes:
        """llama_detokenize(remove_special=skip_special, unparse_special=render_special)."""
        return self.vocab.detokenize(ids, skip_special, render_special)

    def decode(self, ids, *, skip_special: bool = False, render_special: bool = True) -> str:
        """Text of `ids`, as llama_detokenize(remove_special=skip_special,
        unparse_special=render_special) decoded as UTF-8 (invalid bytes replaced).
        skip_special drops a leading BOS / trailing EOS the model adds itself;
        render_special=False renders control tokens as empty text."""
        return self.decode_bytes(ids, skip_special=skip_special,
                                 render_special=render_special).decode("utf-8", "replace")

    def token_bytes(self, token_id: int) -> bytes:
        """The token's bytes, as llama_token_to_piece(special=True); may be part of a UTF-8
        character."""
        return self.vocab.piece(token_id)


def from_gguf(gguf_file) -> Tokenizer:
    """The tokenizer of a GGUFFile (or of a GGUF metadata dict)."""
    metadata = getattr(gguf_file, "metadata", gguf_file)
    path = str(getattr(gguf_file, "path", "model"))
    model = metadata.get("tokenizer.ggml.model")
    target = TOKENIZERS.get(model)
    if target is None:
        known = ", ".join(sorted(TOKENIZERS))
        raise UnsupportedModel(
            f"{path}: tokenizer '{model}' (tokenizer.ggml.model) is not supported; "
            f"localai reads these kinds: {known}")
    module, cls = target.split(":")
    return getattr(importlib.import_module(module), cls)(metadata, path=path)


from .stream import StreamDecoder  # noqa: E402

__all__ = ["Tokenizer", "StreamDecoder", "from_gguf", "TOKENIZERS"]
