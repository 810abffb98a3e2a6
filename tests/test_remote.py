"""Remote engines (`[remotes.NAME]`, localai/remote.py) against real servers: llama.cpp's
OpenAI-compatible server (`python -m llama_cpp.server` from the llama-cpp-python peer venv,
SmolLM2 on loopback ports, one thread each) and another localai daemon's HTTP API, all
reached through a real localai daemon on a private socket.

Every answer that comes through the daemon is compared with the same request sent straight
to the server (greedy, same parameters): the daemon must give the remote's own answer."""
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

import httpx
import pytest

from localai import config, remote
from localai.client import Client, DaemonError
from localai.daemon.handlers import RewriteFilter, SuffixGuard, rewrite_messages
from test_daemon_support import free_port

N_CTX = 512
QUESTION = "What is the capital of France?"
KEY = "s3cret-key"


def _wait(proc, log: str, ok, what: str, limit: float = 90) -> None:
    deadline = time.monotonic() + limit
    while not ok():
        assert proc.poll() is None, f"{what} exited:\n{open(log).read()[-3000:]}"
        assert time.monotonic() < deadline, f"{what} did not start:\n{open(log).read()[-3000:]}"
        time.sleep(0.1)


def _http_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code in (200, 401)
    except httpx.HTTPError:
        return False


class LlamaServer:
    """`python -m llama_cpp.server` with SmolLM2 on a free loopback port; its log is its output."""

    def __init__(self, python, model, root: str, name: str, api_key: str | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.log = os.path.join(root, f"{name}.log")
        args = [str(python), "-m", "llama_cpp.server", "--model", str(model), "--host", "127.0.0.1",
                "--port", str(self.port), "--n_threads", "1", "--n_threads_batch", "1", "--n_ctx", str(N_CTX),
                "--model_alias", "smollm2", "--verbose", "False"]
        if api_key:
            args += ["--api_key", api_key]
        env = dict(os.environ, PYTHONUNBUFFERED="1")  # its "disconnected" lines reach the log at once
        self.proc = subprocess.Popen(args, env=env, stdout=open(self.log, "wb"), stderr=subprocess.STDOUT)
        self.key = api_key

    def wait(self) -> None:
        _wait(self.proc, self.log, lambda: _http_ok(self.url + "/models"), f"llama_cpp.server on {self.port}")

    def post(self, path: str, body: dict) -> dict:
        headers = {"Authorization": f"Bearer {self.key}"} if self.key else {}
        r = httpx.post(f"{self.url}/{path}", json=body, headers=headers, timeout=300)
        r.raise_for_status()
        return r.json()

    def log_text(self) -> str:
        with open(self.log, encoding="utf-8", errors="replace") as f:
            return f.read()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


class Daemon:
    """`python -m localai.daemon` on a private socket with its own config file."""

    def __init__(self, root: str, name: str, conf: str = "", env: dict | None = None, http: str | None = None):
        self.root = os.path.join(root, name)
        os.makedirs(os.path.join(self.root, "config", "localai"))
        with open(os.path.join(self.root, "config", "localai", "config.toml"), "w") as f:
            f.write(conf)
        self.path = os.path.join(self.root, "run", "localai.sock")
        self.env = dict(os.environ, LOCALAI_SOCKET=self.path, XDG_CONFIG_HOME=os.path.join(self.root, "config"),
                        **(env or {}))
        for k in ("LOCALAI_CONFIG", "LOCALAI_API_KEY"):
            self.env.pop(k, None)
        self.log = os.path.join(self.root, "daemon.log")
        args = [sys.executable, "-m", "localai.daemon", "--socket", self.path, "--n-ctx", str(N_CTX),
                "--keep-alive", "-1"] + (["--http", http] if http else [])
        self.proc = subprocess.Popen(args, env=self.env, stdout=subprocess.DEVNULL, stderr=open(self.log, "wb"))

    def wait(self) -> None:
        _wait(self.proc, self.log, lambda: os.path.exists(self.path), "localai daemon")

    def client(self) -> Client:
        return Client(self.path, autostart=False)

    def call(self, method: str, **params) -> dict:
        with self.client() as c:
            return c.call(method, **params)

    def cli(self, *args, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "localai", *args], env=self.env, capture_output=True,
                              text=True, timeout=timeout, stdin=subprocess.DEVNULL)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class Silent:
    """A TCP server that accepts connections and reads requests but never answers."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/v1"
        self.conns = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)  # held open, never answered

    def close(self):
        self.sock.close()
        for c in self.conns:
            c.close()


@pytest.fixture(scope="module")
def world(llama_cpp_python, smollm2_path):
    """Three llama.cpp servers (plain, key-protected, one to kill), a localai daemon serving
    its HTTP API (the `peer` remote), a silent socket, and the daemon under test whose config
    names them all."""
    root = tempfile.mkdtemp(prefix="localai-remote-")
    a = LlamaServer(llama_cpp_python, smollm2_path, root, "a")
    locked = LlamaServer(llama_cpp_python, smollm2_path, root, "locked", api_key=KEY)
    c = LlamaServer(llama_cpp_python, smollm2_path, root, "c")
    peer_port = free_port()
    peer = Daemon(root, "peer", f'[remotes.box]\nurl = "{a.url}"\n', http=f"127.0.0.1:{peer_port}")
    silent = Silent()
    conf = f"""
[remotes.box]
url = "{a.url}"
fim = "tokens"
models = {{ tiny = "smollm2" }}

[remotes.locked]
url = "{locked.url}"
api_key_env = "LOCKED_KEY_WRONG"

[remotes.keyed]
url = "{locked.url}"
api_key_env = "LOCKED_KEY"

[remotes.duo]
url = ["{a.url}", "{c.url}"]

[remotes.solo]
url = "{c.url}"

[remotes.silent]
url = "{silent.url}"
timeout = "1.5s"

[remotes.peer]
url = "http://127.0.0.1:{peer_port}/v1"
fim = "infill"
"""
    d = Daemon(root, "main", conf, env={"LOCKED_KEY_WRONG": "not-the-key", "LOCKED_KEY": KEY})
    procs = [a, locked, c, peer, d]
    try:
        for p in procs:
            p.wait()
        _wait(peer.proc, peer.log, lambda: _http_ok(f"http://127.0.0.1:{peer_port}/health"), "peer HTTP")
        for p in (d, peer):  # load the local model, warm the kernels
            p.call("generate", prompt="Hello", max_tokens=2, temperature=0)
        yield {"a": a, "locked": locked, "c": c, "peer": peer, "d": d, "silent": silent, "root": root,
               "peer_url": f"http://127.0.0.1:{peer_port}/v1"}
    finally:
        for p in procs:
            p.stop()
        silent.close()
        shutil.rmtree(root, ignore_errors=True)


def _fresh(server) -> None:
    """Make the server's next prompt a full prefill: llama-cpp-python reuses the KV of a prompt
    it saw last and evaluates only its final token again, whose logits (a batch of one) may
    tip a greedy near-tie the other way. Each compared request starts from this state."""
    server.post("completions", {"model": "smollm2", "prompt": "Hi", "max_tokens": 1, "temperature": 0.0})


def _chat(server, messages, **sampling) -> str:
    _fresh(server)
    return server.post("chat/completions", {"model": "smollm2", "messages": messages, **sampling})[
        "choices"][0]["message"]["content"]


def _filtered(f, text: str) -> str:
    return f.feed(text) + f.finish()


# --- the remote's own greedy answer -------------------------------------------------------------

def test_ask_on_a_remote_gives_its_greedy_answer(world):
    d, a = world["d"], world["a"]
    want = _chat(a, [{"role": "user", "content": QUESTION}], max_tokens=12, temperature=0.0, top_p=0.9)
    _fresh(a)
    r = d.cli("ask", "-m", "box/smollm2", "--temperature", "0", "--max-tokens", "12", "--json", QUESTION)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["text"] == want and want.strip()
    assert out["model"] == "box/smollm2"
    _fresh(a)
    r = d.cli("ask", "-m", "tiny", "--temperature", "0", "--max-tokens", "12", QUESTION)  # the alias
    assert r.returncode == 0 and r.stdout.rstrip("\n") == want.rstrip("\n"), r.stderr


def test_chat_multi_turn_on_a_remote_gives_its_greedy_answer(world):
    d, a = world["d"], world["a"]
    messages = [{"role": "system", "content": "You are terse."},
                {"role": "user", "content": "Name a fruit."},
                {"role": "assistant", "content": "Apple."},
                {"role": "user", "content": "Name another one."}]
    want = _chat(a, messages, max_tokens=10, temperature=0.0)
    _fresh(a)
    with d.client() as c:
        events = list(c.request("chat", messages=messages, model="box/smollm2", max_tokens=10, temperature=0.0))
    tokens, done = events[:-1], events[-1]
    assert done.text == want and want.strip()
    assert len(tokens) >= 2 and "".join(t.text for t in tokens) == want  # streamed, token by token
    assert done.result["remote"] == "box" and done.result["server"] == world["a"].url


def test_complete_fim_tokens_on_a_remote_gives_its_greedy_answer(world):
    d, a = world["d"], world["a"]
    prefix, suffix = "def add(a, b):\n    ", "\n\nprint(add(1, 2))\n"
    _fresh(a)
    stop = ["<fim_prefix>", "<fim_suffix>", "<fim_middle>", *remote.FIM_END_MARKERS]  # what localai sends
    raw = a.post("completions", {"model": "smollm2", "prompt": f"<fim_prefix>{prefix}<fim_suffix>{suffix}<fim_middle>",
                                 "max_tokens": 12, "temperature": 0.0, "stop": stop})["choices"][0]["text"]
    want = _filtered(SuffixGuard(prefix, suffix), raw)
    _fresh(a)
    got = d.call("complete", prefix=prefix, suffix=suffix, model="box/smollm2", max_tokens=12)
    assert got["text"] == want and raw.strip() and "<fim_" not in got["text"]
    _fresh(a)
    r = d.cli("complete", "--prefix", prefix, "--suffix", suffix, "-m", "box/smollm2", "-n", "12", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["text"] == want, r.stderr


def test_rewrite_on_a_remote_gives_its_greedy_answer(world):
    d, a = world["d"], world["a"]
    text, instruction = "the cat sat on teh mat\n", "Fix the spelling."
    raw = _chat(a, rewrite_messages(text, instruction, None), max_tokens=16, temperature=0.0)
    want = _filtered(RewriteFilter(text, instruction), raw)
    _fresh(a)
    got = d.call("rewrite", text=text, instruction=instruction, model="box/smollm2", max_tokens=16,
                 temperature=0.0)
    assert got["text"] == want and raw.strip()


def test_generate_on_a_remote_gives_its_greedy_text_and_local_only_commands_say_so(world):
    """`localai generate` runs local models in its own process; a remote's model goes through
    the daemon to /v1/completions. tokenize and show read a model file: a clear line."""
    d, a = world["d"], world["a"]
    prompt = "The three primary colours are"
    _fresh(a)
    want = a.post("completions", {"model": "smollm2", "prompt": prompt, "max_tokens": 10, "temperature": 0.0,
                                  "repeat_penalty": 1.0})["choices"][0]["text"]  # generate's default: off
    _fresh(a)
    r = d.cli("generate", "-m", "box/smollm2", "-p", prompt, "-n", "10", "-t", "0", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["text"] == want and want.strip()
    for argv in (["tokenize", "-m", "box/smollm2", "hello"], ["show", "tiny"]):
        r = d.cli(*argv)
        assert r.returncode != 0 and "Traceback" not in r.stderr
        assert "is a model of a remote engine" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_a_remote_added_after_the_daemon_started_says_to_restart_it(world):
    peer, a = world["peer"], world["a"]
    conf = os.path.join(peer.root, "config", "localai", "config.toml")
    before = open(conf).read()
    try:
        with open(conf, "a") as f:
            f.write(f'\n[remotes.late]\nurl = "{a.url}"\n')
        r = peer.cli("ask", "-m", "late/smollm2", "-n", "4", "Hi")
        assert r.returncode != 0 and "Traceback" not in r.stderr
        assert "run `localai stop`" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    finally:
        with open(conf, "w") as f:
            f.write(before)


# --- stopping the remote's work ------------------------------------------------------------------

def _disconnects(server) -> int:
    return server.log_text().count("Disconnected from client")


def _server_is_free(server, limit: float) -> float:
    """Seconds a 2-token request takes (llama_cpp.server runs one request at a time: one that
    kept generating 400 tokens after we left would hold it for a minute)."""
    t0 = time.monotonic()
    server.post("completions", {"model": "smollm2", "prompt": "Hi", "max_tokens": 2, "temperature": 0.0})
    took = time.monotonic() - t0
    assert took < limit, f"the server was still busy for {took:.1f} s"
    return took


def _wait_for(cond, limit: float, what: str) -> None:
    deadline = time.monotonic() + limit
    while not cond():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


LONG = [{"role": "user", "content": "Write a very long story about a dragon and a knight."}]


def test_cancel_stops_the_remote_generation(world):
    d, a = world["d"], world["a"]
    before = _disconnects(a)
    with d.client() as c:
        rid = c.send("chat", {"messages": LONG, "model": "box/smollm2", "max_tokens": 400, "temperature": 0.0})
        events = c.events(rid)
        for _ in range(3):
            assert next(events).event == "token"
        t0 = time.monotonic()
        c.cancel(rid)
        rest = list(events)
    assert rest[-1].event == "done" and rest[-1].finish_reason == "cancelled"
    assert time.monotonic() - t0 < 2.0
    assert rest[-1].timings["predicted_n"] < 100
    _wait_for(lambda: _disconnects(a) > before, 10, "the server never saw the request go away")
    _server_is_free(a, 20)


def test_client_disconnect_stops_the_remote_generation(world):
    d, a = world["d"], world["a"]
    before = _disconnects(a)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(d.path)
    s.sendall(json.dumps({"id": 1, "method": "chat", "params": {
        "messages": LONG, "model": "box/smollm2", "max_tokens": 400, "temperature": 0.0}}).encode() + b"\n")
    f = s.makefile("rb")
    assert json.loads(f.readline())["event"] == "token"
    f.close()
    s.close()  # the client goes away mid-answer (the file held the descriptor open too)
    _wait_for(lambda: _disconnects(a) > before, 10, "the server never saw the request go away")
    _server_is_free(a, 20)


# --- errors: a clear line, and the local models keep serving ---------------------------------

def test_wrong_key_says_the_key_was_refused(world):
    d = world["d"]
    with pytest.raises(DaemonError) as e:
        d.call("chat", messages=[{"role": "user", "content": "Hi"}], model="locked/smollm2", max_tokens=2)
    assert e.value.code == "remote_key_refused"
    assert "refused the key (HTTP 401)" in e.value.message and "LOCKED_KEY_WRONG" in e.value.message
    r = d.cli("ask", "-m", "locked/smollm2", "-n", "2", "Hi")
    assert r.returncode != 0 and "refused the key (HTTP 401)" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    ok = d.call("chat", messages=[{"role": "user", "content": "Hi"}], model="keyed/smollm2", max_tokens=2,
                temperature=0.0)  # the right key from api_key_env
    assert ok["finish_reason"] in ("stop", "length")


def _local_answer(d, out: dict) -> None:
    t0 = time.monotonic()
    out["text"] = d.call("generate", prompt="The capital of France is", max_tokens=8, temperature=0.0)["text"]
    out["s"] = time.monotonic() - t0


def test_silent_remote_times_out_while_the_local_model_answers(world):
    d = world["d"]
    local = {}
    t = threading.Thread(target=_local_answer, args=(d, local))
    t0 = time.monotonic()
    with d.client() as c:
        rid = c.send("chat", {"messages": [{"role": "user", "content": "Hi"}], "model": "silent/x", "max_tokens": 4})
        t.start()
        with pytest.raises(DaemonError) as e:
            list(c.events(rid))
    took = time.monotonic() - t0
    assert e.value.code == "remote_timeout" and "did not answer within 1.5 s" in e.value.message
    assert 1.4 <= took < 5.0
    t.join(120)
    assert local.get("text"), "the local model did not answer while the remote hung"


def test_killed_server_gives_a_clear_error_and_the_group_keeps_serving(world):
    d, a, c = world["d"], world["a"], world["c"]
    hi = [{"role": "user", "content": "Hi"}]

    def ask(remote):
        return d.call("chat", messages=hi, model=f"{remote}/smollm2", max_tokens=3, temperature=0.0)

    servers = {ask("duo")["result"]["server"] for _ in range(4)}
    assert servers == {a.url, c.url}  # spread over both servers
    c.stop()  # killed mid-test
    local = {}
    t = threading.Thread(target=_local_answer, args=(d, local))
    t.start()
    t0 = time.monotonic()
    with pytest.raises(DaemonError) as e:
        ask("solo")
    assert time.monotonic() - t0 < 2.0
    assert e.value.code == "remote_unreachable"
    assert e.value.message.startswith("cannot reach remote `solo`") and "connection refused" in e.value.message
    t.join(120)
    assert local.get("text"), "the local model did not answer"
    for _ in range(4):  # every request succeeds, on the server still up
        assert ask("duo")["result"]["server"] == a.url


# --- listing -------------------------------------------------------------------------------------

def test_models_and_status_show_the_remotes(world):
    d = world["d"]
    r = d.cli("models", "--json")
    assert r.returncode == 0, r.stderr
    rows = {m["name"]: m for m in json.loads(r.stdout)}
    assert rows["box/smollm2"]["kind"] == "remote" and rows["box/smollm2"]["listed"]
    assert rows["box/smollm2"]["aliases"] == ["tiny"]
    assert "smollm2" in rows and rows["smollm2"].get("remote") is None  # the local one
    cache = os.path.join(os.path.dirname(d.path), "localai.remote-models.json")
    assert "box" in json.load(open(cache))  # cached for the next listing
    r = d.cli("models")
    assert "box/smollm2" in r.stdout and "remote" in r.stdout
    r = d.cli("status")
    assert r.returncode == 0, r.stderr
    lines = {ln.split(":", 1)[0] + ":" + ln.split()[2]: ln for ln in r.stdout.splitlines() if ln.startswith("remote ")}
    assert "reachable (" in lines[f"remote box:{world['a'].url}"]
    assert "UNREACHABLE" in lines[f"remote silent:{world['silent'].url}"]
    st = json.loads(d.cli("status", "--json").stdout)
    assert {x["name"] for x in st["remotes"]} == {"box", "locked", "keyed", "duo", "solo", "silent", "peer"}
    box = next(x for x in st["remotes"] if x["name"] == "box")
    assert box["servers"][0]["reachable"] and box["servers"][0]["models"] == ["smollm2"]


# --- another localai as the remote -------------------------------------------------------------

def test_another_localai_daemon_over_http_as_the_remote(world):
    d, peer = world["d"], world["peer"]
    want = peer.call("chat", messages=[{"role": "user", "content": QUESTION}], max_tokens=10, temperature=0.0)
    got = d.call("chat", messages=[{"role": "user", "content": QUESTION}], model="peer/smollm2", max_tokens=10,
                 temperature=0.0)
    assert got["text"] == want["text"] and want["text"].strip()
    prefix, suffix = "def add(a, b):\n    ", "\n\nprint(add(1, 2))\n"
    want = peer.call("complete", prefix=prefix, suffix=suffix, max_tokens=10)
    got = d.call("complete", prefix=prefix, suffix=suffix, model="peer/smollm2", max_tokens=10)  # via /infill
    assert got["text"] == want["text"]
    want = peer.call("generate", prompt="The capital of France is", max_tokens=8, temperature=0.0)
    got = d.call("generate", prompt="The capital of France is", model="peer/smollm2", max_tokens=8,
                 temperature=0.0)
    assert got["text"] == want["text"] and want["text"].strip()


def test_http_api_requests_on_a_remote_model_go_there(world):
    """The daemon's HTTP API takes remote model names too (its bridge routes them)."""
    a = world["a"]
    hi = [{"role": "user", "content": QUESTION}]
    want = _chat(a, hi, max_tokens=8, temperature=0.0)
    _fresh(a)
    r = httpx.post(world["peer_url"] + "/chat/completions", timeout=120,
                   json={"model": "box/smollm2", "messages": hi, "max_tokens": 8, "temperature": 0.0})
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == want and want.strip()
    r = httpx.post(world["peer_url"] + "/chat/completions", timeout=120,
                   json={"model": "box/smollm2", "messages": hi, "max_tokens": 8, "logprobs": True, "top_logprobs": 2})
    assert r.status_code == 400 and "`logprobs` is not forwarded" in r.json()["error"]["message"]


# --- the config ------------------------------------------------------------------------------------

@pytest.mark.parametrize("table, message", [
    ('url = "gpu:8000"', "`url` must be an http:// or https:// URL"),
    ('url = []', "`url` must be an http:// or https:// URL"),
    ('api_key = "sk-123"\nurl = "http://a/v1"', "unknown key `api_key`"),
    ('url = "http://a/v1"\napi_key_env = "sk-abc-123"', "names the environment variable"),
    ('url = "http://a/v1"\nfim = "yes"', "`fim` must be infill, tokens or none"),
    ('url = "http://a/v1"\ntimeout = "soon"', "`timeout`: not a duration"),
    ('url = "http://a/v1"\ntimeout = 0', "`timeout` must be more than 0"),
    ('url = "http://a/v1"\nmodels = { coder = 7 }', "`models` must be a table of aliases"),
    ('url = "http://a/v1"\nfim_template = "<pre>{prefix}"', "`fim_template` must be a string holding"),
    ('fim = "none"', "`url` is missing"),
])
def test_bad_remote_config_is_one_clear_line(tmp_path, table, message):
    p = tmp_path / "config.toml"
    p.write_text(f"[remotes.gpu]\n{table}\n")
    with pytest.raises(config.ConfigError) as e:
        config.load(str(p))
    assert message in e.value.message and "[remotes.gpu]" in e.value.message and "\n" not in e.value.message


def test_routing_needs_a_configured_remote(tmp_path):
    from localai import remote

    p = tmp_path / "config.toml"
    p.write_text('[remotes.gpu]\nurl = ["http://a:8000/v1", "http://b:8000/v1/"]\nmodels = { coder = "Qwen/Q-7B" }\n')
    cfg = config.load(str(p))
    assert cfg.remotes["gpu"].urls == ["http://a:8000/v1", "http://b:8000/v1"]
    assert remote.route(cfg, "gpu/llama-70b")[1] == "llama-70b"
    assert remote.route(cfg, "coder")[1] == "Qwen/Q-7B"
    assert remote.route(cfg, "gpu/coder")[1] == "Qwen/Q-7B"
    for local in ("smollm2", "other/model.gguf", "./gpu/x.gguf", None):
        assert remote.route(cfg, local) is None  # nothing leaves the machine
    cfg.model = "gpu/llama-70b"  # ... unless the default model is remote
    assert remote.route(cfg, None)[1] == "llama-70b"
    assert remote.route(config.load(str(tmp_path / "none.toml")), "gpu/x") is None


# --- a remote that answers 404 (no `world`: a tiny HTTP server, no llama.cpp) --------------------

NOT_FOUND_BODY = "Not Found: this server has no /v1/models " + "x" * 400 + "\nsecond line of the page\n"


@pytest.fixture(scope="module")
def not_found_url():
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class NotFound(BaseHTTPRequestHandler):
        def do_GET(self):
            body = NOT_FOUND_BODY.encode()
            self.send_response(404)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), NotFound)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


def test_models_names_a_bare_remote_as_a_remote(tmp_path, not_found_url):
    os.makedirs(tmp_path / "config" / "localai")
    (tmp_path / "config" / "localai" / "config.toml").write_text(f'[remotes.bare]\nurl = "{not_found_url}"\n')
    env = dict(os.environ, LOCALAI_SOCKET=str(tmp_path / "localai.sock"), XDG_CONFIG_HOME=str(tmp_path / "config"))
    env.pop("LOCALAI_CONFIG", None)
    r = subprocess.run([sys.executable, "-m", "localai", "models"], env=env, capture_output=True, text=True,
                       timeout=60, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("bare/"))
    assert f"remote bare at {not_found_url}" in line and "configured alias" not in line


def test_status_sums_up_a_remote_404_in_one_line(tmp_path, not_found_url):
    d = Daemon(str(tmp_path), "main", f'[remotes.bare]\nurl = "{not_found_url}"\n')
    try:
        d.wait()
        r = d.cli("status")
        assert r.returncode == 0, r.stderr
        line = next(ln for ln in r.stdout.splitlines() if ln.startswith("remote bare:"))
        head = NOT_FOUND_BODY.splitlines()[0]
        assert f"UNREACHABLE (HTTP 404 Not Found: {head[:199]}…)" in line, line
        assert "second line" not in r.stdout and "Traceback" not in r.stderr
    finally:
        d.stop()
