"""The vocabulary as llama.cpp loads it (`llama_vocab::impl::load`), shared by BPE and SPM.

What lives here is what both tokenizer kinds do the same way in llama.cpp:
* token attributes from `tokenizer.ggml.token_type`, then llama.cpp's fix-ups by token text
  (EOT/EOG/FIM tokens found by name are re-typed to control, e.g. Gemma's `</s>`);
* special ids, their per-kind defaults, the end-of-generation set and the FIM tokens;
* `partition`: the text split on special-token text (`tokenizer_st_partition`);
* `piece` / `detokenize`: `llama_token_to_piece` and `llama_detokenize`, in bytes.
"""
from __future__ import annotations

import functools

import numpy as np

from ..errors import ModelFileError

# llama_token_attr bits (llama.h)
UNKNOWN, UNUSED, NORMAL, CONTROL, USER_DEFINED, BYTE = 1, 2, 4, 8, 16, 32
LSTRIP, RSTRIP = 128, 256
# GGUF token_type -> attr: 0 undefined, 1 normal, 2 unknown, 3 control, 4 user-defined,
# 5 unused, 6 byte; anything else is undefined (0)
_TYPE_TO_ATTR = np.array([0, NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE], np.int32)

# llama.cpp finds these by text when the metadata does not name them; a match is also
# re-typed to control. (llama.cpp takes the first hit in hash-map order; we take the lowest id.)
EOT_NAMES = ("<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>",
             "<|end_of_text|>", "<EOT>", "_<EOT>", "[EOT]", "<｜end▁of▁sentence｜>",
             "<end_of_utterance>")
EOM_NAMES = ("<|eom_id|>",)
FIM_NAMES = {
    "prefix": ("<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<｜fim▁begin｜>", "<PRE>",
               "▁<PRE>", "<|code_prefix|>", "<|prefix|>"),
    "suffix": ("<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<｜fim▁hole｜>", "<SUF>",
               "▁<SUF>", "<|code_suffix|>", "<|suffix|>"),
    "middle": ("<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<｜fim▁end｜>", "<MID>",
               "▁<MID>", "<|code_middle|>", "<|middle|>"),
    "pad": ("<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"),
    "rep": ("<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>"),
    "sep": ("<|file_sep|>",),
}
# tokens that end generation, by text (llama.cpp's list; the EOS/EOT/EOM ids and the FIM
# pad/rep/sep tokens are added to it)
EOG_NAMES = frozenset((
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>",
    "<end_of_turn>", "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]",
    "<|end_of_text|>", "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>",
    "<｜end▁of▁sentence｜>", "[e~[",
))
# gpt-oss: llama.cpp always renders these, as user-defined tokens
_ALWAYS_USER_DEFINED = ("<|channel|>", "<|message|>", "<|start|>", "<|constrain|>")

# metadata key -> special id name, in llama.cpp's order (the deprecated FIM keys come last
# and win when both are present)
_SPECIAL_KEYS = (
    ("bos_token_id", "bos"), ("eos_token_id", "eos"), ("eot_token_id", "eot"),
    ("eom_token_id", "eom"), ("unknown_token_id", "unk"), ("seperator_token_id", "sep"),
    ("padding_token_id", "pad"), ("mask_token_id", "mask"),
    ("fim_pre_token_id", "prefix"), ("fim_suf_token_id", "suffix"),
    ("fim_mid_token_id", "middle"), ("fim_pad_token_id", "pad_fim"),
    ("fim_rep_token_id", "rep"), ("fim_sep_token_id", "sep_fim"),
    ("prefix_token_id", "prefix"), ("suffix_token_id", "suffix"), ("middle_token_id", "middle"),
)


class Vocab:
    """Token texts, attributes, special ids and flags of one GGUF vocabulary."""

    def __init__(self, metadata: dict, *, defaults: dict, piece, path: str = "model"):
        """`defaults`: what llama.cpp assumes for this tokenizer kind (special ids, add_bos,
        add_space_prefix, clean_spaces); `piece(vocab, id) -> bytes` renders one token."""
        def meta(key, default=None):
            return metadata.get(f"tokenizer.ggml.{key}", default)

        texts = list(meta("tokens") or [])
        if not texts:
            raise ModelFileError(f"{path}: the GGUF has no tokenizer.ggml.tokens")
        n = len(texts)
        for i in (i for i, t in enumerate(texts) if not t):
            texts[i] = f"[EMPTY_{i}]"
        self.texts = texts
        self.ids = dict(zip(texts, range(n)))
        if len(self.ids) != n:
            raise ModelFileError(f"{path}: duplicate token text in the vocabulary")
        self.n_vocab = n
        scores = meta("scores")
        self.scores = (np.zeros(n, np.float32) if scores is None
                       else np.asarray(scores, np.float32)[:n]).tolist()
        types = meta("token_type")
        if types is None:
            attrs = np.full(n, NORMAL, np.int32)
        else:
            types = np.asarray(types, np.int64)[:n]
            attrs = _TYPE_TO_ATTR[np.where((types >= 0) & (types < 7), types, 0)]
        self.attrs = attrs.tolist()

        # special ids: the kind's defaults (disabled when out of range), then the metadata
        special = {"bos": None, "eos": None, "eot": None, "eom": None, "unk": None, "sep": None,
                   "pad": None, "mask": None, "prefix": None, "suffix": None, "middle": None,
                   "pad_fim": None, "rep": None, "sep_fim": None}
        special.update({k: v for k, v in defaults.get("special", {}).items()
                        if v is not None and 0 <= v < n})
        for key, name in _SPECIAL_KEYS:
            value = meta(key)
            if value is not None and 0 <= int(value) < n:
                special[name] = int(value)
        self.add_bos = bool(meta("add_bos_token", defaults.get("add_bos", False)))
        self.add_eos = bool(meta("add_eos_token", defaults.get("add_eos", False)))
        self.add_space_prefix = bool(meta("add_space_prefix",
                                          defaults.get("add_space_prefix", False)))
        self.clean_spaces = bool(defaults.get("clean_spaces", False))
        self.escape_whitespaces = bool(defaults.get("escape_whitespaces", False))

        # llama.cpp's fix-ups by token text
        def found(names, slot):
            hits = [self.ids[t] for t in names if t in self.ids]
            if special[slot] is None and hits:
                special[slot] = min(hits)
                self.attrs[special[slot]] |= CONTROL
        found(EOT_NAMES, "eot")
        found(EOM_NAMES, "eom")
        for slot, names in FIM_NAMES.items():
            found(names, {"pad": "pad_fim", "sep": "sep_fim"}.get(slot, slot))
        eog = {special[s] for s in ("pad_fim", "rep", "sep_fim") if special[s] is not None}
        for t in EOG_NAMES:
            if t in self.ids:
                eog.add(self.ids[t])
                self.attrs[self.ids[t]] |= CONTROL
        for t in _ALWAYS_USER_DEFINED:
            if t in self.ids:
                self.attrs[self.ids[t]] = USER_DEFINED
        eog |= {special[s] for s in ("eos", "eot", "eom") if special[s] is not None}
        by_text = {texts[i]: i for i in eog}
        if {"<|return|>", "<|call|>", "<|end|>"} <= by_text.keys() or \
                {"<|calls|>", "<|flush|>", "<|end|>"} <= by_text.keys():
            eog.discard(by_text["<|end|>"])          # harmony / solar-open: <|end|> is no EOG
            self.attrs[by_text["<|end|>"]] = USER_DEFINED
        if {"<|tool_response>", "</s>"} <= by_text.keys():
            eog.discard(by_text["</s>"])              # gemma4 / paddleocr
            self.attrs[by_text["</s>"]] = NORMAL
        self.special = special
        self.eog_ids = eog

        # special-token text for partition: control, user-defined and unknown tokens,
        # longest first (ties by id: llama.cpp's std::sort leaves them unspecified)
        special_mask = CONTROL | USER_DEFINED | UNKNOWN
        cand = np.flatnonzero(np.asarray(self.attrs) & special_mask).tolist()
        cand.sort(key=lambda i: (-len(texts[i].encode("utf-8", "surrogateescape")), i))
        self._strip_fixups(metadata, cand)
        self._specials = [(texts[i], i, bool(self.attrs[i] & USER_DEFINED)
                           and not self.attrs[i] & (CONTROL | UNKNOWN)) for i in cand]
        self._special_first = {t[0] for t, _, _ in self._specials}
        self._pieces: list = [None] * n
        self._make_piece = functools.partial(piece, self)

    def _strip_fixups(self, metadata: dict, special_ids: list[int]):
        """llama.cpp's per-model whitespace stripping around special tokens, by name."""
        name = str(metadata.get("general.name", "")).lower()
        pre = str(metadata.get("tokenizer.ggml.pre", ""))
        arch = str(metadata.get("general.architecture", ""))

        def mark(text, bit, on=True):
            i = self.ids.get(text)
            if i is not None:
                self.attrs[i] = self.attrs[i] | bit if on else self.attrs[i] & ~bit

        if any(p in pre for p in ("jina-v2-de", "jina-v2-es", "jina-v2-code")) or \
                any(a in arch for a in ("nomic-bert-moe", "jina-bert-v3")):
            mark("<mask>", LSTRIP)
        elif "phi-3" in name or "phi3" in name:
            for i in special_ids:
                self.attrs[i] |= RSTRIP
            mark("</s>", RSTRIP)
            for t in ("<unk>", "<s>", "<|endoftext|>"):
                mark(t, RSTRIP, on=False)
        elif "modern-bert" in name:
            mark("[MASK]", LSTRIP)

    # -- special-token partition ---------------------------------------------------------

    def partition(self, text: str, parse_special: bool, user_defined: bool = True) -> list:
        """Split `text` on special-token text, as llama.cpp's tokenizer_st_partition: each
        special token in turn (longest first) splits every remaining text fragment at all its
        occurrences. Control/unknown tokens count only with `parse_special`; user-defined
        tokens unless `user_defined` is False. Returns str fragments and int token ids, in
        order."""
        if not text:
            return []
        frags: list = [text]
        if not self._special_first.intersection(text):
            return frags
        for tok_text, tid, is_user_defined in self._specials:
            if not (user_defined if is_user_defined else parse_special) or tok_text not in text:
                continue
            out = []
            for f in frags:
                if isinstance(f, int) or tok_text not in f:
                    out.append(f)
                    continue
                parts = f.split(tok_text)
                attr = self.attrs[tid]
                for k, part in enumerate(parts):
                    if k:
                        out.append(tid)
                    if attr & LSTRIP and k + 1 < len(parts):
                        part = part.rstrip(" \t\n\v\f\r")
                    if attr & RSTRIP and k:
                        part = part.lstrip(" \t\n\v\f\r")
                    if part:
                        out.append(part)
            frags = out
        return frags

    # -- pieces and detokenize ------------------------------------------------------------

    def piece(self, i: int) -> bytes:
        """llama_token_to_piece(i, special=True), cached."""
        p = self._pieces[i]
        if p is None:
            p = self._pieces[i] = self._make_piece(i)
        return p

    def detokenize(self, ids, remove_special: bool, unparse_special: bool) -> bytes:
        """llama_detokenize: pieces joined, the leading space of an SPM text removed, BOS/EOS
        stripped with `remove_special`, control tokens empty unless `unparse_special`."""
        ids = list(ids)
        remove_space = self.add_space_prefix
        if remove_special and self.add_bos and ids and ids[0] == self.special["bos"]:
            remove_space = False
            ids = ids[1:]
        if remove_special and self.add_eos and ids and ids[-1] == self.special["eos"]:
            ids = ids[:-1]
        out = []
        for i in ids:
            if not unparse_special and self.attrs[i] & (CONTROL | UNKNOWN):
                p = b""
            else:
                p = self.piece(i)
                if remove_space and p.startswith(b" "):
                    p = p[1:]
            remove_space = False
            out.append(p)
        text = b"".join(out)
        return clean_spaces(text) if self.clean_spaces else text


def clean_spaces(text: bytes) -> bytes:
    """llama.cpp's clean_up_tokenization_spaces, three in-place passes over the bytes:
    " ?", " !", " .", " ," lose the space; " ' " loses both spaces; " 's", " 'm", " 're",
    " 've" lose the space."""
    t = bytearray(text)
    # pass 1
    total, n = (1 if t else 0), len(t)
    for i in range(1, n):
        x = t[i]
        if t[i - 1] == 0x20 and x in b"?!.,":
            total -= 1
        t[total] = x
        total += 1
    # pass 2
    n, total, i = total, (1 if total else 0), 1
    while i < n:
        x = t[i]
        if x == 0x27 and i + 1 < n and t[i - 1] == 0x20 and t[i + 1] == 0x20:
            total -= 1
            i += 1
            t[i] = 0
        t[total] = x
        total += 1
        i += 1
    # pass 3
    n, total = total, (1 if total else 0)
    for i in range(1, n):
        x = t[i]
        if t[i - 1] == 0x20 and x == 0x27 and i + 1 < n:
            x1 = t[i + 1]
            if x1 in b"sm":
                total -= 1
            elif i + 2 < n and (x1, t[i + 2]) in ((0x72, 0x65), (0x76, 0x65)):  # 're, 've
                total -= 1
        t[total] = x
        total += 1
    return bytes(t[:total])
