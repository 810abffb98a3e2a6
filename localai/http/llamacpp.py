"""llama-server's own endpoints, so llama.vim and Continue's llama.cpp provider work
unchanged: POST /completion (a raw prompt) and POST /infill (fill in the middle).

Request fields as llama-server reads them (tools/server/server-context.cpp, server-task.cpp):
prompt, n_predict (-1 = no limit), temperature, top_k, top_p, min_p, repeat_penalty,
repeat_last_n, seed (-1 = random), stop, stream, cache_prompt, t_max_predict_ms, n_probs,
json_schema, grammar; /infill adds input_prefix, input_suffix, input_extra. Fields we do not
use (samplers, n_indent, t_max_prompt_ms, id_slot, response_fields, ...) are ignored.
Responses carry llama-server's names: content, tokens, stop, stop_type (eos|word|limit),
tokens_predicted, tokens_evaluated, tokens_cached, generation_settings.n_ctx, truncated and
`timings` (prompt_n, prompt_ms, prompt_per_token_ms, prompt_per_second, predicted_n,
predicted_ms, predicted_per_token_ms, predicted_per_second, cache_n).
"""
from __future__ import annotations

from .app import HTTPError, default_model, model_name, read_json, run
from .openai import constraint

STOP_TYPE = {"eos": "eos", "stop": "word", "length": "limit", "time": "limit", "cancelled": "none"}


def _bad(message: str):
    return HTTPError("invalid_request", message)


def llama_timings(t: dict | None) -> dict:
    t = t or {}
    pn, pms = t.get("prompt_n", 0), t.get("prompt_ms", 0.0)
    gn, gms = t.get("predicted_n", 0), t.get("predicted_ms", 0.0)
    return {"cache_n": t.get("cache_n", 0),
            "prompt_n": pn, "prompt_ms": pms,
            "prompt_per_token_ms": pms / pn if pn else 0.0,
            "prompt_per_second": 1e3 * pn / pms if pms else 0.0,
            "predicted_n": gn, "predicted_ms": gms,
            "predicted_per_token_ms": gms / gn if gn else 0.0,
            "predicted_per_second": 1e3 * gn / gms if gms else 0.0,
            # ours, beside llama-server's
            **{k: t[k] for k in ("load_ms", "queue_ms", "ttft_ms") if k in t}}


def _params(body: dict) -> dict:
    n_predict = body.get("n_predict", body.get("max_tokens"))
    if n_predict is not None and (isinstance(n_predict, bool) or not isinstance(n_predict, int)):
        raise _bad(f"`n_predict` must be an integer, not {n_predict!r}")
    seed = body.get("seed")
    stop = body.get("stop")
    if isinstance(stop, str):
        stop = [stop]
    p = {"model": model_name(body.get("model")),
         "max_tokens": None if n_predict is None or n_predict < 0 else n_predict,
         "seed": None if seed is None or seed == -1 else seed,
         "stop": stop or None,
         "cache_prompt": body.get("cache_prompt")}
    for k in ("temperature", "top_k", "top_p", "min_p", "repeat_penalty", "repeat_last_n", "t_max_predict_ms"):
        p[k] = body.get(k)
    if p["t_max_predict_ms"] is not None and p["t_max_predict_ms"] <= 0:
        p["t_max_predict_ms"] = None  # llama-server: 0 or less = no budget
    n_probs = body.get("n_probs")
    if n_probs:
        p["logprobs"] = n_probs
    p.update(constraint(body))
    return {k: v for k, v in p.items() if v is not None}


class Native:
    done_marker = False  # llama-server ends a native stream without `[DONE]`

    def __init__(self, model: str, prompt: str):
        self.model, self.prompt = model, prompt

    def _final(self, c, model) -> dict:
        t = c.done.timings or {}
        return {"index": c.index, "content": "".join(c.text), "tokens": c.tokens, "id_slot": 0,
                "stop": True, "model": model["name"] or self.model,
                "tokens_predicted": t.get("predicted_n", 0),
                "tokens_evaluated": t.get("prompt_n", 0) + t.get("cache_n", 0),
                "tokens_cached": t.get("prompt_n", 0) + t.get("cache_n", 0) + t.get("predicted_n", 0),
                "generation_settings": {"n_ctx": model["n_ctx"], "model": model["name"]},
                "prompt": self.prompt, "has_new_line": "\n" in "".join(c.text), "truncated": False,
                "stop_type": STOP_TYPE.get(c.done.finish_reason, "none"), "stopping_word": "",
                "timings": llama_timings(t)}

    def response(self, choices, opts, model):
        out = self._final(choices[0], model)
        if opts.get("n_probs"):
            out["completion_probabilities"] = [_probs(e) for e in choices[0].logprobs]
        return out

    def stream_start(self, c, opts):
        return ()

    def stream_token(self, c, ev, opts):
        d = {"index": c.index, "content": ev.text, "tokens": ev.tokens, "stop": False, "id_slot": 0}
        if opts.get("n_probs"):
            d["completion_probabilities"] = [_probs(e) for e in ev.logprobs or []]
        yield d

    def stream_done(self, c, opts):
        d = self._final(c, {"name": c.done.model, "n_ctx": None})
        d["content"], d["tokens"] = "", []
        yield d

    def stream_end(self, choices, opts):
        return ()


def _probs(e: dict) -> dict:
    """llama-server's completion_probabilities entry."""
    return {"id": e["id"], "token": e["token"], "bytes": e["bytes"], "logprob": e["logprob"],
            "top_logprobs": [{"id": t["id"], "token": t["token"], "bytes": t["bytes"], "logprob": t["logprob"]}
                             for t in e["top_logprobs"]]}


def _opts(body: dict) -> dict:
    return {"stream": bool(body.get("stream")), "n_probs": bool(body.get("n_probs"))}


async def completion(request):
    body = await read_json(request)
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise _bad("`prompt` must be a string")
    params = _params(body)
    params["prompt"] = prompt
    api = Native(params.get("model") or default_model(request), prompt)
    return await run(request, api, "generate", [params], _opts(body))


async def infill(request):
    body = await read_json(request)
    for k in ("input_prefix", "input_suffix"):
        if not isinstance(body.get(k), str):
            raise _bad(f'"{k}" is required and must be a string')
    prompt = body.get("prompt") or ""
    if not isinstance(prompt, str):
        raise _bad('"prompt" must be a string')
    extra = body.get("input_extra") or []
    if not isinstance(extra, list) or not all(isinstance(c, dict) and isinstance(c.get("text"), str)
                                              for c in extra):
        raise _bad('"input_extra" must be an array of {"filename": string, "text": string}')
    params = _params(body)
    # llama-server puts `prompt` right after the prefix, inside the FIM middle
    params.update(prefix=body["input_prefix"] + prompt, suffix=body["input_suffix"])
    if extra:
        params["extra"] = [{"filename": str(c.get("filename") or "tmp"), "text": c["text"]} for c in extra]
    api = Native(params.get("model") or default_model(request), prompt)
    return await run(request, api, "complete", [params], _opts(body))


ROUTES = {"/completion": completion, "/completions": completion, "/infill": infill}
