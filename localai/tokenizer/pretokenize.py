"""BPE pre-tokenizers: llama.cpp's regex splits (`unicode_regex_split`) keyed by
`tokenizer.ggml.pre`.

Each pre-tokenizer is a list of regexes applied in turn: every regex splits every word the
previous one left, and the text between matches is kept as words too. llama.cpp runs them
in one of three ways, and so do we, with its Unicode 15.1 classes (unicode_data.py):
* the GPT-2, LLaMA-3, Qwen2 and Qwen3.5 regexes have hand-written splitters in llama.cpp
  that follow the regex; we run the regex with \\p{L}, \\p{N}, \\p{M} and \\s spelled out as
  those classes;
* other regexes that use \\p{..} run in std::regex on a "collapsed" text where every
  non-ASCII code point becomes one byte standing for its class (letter 0xD2, number 0xD1,
  ...; non-ASCII whitespace 0x0B); we collapse the same way and run Python's `re` with
  ASCII classes, which agrees with std::regex's ECMAScript grammar on these patterns;
* regexes without \\p{..} run on the text with non-ASCII whitespace turned into 0x0B.
"""
from __future__ import annotations

import bisect
import functools
import re

from .unicode_data import RANGES, WHITESPACE

GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
LLAMA3 = (r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+"
          r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2 = (r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+"
         r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
# Qwen 3.5: marks (\p{M}) join letters
QWEN35 = (r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?"
          r"[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
# Gemma 4 (SentencePiece-style BPE): only runs of newlines are split off
NEWLINES = "[^\n]+|[\n]+"
# a literal class from deepseek's tokenizer.json (cased letters), spelled as code points:
# several of its characters (U+1F7D, U+1FBE, U+2126, U+212A, ...) change under NFC
DEEPSEEK_LLM_LETTERS = (
    "["
    "A-Za-z\u00b5\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u01ba\u01bc-\u01bf\u01c4-\u0293"
    "\u0295-\u02af\u0370-\u0373\u0376\u0377\u037b-\u037d\u037f\u0386\u0388-\u038a"
    "\u038c\u038e-\u03a1\u03a3-\u03f5\u03f7-\u0481\u048a-\u052f\u0531-\u0556\u10a0-"
    "\u10c5\u13a0-\u13f5\u13f8-\u13fd\u1c90-\u1cba\u1cbd-\u1cbf\u1d00-\u1d2b\u1d6b-"
    "\u1d77\u1d79-\u1d9a\u1e00-\u1f15\u1f18-\u1f1d\u1f20-\u1f45\u1f48-\u1f4d\u1f50-"
    "\u1f57\u1f59\u1f5b\u1f5d\u1f5f-\u1f7d\u1f80-\u1fb4\u1fb6-\u1fbc\u1fbe\u1fc2-"
    "\u1fc4\u1fc6-\u1fcc\u1fd0-\u1fd3\u1fd6-\u1fdb\u1fe0-\u1fec\u1ff2-\u1ff4\u1ff6-"
    "\u1ffc\u2102\u2107\u210a-\u2113\u2115\u2119-\u211d\u2124\u2126\u2128\u212a-"
    "\u212d\u212f-\u2134\u2139\u213c-\u213f\u2145-\u2149\u214e\u2183\u2184\u2c00-"
    "\u2c7b\u2c7e-\u2ce4\u2ceb-\u2cee\u2cf2\u2cf3\ua640-\ua66d\ua680-\ua69b\ua722-"
    "\ua76f\ua771-\ua787\ua78b-\ua78e\uab70-\uabbf\ufb00-\ufb06\ufb13-\ufb17\uff21-"
    "\uff3a\uff41-\uff5a\U00010400-\U0001044f\U000104b0-\U000104d3\U000104d8-"
    "\U000104fb\U00010c80-\U00010cb2\U00010cc0-\U00010cf2\U000118a0-\U000118df"
    "\U0001e900-\U0001e943"
    "]+")
# CJK ideographs, U+0800..U+4E00, Hangul (deepseek)
CJK_HANGUL = "[\u4e00-\u9fa5\u0800-\u4e00\uac00-\ud7ff]+"

# tokenizer.ggml.pre -> pre-tokenizer (llama.cpp's llm_tokenizer_bpe table)
PRE_REGEXES = {
    "default": [r"[\p{P}\$\+<=>\^~\|]+", GPT2, r"\p{N}+", "[0-9][0-9][0-9]"],
    "llama3": [LLAMA3],
    "dbrx": [LLAMA3],
    "smaug": [LLAMA3],
    "chatglm4": [LLAMA3],
    "gpt2": [GPT2],
    "starcoder": [r"\p{N}", GPT2],
    "falcon": [r"[\p{P}\$\+<=>\^~\|`]+", GPT2, "[0-9][0-9][0-9]"],
    "qwen2": [QWEN2],
    "qwen35": [QWEN35],
    "gemma4": [NEWLINES],
    "deepseek-llm": ["[\r\n]", "\\s?" + DEEPSEEK_LLM_LETTERS,
                     "\\s?[!-/:-~\uff01-\uff0f\uff1a-\uff5e\u2018-\u201f\u3000-\u3002]+",
                     "\\s+$", CJK_HANGUL, r"\p{N}+"],
    "deepseek-coder": ["[\r\n]", r"\s?\p{L}+", r"\s?\p{P}+", CJK_HANGUL, r"\p{N}"],
    "bloom": [" ?[^(\\s|.,!?…。，、।۔،)]+"],
    "viking": [" ?[^(\\s|.,!?…。，、।۔،)]+", r"\p{N}"],
}
# pre name in the GGUF -> (regex set, llama.cpp's flags for it)
_LLAMA3 = ("llama3", {"ignore_merges": True, "add_bos": True})
PRE_TYPES = {
    "default": ("default", {}),
    **{name: _LLAMA3 for name in ("llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1",
                                  "pixtral", "midm-2.0", "lfm2")},
    "dbrx": ("dbrx", {}),
    "smaug-bpe": ("smaug", {}),
    "glm4": ("chatglm4", {"default_bos": None}),
    "chatglm-bpe": ("chatglm4", {"default_bos": None}),
    "deepseek-llm": ("deepseek-llm", {"clean_spaces": False}),
    "deepseek-coder": ("deepseek-coder", {"clean_spaces": False}),
    "falcon": ("falcon", {}),
    **{name: ("gpt2", {}) for name in ("gpt-2", "phi-2", "jina-es", "jina-de", "gigachat",
                                       "jina-v2-es", "jina-v2-de", "a.x-4.0", "mellum",
                                       "mpt", "olmo", "jais", "exaone4", "roberta-bpe",
                                       "jina-v1-en", "jina-v2-code")},
    "trillion": ("gpt2", {"clean_spaces": False}),
    "granite-docling": ("gpt2", {"clean_spaces": False}),
    **{name: ("starcoder", {}) for name in ("starcoder", "refact", "codeshell", "exaone",
                                            "minerva-7b")},
    "command-r": ("starcoder", {"clean_spaces": False}),
    "smollm": ("starcoder", {"clean_spaces": False}),
    **{name: ("qwen2", {"clean_spaces": False}) for name in ("qwen2", "deepseek-r1-qwen",
                                                             "kormo", "f2llmv2")},
    "megrez": ("qwen2", {}),
    "stablelm2": ("qwen2", {}),
    "qwen35": ("qwen35", {"clean_spaces": False}),
    # SentencePiece-style BPE: spaces become "▁" before the merges, words stay raw UTF-8
    # (no GPT-2 byte alphabet), byte fallback through <0xXX> tokens; BOS always added
    **{name: ("gemma4", {"escape_whitespaces": True, "byte_encode": False, "force_bos": True,
                         "newline_words": True})
       for name in ("gemma4", "granite-embed-multi-311m")},
    "sarvam-moe": ("gemma4", {"escape_whitespaces": True, "byte_encode": False,
                              "clean_spaces": False}),
    "poro-chat": ("bloom", {"clean_spaces": False}),
    "bloom": ("bloom", {}),
    "gpt3-finnish": ("bloom", {}),
    "viking": ("viking", {"clean_spaces": False}),
}


def pre_type(name: str | None) -> tuple[list[str], dict]:
    """The regexes and flags for a `tokenizer.ggml.pre` value; unknown -> llama.cpp's default
    (llama.cpp itself refuses unknown names; we tokenize, with degraded quality)."""
    regexes, flags = PRE_TYPES.get(name or "default", PRE_TYPES["default"])
    return PRE_REGEXES[regexes], {"clean_spaces": True, "ignore_merges": False,
                                  "byte_encode": True, "escape_whitespaces": False,
                                  "force_bos": False, "newline_words": False, **flags}


# -- Unicode classes ---------------------------------------------------------------------

_ENTRIES = [(int(e[:-1], 16), e[-1]) for e in RANGES.split()]
_STARTS = [cp for cp, _ in _ENTRIES]


@functools.lru_cache(maxsize=1 << 16)
def char_class(ch: str) -> str:
    """"W" for whitespace, else the class letter: N L P M S Z, C for anything else."""
    cp = ord(ch)
    if cp in WHITESPACE:
        return "W"
    return _ENTRIES[bisect.bisect_right(_STARTS, cp) - 1][1]


def _esc(cp: int) -> str:
    return f"\\u{cp:04x}" if cp < 0x10000 else f"\\U{cp:08x}"


def _class_body(cls: str) -> str:
    """The members of a class as the inside of a regex [...]."""
    ends = _STARTS[1:] + [0x110000]
    cps = sorted(WHITESPACE) if cls == "W" else None
    if cps is not None:
        return "".join(_esc(c) for c in cps)
    return "".join(_esc(a) if b - a == 1 else f"{_esc(a)}-{_esc(b - 1)}"
                   for (a, c), b in zip(_ENTRIES, ends) if c == cls)


@functools.lru_cache(maxsize=None)
def _exact_regex(expr: str) -> str:
    """A GPT-2/LLaMA-3 style regex with \\p{L}, \\p{N}, \\s, \\S spelled out as llama.cpp's
    classes."""
    ws = _class_body("W")
    body = {"\\p{L}": _class_body("L"), "\\p{N}": _class_body("N"), "\\p{M}": _class_body("M"),
            "\\s": ws}
    out, inside, i = [], False, 0
    while i < len(expr):
        tok = next((t for t in (*body, "\\S") if expr.startswith(t, i)), None)
        if tok == "\\S":
            assert not inside
            out.append(f"[^{ws}]")
        elif tok:
            out.append(body[tok] if inside else f"[{body[tok]}]")
        else:
            c = expr[i]
            if c == "\\":
                out.append(expr[i:i + 2])
                i += 2
                continue
            inside = (c == "[") or (inside and c != "]")
            out.append(c)
            i += 1
            continue
        i += len(tok)
    return "".join(out)


# -- the three ways of running one regex -------------------------------------------------

_CATEGORIES = ("N", "L", "P", "M", "S", "Lu", "Ll", "Lt", "Lm", "Lo")
# collapsed class byte and the ASCII members of each class (llama.cpp's k_ucat_cpt/k_ucat_map)
_CLASS = {"N": "\xd10-9", "L": "\xd2A-Za-z", "P": "\xd3!-#%-*,-/:-;?-@\\[-\\]_\\{\\}",
          "M": "\xd4", "S": "\xd5\\$\\+<->\\^`\\|"}
_CLASS.update({c: _CLASS["L"] for c in ("Lu", "Ll", "Lt", "Lm", "Lo")})
_COLLAPSED = {"W": "\x0b", "N": "\xd1", "L": "\xd2", "P": "\xd3", "M": "\xd4", "S": "\xd5"}


def _collapse_char(ch: str) -> str:
    return _COLLAPSED.get(char_class(ch), "\xd0")


def _ws_char(ch: str) -> str:
    return "\x0b" if ord(ch) in WHITESPACE else ch


def _table(text: str, fn) -> dict:
    return {ord(c): fn(c) for c in set(text) if c > "\x7f"}


def _collapse_regex(expr: str) -> str:
    """llama.cpp's rewrite of \\p{X} into the collapsed class, bracketed unless inside [...]."""
    out, inside, i = [], False, 0
    while i < len(expr):
        c = expr[i]
        if c == "[" and (i == 0 or expr[i - 1] != "\\"):
            inside = True
        elif inside and c == "]" and expr[i - 1] != "\\":
            inside = False
        elif expr.startswith("\\p{", i):
            end = expr.find("}", i + 3)
            if end != -1 and expr[i + 3:end] in _CLASS:
                cls = _CLASS[expr[i + 3:end]]
                out.append(cls if inside else f"[{cls}]")
                i = end + 1
                continue
        out.append(c)
        i += 1
    return "".join(out)


def _spans(pattern, text: str) -> list[str]:
    """Matches and the gaps between them, in order (llama.cpp's unicode_regex_split_stl)."""
    words, start = [], 0
    for m in pattern.finditer(text):
        a, b = m.span()
        if a > start:
            words.append(text[start:a])
        if b > a:
            words.append(text[a:b])
        start = b
    if start < len(text):
        words.append(text[start:])
    return words


# regexes llama.cpp runs with hand-written splitters (unicode_regex_split_custom) over the
# full Unicode classes, which the spelled-out regex reproduces
_HAND_WRITTEN = (GPT2, LLAMA3, QWEN2, QWEN35)


@functools.lru_cache(maxsize=None)
def _splitter(expr: str):
    """word -> list of words, for one regex."""
    if expr in _HAND_WRITTEN:
        # llama.cpp's hand-written GPT-2 splitter also takes a lone whitespace run
        pattern = re.compile(_exact_regex(expr if expr != GPT2 else expr + r"|\s+"))
        return lambda word: _spans(pattern, word)
    # ECMAScript `$` is end of input only
    expr_py = expr[:-1] + r"\Z" if expr.endswith("$") and not expr.endswith("\\$") else expr
    if any(f"\\p{{{c}}}" in expr for c in _CATEGORIES):
        pattern, to_char = re.compile(_collapse_regex(expr_py), re.ASCII), _collapse_char
    else:
        pattern, to_char = re.compile(expr_py, re.ASCII), _ws_char

    def split_mapped(word):
        mapped = word.translate(_table(word, to_char))   # one char per code point, as word
        out, pos = [], 0
        for piece in _spans(pattern, mapped):
            out.append(word[pos:pos + len(piece)])
            pos += len(piece)
        return out
    return split_mapped


def split(text: str, regexes: list[str]) -> list[str]:
    """Pre-tokenize `text` into words (unicode_regex_split, before byte encoding)."""
    words = [text]
    for expr in regexes:
        fn = _splitter(expr)
        words = [w for word in words for w in fn(word)]
    return words
