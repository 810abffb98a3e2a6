"""Daemon pieces without weights: the wire types, the fence stripper, the prompt cache's
choice of session, and the scheduler (priorities, cancel within one step) on a fake engine
that follows the engine contract. The real-model tests are in test_daemon.py."""
from __future__ import annotations

import json
import socket
import threading
import time
from dataclasses import dataclass

import pytest

from localai import config, protocol
from localai.client import Client, DaemonError
from localai.daemon.handlers import FenceStripper
from localai.daemon.prompt_cache import PromptCache
from localai.daemon.server import Server
from localai.errors import ContextOverflow


# --- a fake engine: one character per token, a fixed reply, a short sleep per decode step ------

@dataclass
class FakeTimings:
    prompt_n: int
    cache_n: int
    predicted_n: int

    def as_dict(self):
        return {"prompt_n": self.prompt_n, "cache_n": self.cache_n, "predicted_n": self.predicted_n,
                "prompt_ms": 0.0, "predicted_ms": 0.0}


@dataclass
class FakeChunk:
    text: str
    tokens: list
    finish_reason: str | None = None
    timings: FakeTimings | None = None


class FakeSession:
    def __init__(self):
        self.tokens = []

    @property
    def nbytes(self):
        return 100 * len(self.tokens)


class FakeLLM:
    name = arch = "fake"
    quant, backend, n_ctx, n_vocab = "F32", "numpy", 200, 256
    step_s = 0.01

    def tokenize(self, text, special=False, add_bos=None):
        return [1] + [ord(c) % 256 for c in text]

    def apply_chat_template(self, messages):
        return "".join(f"<{m['role']}>{m['content']}\n" for m in messages) + "<assistant>"

    def chat_tokens(self, messages):
        return self.tokenize(self.apply_chat_template(messages))

    def check_can_chat(self):
        pass

    def fim_prompt(self, prefix, suffix, extra=None):
        return None

    def new_session(self):
        return FakeSession()

    def stream(self, prompt, *, max_tokens=256, session=None, stop=(), **kw):
        session = session or FakeSession()
        if len(prompt) >= self.n_ctx:
            raise ContextOverflow(f"the prompt is {len(prompt)} tokens")
        keep = min(len(prompt) - 1, next((i for i, (a, b) in enumerate(zip(session.tokens, prompt)) if a != b),
                                         min(len(session.tokens), len(prompt))))
        session.tokens[keep:] = list(prompt[keep:])
        reply = "```\nhello world\n```\nnotes" if "<system>You rewrite" in "".join(map(chr, prompt[1:])) else "abcdefghij" * 50
        n = min(max_tokens, len(reply))
        for i in range(n):
            time.sleep(self.step_s)
            session.tokens.append(ord(reply[i]))
            yield FakeChunk(reply[i], [ord(reply[i])])
        reason = "length" if n == max_tokens else "eos"
        yield FakeChunk("", [], reason, FakeTimings(len(prompt) - keep, keep, n))


@pytest.fixture
def fake_daemon(tmp_path):
    cfg = config.Config(keep_alive=-1)
    server = Server(cfg, str(tmp_path / "d" / "localai.sock"), loader=lambda path, **kw: FakeLLM(),
                    resolve=lambda name: name)
    server.bind()
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield server
    server.shutdown()
    t.join(10)


# --- wire types ---------------------------------------------------------------------------------

@pytest.mark.parametrize("line,code", [
    (b"{", "invalid_json"),
    (b"[1]", "invalid_json"),
    (b'{"id": 1, "method": "fly"}', "unknown_method"),
    (b'{"id": 1, "method": "generate"}', "invalid_request"),
    (b'{"id": 1, "method": "generate", "params": {"prompt": 3}}', "invalid_request"),
    (b'{"id": 1, "method": "generate", "params": {"prompt": "x", "max_tokens": "9"}}', "invalid_request"),
    (b'{"id": 1, "method": "generate", "params": {"prompt": "x", "max_tokens": -1}}', "invalid_request"),
    (b'{"id": 1, "method": "generate", "params": {"prompt": "x", "bogus": 1}}', "invalid_request"),
    (b'{"id": 1, "method": "chat", "params": {"messages": [{"role": "user"}]}}', "invalid_request"),
    (b'{"id": [1], "method": "status"}', "invalid_request"),
])
def test_bad_requests_are_named(line, code):
    with pytest.raises(protocol.ProtocolError) as e:
        protocol.parse_request(line)
    assert e.value.code == code
    assert e.value.code in protocol.ERROR_CODES


def test_events_round_trip():
    for ev in (protocol.Token(1, "hé", [5]), protocol.Done("a", "stop", "x", "m", {"prompt_n": 2}),
               protocol.Error(None, "internal", "boom")):
        assert protocol.decode_event(protocol.encode_event(ev)) == ev


def test_protocol_docs_are_generated_from_the_types():
    from pathlib import Path

    doc = (Path(__file__).parent.parent / "docs" / "protocol.md").read_text(encoding="utf-8")
    assert protocol.markdown() in doc, "docs/protocol.md is stale: paste `python -m localai.protocol` into it"


# --- the fence stripper ---------------------------------------------------------------------------

@pytest.mark.parametrize("text,want", [
    ("```python\ndef f():\n    return 1\n```\nThis defines f.", "def f():\n    return 1"),
    ("plain answer", "plain answer"),
    ("\n\n```\nx = 1\n```", "x = 1"),
    ("    indented\ncode", "    indented\ncode"),
    ("a ``` b", "a ``` b"),
    ("I like apples.\n\n```", "I like apples."),
    ("Here is the fixed text:\n```\nI like apples.\n```\nDone.", "I like apples."),
    ("Note: it was fine\nreally", "Note: it was fine\nreally"),
    ("one\n\n  two\n", "one\n\n  two"),
    ("```", ""),
])
def test_fence_stripper(text, want):
    for size in (1, 2, 5, 100):  # any chunking gives the same text
        f = FenceStripper()
        out = "".join(f.feed(text[i:i + size]) for i in range(0, len(text), size)) + f.finish()
        assert out == want, (size, out)


# --- the prompt cache's choice ----------------------------------------------------------------------

def test_prompt_cache_reuses_the_longest_prefix_and_keeps_other_prefixes():
    cache = PromptCache(FakeLLM(), max_sessions=2, max_bytes=10_000)
    a = cache.acquire([1, 2, 3, 4])
    a.tokens = [1, 2, 3, 4, 9]
    cache.release(a)
    b = cache.acquire([1, 7, 7, 7])  # shares 1 token: a new session keeps a's prefix
    assert b is not a
    b.tokens = [1, 7, 7, 7]
    cache.release(b)
    assert cache.acquire([1, 2, 3, 4, 5]) is a and cache.hits == 1
    c = cache.acquire([1, 8])  # full pool, b idle: reuse b (its prefix matches)
    assert c is b


def test_prompt_cache_evicts_by_bytes():
    cache = PromptCache(FakeLLM(), max_sessions=8, max_bytes=1000)
    for i in range(4):
        s = cache.acquire([i + 10])
        s.tokens = [i + 10] * 4  # 400 bytes each
        cache.release(s)
    assert cache.nbytes <= 1000 and cache.stats()["sessions"] == 2


# --- the scheduler on the fake engine ------------------------------------------------------------------

def test_cancel_stops_within_one_step_and_complete_goes_first(fake_daemon):
    with Client(fake_daemon.path, autostart=False) as c:
        chat_id = c.send("chat", {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 400})
        # a completion sent while the chat streams finishes long before the chat
        comp = c.call("complete", prefix="x = ", max_tokens=5)
        assert comp["finish_reason"] == "length" and comp["text"] == "abcde"
        before = c.call("status")["tokens_generated"]
        c.cancel(chat_id)
        evs = list(c.events(chat_id))
        assert evs[-1].finish_reason == "cancelled"
        n1 = c.call("status")["tokens_generated"]
        time.sleep(0.2)
        n2 = c.call("status")["tokens_generated"]
        assert n1 == n2 and n1 - before < 10


def test_disconnect_cancels(fake_daemon):
    c = Client(fake_daemon.path, autostart=False)
    c.send("generate", {"prompt": "count", "max_tokens": 400})
    time.sleep(0.1)
    c.close()
    time.sleep(0.1)
    with Client(fake_daemon.path, autostart=False) as c2:
        n1 = c2.call("status")["tokens_generated"]
        time.sleep(0.2)
        st = c2.call("status")
        assert st["tokens_generated"] == n1 and st["active"] == 0 and n1 < 100


def test_rewrite_returns_only_the_replacement(fake_daemon):
    with Client(fake_daemon.path, autostart=False) as c:
        done = c.call("rewrite", text="hallo", instruction="fix it", max_tokens=30)
        assert done["text"] == "hello world"


def test_half_closed_client_still_gets_its_answer(fake_daemon):
    s = socket.socket(socket.AF_UNIX)
    s.connect(fake_daemon.path)
    s.sendall(b'{"id": 7, "method": "generate", "params": {"prompt": "x", "max_tokens": 3}}\n')
    s.shutdown(socket.SHUT_WR)  # like `nc -N`
    data = b""
    while chunk := s.recv(4096):
        data += chunk
    events = [json.loads(x) for x in data.splitlines()]
    assert [e["event"] for e in events] == ["token"] * 3 + ["done"]


def test_context_overflow_and_duplicate_ids(fake_daemon):
    with Client(fake_daemon.path, autostart=False) as c:
        with pytest.raises(DaemonError) as e:
            c.call("generate", prompt="x" * 500)
        assert e.value.code == "context_overflow"
        c.send("generate", {"prompt": "x", "max_tokens": 100}, id="same")
        c.send("generate", {"prompt": "x", "max_tokens": 1}, id="same")
        with pytest.raises(DaemonError) as e:
            list(c.events("same"))
        assert e.value.code == "duplicate_id"


def test_time_budget_and_chat_truncation(fake_daemon):
    with Client(fake_daemon.path, autostart=False) as c:
        done = c.call("generate", prompt="x", max_tokens=300, t_max_predict_ms=50)
        assert done["finish_reason"] == "time" and done["timings"]["predicted_n"] < 30
        history = [{"role": "system", "content": "s"}]
        for i in range(6):
            history += [{"role": "user", "content": f"question {i} " * 4},
                        {"role": "assistant", "content": f"answer {i} " * 4}]
        history.append({"role": "user", "content": "last"})
        with pytest.raises(DaemonError) as e:
            c.call("chat", messages=history, max_tokens=20)
        assert e.value.code == "context_overflow"
        done = c.call("chat", messages=history, max_tokens=20, truncate=True)
        assert done["result"]["dropped"] >= 2 and done["timings"]["prompt_n"] + 20 <= FakeLLM.n_ctx


# --- rewrite: preambles, echoes, line endings (issue 11) -------------------------------------------

INSTRUCTION = "fix the spelling"


@pytest.mark.parametrize("original, answer, want", [
    # SmolLM2's own shape (greedy, "fix the spelling" on the text below)
    ("teh quick brwon fox\n", "Here's a rewritten version of the text with improved spelling:\nThe quick brown fox"
     "\n\nThis change corrects the spelling of \"quick\"", "The quick brown fox\n"),
    ("teh fox\n\nteh dog", "Sure:\nThe fox\n\nThe dog\n\nI've fixed two words.", "The fox\n\nThe dog"),
    ("teh fox\n\nteh dog", "The fox\n\nThis change is small.", "The fox\n\nThis change is small."),  # no preamble
    ("teh quick brwon fox", "Sure! Here is the corrected text:\n\nThe quick brown fox", "The quick brown fox"),
    ("teh quick brwon fox", "Here's the rewritten text: The quick brown fox", "The quick brown fox"),
    ("teh quick brwon fox", "Fix the spelling:\n\nThe quick brown fox", "The quick brown fox"),
    ("teh quick brwon fox", "Fix the spelling\nThe quick brown fox", "The quick brown fox"),
    ("teh quick brwon fox", "Revised text:\n```\nThe quick brown fox\n```\nI fixed two words.", "The quick brown fox"),
    ("teh fox", "Ingredients:\nflour", "Ingredients:\nflour"),               # not a known preamble
    ("here is teh plan", "Here is the plan", "Here is the plan"),           # the original starts so
    ("a\r\nb\r\n", "A\nB", "A\r\nB\r\n"),                                   # CRLF stays CRLF
    ("a\r\nb", "```\nA\nB\n```", "A\r\nB"),
    ("a\nb\n", "A\nB\n\n\n", "A\nB\n"),                                     # one trailing newline, as the original
    ("a\nb", "A\nB\n", "A\nB"),
    ("grate job", "Great job!", "Great job!"),                              # one line is the answer
    ("sure thing", "Sure, thing.\nYes.", "Sure, thing.\nYes."),          # the original starts so
])
def test_rewrite_filter(original, answer, want):
    from localai.daemon.handlers import RewriteFilter

    for size in (1, 3, 100):
        f = RewriteFilter(original, INSTRUCTION)
        out = ""
        for i in range(0, len(answer), size):
            out += f.feed(answer[i:i + size])
            if f.done:
                break
        out += f.finish()
        assert out == want, (size, out)
