"""Tokenizers against llama.cpp: the reference files of both real models, plus tiny
vocabularies whose expected ids were produced by llama.cpp (commit 0c1e570, through
llama-cpp-python 0.3.36, vocab-only GGUFs with exactly these tokens)."""
from __future__ import annotations

import random

import pytest

from conftest import reference
from localai.errors import UnsupportedModel
from localai.gguf_file import GGUFFile
from localai.tokenizer import StreamDecoder, from_gguf
from localai.tokenizer.bpe import BYTE_TO_CHAR
from localai.tokenizer.pretokenize import PRE_TYPES, pre_type, split
from localai.tokenizer.vocab import clean_spaces

MODELS = ["smollm2", "gemma3"]


@pytest.fixture(scope="module")
def gguf(smollm2_path, gemma3_path):
    return {"smollm2": GGUFFile(smollm2_path), "gemma3": GGUFFile(gemma3_path)}


@pytest.fixture(scope="module")
def tok(gguf):
    return {name: from_gguf(g) for name, g in gguf.items()}


def items(model):
    return reference(model, "tokenization")["items"]


# -- the reference files ------------------------------------------------------------------

@pytest.mark.parametrize("model", MODELS)
def test_reference_ids(tok, model):
    t = tok[model]
    for it in items(model):
        text = it["text"]
        assert t.encode(text, add_bos=False) == it["ids_plain"], it["id"]
        assert t.encode(text, add_bos=False, special=True) == it["ids_parse_special"], it["id"]
        assert t.encode(text, special=True) == it["ids_add_special_parse_special"], it["id"]


@pytest.mark.parametrize("model", MODELS)
def test_reference_pieces_and_detok(tok, model):
    t = tok[model]
    for it in items(model):
        ids, ids_bos = it["ids_parse_special"], it["ids_add_special_parse_special"]
        assert [t.token_bytes(i).hex() for i in ids] == it["pieces_parse_special_hex"], it["id"]
        assert t.decode(it["ids_plain"]) == it["detok_plain_unparse_special"], it["id"]
        assert t.decode(ids) == it["detok_parse_special_unparse_special"], it["id"]
        assert t.decode(ids, render_special=False) == it["detok_parse_special_no_unparse"], it["id"]
        assert t.decode(ids_bos, skip_special=True) == it["detok_add_special_remove_special"], it["id"]
        assert t.decode(it["ids_plain"]) == it["text"]          # all round trips are exact


def test_special_ids(tok):
    s, g = tok["smollm2"], tok["gemma3"]
    assert (s.n_vocab, s.bos_id, s.eos_id, s.eot_id, s.add_bos) == (49152, 1, 2, 0, False)
    assert s.eog_ids == {0, 2, 4}                # 4 = <reponame>, EOG as llama.cpp's FIM repo token
    assert s.fim == {"rep": 4}
    assert (g.n_vocab, g.bos_id, g.eos_id, g.eot_id, g.add_bos) == (262144, 2, 1, 106, True)
    assert g.eog_ids == {1, 106, 212}            # 212 = </s>, re-typed to control
    assert g.fim == {}
    assert s.token_to_id("<|im_start|>") == 1 and s.token_to_id("no such token") is None
    assert g.token_text(106) == "<end_of_turn>"


def test_quirks(tok):
    s, g = tok["smollm2"], tok["gemma3"]
    assert s.encode("\x1d") == [] and s.encode("a\x04b") == s.encode("a") + s.encode("b")
    # Gemma: user-defined tokens match whole even without special parsing; </s> does not
    assert g.encode("<table>", add_bos=False) == [168]
    assert g.encode("</s>", add_bos=False) != [212]
    assert g.encode("</s>", add_bos=False, special=True) == [212]
    assert g.encode("<bos>Hi", special=True)[:2] == [2, 2]          # llama.cpp only warns


# -- streaming ------------------------------------------------------------------------------

def stream(t, ids, **kw):
    dec = StreamDecoder(t, **kw)
    parts = [dec.push(i) for i in ids]
    return parts, "".join(parts) + dec.flush()


@pytest.mark.parametrize("model", MODELS)
def test_stream_equals_decode(tok, model):
    t = tok[model]
    for it in items(model):
        for ids in (it["ids_plain"], it["ids_add_special_parse_special"]):
            for kw in ({}, {"skip_special": True}, {"render_special": False}):
                assert stream(t, ids, **kw)[1] == t.decode(ids, **kw), it["id"]


@pytest.mark.parametrize("model", MODELS)
def test_stream_never_splits_a_character(tok, model):
    t = tok[model]
    text = "😀🎉👍🏽 你好，世界 👨\u200d👩\u200d👧 ñ \U0002a6d6\U00010348"  # last two: byte tokens
    ids = t.encode(text, add_bos=False)
    parts, whole = stream(t, ids)
    assert whole == text
    assert any(p == "" for p in parts)            # some emoji span several byte tokens
    for p in parts:
        assert "\ufffd" not in p
        p.encode("utf-8")                         # no lone surrogates either


# -- tiny vocabularies, expected outputs from llama.cpp -------------------------------------

def tiny_spm_metadata():
    toks = [("<unk>", 0.0, 2), ("<s>", 0.0, 3), ("</s>", 0.0, 3)]
    toks += [(f"<0x{b:02X}>", 0.0, 6) for b in range(256)]
    toks += [("▁", -1.0, 1), ("a", -2.0, 1), ("b", -2.0, 1), ("c", -2.0, 1), ("ab", -3.0, 1),
             ("bc", -2.5, 1), ("abc", -4.0, 3), ("▁a", -1.5, 1), ("▁ab", -3.5, 1), ("<x>", 0.0, 4),
             ("xy", -1.0, 5), ("x", -5.0, 1), ("y", -5.0, 1), ("ca", -2.0, 1), ("aa", -2.0, 1),
             ("é", -3.0, 1), ("▁▁", -0.5, 1), ("<", -6.0, 1), (">", -6.0, 1), ("<0", -7.0, 1),
             ("x4", -7.0, 1), ("<0x4", -7.5, 1), ("1>", -7.0, 1)]
    import numpy as np
    return {
        "tokenizer.ggml.model": "llama",
        "tokenizer.ggml.tokens": [t for t, _, _ in toks],
        "tokenizer.ggml.scores": np.array([s for _, s, _ in toks], np.float32),
        "tokenizer.ggml.token_type": np.array([y for _, _, y in toks], np.int32),
        "tokenizer.ggml.bos_token_id": 1, "tokenizer.ggml.eos_token_id": 2,
        "tokenizer.ggml.unknown_token_id": 0, "tokenizer.ggml.add_space_prefix": True,
    }


# text, ids (plain), ids (add_special, parse_special), detok of those, detok with
# remove_special and without unparse_special
TINY_SPM = [
    ("abc", [266, 264], [1, 265], "<s>abc", ""),                 # "abc" is a control token
    ("ab c", [267, 259, 262], [1, 267, 259, 262], "<s> ab c", " ab c"),
    ("  a", [275, 266], [1, 275, 266], "<s>   a", "   a"),
    ("<x>abc", [268, 266, 264], [1, 268, 265], "<s><x>abc", "<x>"),  # user-defined always whole
    ("abcabc", [267, 272, 264], [1, 265, 265], "<s>abcabc", ""),
    ("<0x41>", [259, 68], [1, 259, 68], "<s> A", " A"),           # merges into a byte token
    ("xy", [259, 269], [1, 259, 269], "<s> ", " "),               # unused token renders empty
    ("e\u0301", [259, 104, 207, 132], [1, 259, 104, 207, 132], "<s> e\u0301", " e\u0301"),
    ("</s>a", [259, 276, 50, 118, 277, 260], [1, 2, 266], "<s></s> a", " a"),
    ("z\n", [259, 125, 13], [1, 259, 125, 13], "<s> z\n", " z\n"),
    ("😀", [259, 243, 162, 155, 131], [1, 259, 243, 162, 155, 131], "<s> 😀", " 😀"),
]


@pytest.mark.parametrize("text,plain,special,detok,detok_clean", TINY_SPM)
def test_tiny_spm(text, plain, special, detok, detok_clean):
    t = from_gguf(tiny_spm_metadata())
    assert t.kind == "spm"
    assert t.encode(text, add_bos=False) == plain
    assert t.encode(text, special=True) == special
    assert t.decode(special) == detok
    assert t.decode(special, skip_special=True, render_special=False) == detok_clean
    assert stream(t, special)[1] == detok


def tiny_bpe_metadata(pre):
    toks = [("<|endoftext|>", 3), ("<|im_start|>", 3), ("<|im_end|>", 3)]
    toks += [(BYTE_TO_CHAR[b], 1) for b in range(256) if b not in (0x04, ord("z"))]
    toks += [(w, 1) for w in ("Ġt", "he", "Ġthe", "in", "ing", "Ġw", "or", "ld", "Ġwor", "Ġworld",
                              "ll", "ell", "ello", "hello", "ĠĠ", "12", "'s", "Ġhello")]
    merges = ["Ġ t", "h e", "Ġt he", "i n", "in g", "Ġ w", "o r", "l d", "Ġw or", "Ġwor ld", "l l",
              "e ll", "ell o", "h ello", "x y", "Ġ Ġ", "1 2", "' s"]
    return {
        "tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": pre,
        "tokenizer.ggml.tokens": [t for t, _ in toks],
        "tokenizer.ggml.token_type": [y for _, y in toks],
        "tokenizer.ggml.merges": merges,
        "tokenizer.ggml.bos_token_id": 1, "tokenizer.ggml.eos_token_id": 2,
        "tokenizer.ggml.add_bos_token": False,
    }


TINY_BPE = {  # pre -> [(text, ids, detok)]
    "gpt-2": [
        (" hello world", [34, 258, 267, 113, 266], " hello world"),   # merges by rank
        ("xyz\x04", [122, 123], "xy"),       # "xy" is no token: bytes; z, 0x04 have none: dropped
        ("12 123 1234", [272, 34, 272, 53, 34, 272, 53, 54], "12 123 1234"),
        ("he's", [258, 273], "he's"),
        ("a , b . c 's", [99, 34, 46, 34, 100, 34, 48, 34, 101, 34, 41, 117], "a, b. c's"),
        (" \n  x", [34, 12, 34, 34, 122], " \n  x"),
    ],
    "llama-bpe": [
        (" hello world", [274, 266], " hello world"),   # ignore_merges: whole-word tokens first
        ("hello", [270], "hello"),
        (" the thing", [259, 257, 106, 261], " the thing"),
        ("a , b . c 's", [99, 34, 46, 34, 100, 34, 48, 34, 101, 34, 41, 117], "a, b. c's"),
    ],
}


@pytest.mark.parametrize("pre", sorted(TINY_BPE))
def test_tiny_bpe(pre):
    t = from_gguf(tiny_bpe_metadata(pre))
    assert t.kind == "bpe"
    for text, ids, detok in TINY_BPE[pre]:
        assert t.encode(text) == ids, text
        assert t.decode(ids) == detok, text
        assert stream(t, ids)[1] == detok, text


def test_stream_clean_spaces_random():
    """clean_spaces (" ," -> ",", " 's" -> "'s") looks at neighbouring tokens; the stream
    must still equal decode for any id sequence."""
    t = from_gguf(tiny_bpe_metadata("gpt-2"))
    ids = [t.token_to_id(c) for c in (" ", "'", ",", ".", "?", "s", "m", "r", "e", "v", "a", "Ġ")
           if t.token_to_id(c) is not None] + [34, 273, 0, 1]
    rng = random.Random(0)
    for _ in range(400):
        seq = [rng.choice(ids) for _ in range(rng.randint(0, 16))]
        for kw in ({}, {"render_special": False}):
            assert stream(t, seq, **kw)[1] == t.decode(seq, **kw), seq


def test_clean_spaces():
    assert clean_spaces(b"a , b ? c ' d 's 'm 're 've 't 'll x") == b"a, b? c'd's'm're've 't 'll x"
    assert clean_spaces(b"") == b"" and clean_spaces(b" ") == b" "


# -- pre-tokenizers and the registry ---------------------------------------------------------

def test_pre_tokenizers_table():
    text = "Hello, I'm 12345 apples\u00a0&\tCafé 你好 \r\n  x's ½ !!"
    for name in PRE_TYPES:
        regexes, _ = pre_type(name)
        assert "".join(split(text, regexes)) == text, name
    assert pre_type("no-such-pre") == pre_type("default")
    assert split("I'm 12345", pre_type("smollm")[0]) == ["I", "'m", " ", "1", "2", "3", "4", "5"]
    assert split("I'm 12345", pre_type("llama-bpe")[0]) == ["I", "'m", " ", "123", "45"]


def test_unknown_pre_falls_back(gguf):
    meta = dict(gguf["smollm2"].metadata, **{"tokenizer.ggml.pre": "no-such-pre"})
    assert from_gguf(meta).encode("Hello, world!")


def test_unknown_model_is_refused():
    with pytest.raises(UnsupportedModel, match="tokenizer 'bert'"):
        from_gguf({"tokenizer.ggml.model": "bert", "tokenizer.ggml.tokens": ["a"]})


# -- an independent encoder: the sentencepiece library ----------------------------------------

def test_sentencepiece_agrees_on_plain_text(gguf, tok):
    """On text without runs of spaces (which llama.cpp matches to Gemma's user-defined
    tokens before escaping them) and without special-token text, SentencePiece's own BPE
    encoder built from the same vocabulary gives llama.cpp's ids."""
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2 as pb

    meta = gguf["gemma3"].metadata
    proto = pb.ModelProto()
    for text, score, kind in zip(meta["tokenizer.ggml.tokens"], meta["tokenizer.ggml.scores"].tolist(),
                                 meta["tokenizer.ggml.token_type"].tolist()):
        p = proto.pieces.add()
        p.piece, p.score, p.type = text, score, kind
    proto.trainer_spec.model_type = pb.TrainerSpec.BPE
    proto.trainer_spec.byte_fallback = True
    proto.trainer_spec.unk_id, proto.trainer_spec.bos_id = 3, 2
    proto.trainer_spec.eos_id, proto.trainer_spec.pad_id = 1, 0
    norm = proto.normalizer_spec
    norm.name, norm.add_dummy_prefix, norm.remove_extra_whitespaces = "identity", False, False
    sp = spm.SentencePieceProcessor(model_proto=proto.SerializeToString())
    texts = [it["text"] for it in items("gemma3") if "  " not in it["text"] and "<" not in it["text"]]
    texts += ["Il était une fois, dans un pays lointain…", "def f(x):\n\treturn x ** 2\n"]
    for text in texts:
        assert tok["gemma3"].encode(text, add_bos=False) == sp.encode(text), text


# -- long text ---------------------------------------------------------------------------------
# (Load and encode speed are measured in benchmarks/tokenizer.py, not asserted here.)

def english(n):
    words = ("the quick brown fox jumps over lazy dogs while seven wizards quietly judge "
             "boxing matches in Paris, London and New York; prices rose 12.5% in 2024").split()
    rng = random.Random(1)
    out = []
    while sum(map(len, out)) + len(out) < n:
        out.append(rng.choice(words) + rng.choice(["", "", "", ",", ".", "'s"]))
    return " ".join(out)[:n]


@pytest.mark.parametrize("model", MODELS)
def test_long_text_round_trip(gguf, model):
    t = from_gguf(gguf[model])
    text = english(10_000)
    ids = t.encode(text, add_bos=False)
    assert len(ids) > 1000 and t.decode(ids) == text
