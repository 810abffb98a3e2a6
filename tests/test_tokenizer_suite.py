"""llama.cpp's own tokenizer suite (tests/test-tokenizer-0.cpp) run against localai.

Each `models/ggml-vocab-<name>.gguf` in llama.cpp is a vocabulary-only GGUF with
`.gguf.inp` (input texts joined by "\\n__ggml_vocab_test__\\n") and `.gguf.out` (one line of
space-separated ids per text), made by llama.cpp's tests/test-tokenizer-0.py from the
Hugging Face tokenizers. test-tokenizer-0.cpp tokenizes each text with add_special=false,
parse_special=false and compares the ids; we do the same (tests/llama_cpp_sdist.py fetches
the files). Every vocabulary passes except `bert-bge`: WPM (BERT embedding models), which
localai does not read and refuses with one line.
"""
from __future__ import annotations

import pytest

from localai import tokenizer
from localai.errors import UnsupportedModel
from localai.gguf_file import GGUFFile

SEP = "\n__ggml_vocab_test__\n"
# every vocabulary with test cases in the pinned sdist, by tokenizer kind
VOCABS = {
    "command-r": "bpe", "deepseek-coder": "bpe", "deepseek-llm": "bpe", "falcon": "bpe",
    "gemma-4": "bpe", "gpt-2": "bpe", "llama-bpe": "bpe", "llama-spm": "spm", "mpt": "bpe",
    "phi-3": "spm", "qwen2": "bpe", "qwen35": "bpe", "refact": "bpe", "starcoder": "bpe",
}
WPM = ("bert-bge",)


def read_cases(models, name: str) -> dict[str, list[int]]:
    """text -> expected ids, exactly as test-tokenizer-0.cpp's read_tests: the .inp split on
    SEP (a trailing SEP ends the last text), the .out lines stripped and split on spaces;
    a repeated text keeps its last ids (it is a std::map)."""
    base = models / f"ggml-vocab-{name}.gguf"
    raw = base.with_name(base.name + ".inp").read_bytes().decode("utf-8")
    texts = raw.split(SEP)
    if raw.endswith(SEP):
        texts.pop()
    lines = base.with_name(base.name + ".out").read_text(encoding="utf-8").split("\n")
    if lines and lines[-1] == "":
        lines.pop()                            # getline: no line after the final newline
    assert len(texts) == len(lines), f"{name}: .inp and .out differ in number of tests"
    return {t: [int(x) for x in line.strip().split()] for t, line in zip(texts, lines)}


def test_suite_lists_every_vocabulary(llama_cpp_models):
    names = {p.name[len("ggml-vocab-"):-len(".gguf.inp")]
             for p in llama_cpp_models.glob("ggml-vocab-*.gguf.inp")}
    assert names == set(VOCABS) | set(WPM)


@pytest.mark.parametrize("name", sorted(VOCABS))
def test_llama_cpp_tokenizer_suite(llama_cpp_models, name):
    tok = tokenizer.from_gguf(GGUFFile(llama_cpp_models / f"ggml-vocab-{name}.gguf"))
    assert tok.kind == VOCABS[name]
    cases = read_cases(llama_cpp_models, name)
    assert len(cases) >= 40
    failed = []
    for text, want in cases.items():
        got = tok.encode(text, add_bos=False, add_eos=False, special=False)
        if got != want:
            failed.append(f"{text[:60]!r}: want {want[:16]} got {got[:16]}")
    assert not failed, f"{name}: {len(failed)}/{len(cases)} cases differ:\n" + "\n".join(failed)


@pytest.mark.parametrize("name", WPM)
def test_wpm_is_refused_in_one_line(llama_cpp_models, name):
    with pytest.raises(UnsupportedModel) as e:
        tokenizer.from_gguf(GGUFFile(llama_cpp_models / f"ggml-vocab-{name}.gguf"))
    msg = str(e.value)
    assert "\n" not in msg and "'bert'" in msg and "not supported" in msg
