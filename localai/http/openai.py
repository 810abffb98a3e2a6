"""OpenAI's API: POST /v1/chat/completions and /v1/completions (`suffix` -> fill in the middle).

Each maps a request body to protocol params (`chat`, `generate` or `complete`), one per
choice, and the scheduler's events back to OpenAI's objects. Unknown fields are ignored, as
OpenAI-compatible servers do; values we cannot honour are a 400, never silently dropped.
"""
from __future__ import annotations

import time
import uuid

from .app import MAX_N, HTTPError, default_model, model_name, read_json, run

FINISH = {"eos": "stop", "stop": "stop", "length": "length", "time": "length", "cancelled": "stop"}
ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


def _bad(message: str, param: str | None = None):
    return HTTPError("invalid_request", message, param)


def _number(body: dict, name: str, lo: float, hi: float, integer: bool = False):
    v = body.get(name)
    if v is None:
        return None
    kind = int if integer else (int, float)
    if isinstance(v, bool) or not isinstance(v, kind) or not lo <= v <= hi:
        raise _bad(f"`{name}` must be {'an integer' if integer else 'a number'} in [{lo}, {hi}], not {v!r}", name)
    return v


def sampling(body: dict) -> dict:
    """The sampling fields every generating endpoint shares, checked; OpenAI names in, ours out."""
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 0):
        raise _bad(f"`max_tokens` must be a non-negative integer, not {max_tokens!r}", "max_tokens")
    stop = body.get("stop")
    if isinstance(stop, str):
        stop = [stop]
    if stop is not None and not (isinstance(stop, list) and all(isinstance(s, str) for s in stop)):
        raise _bad("`stop` must be a string or a list of strings", "stop")
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise _bad(f"`seed` must be an integer, not {seed!r}", "seed")
    out = {"model": model_name(body.get("model")), "max_tokens": max_tokens,
           "temperature": _number(body, "temperature", 0, 2),
           "top_p": _number(body, "top_p", 0, 1), "top_k": _number(body, "top_k", 0, 1 << 20, True),
           "min_p": _number(body, "min_p", 0, 1), "repeat_penalty": _number(body, "repeat_penalty", 0.01, 10),
           "stop": stop, "seed": seed & ((1 << 63) - 1) if seed is not None else None}
    out.update(constraint(body))
    out["prediction"] = prediction(body.get("prediction"))
    return {k: v for k, v in out.items() if v is not None}


def prediction(pred) -> str | None:
    """OpenAI's predicted output, {"type": "content", "content": text or [{"type": "text", "text"}]}:
    drafts for speculative decoding (the protocol's `prediction`)."""
    if pred is None:
        return None
    content = pred.get("content") if isinstance(pred, dict) and pred.get("type") == "content" else None
    if isinstance(content, list) and all(isinstance(c, dict) and isinstance(c.get("text"), str) for c in content):
        content = "".join(c["text"] for c in content)
    if not isinstance(content, str):
        raise _bad('`prediction` must be {"type": "content", "content": "text"}', "prediction")
    return content


def constraint(body: dict) -> dict:
    """response_format (json_object, json_schema), and llama-server's `json_schema`/`grammar`."""
    rf = body.get("response_format")
    if rf is not None:
        kind = rf.get("type") if isinstance(rf, dict) else None
        if kind == "json_object":
            return {"schema": True}
        if kind == "json_schema":
            js = rf.get("json_schema")
            schema = js.get("schema") if isinstance(js, dict) else None
            if not isinstance(schema, dict):
                raise _bad("`response_format.json_schema.schema` must be a JSON schema object",
                           "response_format")
            return {"schema": schema}
        if kind != "text":
            raise _bad(f"`response_format.type` must be text, json_object or json_schema, not {kind!r}",
                       "response_format")
    if isinstance(body.get("json_schema"), dict):
        return {"schema": body["json_schema"]}
    if isinstance(body.get("grammar"), str) and body["grammar"]:
        return {"grammar": body["grammar"]}
    return {}


def _n(body: dict) -> int:
    n = body.get("n", 1)
    if n is None:
        return 1
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_N:
        raise _bad(f"`n` must be an integer in [1, {MAX_N}], not {n!r}", "n")
    return n


def per_choice(params: dict, n: int) -> list[dict]:
    """n copies; with a seed, choice i samples with seed + i (so they differ, reproducibly)."""
    out = []
    for i in range(n):
        p = dict(params)
        if "seed" in p:
            p["seed"] = (p["seed"] + i) & ((1 << 63) - 1)
        out.append(p)
    return out


def _content(m: dict, i: int) -> str:
    c = m.get("content")
    if c is None:
        return ""
    if isinstance(c, str):
        return c
    if isinstance(c, list):
        parts = []
        for part in c:
            if not (isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)):
                raise _bad(f"`messages[{i}].content`: only text parts are supported", "messages")
            parts.append(part["text"])
        return "\n".join(parts)
    raise _bad(f"`messages[{i}].content` must be a string or a list of text parts", "messages")


def _messages(body: dict) -> list[dict]:
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise _bad("`messages` must be a non-empty list", "messages")
    out = []
    for i, m in enumerate(msgs):
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            raise _bad(f"`messages[{i}].role` must be one of {', '.join(ROLES)}", "messages")
        out.append({"role": ROLES[m["role"]], "content": _content(m, i)})
    return out


def usage(choices) -> dict:
    t = choices[0].done.timings or {}
    prompt = t.get("prompt_n", 0) + t.get("cache_n", 0)
    completion = sum((c.done.timings or {}).get("predicted_n", 0) for c in choices)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": t.get("cache_n", 0)}}


def timings(choices) -> dict:
    t = dict(choices[0].done.timings or {})
    if len(choices) > 1:
        t["choices"] = [c.done.timings for c in choices]
    return t


def _top(e: dict) -> dict:
    return {"token": e["token"], "logprob": e["logprob"], "bytes": e["bytes"]}


def chat_logprobs(entries: list) -> dict:
    return {"content": [{**_top(e), "top_logprobs": [_top(t) for t in e["top_logprobs"]]} for e in entries]}


def text_logprobs(entries: list, offset: int = 0) -> dict:
    out = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
    for e in entries:
        out["tokens"].append(e["token"])
        out["token_logprobs"].append(e["logprob"])
        out["top_logprobs"].append({t["token"]: t["logprob"] for t in e["top_logprobs"]})
        out["text_offset"].append(offset)
        offset += len(e["token"])
    return out


class _Base:
    done_marker = True

    def __init__(self, model: str | None):
        self.id = f"{self.prefix}-{uuid.uuid4().hex[:24]}"
        self.created = int(time.time())
        self.model = model

    def _chunk(self, choices: list, usage_=None, opts=None) -> dict:
        d = {"id": self.id, "object": self.chunk_object, "created": self.created,
             "model": self.model or "", "system_fingerprint": "localai", "choices": choices}
        if opts and opts.get("include_usage"):
            d["usage"] = usage_
        return d

    def stream_end(self, choices, opts):
        if opts.get("include_usage"):
            d = self._chunk([], usage(choices), opts)
            d["timings"] = timings(choices)
            yield d


class Chat(_Base):
    prefix, chunk_object = "chatcmpl", "chat.completion.chunk"

    def response(self, choices, opts, model):
        out = []
        for c in choices:
            out.append({"index": c.index, "message": {"role": "assistant", "content": "".join(c.text)},
                        "logprobs": chat_logprobs(c.logprobs) if opts.get("logprobs") else None,
                        "finish_reason": FINISH.get(c.done.finish_reason, "stop")})
        return {"id": self.id, "object": "chat.completion", "created": self.created,
                "model": model["name"], "system_fingerprint": "localai", "choices": out,
                "usage": usage(choices), "timings": timings(choices)}

    def stream_start(self, c, opts):
        yield self._chunk([{"index": c.index, "delta": {"role": "assistant", "content": ""},
                            "logprobs": None, "finish_reason": None}], None, opts)

    def stream_token(self, c, ev, opts):
        lp = chat_logprobs(ev.logprobs or []) if opts.get("logprobs") else None
        yield self._chunk([{"index": c.index, "delta": {"content": ev.text}, "logprobs": lp,
                            "finish_reason": None}], None, opts)

    def stream_done(self, c, opts):
        d = self._chunk([{"index": c.index, "delta": {}, "logprobs": None,
                          "finish_reason": FINISH.get(c.done.finish_reason, "stop")}], None, opts)
        d["timings"] = c.done.timings
        yield d


class Text(_Base):
    prefix, chunk_object = "cmpl", "text_completion"

    def response(self, choices, opts, model):
        out = [{"index": c.index, "text": "".join(c.text),
                "logprobs": text_logprobs(c.logprobs) if opts.get("logprobs") else None,
                "finish_reason": FINISH.get(c.done.finish_reason, "stop")} for c in choices]
        return {"id": self.id, "object": "text_completion", "created": self.created,
                "model": model["name"], "system_fingerprint": "localai", "choices": out,
                "usage": usage(choices), "timings": timings(choices)}

    def stream_start(self, c, opts):
        return ()

    def stream_token(self, c, ev, opts):
        lp = text_logprobs(ev.logprobs or []) if opts.get("logprobs") else None
        yield self._chunk([{"index": c.index, "text": ev.text, "logprobs": lp, "finish_reason": None}],
                          None, opts)

    def stream_done(self, c, opts):
        d = self._chunk([{"index": c.index, "text": "", "logprobs": None,
                          "finish_reason": FINISH.get(c.done.finish_reason, "stop")}], None, opts)
        d["timings"] = c.done.timings
        yield d


def _stream_opts(body: dict) -> dict:
    stream = body.get("stream", False)
    if not isinstance(stream, bool) and stream is not None:
        raise _bad("`stream` must be a boolean", "stream")
    so = body.get("stream_options") or {}
    if not isinstance(so, dict):
        raise _bad("`stream_options` must be an object", "stream_options")
    return {"stream": bool(stream), "include_usage": bool(stream) and bool(so.get("include_usage"))}


async def chat_completions(request):
    body = await read_json(request)
    params = sampling(body)
    params["messages"] = _messages(body)
    opts = _stream_opts(body)
    if body.get("logprobs"):
        k = body.get("top_logprobs")
        k = 0 if k is None else _number(body, "top_logprobs", 0, 20, True)
        params["logprobs"], opts["logprobs"] = k, True
    api = Chat(params.get("model") or default_model(request))
    return await run(request, api, "chat", per_choice(params, _n(body)), opts)


async def completions(request):
    body = await read_json(request)
    params = sampling(body)
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise _bad("`prompt` must be a string (one prompt per request; token-id prompts are not supported)",
                   "prompt")
    if body.get("echo"):
        raise _bad("`echo` is not supported", "echo")
    opts = _stream_opts(body)
    if body.get("logprobs") is not None:
        params["logprobs"], opts["logprobs"] = _number(body, "logprobs", 0, 20, True), True
    suffix = body.get("suffix")
    if suffix is not None and not isinstance(suffix, str):
        raise _bad("`suffix` must be a string", "suffix")
    if suffix is not None:  # fill in the middle with the model's FIM tokens
        method, params["prefix"], params["suffix"] = "complete", prompt, suffix
    else:
        method, params["prompt"] = "generate", prompt
    api = Text(params.get("model") or default_model(request))
    return await run(request, api, method, per_choice(params, _n(body)), opts)


ROUTES = {"/v1/chat/completions": chat_completions, "/chat/completions": chat_completions,
          "/v1/completions": completions}
