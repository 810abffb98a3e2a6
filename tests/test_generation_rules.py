"""Rules of generation that hold on every path (engine, CLI, daemon, streamed or not), on the
real models:
- generation ends at the first stop string to be completed as tokens arrive, and the text
  is the stop-free text cut where that stop string starts (llama-server's and OpenAI's rule);
- a prompt-cache hit does not change a greedy answer (a token whose logits and K/V the
  session holds is not evaluated again);
- `token` events report every generated id exactly once, also the ids of steps whose text
  was held back (half a UTF-8 character, a possible stop string)."""
from __future__ import annotations

import functools
import json
import subprocess
import sys

import pytest

import localai
from localai.client import Client
from test_daemon_support import N_CTX, shared_daemon

# (prompt, stops, the answer): gemma3-270m greedy; without stops it reads
# " the capital of ..." and " L M N O P ..."
STOP_CASES = [
    ("The capital of France is", ["apital"], " the c"),            # stop ends inside a token
    ("A B C D E F G H I J K", ["N O", " M N O P"], " L M "),     # text held for a longer stop
]


@functools.lru_cache(maxsize=None)
def _llm(name: str):
    return localai.load(name, n_ctx=N_CTX)


@pytest.fixture(scope="module")
def gemma(gemma3_path):
    return _llm("gemma3-270m")


@pytest.fixture(scope="module")
def daemon(smollm2_path, gemma3_path):
    return shared_daemon()


def _events(path, method: str, **params) -> tuple[list, dict]:
    with Client(path, autostart=False) as c:
        id = c.send(method, params)
        evs = list(c.events(id))
    return [e for e in evs if e.event == "token"], next(e for e in evs if e.event == "done")


@pytest.mark.parametrize("prompt,stops,expect", STOP_CASES)
def test_text_before_a_stop_string_is_kept(gemma, daemon, prompt, stops, expect):
    assert gemma.generate(prompt, max_tokens=16, temperature=0).text.startswith(expect)  # the unstopped text
    out = gemma.generate(prompt, max_tokens=16, temperature=0, stop=stops)
    assert (out.text, out.finish_reason) == (expect, "stop")
    assert "".join(c.text for c in gemma.stream(prompt, max_tokens=16, temperature=0, stop=stops)) == expect
    for stream in (True, False):
        tokens, done = _events(daemon["path"], "generate", prompt=prompt, model="gemma3-270m", max_tokens=16,
                               temperature=0, stop=stops, stream=stream)
        assert (done.text, done.finish_reason) == (expect, "stop")
        assert "".join(t.text for t in tokens) == (expect if stream else "")
        if stream:  # every id, the stop string's too, reported once
            assert [i for t in tokens for i in t.tokens] == out.tokens
            assert len(out.tokens) == done.timings["predicted_n"]


def test_cli_generate_stop(gemma3_path):
    prompt, stops, expect = STOP_CASES[0]
    r = subprocess.run([sys.executable, "-m", "localai", "generate", "-m", "gemma3-270m", "-p", prompt, "-n", "16",
                        "-t", "0", "--stop", stops[0], "--json"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["text"] == expect


def test_token_events_report_every_id_once(daemon):
    # SmolLM2 writes 🦜 as three byte-level tokens: the first two carry no text of their own
    prompt = "🦜🦜🦜🦜🦜🦜🦜🦜"
    ref = _llm("smollm2").generate(prompt, max_tokens=9, temperature=0)
    assert "🦜" in ref.text
    tokens, done = _events(daemon["path"], "generate", prompt=prompt, max_tokens=9, temperature=0)
    assert [i for t in tokens for i in t.tokens] == ref.tokens
    assert len(ref.tokens) == done.timings["predicted_n"]
    assert any(len(t.tokens) > 1 for t in tokens)
    tok = _llm("smollm2").tokenizer
    assert all(tok.decode(t.tokens) == t.text for t in tokens)  # each event's ids are its text
    # --no-daemon speaks the same events; with a stop string the last event holds its ids
    from localai import config
    from localai.daemon.inprocess import InProcessClient

    client = InProcessClient(config.Config(n_ctx=N_CTX))
    _llm_in = client._model("smollm2")  # noqa: F841  (loads it)
    for stop in ((), ("🦜🦜🦜",)):
        ref = _llm("smollm2").generate(prompt, max_tokens=9, temperature=0, stop=stop)
        id = client.send("generate", {"prompt": prompt, "max_tokens": 9, "temperature": 0, "stop": list(stop)})
        evs = list(client.events(id))
        assert [i for e in evs if e.event == "token" for i in e.tokens] == ref.tokens
        assert evs[-1].text == ref.text


@pytest.mark.parametrize("model", ["smollm2", "gemma3-270m"])
def test_a_prompt_cache_hit_gives_the_cold_answer(daemon, model):
    llm = _llm(model)
    prompt = "The best way to learn a new language is"
    cold = llm.generate(prompt, max_tokens=32, temperature=0)
    s = llm.new_session()
    first = llm.generate(prompt, max_tokens=32, temperature=0, session=s)
    again = llm.generate(prompt, max_tokens=32, temperature=0, session=s)   # the whole prompt is cached
    assert first.text == again.text == cold.text
    # nothing of the prompt was evaluated again: its last position's logits were kept
    assert (again.timings.prompt_n, again.timings.cache_n) == (0, len(llm.tokenize(prompt)))
    # the daemon: the same request twice, the second from the prompt cache
    outs = [_events(daemon["path"], "generate", prompt=prompt, model=model, max_tokens=32, temperature=0,
                    stream=False, cache_prompt=cached)[1] for cached in (False, True)]
    assert outs[0].text == outs[1].text == cold.text
    assert outs[1].timings["prompt_n"] == 0
