"""Reliability of the daemon under hostile input (issue 19, item 1), on a real daemon
(`python -m localai.daemon`) serving the tiny test model: no line, request or connection can
hurt another client; the scheduler and connection threads survive anything; absurd limits are
refused; chat truncation is linear; the Python client says when the daemon stopped answering.
Protocol fuzzing with hypothesis: after every generated input the daemon still gives the
same greedy answer to a good request.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from localai import client as client_mod
from localai.client import Client, DaemonError
from tiny import write_tiny

GOOD = {"prompt": "the cat", "max_tokens": 4, "temperature": 0, "cache_prompt": False}


# --- a real daemon on the tiny model ------------------------------------------------------------

def start_daemon(root: str, model: str, extra_env: dict | None = None, args: tuple = ()) -> dict:
    path = os.path.join(root, "run", "localai.sock")
    conf = os.path.join(root, "config")
    os.makedirs(conf, exist_ok=True)
    env = dict(os.environ, LOCALAI_SOCKET=path, XDG_CONFIG_HOME=conf, LOCALAI_KERNELS="numpy")
    env.update(extra_env or {})  # e.g. LOCALAI_KERNELS="" for the numba kernels on a real model
    env.pop("LOCALAI_CONFIG", None)
    log = open(os.path.join(root, "daemon.log"), "ab")
    proc = subprocess.Popen([sys.executable, "-m", "localai.daemon", "--socket", path, "--model", model,
                             "--keep-alive", "-1", *args], env=env, stdout=log, stderr=log)
    deadline = time.monotonic() + 60
    while not (os.path.exists(path) and os.path.exists(os.path.join(root, "run", "localai.pid"))):
        assert proc.poll() is None and time.monotonic() < deadline, open(os.path.join(root, "daemon.log")).read()
        time.sleep(0.05)
    return {"path": path, "proc": proc, "env": env, "root": root, "model": model}


@pytest.fixture(scope="module")
def tiny_daemon():
    root = tempfile.mkdtemp(prefix="localai-rel-")
    model = str(write_tiny(os.path.join(root, "tiny.gguf"), n_ctx=256))
    d = start_daemon(root, model)
    with Client(d["path"], autostart=False) as c:
        d["want"] = c.call("generate", **GOOD)["text"]
    yield d
    d["proc"].terminate()
    d["proc"].wait(10)
    shutil.rmtree(root, ignore_errors=True)


def raw(path: str, data: list[bytes], *, close_write: bool = True, timeout: float = 20) -> list[dict]:
    """Send raw bytes on one connection, then read every event until the daemon closes it."""
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(timeout)
    s.connect(path)
    for chunk in data:
        s.sendall(chunk)
    if close_write:
        s.shutdown(socket.SHUT_WR)
    buf = b""
    while True:
        chunk = s.recv(1 << 16)
        if not chunk:
            break
        buf += chunk
    s.close()
    return [json.loads(x) for x in buf.split(b"\n") if x.strip()]


def good_answer(path: str) -> str:
    with Client(path, autostart=False, timeout=30) as c:
        return c.call("generate", **GOOD)["text"]


def status(path: str) -> dict:
    with Client(path, autostart=False, timeout=30) as c:
        return c.call("status")


GOOD_LINE = (json.dumps({"id": "good", "method": "generate", "params": GOOD}) + "\n").encode()


# --- the kinds found by hand ------------------------------------------------------------------

def test_lone_surrogate_in_an_id_ends_that_request_only(tiny_daemon):
    line = b'{"id":"\\ud800","method":"generate","params":{"prompt":"hi","max_tokens":2,"temperature":0}}\n'
    events = raw(tiny_daemon["path"], [line, GOOD_LINE])
    ends = {e["id"]: e["event"] for e in events if e["event"] in ("done", "error")}
    assert ends == {"\ud800": "done", "good": "done"}, events
    assert good_answer(tiny_daemon["path"]) == tiny_daemon["want"]
    st_ = status(tiny_daemon["path"])
    assert st_["scheduler_alive"] and st_["queued"] == 0 and st_["active"] == 0


@pytest.mark.parametrize("line", [
    b'{"id":1,"method":"generate","params":{"\\ud800":"hi"}}\n',
    b'[' * 1000 + b'\n',
    b'{"a":' * 1000 + b'\n',
    b'{"id":1,"method":"generate","params":{"prompt":' + b'[' * 990 + b']' * 990 + b'}}\n',
])
def test_a_hostile_line_gets_an_error_and_the_connection_keeps_serving(tiny_daemon, line):
    events = raw(tiny_daemon["path"], [line, GOOD_LINE])
    assert events[0]["event"] == "error", events
    assert events[-1]["id"] == "good" and events[-1]["event"] == "done"
    assert events[-1]["text"] == tiny_daemon["want"]


def test_hostile_connections_leak_no_thread_and_no_fd(tiny_daemon):
    path = tiny_daemon["path"]
    raw(path, [GOOD_LINE])
    before = status(path)
    for i in range(50):
        raw(path, [b'[' * 1000 + b'\n', b'{"id":1,"method":"generate","params":{"\\udfff":1}}\n'])
    time.sleep(0.3)  # the writer threads close their sockets just after the last event
    after = status(path)
    assert after["threads"] <= before["threads"] + 1, (before["threads"], after["threads"])
    assert after["fds"] <= before["fds"] + 2, (before["fds"], after["fds"])


@pytest.mark.parametrize("params", [
    '"max_tokens": 100000000000000000000000000000000000000000000000000',
    '"max_tokens": 1e50', '"top_k": 1e400', '"temperature": NaN', '"temperature": Infinity',
    '"top_p": -Infinity', '"seed": 1000000000000000000000000', '"t_max_predict_ms": 99999999999999',
    '"stop": [' + ",".join(['"x"'] * 1000) + ']',
])
def test_absurd_limits_are_refused(tiny_daemon, params):
    line = ('{"id":7,"method":"generate","params":{"prompt":"hi",' + params + '}}\n').encode()
    (ev,) = raw(tiny_daemon["path"], [line])
    assert ev["event"] == "error" and ev["code"] == "invalid_request" and ev["id"] == 7, ev


def test_chat_truncation_renders_the_template_a_few_times_not_once_per_message(tiny_daemon):
    import localai
    from localai.daemon import handlers

    llm = localai.load(tiny_daemon["model"])
    renders = []
    real = llm.apply_chat_template
    llm.apply_chat_template = lambda msgs, **kw: renders.append(len(msgs)) or real(msgs, **kw)
    msgs = [{"role": "system", "content": "Be brief."}]
    msgs += [{"role": "user" if i % 2 == 0 else "assistant", "content": f"message {i} about the cat"}
             for i in range(2000)]
    kept, ids, dropped = handlers._truncate(llm, msgs, 64)
    assert len(ids) + 64 <= llm.n_ctx and kept[0]["role"] == "system" and kept[-1] == msgs[-1]
    assert dropped == len(msgs) - len(kept) and kept[1]["role"] == "user"
    assert len(renders) <= 12, f"{len(renders)} renders for 2,000 messages"
    # the fewest dropped: keeping one more turn would not fit
    back = [msgs[0]] + msgs[len(msgs) - len(kept) - 1:]
    assert len(handlers._chat_ids(llm, back)) + 64 > llm.n_ctx


def test_chat_truncation_over_the_socket(tiny_daemon):
    msgs = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"turn {i} the cat"} for i in range(601)]
    with Client(tiny_daemon["path"], autostart=False, timeout=60) as c:
        done = c.call("chat", messages=msgs, truncate=True, max_tokens=2, temperature=0)
    assert done["finish_reason"] == "length" and done["result"]["dropped"] > 500


# --- the client says when the daemon stopped answering -----------------------------------------

def test_client_gives_up_on_a_daemon_that_stopped_answering(tmp_path, monkeypatch):
    """A server that accepts and then never writes (as a daemon whose threads died would)."""
    monkeypatch.setattr(client_mod, "CHECK_AFTER", 0.3)
    monkeypatch.setattr(client_mod, "CONNECT_TIMEOUT", 0.5)
    path = str(tmp_path / "mute.sock")
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(path)
    srv.listen(8)
    held = []
    stop = threading.Event()

    def accept():
        srv.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(srv.accept()[0])
            except OSError:
                pass

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    t0 = time.monotonic()
    try:
        with pytest.raises(DaemonError) as exc:
            with Client(path, autostart=False) as c:
                c.call("generate", prompt="hi")
    finally:
        stop.set()
        t.join()
        srv.close()
        for s in held:
            s.close()
    assert exc.value.code == "not_answering" and "\n" not in exc.value.message
    assert "stopped answering (sent nothing for" in exc.value.message and "`status`" in exc.value.message
    assert time.monotonic() - t0 < 5


def test_a_busy_daemon_is_not_mistaken_for_a_dead_one(tiny_daemon, monkeypatch):
    monkeypatch.setattr(client_mod, "CHECK_AFTER", 0.05)  # checks `status` many times
    with Client(tiny_daemon["path"], autostart=False) as c:
        out = c.call("generate", prompt="the cat " * 40, max_tokens=64, temperature=0, stream=False)
    assert out["finish_reason"] in ("length", "eos")


# --- protocol fuzzing ---------------------------------------------------------------------------

_METHODS = ["generate", "chat", "complete", "rewrite", "tokenize", "models", "status", "cancel",
            "action", "actions", "shutdown_", "", "GENERATE", "generate\u0000"]
_KEYS = ["prompt", "messages", "max_tokens", "temperature", "top_k", "top_p", "min_p", "seed", "stop",
         "stream", "cache_prompt", "t_max_predict_ms", "prefix", "suffix", "text", "instruction",
         "target", "truncate", "special", "add_bos", "model", "name", "context", "\ud800", "", "a" * 300]
_weird_text = st.text(alphabet=st.characters(codec=None, blacklist_categories=()), max_size=40)
_scalars = (st.none() | st.booleans() | st.integers(min_value=-2**70, max_value=2**70)
            | st.floats(allow_nan=True, allow_infinity=True) | _weird_text
            | st.sampled_from([0, 1, 2, -1, 2**31, 2**63, 10**30, "", "x", "\ud800", "\udfff\ud800"]))
_values = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4)
                       | st.dictionaries(st.sampled_from(_KEYS) | _weird_text, inner, max_size=4), max_leaves=12)
_ids = st.none() | st.integers(min_value=-3, max_value=3) | st.sampled_from(["a", "b", "\ud800", "1"]) | _values


def _msg_list():
    msg = st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "system", "tool", ""]),
                                 "content": _weird_text | _values})
    return st.lists(msg, max_size=4)


@st.composite
def request_obj(draw):
    method = draw(st.sampled_from(_METHODS))
    params = draw(st.dictionaries(st.sampled_from(_KEYS), _values, max_size=5))
    if draw(st.booleans()):  # mostly-valid requests that the scheduler runs
        params.update({"prompt": draw(_weird_text), "prefix": draw(_weird_text), "text": draw(_weird_text),
                       "instruction": "fix it", "messages": draw(_msg_list()), "target": draw(_ids),
                       "name": draw(st.sampled_from(["cmd", "fix", "add-docstring", "nope"]) | _weird_text),
                       "context": draw(st.fixed_dictionaries({}, optional={
                           "text": _weird_text | _values, "file": _weird_text, "line": _values,
                           "diagnostics": _values, "cwd": _weird_text})),
                       "max_tokens": draw(st.integers(min_value=0, max_value=6))})
        params = {k: v for k, v in params.items() if draw(st.booleans()) or k in ("max_tokens",)}
    obj = {"id": draw(_ids), "method": method, "params": params}
    for k in draw(st.lists(st.sampled_from(["id", "method", "params"]), max_size=2)):
        obj.pop(k, None)
    if draw(st.booleans()):
        obj[draw(st.sampled_from(["extra", "\ud800", "ID"]))] = draw(_values)
    return obj


def _encode(obj) -> bytes:
    return json.dumps(obj, ensure_ascii=True).encode()


@st.composite
def request_line(draw):
    """One line of bytes: a generated request, maybe cut short or corrupted, or noise."""
    kind = draw(st.sampled_from(["request", "request", "request", "truncated", "bytes", "nested", "cancel",
                                 "utf8", "json_value"]))
    if kind == "request":
        return _encode(draw(request_obj()))
    if kind == "truncated":
        line = _encode(draw(request_obj()))
        return line[:draw(st.integers(min_value=0, max_value=len(line)))]
    if kind == "bytes":
        return draw(st.binary(max_size=200)).replace(b"\n", b" ")
    if kind == "nested":
        depth = draw(st.integers(min_value=1, max_value=5000))
        opener = draw(st.sampled_from([b"[", b'{"a":', b'{"id":1,"method":"generate","params":{"prompt":[']))
        return opener * depth
    if kind == "cancel":
        return _encode({"id": draw(_ids), "method": "cancel", "params": {"target": draw(_ids)}})
    if kind == "utf8":  # invalid or odd UTF-8 inside an otherwise good request
        junk = draw(st.sampled_from([b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\x00",
                                     b"\xef\xbb\xbf", b"\\ud800", b"\\u0000"]))
        return b'{"id":"u","method":"generate","params":{"prompt":"a' + junk + b'","max_tokens":2}}'
    return _encode(draw(_values))


@st.composite
def connection_input(draw):
    """What one client sends on one connection: a few lines, and how it leaves."""
    lines = draw(st.lists(request_line(), min_size=1, max_size=5))
    return lines, draw(st.sampled_from(["eof", "eof", "hangup", "no_newline"]))


def send_input(path: str, lines: list[bytes], leave: str, timeout: float = 30) -> list[dict]:
    """Send one generated input; returns the events (every one must be a valid event)."""
    data = b"\n".join(lines) + (b"" if leave == "no_newline" else b"\n")
    if leave == "hangup":
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(data)
        s.close()
        return []
    events = raw(path, [data], timeout=timeout)
    for ev in events:
        assert ev["event"] in ("token", "done", "error"), ev
    return events


TRIED = {"protocol_inputs": 0, "lines": 0}


@settings(max_examples=int(os.environ.get("LOCALAI_FUZZ_EXAMPLES", "40")), deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
@given(connection_input())
def test_protocol_fuzz_never_breaks_the_daemon(tiny_daemon, inp):
    lines, leave = inp
    send_input(tiny_daemon["path"], lines, leave)
    TRIED["protocol_inputs"] += 1
    TRIED["lines"] += len(lines)
    assert tiny_daemon["proc"].poll() is None, "the daemon died"
    assert good_answer(tiny_daemon["path"]) == tiny_daemon["want"]


def test_after_the_fuzz_the_daemon_is_whole(tiny_daemon):
    time.sleep(0.5)
    s = status(tiny_daemon["path"])
    assert s["scheduler_alive"] and s["active"] == 0 and s["queued"] == 0
    assert s["threads"] < 20, s["threads"]
    print(f"protocol fuzz: {TRIED['protocol_inputs']} inputs, {TRIED['lines']} lines")


# --- memory admission -------------------------------------------------------------------------------

def test_an_n_ctx_too_large_for_memory_is_an_error_naming_the_figures(tmp_path):
    model = str(write_tiny(tmp_path / "tiny.gguf", n_ctx=256))
    d = start_daemon(str(tmp_path), model)
    d["proc"].terminate()
    d["proc"].wait(10)
    d = start_daemon(str(tmp_path), model, args=("--n-ctx", "100000000"))
    try:
        with Client(d["path"], autostart=False, timeout=60) as c:
            with pytest.raises(DaemonError) as exc:
                c.call("generate", **GOOD)
            assert c.call("status")["scheduler_alive"]
        msg = exc.value.message
        assert exc.value.code == "out_of_memory" and "n_ctx 100,000,000 needs" in msg and "available" in msg, msg
        assert "bytes per token" in msg and "use a smaller n_ctx" in msg
        log = open(os.path.join(str(tmp_path), "daemon.log")).read()
        assert "beyond tiny.gguf's trained context of 256 tokens" in log
    finally:
        d["proc"].terminate()
        d["proc"].wait(10)


def test_the_prompt_cache_budget_is_sized_to_the_model(tiny_daemon):
    (m,) = status(tiny_daemon["path"])["models"]
    size = os.path.getsize(tiny_daemon["model"])
    per_token = 2 * 2 * (16 + 16) * 2  # layers x kv heads x (k + v head dims) x float16
    assert m["prompt_cache"]["max_bytes"] == max(per_token * 256, 2 * size)
