"""The HTTP API (`localai serve --http`) of a real daemon with the real default model on a free
loopback port, driven by real clients: the `openai` package, the `llm` CLI configured through
extra-openai-models.yaml, raw HTTP with llama.vim's /infill body. Greedy text over HTTP must
equal the socket's for the same request to the same daemon."""
from __future__ import annotations

import functools
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import httpx
import jsonschema
import openai
import pytest

from localai.client import Client
from test_daemon_support import free_port

N_CTX = 512
HI = [{"role": "user", "content": "Name three colors."}]


def _start(http: str, extra_env: dict | None = None, args: tuple = ()) -> dict:
    root = tempfile.mkdtemp(prefix="localai-http-")
    path = os.path.join(root, "run", "localai.sock")
    env = dict(os.environ, LOCALAI_SOCKET=path, XDG_CONFIG_HOME=os.path.join(root, "config"),
               **(extra_env or {}))
    env.pop("LOCALAI_CONFIG", None)
    if not extra_env or "LOCALAI_API_KEY" not in extra_env:
        env.pop("LOCALAI_API_KEY", None)
    log = os.path.join(root, "daemon.log")
    proc = subprocess.Popen([sys.executable, "-m", "localai.daemon", "--socket", path, "--n-ctx", str(N_CTX),
                             "--keep-alive", "-1", "--http", http, *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=open(log, "wb"))
    return {"proc": proc, "path": path, "root": root, "log": log, "env": env}


def _stop(d: dict) -> None:
    d["proc"].terminate()
    try:
        d["proc"].wait(10)
    except subprocess.TimeoutExpired:
        d["proc"].kill()
    shutil.rmtree(d["root"], ignore_errors=True)


def _wait_http(d: dict, url: str) -> None:
    deadline = time.monotonic() + 30
    while True:
        assert d["proc"].poll() is None, open(d["log"]).read()
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, open(d["log"]).read()
        time.sleep(0.05)


@pytest.fixture(scope="module")
def daemon(smollm2_path):
    port = free_port()
    d = _start(f"127.0.0.1:{port}")
    d["url"] = f"http://127.0.0.1:{port}"
    try:
        _wait_http(d, d["url"])
        with Client(d["path"], autostart=False) as c:  # load the model, warm the kernels
            c.call("generate", prompt="Hello", max_tokens=2, temperature=0)
        yield d
    finally:
        _stop(d)


@pytest.fixture(scope="module")
def oai(daemon):
    return openai.OpenAI(base_url=daemon["url"] + "/v1", api_key="unused", max_retries=0, timeout=300)


def _socket(daemon, method, **params) -> dict:
    with Client(daemon["path"], autostart=False) as c:
        return c.call(method, **params)


# --- OpenAI: chat and completions ------------------------------------------------------------------

def test_chat_greedy_equals_the_socket(daemon, oai):
    r = oai.chat.completions.create(model="smollm2", messages=HI, max_tokens=12, temperature=0)
    want = _socket(daemon, "chat", messages=HI, max_tokens=12, temperature=0)
    assert r.choices[0].message.content == want["text"] and want["text"]
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].finish_reason in ("stop", "length")
    assert r.usage.completion_tokens == 12 or r.choices[0].finish_reason == "stop"
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens > 12
    assert r.model_extra["timings"]["predicted_n"] == r.usage.completion_tokens


def test_completions_greedy_equals_the_socket_and_suffix_is_fim(daemon, oai):
    r = oai.completions.create(model="smollm2", prompt="The capital of France is", max_tokens=8, temperature=0)
    assert r.choices[0].text == _socket(daemon, "generate", prompt="The capital of France is", max_tokens=8,
                                        temperature=0)["text"]
    r = oai.completions.create(model="smollm2", prompt="def add(a, b):\n", suffix="\n\nprint(add(1, 2))\n",
                               max_tokens=8, temperature=0)
    assert r.choices[0].text == _socket(daemon, "complete", prefix="def add(a, b):\n",
                                        suffix="\n\nprint(add(1, 2))\n", max_tokens=8, temperature=0)["text"]


def test_chat_stream_is_sse_with_usage_and_done(daemon, oai):
    want = oai.chat.completions.create(model="smollm2", messages=HI, max_tokens=10, temperature=0)
    chunks = list(oai.chat.completions.create(model="smollm2", messages=HI, max_tokens=10, temperature=0,
                                              stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == want.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == want.choices[0].finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == want.usage.completion_tokens
    raw = httpx.post(daemon["url"] + "/v1/completions", timeout=300,
                     json={"prompt": "One, two,", "max_tokens": 3, "temperature": 0, "stream": True})
    assert raw.headers["content-type"].startswith("text/event-stream")
    events = [line for line in raw.text.split("\n\n") if line]
    assert events[-1] == "data: [DONE]" and all(e.startswith("data: ") for e in events)
    assert json.loads(events[-2][6:])["choices"][0]["finish_reason"] == "length"


def test_message_content_as_text_parts_and_unknown_fields(daemon, oai):
    parts = [{"role": "user", "content": [{"type": "text", "text": "Name three colors."}]}]
    r = oai.chat.completions.create(model="smollm2", messages=parts, max_tokens=6, temperature=0,
                                    extra_body={"some_future_field": {"x": 1}}, presence_penalty=0)
    assert r.choices[0].message.content == oai.chat.completions.create(
        model="smollm2", messages=HI, max_tokens=6, temperature=0).choices[0].message.content


def test_n2_and_seed_reproducibility(oai):
    kw = dict(model="smollm2", messages=[{"role": "user", "content": "Tell me a story."}], max_tokens=8,
              temperature=1.0, seed=1234, n=2)
    a = oai.chat.completions.create(**kw)
    b = oai.chat.completions.create(**kw)
    assert [c.index for c in a.choices] == [0, 1]
    assert [c.message.content for c in a.choices] == [c.message.content for c in b.choices]
    assert a.usage.completion_tokens == 16
    c = oai.chat.completions.create(**{**kw, "seed": 99, "n": 1})
    assert len(c.choices) == 1
    # streaming n=2: both indexes arrive and each finishes
    s = list(oai.chat.completions.create(**{**kw, "stream": True}))
    finished = {ch.choices[0].index for ch in s if ch.choices and ch.choices[0].finish_reason}
    streamed = ["".join(ch.choices[0].delta.content or "" for ch in s if ch.choices and ch.choices[0].index == i)
                for i in (0, 1)]
    assert finished == {0, 1} and streamed == [c.message.content for c in a.choices]


def test_logprobs_openai_shape_from_the_distribution_before_sampling(oai):
    import math

    r = oai.chat.completions.create(model="smollm2", messages=HI, max_tokens=6, temperature=0,
                                    logprobs=True, top_logprobs=3)
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens
    assert "".join(t.token for t in content) == r.choices[0].message.content
    for t in content:
        tops = [x.logprob for x in t.top_logprobs]
        assert len(tops) == 3 and tops == sorted(tops, reverse=True)
        assert t.logprob == pytest.approx(tops[0])  # greedy picks the most likely token
        assert sum(math.exp(x) for x in tops) <= 1 + 1e-6 and all(x <= 0 for x in tops)
        assert bytes(t.bytes).decode() == t.token
    # sampled at temperature 1.5, a token may be unlikely, but its logprob is still the model's
    r = oai.completions.create(model="smollm2", prompt="Once upon a time", max_tokens=5, temperature=1.5,
                               seed=3, logprobs=2)
    lp = r.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == 5
    assert all(lp.token_logprobs[i] <= max(lp.top_logprobs[i].values()) + 1e-9 for i in range(5))
    assert lp.text_offset[0] == 0 and "".join(lp.tokens) == r.choices[0].text


SCHEMA = {"type": "object", "properties": {
    "color": {"enum": ["red", "green", "blue"]},
    "shades": {"type": "array", "items": {"type": "string", "maxLength": 10}, "maxItems": 2},
    "rgb": {"type": "object", "properties": {"r": {"type": "integer", "minimum": 0, "maximum": 255},
                                             "g": {"type": "integer", "minimum": 0, "maximum": 255}},
            "required": ["r", "g"], "additionalProperties": False}},
    "required": ["color", "shades", "rgb"], "additionalProperties": False}


def test_json_schema_every_answer_validates(oai):
    r = oai.chat.completions.create(
        model="smollm2", messages=[{"role": "user", "content": "Describe your favourite color as JSON."}],
        max_tokens=80, temperature=0.8, seed=5, n=3,
        response_format={"type": "json_schema", "json_schema": {"name": "color", "schema": SCHEMA}})
    for c in r.choices:
        jsonschema.validate(json.loads(c.message.content), SCHEMA)
        assert c.finish_reason == "stop"
    r = oai.chat.completions.create(model="smollm2", messages=HI, max_tokens=60, temperature=0,
                                    response_format={"type": "json_object"})
    assert isinstance(json.loads(r.choices[0].message.content), dict)


# --- errors --------------------------------------------------------------------------------------

def test_bad_parameters_are_400_in_openai_shape_and_not_retried(daemon):
    sent = []
    client = openai.OpenAI(base_url=daemon["url"] + "/v1", api_key="unused", max_retries=3,
                           http_client=httpx.Client(event_hooks={"request": [sent.append]}, timeout=300))
    for bad in ({"temperature": -1}, {"n": 0}, {"top_logprobs": 50, "logprobs": True},
                {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nope"}}}},
                {"messages": [{"role": "wizard", "content": "hi"}]}):
        sent.clear()
        with pytest.raises(openai.BadRequestError) as exc:
            client.chat.completions.create(**{"model": "smollm2", "messages": HI, "max_tokens": 4, **bad})
        assert len(sent) == 1, f"{bad}: retried"
        body = exc.value.body
        assert set(body) >= {"message", "type", "code"} and body["type"] == "invalid_request_error", body
    # a prompt over the context: an error, never silent truncation
    with pytest.raises(openai.BadRequestError) as exc:
        client.completions.create(model="smollm2", prompt="word " * 600, max_tokens=4)
    assert exc.value.code == "context_length_exceeded" and "512" in exc.value.message
    r = httpx.post(daemon["url"] + "/v1/chat/completions", content=b"{not json", timeout=30)
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
    r = httpx.post(daemon["url"] + "/v1/chat/completions", content=b"{" + b" " * (5 << 20) + b"}", timeout=30)
    assert r.status_code == 413
    r = httpx.get(daemon["url"] + "/v1/nothing", timeout=30)
    assert r.status_code == 404 and "error" in r.json()
    assert "access-control-allow-origin" not in httpx.options(
        daemon["url"] + "/v1/models", headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "GET"}).headers


def test_models_and_health(daemon, oai):
    assert httpx.get(daemon["url"] + "/health").json() == {"status": "ok"}
    ids = [m.id for m in oai.models.list()]
    assert "smollm2" in ids


# --- the llm CLI -----------------------------------------------------------------------------------

def test_llm_cli_through_extra_openai_models(daemon, tmp_path):
    llm_bin = shutil.which("llm", path=os.path.dirname(sys.executable)) or shutil.which("llm")
    assert llm_bin, "the `llm` CLI is in the test extra"
    (tmp_path / "extra-openai-models.yaml").write_text(
        f"- model_id: localai\n  model_name: smollm2\n  api_base: \"{daemon['url']}/v1\"\n")
    env = dict(os.environ, LLM_USER_PATH=str(tmp_path))
    env.pop("OPENAI_API_KEY", None)
    out = subprocess.run([llm_bin, "-m", "localai", "--no-log", "-o", "temperature", "0", "-o", "max_tokens", "10",
                          "Name three colors."], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    want = _socket(daemon, "chat", messages=HI, max_tokens=10, temperature=0)["text"]
    assert out.stdout.strip() == want.strip()


# --- llama-server's endpoints ----------------------------------------------------------------------

LLAMA_VIM_BODY = {  # what llama.vim's llama#fim sends (autoload/llama.vim)
    "input_prefix": "def fibonacci(n):\n",
    "input_suffix": "\n\nprint(fibonacci(10))\n",
    "input_extra": [{"text": "def square(x):\n    return x * x\n", "time": 1732000000, "filename": "util.py"}],
    "prompt": "    ",
    "n_predict": 16, "n_indent": 4, "top_k": 40, "top_p": 0.99, "stream": False,
    "samplers": ["top_k", "top_p", "infill"], "cache_prompt": True,
    "t_max_prompt_ms": 500, "t_max_predict_ms": 100000,
}


def test_infill_with_llama_vims_body(daemon):
    r = httpx.post(daemon["url"] + "/infill", json=LLAMA_VIM_BODY, timeout=300)
    assert r.status_code == 200, r.text
    d = r.json()
    want = _socket(daemon, "complete", prefix="def fibonacci(n):\n    ", suffix="\n\nprint(fibonacci(10))\n",
                   extra=[{"filename": "util.py", "text": "def square(x):\n    return x * x\n"}],
                   max_tokens=16, top_k=40, top_p=0.99)
    assert d["content"] == want["text"]
    assert d["stop"] is True and d["stop_type"] in ("eos", "limit", "word")
    assert d["generation_settings"]["n_ctx"] == N_CTX and d["truncated"] is False
    t = d["timings"]
    for k in ("prompt_n", "prompt_ms", "prompt_per_token_ms", "prompt_per_second", "predicted_n",
              "predicted_ms", "predicted_per_token_ms", "predicted_per_second", "cache_n"):
        assert isinstance(t[k], (int, float)), k
    assert t["predicted_n"] == d["tokens_predicted"] == len(d["tokens"])
    # the same request again: the prompt comes from the cache (cache_prompt)
    again = httpx.post(daemon["url"] + "/infill", json=LLAMA_VIM_BODY, timeout=300).json()
    assert again["content"] == d["content"] and again["timings"]["cache_n"] > 0
    # llama.vim's ring-buffer warm-up: n_predict 0, nothing generated
    warm = {**LLAMA_VIM_BODY, "input_prefix": "", "input_suffix": "", "prompt": "", "n_predict": 0,
            "t_max_predict_ms": 1}
    w = httpx.post(daemon["url"] + "/infill", json=warm, timeout=300)
    assert w.status_code == 200 and w.json()["content"] == ""
    bad = httpx.post(daemon["url"] + "/infill", json={"input_prefix": "x"}, timeout=30)
    assert bad.status_code == 400 and "input_suffix" in bad.json()["error"]["message"]


def test_completion_native_stream(daemon):
    body = {"prompt": "The capital of France is", "n_predict": 6, "temperature": 0, "stream": True}
    r = httpx.post(daemon["url"] + "/completion", json=body, timeout=300)
    events = [json.loads(e[6:]) for e in r.text.split("\n\n") if e.startswith("data: ")]
    assert "[DONE]" not in r.text
    assert [e["stop"] for e in events] == [False] * (len(events) - 1) + [True]
    text = "".join(e["content"] for e in events)
    assert text == _socket(daemon, "generate", prompt="The capital of France is", max_tokens=6, temperature=0)["text"]
    assert events[-1]["timings"]["predicted_n"] == 6 and events[-1]["stop_type"] == "limit"
    one = httpx.post(daemon["url"] + "/completion", json={**body, "stream": False, "n_probs": 2}, timeout=300).json()
    assert one["content"] == text and len(one["completion_probabilities"]) == 6
    g = httpx.post(daemon["url"] + "/completion", timeout=300, json={
        "prompt": "Is Paris in France? Answer:", "n_predict": 4, "temperature": 1.0,
        "grammar": 'root ::= " yes" | " no"'}).json()
    assert g["content"] in (" yes", " no") and g["stop_type"] == "eos"


# --- binding and keys ------------------------------------------------------------------------------

def _non_loopback_address() -> str:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.connect(("192.0.2.1", 9))  # TEST-NET-1: nothing is sent, the kernel only picks a route
        addr = s.getsockname()[0]
    except OSError:
        addr = "0.0.0.0"
    finally:
        s.close()
    return addr if not addr.startswith("127.") else "0.0.0.0"


@pytest.mark.parametrize("host", ["0.0.0.0", "interface"])
def test_non_loopback_without_a_key_refuses_to_start(host):
    host = _non_loopback_address() if host == "interface" else host
    d = _start(f"{host}:{free_port()}")
    try:
        assert d["proc"].wait(30) == 1
        err = open(d["log"]).read()
        assert "refusing" in err and "API key" in err and "Traceback" not in err
        assert not os.path.exists(d["path"])
    finally:
        _stop(d)


def test_api_key_required_on_every_endpoint_but_health_and_models(smollm2_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    d = _start(f"127.0.0.1:{port}", extra_env={"LOCALAI_API_KEY": "s3cret-key"})
    try:
        _wait_http(d, url)
        body = {"messages": HI, "max_tokens": 1, "temperature": 0}
        r = httpx.post(url + "/v1/chat/completions", json=body, timeout=300)
        assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
        assert httpx.post(url + "/v1/chat/completions", json=body, timeout=300,
                          headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert httpx.post(url + "/infill", json=LLAMA_VIM_BODY, timeout=300).status_code == 401
        assert httpx.get(url + "/health").status_code == 200
        assert httpx.get(url + "/v1/models").status_code == 200
        ok = httpx.post(url + "/v1/chat/completions", json=body, timeout=300,
                        headers={"Authorization": "Bearer s3cret-key"})
        assert ok.status_code == 200, ok.text
        assert httpx.post(url + "/completion", json={"prompt": "Hi", "n_predict": 1}, timeout=300,
                          headers={"X-Api-Key": "s3cret-key"}).status_code == 200
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=url + "/v1", api_key="nope", max_retries=0).chat.completions.create(
                model="smollm2", messages=HI, max_tokens=1)
    finally:
        _stop(d)


# --- an error after the stream began (a scripted scheduler, no model) -------------------------------

class _ScriptedScheduler:
    """Answers every job with two tokens, then an error: what a failure mid-answer looks like."""

    models: dict = {}

    def submit(self, job):
        from localai.protocol import Error, Token

        job.conn.send(Token(job.id, "Hel", [1]))
        job.conn.send(Token(job.id, "lo", [2]))
        job.conn.send(Error(job.id, "out_of_memory", "out of memory while running chat"))

    def wake(self):
        pass

    def count(self, key, n=1):
        pass


def test_an_error_mid_stream_is_an_sse_event_the_sdk_raises():
    from types import SimpleNamespace

    from starlette.testclient import TestClient

    from localai.http.app import make_app

    app = make_app(SimpleNamespace(scheduler=_ScriptedScheduler(), cfg=SimpleNamespace(model=None)))
    client = openai.OpenAI(base_url="http://testserver/v1", api_key="x", max_retries=0, http_client=TestClient(app))
    got = []
    with pytest.raises(openai.APIError) as exc:
        for chunk in client.chat.completions.create(model="smollm2", messages=HI, stream=True):
            got.append(chunk.choices[0].delta.content)
    assert "out of memory" in str(exc.value) and got == ["", "Hel", "lo"]
    # not streamed, the same failure is a 503 in OpenAI's shape (retryable: the daemon's fault)
    r = TestClient(app).post("/v1/chat/completions", json={"messages": HI})
    assert r.status_code == 503 and r.json()["error"]["type"] == "server_error"
