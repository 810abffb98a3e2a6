"""The daemon with the real default model on a temporary socket: correct answers for 8
clients at once, cancel and disconnect, every kind of bad input, peer-uid refusal, stale
socket recovery, a second daemon refused, the prompt cache, keep-alive and model switching.
(complete and rewrite are exercised through the CLI in test_client_cli.py.)"""
from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import threading
import time

import pytest

from localai import store
from localai.client import Client
from test_daemon_support import N_CTX, local_llm, shared_daemon

COUNT = "Count from 1 to 1000, separated by commas: 1, 2, 3, 4,"


@pytest.fixture(scope="module")
def daemon(smollm2_path):
    return shared_daemon()


def _status(path) -> dict:
    with Client(path, autostart=False) as c:
        return c.call("status")


def _raw(path, lines: list[bytes], n_events: int, timeout: float = 30) -> list[dict]:
    """Send raw lines on one connection; read n_events events."""
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(timeout)
    s.connect(path)
    for line in lines:
        s.sendall(line)
    buf, events = b"", []
    while len(events) < n_events:
        chunk = s.recv(1 << 16)
        assert chunk, f"connection closed after {events}"
        buf += chunk
        *done, buf = buf.split(b"\n")
        events += [json.loads(x) for x in done if x.strip()]
    s.close()
    return events


def test_socket_is_private(daemon):
    path = daemon["path"]
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700


def test_eight_concurrent_clients_get_the_greedy_answers(daemon):
    # short prompts: the point is concurrency, and each prompt is computed twice (here and there)
    prompts = ["The sky is", "Once upon a", "Paris is", "def main", "Today I", "Water is", "My name is",
               "Dogs are"]
    want = [local_llm().generate(p, max_tokens=6, temperature=0).text for p in prompts]
    got, active_seen = [None] * 8, []

    def ask(i):
        with Client(daemon["path"], autostart=False) as c:
            got[i] = c.call("generate", prompt=prompts[i], max_tokens=6, temperature=0)["text"]

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        active_seen.append(_status(daemon["path"])["active"])
        time.sleep(0.05)
    for t in threads:
        t.join()
    assert got == want
    assert max(active_seen) >= 2, "requests were not interleaved"


def _wait_for_tokens(c, req_id, n):
    seen = 0
    for ev in c.events(req_id):
        seen += ev.event == "token"
        if seen >= n:
            return


def _assert_counter_stopped(path, since: int):
    deadline = time.monotonic() + 10  # the step in flight when the stop arrived may still finish
    while _status(path)["active"] and time.monotonic() < deadline:
        time.sleep(0.05)
    n1 = _status(path)["tokens_generated"]
    time.sleep(0.5)
    st = _status(path)
    assert st["tokens_generated"] == n1, "generation went on"
    assert st["active"] == 0
    assert n1 - since < 40  # stopped long before max_tokens


def test_cancel_stops_generation(daemon):
    with Client(daemon["path"], autostart=False) as c:
        since = c.call("status")["tokens_generated"]
        req = c.send("generate", {"prompt": COUNT, "max_tokens": 400, "temperature": 0})
        _wait_for_tokens(c, req, 3)
        c.cancel(req)
        last = list(c.events(req))[-1]
        assert last.event == "done" and last.finish_reason == "cancelled"
        assert last.timings["predicted_n"] < 40
    _assert_counter_stopped(daemon["path"], since)


def test_disconnect_stops_generation(daemon):
    since = _status(daemon["path"])["tokens_generated"]
    c = Client(daemon["path"], autostart=False)
    req = c.send("generate", {"prompt": COUNT, "max_tokens": 400, "temperature": 0})
    _wait_for_tokens(c, req, 3)
    c.close()
    time.sleep(0.2)
    _assert_counter_stopped(daemon["path"], since)


BAD = [
    (b"this is not json\n", "invalid_json"),
    (b'{"id": 1, "method": "summon"}\n', "unknown_method"),
    (b'{"id": 2, "method": "generate", "params": {}}\n', "invalid_request"),
    (b'{"id": 3, "method": "generate", "params": {"prompt": "x", "temperature": "hot"}}\n', "invalid_request"),
    (b'{"id": 4, "method": "chat", "params": {"messages": "hi"}}\n', "invalid_request"),
    (b'{"id": 5, "method": "generate", "params": {"prompt": "' + b"a" * (4 * 1024 * 1024 + 10) + b'"}}\n',
     "line_too_long"),
    (b'{"id": 6, "method": "generate", "params": {"prompt": "' + b"word " * (N_CTX + 50) + b'"}}\n',
     "context_overflow"),
    (b'{"id": 7, "method": "generate", "params": {"prompt": "x", "model": "no-such-model"}}\n', "model_not_found"),
    (b'{"id": 8, "method": "tokenize", "params": {"text": "x", "model": "/nope/missing.gguf"}}\n', "model_not_found"),
]


@pytest.mark.parametrize("line,code", BAD, ids=[c for _, c in BAD])
def test_bad_input_gets_an_error_and_the_daemon_keeps_serving(daemon, line, code):
    ok = b'{"id": "next", "method": "generate", "params": {"prompt": "Hi", "max_tokens": 1, "temperature": 0}}\n'
    events = _raw(daemon["path"], [line, ok], 2)
    err = events[0]
    assert err["event"] == "error" and err["code"] == code, err
    assert err["message"]
    rest = events[1:] + ([] if events[-1]["event"] == "done" else
                         _raw(daemon["path"], [ok], 2))
    assert rest[-1]["event"] == "done" and rest[-1]["id"] == "next"


def test_other_uid_is_refused(daemon):
    if os.getuid() != 0:
        pytest.skip("needs root to drop to another uid")
    path, d, root = daemon["path"], os.path.dirname(daemon["path"]), daemon["root"]

    def child(expect: str) -> int:
        pid = os.fork()
        if pid == 0:  # the child: become nobody, try to talk to the daemon
            code = 1
            try:
                os.setgid(65534)
                os.setuid(65534)
                s = socket.socket(socket.AF_UNIX)
                s.settimeout(10)
                try:
                    s.connect(path)
                    reply = s.recv(4096)  # the daemon speaks first, then hangs up
                    ev = json.loads(reply.splitlines()[0])
                    code = 0 if expect == "peercred" and ev.get("code") == "permission_denied" else 2
                    code = code if s.recv(4096) == b"" else 3  # and the connection is closed
                except PermissionError:
                    code = 0 if expect == "perms" else 4
            except BaseException as exc:
                print(f"child: {exc!r}", file=sys.stderr, flush=True)
            finally:
                os._exit(code)
        return os.waitpid(pid, 0)[1] >> 8

    assert child("perms") == 0  # 0700 directory, 0600 socket
    os.chmod(root, 0o711)  # open the file permissions: SO_PEERCRED still refuses
    os.chmod(d, 0o711)
    os.chmod(path, 0o666)
    try:
        assert child("peercred") == 0
    finally:
        os.chmod(path, 0o600)
        os.chmod(d, 0o700)
        os.chmod(root, 0o700)
    assert _status(path)["pid"] == daemon["proc"].pid


def test_second_daemon_refuses(daemon):
    r = subprocess.run([sys.executable, "-m", "localai.daemon", "--socket", daemon["path"]],
                       env=daemon["env"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "already running" in r.stderr
    assert _status(daemon["path"])["pid"] == daemon["proc"].pid


def test_stale_socket_is_recovered_by_an_autostarting_client(tmp_path, monkeypatch):
    path = str(tmp_path / "run" / "localai.sock")
    os.makedirs(os.path.dirname(path), mode=0o700)
    dead = socket.socket(socket.AF_UNIX)  # a daemon that crashed: its socket file stays
    dead.bind(path)
    dead.close()
    with open(str(tmp_path / "run" / "localai.pid"), "w") as f:
        f.write("999999\n")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))  # the new daemon reads no user config
    with Client(path) as c:  # nothing answers: the client starts a daemon, which replaces the socket
        st = c.call("status")
        assert st["pid"] != 999999 and st["socket"] == path
        c.call("shutdown")
    deadline = time.monotonic() + 10
    while os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not os.path.exists(path)
    assert "removing stale socket" in (tmp_path / "run" / "localai.log").read_text()


def test_prompt_cache_makes_a_repeated_request_cheaper(daemon):
    prefix = "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n" * 4
    with Client(daemon["path"], autostart=False) as c:
        before = c.call("status")["tokens_evaluated"]
        cold = c.call("complete", prefix=prefix, max_tokens=4)["timings"]
        mid = c.call("status")["tokens_evaluated"]
        warm = c.call("complete", prefix=prefix, max_tokens=4)["timings"]
        after = c.call("status")["tokens_evaluated"]
        longer = c.call("complete", prefix=prefix + "def add(a, b):\n", max_tokens=4)["timings"]
    assert cold["prompt_n"] > 50
    assert warm["cache_n"] >= cold["prompt_n"] - 1 and warm["prompt_n"] <= 1
    assert after - mid == warm["prompt_n"] < mid - before
    assert longer["cache_n"] >= cold["prompt_n"] - 1 and longer["prompt_n"] < 15


def test_models_and_per_request_model_switching(daemon):
    gemma = store.models_dir() / store.CATALOG["gemma3-270m"].filename
    if not gemma.is_file():
        pytest.skip("gemma3-270m is not downloaded")
    with Client(daemon["path"], autostart=False) as c:
        assert c.call("tokenize", text="Hello world")["tokens"] == local_llm().tokenize("Hello world")
        ids = c.call("tokenize", text="Hello world", model="gemma3-270m")["tokens"]
        assert ids and ids != c.call("tokenize", text="Hello world")["tokens"]
        st = c.call("status")
        assert {m["name"] for m in st["models"]} >= {"smollm2", "gemma3-270m"}
        assert "gemma3-270m" in c.call("models")["loaded"]


def test_keep_alive_unloads_an_idle_model_and_reloads_it(tmp_path):
    path = str(tmp_path / "localai.sock")
    env = dict(os.environ, XDG_CONFIG_HOME=str(tmp_path))
    proc = subprocess.Popen([sys.executable, "-m", "localai.daemon", "--socket", path, "--keep-alive", "1s"],
                            env=env, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not os.path.exists(path):
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
        with Client(path, autostart=False) as c:
            c.call("tokenize", text="hi")
            assert c.call("status")["models"]
            time.sleep(1.6)
            st = c.call("status")
            assert st["models"] == [] and st["unloads"] == 1
            c.call("tokenize", text="hi")
            st = c.call("status")
            assert st["loads"] == 2 and st["models"][0]["name"] == "smollm2"
    finally:
        proc.terminate()
        proc.wait(10)
