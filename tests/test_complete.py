"""`complete` on the real daemon and model (issue 11, faults 5 and 6): a completion never
repeats the text after the cursor, and the generation stops where it starts to; a prompt
longer than the context keeps the tail of the prefix and the head of the suffix, counted in
tokens, and says what it left out (protocol, CLI `--file`). Plus the repeat guard on the
shapes models produce, the trimming with the real tokenizer and a FIM prompt, and `extra`."""
from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest

from localai import protocol
from localai.client import Client
from localai.daemon.handlers import SuffixGuard, complete_prompt
from test_daemon_support import N_CTX, run_cli, shared_daemon

DATA = Path(__file__).parent / "data"
BELOW = (DATA / "buffer_with_code_below.py").read_text(encoding="utf-8")
CURSOR = BELOW.index("def add(a, b):") + len("def add(a, b):")


@functools.lru_cache(maxsize=None)
def tokenizer():
    """SmolLM2's tokenizer alone (no weights loaded)."""
    from localai import store
    from localai.gguf_file import GGUFFile
    from localai.tokenizer import from_gguf

    return from_gguf(GGUFFile(store.resolve("smollm2")))


@pytest.fixture(scope="module")
def daemon(smollm2_path):
    return shared_daemon()


def complete(daemon, **params) -> dict:
    with Client(daemon["path"], autostart=False) as c:
        id = c.send("complete", params)
        done = [ev for ev in c.events(id) if ev.event == "done"][0]
    return {k: v for k, v in vars(done).items() if v is not None}


# --- fault 5: the code below the cursor ----------------------------------------------------

def test_a_completion_never_repeats_the_code_below_and_stops_there(daemon):
    prefix, suffix = BELOW[:CURSOR], BELOW[CURSOR:]
    # what the model writes here, not knowing the suffix: the line that is already below
    free = complete(daemon, prefix=prefix, max_tokens=12, temperature=0)
    assert free["text"].startswith("\n    return a + b"), free
    done = complete(daemon, prefix=prefix, suffix=suffix, max_tokens=40, temperature=0)
    assert "return a + b" not in done["text"], done
    assert not suffix.startswith(done["text"]) or done["text"] == ""
    # the generation stopped where the repeat was plain, not at max_tokens
    assert done["finish_reason"] == "stop" and done["timings"]["predicted_n"] < 12, done


BELOW_SUFFIX = "\n    return a + b\n\nprint(add(1, 2))\n"
GUARD_CASES = [
    # (generated, prefix, suffix, what is let through)
    ("\n    return a + b\n\nx = add(1, 2)\n", "def add(a, b):", BELOW_SUFFIX, ""),
    ('\n    """Add two numbers."""\n    return a + b\n\nx', "def add(a, b):", BELOW_SUFFIX,
     '\n    """Add two numbers."""'),
    ("\n    s = a + b\n    return s\n", "def add(a, b):", BELOW_SUFFIX, "\n    s = a + b\n    return s\n"),
    ("\n    return a + b", "def add(a, b):", BELOW_SUFFIX, ""),               # ends while repeating
    ("\n\n    return a + b\n", "def add(a, b):", BELOW_SUFFIX, ""),            # after a blank line
    ("return 1\n", "def f():\n    ", "\n    return 1\n", ""),                # on an indented blank line
    ("x = 2\n    return 1\nprint(f())", "def f():\n    ", "\n    return 1\n", "x = 2"),
    ("a, b)", "print(", ")\n", "a, b)"),
    (")", "print(x", ")\nnext_line_here()\n", ""),                            # the rest of the line
    ("    y = 2\nend\n\nfunction g()", "function f()\n", "end\n\nfunction g()\nend\n", "    y = 2"),
    ("    y = 2\nend", "function f()\n", "end\n", "    y = 2"),
    ("    if x then\n        y()\n    end\n", "function f()\n", "end\n", "    if x then\n        y()\n    end\n"),
    ("anything\n", "x = 1\n", "", "anything\n"),                               # nothing below
]


@pytest.mark.parametrize("generated, prefix, suffix, want", GUARD_CASES)
@pytest.mark.parametrize("step", [1, 3, 100])
def test_suffix_guard_shapes(generated, prefix, suffix, want, step):
    g = SuffixGuard(prefix, suffix)
    out = ""
    for i in range(0, len(generated), step):
        out += g.feed(generated[i:i + step])
        assert want.startswith(out), (out, want)  # never lets through what it takes back
        if g.done:
            break
    out += g.finish()
    assert out == want


# --- fault 6: long lines -------------------------------------------------------------------

def test_cli_complete_in_a_file_of_long_lines(daemon):
    """The README's case: 15k tokens of context, a 512-token daemon; a suggestion, and the
    done event says what was left out."""
    path = DATA / "long_lines.py"
    r = run_cli(["complete", "--file", str(path), "--line", "258", "--column", "5", "-n", "4", "--json"],
                daemon["env"], timeout=300)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["text"].strip() and out["finish_reason"] == "length", out
    t = out["timings"]
    assert t["prompt_n"] + t["cache_n"] + 4 <= N_CTX
    text = path.read_text(encoding="utf-8")
    cut = sum(len(x) for x in text.splitlines(keepends=True)[:257]) + 4
    n_prefix = len(tokenizer().encode(text[:cut], add_bos=False))
    assert n_prefix > 15000
    # kept + dropped = the whole prefix (SmolLM2 has no FIM tokens: the suffix is not sent)
    assert n_prefix - out["dropped_prefix_tokens"] == t["prompt_n"] + t["cache_n"] - len(tokenizer().encode(""))
    assert "dropped_suffix_tokens" not in out
    r = run_cli(["complete", "--file", str(path), "--line", "258", "--column", "5", "-n", "1"], daemon["env"],
                timeout=300)
    assert r.returncode == 0 and f"left out {out['dropped_prefix_tokens']} tokens at the start of the prefix" in r.stderr


class FimTokenizer:
    """The real SmolLM2 tokenizer behind a FIM prompt in llama-server's order (made-up marker
    ids): enough of an LLM for complete_prompt."""

    PRE, SUF, MID = 900001, 900002, 900003

    def __init__(self, n_ctx: int):
        self.n_ctx = n_ctx

    def tokenize(self, text, special=False, add_bos=None):
        return tokenizer().encode(text, add_bos=add_bos, special=special)

    def detokenize(self, ids):
        return tokenizer().decode(list(ids))

    def fim_prompt(self, prefix, suffix, extra=None):
        return [self.PRE, *self.tokenize(prefix, add_bos=False), self.SUF,
                *self.tokenize(suffix, add_bos=False), self.MID]


def test_complete_prompt_keeps_the_prefix_tail_and_the_suffix_head():
    text = (DATA / "long_lines.py").read_text(encoding="utf-8")
    cut = text.index('{"id": 200,')
    prefix, suffix = text[:cut], text[cut:]
    llm = FimTokenizer(1024)
    p = protocol.make_params("complete", {"prefix": prefix, "suffix": suffix})
    ids, done = complete_prompt(llm, p, 128)
    assert len(ids) + 128 <= 1024
    mid = ids.index(llm.SUF)
    kept_prefix, kept_suffix = llm.detokenize(ids[1:mid]), llm.detokenize(ids[mid + 1:-1])
    assert prefix.endswith(kept_prefix) and suffix.startswith(kept_suffix)
    assert kept_prefix.startswith("    {") and kept_suffix.endswith("\n")  # whole lines
    n_p, n_s = len(llm.tokenize(prefix, add_bos=False)), len(llm.tokenize(suffix, add_bos=False))
    assert done == {"dropped_prefix_tokens": n_p - (mid - 1), "dropped_suffix_tokens": n_s - (len(ids) - mid - 2)}
    assert mid - 1 > 2 * (len(ids) - mid - 2)  # about 3:1, as llama-server
    assert len(ids) + 128 > 1024 - 2 * 70  # little room wasted (a line is ~60 tokens)
    # a prompt that fits is left alone
    p = protocol.make_params("complete", {"prefix": "def f(", "suffix": "):\n"})
    assert complete_prompt(llm, p, 128) == (llm.fim_prompt("def f(", "):\n"), {})


def test_extra_chunks_are_checked():
    ok = protocol.make_params("complete", {"prefix": "x", "extra": [{"filename": "a.py", "text": "y = 1\n"}]})
    assert ok.extra == [{"filename": "a.py", "text": "y = 1\n"}]
    for bad in ([{"filename": "a.py"}], [{"text": 1}], [{"text": "x", "time": 3}], ["x"]):
        with pytest.raises(protocol.ProtocolError) as e:
            protocol.make_params("complete", {"prefix": "x", "extra": bad})
        assert e.value.code == "invalid_request" and "extra" in e.value.message


class FimWithExtra(FimTokenizer):
    """... whose engine takes the extra chunks (as llama-server: a separator and the file's
    name before each, all before the FIM prefix)."""

    SEP = 900004

    def fim_prompt(self, prefix, suffix, extra=None):
        head = []
        for c in extra or []:
            head += [self.SEP, *self.tokenize(c.get("filename", "tmp") + "\n" + c["text"], add_bos=False)]
        return head + super().fim_prompt(prefix, suffix)


def test_extra_chunks_reach_the_engine_and_the_oldest_go_first():
    chunks = [{"filename": f"f{i}.py", "text": "".join(f"x{i}_{j} = {j}\n" for j in range(40))} for i in range(3)]
    llm = FimWithExtra(4096)
    p = protocol.make_params("complete", {"prefix": "def f(", "suffix": "):\n", "extra": chunks})
    ids, done = complete_prompt(llm, p, 128)
    assert ids == llm.fim_prompt("def f(", "):\n", extra=chunks) and done == {}
    # a context that holds one chunk in half its room: the two oldest are left out
    one = len(llm.fim_prompt("", "", extra=chunks[:1]))
    llm.n_ctx = 2 * one + 2 * 128 + 40
    ids, done = complete_prompt(llm, p, 128)
    assert ids == llm.fim_prompt("def f(", "):\n", extra=chunks[2:]) and done == {"dropped_extra": 2}
    # an engine without `extra` (or a model without FIM tokens) gets none, and no error
    ids, done = complete_prompt(FimTokenizer(4096), p, 128)
    assert ids == FimTokenizer(4096).fim_prompt("def f(", "):\n")
