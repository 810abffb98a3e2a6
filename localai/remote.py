"""Remote engines: requests for a model named `NAME/MODEL` (or an alias of `[remotes.NAME]`)
are forwarded to an OpenAI-compatible server — vLLM, llama.cpp's llama-server, Ollama,
another localai — and its server-sent events come back as our `token` events.

    route(cfg, model)                    -> (Remote, remote model id) or None (a local model)
    Router(cfg, count)                   the daemon's side: RemoteJob per request, one asyncio loop
    list_models(cfg), probe(cfg)         `localai models` (cached /v1/models) and `localai status`

Nothing leaves the machine unless the config has a `[remotes.NAME]` table and a request (or
the config's default `model`) names one of its models; only `localai models` and `localai
status` also ask the configured remotes which models they serve and whether they answer.

Each request runs as a task on one event loop thread beside the scheduler, so a remote that
hangs never holds up the local models. A remote with several servers (`url = [...]`) sends
each request to the server with the fewest requests in flight (the least recently picked
among equals); connect errors and 5xx answers before the first token go on to the next
server. Cancelling the task closes the upstream connection at once, which is how servers
learn to stop generating (llama-server, vLLM and llama-cpp-python stop on disconnect).

Imports httpx only when a remote is used (the client path stays light).
"""
from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from dataclasses import dataclass, field

from .config import Remote
from .errors import InvalidRequest, LocalAIError
from .protocol import Done, Error, Token

log = logging.getLogger("localai.remote")

MODELS_MAX_AGE = 300.0   # seconds a remote's /v1/models list is reused
PROBE_TIMEOUT = 2.0      # seconds `localai status` waits for each server
DOWN_FOR = 5.0           # seconds a server that failed is tried after the others


class RemoteError(LocalAIError):
    code = "remote_error"


class RemoteUnreachable(RemoteError):
    code = "remote_unreachable"


class RemoteKeyRefused(RemoteError):
    code = "remote_key_refused"


class RemoteTimeout(RemoteError):
    code = "remote_timeout"


# --- which requests go where ---------------------------------------------------------------------

def route(cfg, model: str | None) -> tuple[Remote, str] | None:
    """(remote, the remote's model id) when `model` — else the config's default model — is
    `NAME/MODEL` of a configured remote or one of a remote's aliases; None: a local model."""
    remotes = getattr(cfg, "remotes", None)
    model = model or cfg.model
    if not model or not remotes:
        return None
    head, sep, tail = model.partition("/")
    if sep and head in remotes and tail:
        r = remotes[head]
        return r, r.models.get(tail, tail)
    for r in remotes.values():
        if model in r.models:
            return r, r.models[model]
    return None


# FIM prompts for `fim = "tokens"` by model family (the remote's model id names it); a
# `fim_template` in the config wins. Sources: each family's model card / tokenizer config.
FIM_TEMPLATES = {
    "qwen": "<|fim_prefix|>{prefix}<|fim_suffix|>{suffix}<|fim_middle|>",
    "codegemma": "<|fim_prefix|>{prefix}<|fim_suffix|>{suffix}<|fim_middle|>",
    "starcoder": "<fim_prefix>{prefix}<fim_suffix>{suffix}<fim_middle>",
    "smollm": "<fim_prefix>{prefix}<fim_suffix>{suffix}<fim_middle>",
    "codellama": "<PRE> {prefix} <SUF>{suffix} <MID>",
    "deepseek": "<\uff5cfim\u2581begin\uff5c>{prefix}<\uff5cfim\u2581hole\uff5c>{suffix}<\uff5cfim\u2581end\uff5c>",
    "codestral": "[SUFFIX]{suffix}[PREFIX]{prefix}",
}


# end-of-text tokens of the FIM families above, as text (a remote may send them as such)
FIM_END_MARKERS = ("<|endoftext|>", "<|file_separator|>", "<|fim_pad|>", "<file_sep>")


def fim_template(remote: Remote, model_id: str) -> str:
    if remote.fim_template:
        return remote.fim_template
    low = model_id.lower()
    for family, tpl in FIM_TEMPLATES.items():
        if family in low:
            return tpl
    raise RemoteError(f"remote `{remote.name}`: no FIM template known for model {model_id!r}: set "
                      f"`fim_template` in [remotes.{remote.name}] (or fim = \"infill\" / \"none\")")


def fill(template: str, prefix: str, suffix: str) -> str:
    """The template with {prefix} and {suffix} replaced in one pass (braces in the code stay)."""
    return re.sub(r"\{(prefix|suffix)\}", lambda m: prefix if m.group(1) == "prefix" else suffix, template)


# --- requests: our methods -> the remote's endpoints ----------------------------------------------

@dataclass
class Upstream:
    path: str            # "chat/completions" (under the base URL) or "/infill" (at the server's root)
    body: dict
    parse: object        # SSE data object -> (text, finish_reason | None)
    filter: object = None  # .feed(text) -> text, .finish() -> text, .done (handlers' filters)
    done: dict = field(default_factory=dict)  # more fields of the `done` event (the filter may fill them)


def _chat_piece(obj: dict):
    c = (obj.get("choices") or [{}])[0]
    return (c.get("delta") or {}).get("content") or "", c.get("finish_reason")


def _text_piece(obj: dict):
    c = (obj.get("choices") or [{}])[0]
    return c.get("text") or "", c.get("finish_reason")


def _infill_piece(obj: dict):  # llama-server's native stream: {"content": ..., "stop": bool}
    reason = None
    if obj.get("stop"):
        reason = "length" if obj.get("stop_type") == "limit" else "stop"
    return obj.get("content") or "", reason


# OpenAI's names; llama.cpp's (and vLLM's) extra samplers under their own names
_BODY_KEYS = ("max_tokens", "temperature", "top_p", "top_k", "min_p", "repeat_penalty", "seed", "stop")


def _sampling(params, defaults: dict, method: str) -> dict:
    from .daemon.handlers import COMPLETE_DEFAULTS, sampling_kwargs

    kw = sampling_kwargs(params, COMPLETE_DEFAULTS if method == "complete" else defaults)
    if kw.get("logprobs") is not None:
        raise InvalidRequest("`logprobs` is not forwarded to remote engines yet: leave it out for remote models")
    body = {k: (list(kw[k]) if k == "stop" else kw[k]) for k in _BODY_KEYS if k in kw}
    if kw.get("grammar") is not None:
        body["grammar"] = kw["grammar"]  # llama-server, llama-cpp-python
    schema = kw.get("schema")
    if schema is not None:
        body["response_format"] = {"type": "json_object"} if schema is True else \
            {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}
    return body


def _chat(remote, model_id, params, defaults):
    return Upstream("chat/completions", {"model": model_id, "messages": params.messages,
                                         **_sampling(params, defaults, "chat")}, _chat_piece)


def _generate(remote, model_id, params, defaults):
    return Upstream("completions", {"model": model_id, "prompt": params.prompt,
                                    **_sampling(params, defaults, "generate")}, _text_piece)


def _rewrite(remote, model_id, params, defaults):
    from .daemon.handlers import RewriteFilter, rewrite_messages

    messages = rewrite_messages(params.text, params.instruction, params.language)
    return Upstream("chat/completions", {"model": model_id, "messages": messages,
                                         **_sampling(params, defaults, "rewrite")},
                    _chat_piece, RewriteFilter(params.text, params.instruction))


def _complete(remote, model_id, params, defaults):
    from .daemon.handlers import SuffixGuard

    body = _sampling(params, defaults, "complete")
    guard = SuffixGuard(params.prefix, params.suffix)
    if remote.fim == "infill":
        if "max_tokens" in body:
            body["n_predict"] = body.pop("max_tokens")
        body.update(input_prefix=params.prefix, input_suffix=params.suffix, model=model_id)
        if params.extra:
            body["input_extra"] = [{"filename": c.get("filename") or "tmp", "text": c["text"]} for c in params.extra]
        return Upstream("/infill", body, _infill_piece, guard)
    if remote.fim == "tokens":
        template = fim_template(remote, model_id)
        prompt = fill(template, params.prefix, params.suffix)
        # the remote detokenizes a FIM or end-of-text token it samples as text: stop there
        markers = re.findall(r"<[^<>{}\s]{1,40}>", template) + list(FIM_END_MARKERS)
        body["stop"] = list(dict.fromkeys(list(body.get("stop") or []) + markers))
    else:  # "none": the model continues the prefix
        prompt = params.prefix
    return Upstream("completions", {"model": model_id, "prompt": prompt, **body}, _text_piece, guard)


def _action(remote, model_id, params, defaults):
    """An action whose prompt the connection has built (`params.bound`: its messages and
    sampling); its filter stops it when it has enough and fills `done.result`."""
    from .actions.registry import ActionFilter

    run, done = params.bound, {}
    body = {"model": model_id, "messages": run.messages,
            **_sampling(params, {**defaults, **run.sampling}, "action")}
    return Upstream("chat/completions", body, _chat_piece, ActionFilter(run, done), done)


BUILDERS = {"chat": _chat, "generate": _generate, "complete": _complete, "rewrite": _rewrite,
            "action": _action}


# --- servers of one remote ------------------------------------------------------------------------

def _root(url: str) -> str:
    return url[: -len("/v1")] if url.endswith("/v1") else url


def _headers(remote: Remote) -> dict:
    key = remote.api_key()
    return {"Authorization": f"Bearer {key}"} if key else {}


def _refused(remote: Remote, url: str, status: int) -> RemoteKeyRefused:
    if remote.api_key_env and remote.api_key():
        how = (f"check ${remote.api_key_env} (the daemon reads it when it starts: `localai stop`, then "
               f"ask again, after changing it)")
    elif remote.api_key_env:
        how = (f"${remote.api_key_env} is not set: set it in the environment the daemon starts from "
               f"(it reads it once, at start; `localai stop` to restart it)")
    else:
        how = f'set api_key_env = "VARIABLE" in [remotes.{remote.name}] and the key in that variable'
    return RemoteKeyRefused(f"remote `{remote.name}` ({url}) refused the key (HTTP {status}): {how}")


def _upstream_message(raw: bytes) -> str:
    try:
        obj = json.loads(raw)
        err = obj.get("error", obj.get("detail", obj)) if isinstance(obj, dict) else obj
        msg = err.get("message", err) if isinstance(err, dict) else err
        return " ".join(str(msg).split())[:300]
    except ValueError:
        return " ".join(raw.decode("utf-8", "replace").split())[:300]


def _first_line(raw: bytes, limit: int = 200) -> str:
    """An error body in one line: a JSON error's message, else the body's first non-blank line;
    at most `limit` characters (cut with an ellipsis)."""
    try:
        json.loads(raw)
        text = _upstream_message(raw)
    except ValueError:
        text = next((ln for ln in raw.decode("utf-8", "replace").splitlines() if ln.strip()), "")
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 1].rstrip() + "…"


def _why(exc) -> str:
    """A few words on a transport error: the OS's reason when there is one (httpx wraps it:
    "All connection attempts failed" around ConnectionRefusedError)."""
    e, seen = exc, set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and (e.errno or e.strerror):
            why = os.strerror(e.errno) if e.errno and e.errno > 0 else e.strerror or str(e)  # gaierror: < 0
            return why[0].lower() + why[1:]
        e = e.__cause__ or e.__context__
    text = str(exc) or type(exc).__name__
    return " ".join(text.split())[:120]


class Pool:
    """The servers of one remote: least requests in flight first, failed ones last."""

    def __init__(self, remote: Remote):
        self.remote = remote
        self.inflight = [0] * len(remote.urls)
        self.picked = [0.0] * len(remote.urls)
        self.down_until = [0.0] * len(remote.urls)

    def order(self) -> list:
        now = time.monotonic()
        return sorted(range(len(self.remote.urls)),
                      key=lambda i: (self.down_until[i] > now, self.inflight[i], self.picked[i]))

    def _url(self, i: int, path: str) -> str:
        base = self.remote.urls[i]
        return _root(base) + path if path.startswith("/") else f"{base}/{path}"

    async def stream(self, client, up: Upstream, job=None):
        """Yield the SSE data objects of `up` from the first server that takes it."""
        import httpx

        r = self.remote
        body = dict(up.body, stream=True)
        timeout = httpx.Timeout(r.timeout, connect=min(r.timeout, 10.0))
        tried = []
        for i in self.order():
            url = self._url(i, up.path)
            self.inflight[i] += 1
            self.picked[i] = time.monotonic()
            try:
                async with client.stream("POST", url, json=body, headers=_headers(r), timeout=timeout) as resp:
                    if resp.status_code >= 500:
                        tried.append(f"{url}: HTTP {resp.status_code} {_upstream_message(await resp.aread())}")
                        self.down_until[i] = time.monotonic() + DOWN_FOR
                        continue
                    if resp.status_code in (401, 403):
                        raise _refused(r, r.urls[i], resp.status_code)
                    if resp.status_code >= 400:
                        raise RemoteError(f"remote `{r.name}` ({url}) refused the request (HTTP {resp.status_code}): "
                                          f"{_upstream_message(await resp.aread())}")
                    async for line in resp.aiter_lines():
                        if not line.startswith("data:"):
                            continue  # comments (": ping"), event names, blank separators
                        data = line[5:].strip()
                        if data == "[DONE]":
                            return
                        try:
                            obj = json.loads(data)
                        except ValueError:
                            raise RemoteError(f"remote `{r.name}` ({url}) sent a line that is not JSON: {data[:80]!r}") from None
                        if isinstance(obj, dict) and obj.get("error"):
                            raise RemoteError(f"remote `{r.name}` ({url}) failed: {_upstream_message(data.encode())}")
                        if job is not None:
                            job.server = r.urls[i]
                        yield obj
                    return
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                tried.append(f"{url}: {_why(exc)}")
                self.down_until[i] = time.monotonic() + DOWN_FOR
            except httpx.TimeoutException:
                raise RemoteTimeout(f"remote `{r.name}` ({r.urls[i]}) did not answer within {r.timeout:g} s "
                                    f"(`timeout` in [remotes.{r.name}])") from None
            except httpx.TransportError as exc:
                if job is not None and job.server is not None:  # after the first byte: no second try
                    raise RemoteError(f"remote `{r.name}` ({r.urls[i]}) broke off the answer: {_why(exc)}") from None
                tried.append(f"{url}: {_why(exc)}")  # e.g. a kept-alive connection to a server that died
                self.down_until[i] = time.monotonic() + DOWN_FOR
            finally:
                self.inflight[i] -= 1
        raise RemoteUnreachable(f"cannot reach remote `{r.name}`: {'; '.join(tried)}")


# --- the daemon's side ----------------------------------------------------------------------------

class RemoteJob:
    """A request on a remote model: what a connection keeps of it (id, `cancelled`).
    Setting `cancelled` closes the upstream request at once."""

    def __init__(self, router: "Router", conn, req, remote: Remote, model_id: str, name: str):
        self.router, self.conn = router, conn
        self.id, self.method, self.params = req.id, req.method, req.params
        self.remote, self.model_id, self.name = remote, model_id, name
        self.task = None
        self.server = None   # the URL that answered
        self._cancelled = False

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    @cancelled.setter
    def cancelled(self, value: bool) -> None:
        if value and not self._cancelled:
            self._cancelled = True
            self.router.cancel(self)


class Router:
    """Runs the requests on remote models, each as a task on one event loop thread."""

    def __init__(self, cfg, count=None):
        self.cfg = cfg
        self.count = count or (lambda key, n=1: None)
        self.pools = {name: Pool(r) for name, r in getattr(cfg, "remotes", {}).items()}
        self.jobs: set = set()
        self.loop = None
        self.client = None
        self.lock = threading.Lock()

    def job(self, conn, req) -> RemoteJob | None:
        """A RemoteJob when `req` generates on a remote model, else None (a local request).
        Other methods (tokenize) on a remote model get a clear error."""
        if not self.pools:
            return None
        from .protocol import METHODS

        model = getattr(req.params, "model", None)
        where = route(self.cfg, model)
        if where is None:
            return None
        if METHODS[req.method].kind != "generate" or req.method not in BUILDERS:
            raise RemoteError(f"`{req.method}` runs on local models only; {model or self.cfg.model!r} "
                              f"is on remote `{where[0].name}`")
        return RemoteJob(self, conn, req, where[0], where[1], model or self.cfg.model)

    def submit(self, job: RemoteJob) -> None:
        import asyncio

        self._start()
        self.jobs.add(job)
        asyncio.run_coroutine_threadsafe(self._launch(job), self.loop)

    def cancel(self, job: RemoteJob) -> None:
        if self.loop is not None:
            self.loop.call_soon_threadsafe(lambda: job.task is not None and job.task.cancel())

    def stop(self) -> None:
        for job in list(self.jobs):
            job.cancelled = True

    # --- the event loop thread ---

    def _start(self) -> None:
        import asyncio

        with self.lock:
            if self.loop is not None:
                return
            loop = asyncio.new_event_loop()
            ready = threading.Event()

            def run():
                asyncio.set_event_loop(loop)
                loop.call_soon(ready.set)
                self._watcher = loop.create_task(self._watch())  # held: the loop keeps only a weak reference
                loop.run_forever()

            threading.Thread(target=run, name="localai-remote", daemon=True).start()
            ready.wait()
            self.loop = loop

    async def _watch(self) -> None:
        """A client that went away (an HTTP client's bridge marks itself dead) cancels its jobs."""
        import asyncio

        while True:
            await asyncio.sleep(0.05)
            for job in list(self.jobs):
                if job.conn.dead and not job.cancelled:
                    job.cancelled = True

    async def _launch(self, job: RemoteJob) -> None:
        import asyncio

        if self.client is None:
            import httpx

            self.client = httpx.AsyncClient(limits=httpx.Limits(max_connections=256, max_keepalive_connections=32))
        job.task = asyncio.current_task()
        await self._run(job)

    async def _run(self, job: RemoteJob) -> None:
        import asyncio
        from contextlib import aclosing

        p, conn = job.params, job.conn
        received = time.monotonic()
        first = None
        text, n, reason = [], 0, "stop"
        up = None

        def emit(piece: str) -> None:
            if piece:
                text.append(piece)
                if p.stream:
                    conn.send(Token(job.id, piece, []))

        def done(reason: str) -> Done:
            now = time.monotonic()
            t = {"predicted_n": n, "predicted_ms": round((now - first) * 1000, 3) if first else 0.0,
                 "queue_ms": 0.0, "load_ms": 0.0}
            if first is not None:
                t["ttft_ms"] = round((first - received) * 1000, 3)
            more = dict(up.done) if up is not None else {}
            result = {**(more.pop("result", None) or {}), "remote": job.remote.name, "server": job.server}
            return Done(job.id, finish_reason=reason, text="".join(text), model=job.name, timings=t,
                        result=result, **more)

        try:
            if job.cancelled:
                raise asyncio.CancelledError
            up = BUILDERS[job.method](job.remote, job.model_id, p, self.cfg.sampling)
            f = up.filter
            async with aclosing(self.pools[job.remote.name].stream(self.client, up, job)) as events:
                async for obj in events:
                    piece, fin = up.parse(obj)
                    if piece:
                        n += 1
                        first = first or time.monotonic()
                        emit(f.feed(piece) if f else piece)
                    if fin:
                        reason = fin if fin in ("stop", "length") else "stop"
                        break
                    if f is not None and f.done:
                        break
                    if p.t_max_predict_ms is not None and first is not None and \
                            (time.monotonic() - first) * 1000 >= p.t_max_predict_ms:
                        reason = "time"
                        break
            if f is not None:
                emit(f.finish())
            conn.send(done(reason))
        except asyncio.CancelledError:
            self.count("cancelled")
            if up is not None and up.filter is not None:
                emit(up.filter.finish())
            conn.send(done("cancelled"))
        except LocalAIError as exc:
            self.count("errors")
            conn.send(Error(job.id, exc.code, exc.message))
        except Exception as exc:  # a bug: this request alone fails
            log.exception("remote request %r failed", job.id)
            self.count("errors")
            conn.send(Error(job.id, "internal", f"internal error in {job.method} on remote "
                            f"`{job.remote.name}`: {type(exc).__name__}: {exc}"))
        finally:
            self.jobs.discard(job)
            self.count("requests_served")
            conn.job_done(job)


# --- models and reachability ----------------------------------------------------------------------

def _fetch_models(remote: Remote, url: str, timeout: float) -> list:
    import httpx

    resp = httpx.get(f"{url}/models", headers=_headers(remote), timeout=timeout)
    if resp.status_code in (401, 403):
        raise _refused(remote, url, resp.status_code)
    if resp.status_code >= 400:
        first = _first_line(resp.content)
        raise RemoteError(f"HTTP {resp.status_code} {resp.reason_phrase}" + (f": {first}" if first else ""))
    data = resp.json().get("data") or []
    return [m["id"] for m in data if isinstance(m, dict) and isinstance(m.get("id"), str)]


def probe(cfg, timeout: float = PROBE_TIMEOUT) -> list:
    """Each remote's servers: [{"name", "servers": [{"url", "reachable", "ms", "models"|"error"}]}],
    asked in parallel (GET /v1/models); what they list refreshes the models cache."""
    from concurrent.futures import ThreadPoolExecutor

    def one(remote, url):
        t0 = time.monotonic()
        try:
            ids = _fetch_models(remote, url, min(timeout, remote.timeout))
            return {"url": url, "reachable": True, "ms": round((time.monotonic() - t0) * 1000, 1), "models": ids}
        except Exception as exc:
            msg = exc.message if isinstance(exc, LocalAIError) else _why(exc)
            return {"url": url, "reachable": False, "ms": round((time.monotonic() - t0) * 1000, 1), "error": msg}

    pairs = [(r, u) for r in cfg.remotes.values() for u in r.urls]
    if not pairs:
        return []
    with ThreadPoolExecutor(max_workers=min(16, len(pairs))) as ex:
        results = list(ex.map(lambda ru: one(*ru), pairs))
    out, k = [], 0
    cache = _read_cache()
    for r in cfg.remotes.values():
        servers = results[k:k + len(r.urls)]
        k += len(r.urls)
        out.append({"name": r.name, "servers": servers})
        ids = sorted({m for s in servers if s["reachable"] for m in s["models"]})
        if any(s["reachable"] for s in servers):
            cache[r.name] = {"urls": r.urls, "models": ids, "time": time.time()}
    _write_cache(cache)
    return out


def _cache_path() -> str:
    """Beside the daemon's socket (a private directory; forgotten at reboot, as a cache may be)."""
    from .protocol import sidecar, socket_path

    return sidecar(socket_path(), ".remote-models.json")


def _read_cache() -> dict:
    try:
        with open(_cache_path(), encoding="utf-8") as f:
            d = json.load(f)
        return d if isinstance(d, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_cache(cache: dict) -> None:
    path = _cache_path()
    try:
        from .daemon import private_dir

        private_dir(os.path.dirname(os.path.abspath(path)))
        tmp = f"{path}.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(cache, f)
        os.replace(tmp, path)
    except (OSError, LocalAIError):
        pass  # a cache: the next listing asks again


def list_models(cfg, max_age: float = MODELS_MAX_AGE) -> list:
    """The remote models: [{"name": "NAME/ID", "remote", "id", "aliases", "age_s", "error", "urls"}],
    from each remote's /v1/models, reused for `max_age` seconds (kept, with the error, when
    the remote does not answer)."""
    cache = _read_cache()
    stale = [r for r in cfg.remotes.values()
             if not (isinstance(cache.get(r.name), dict) and cache[r.name].get("urls") == r.urls
                     and time.time() - cache[r.name].get("time", 0) < max_age)]
    errors = {}
    if stale:
        sub = type("Sub", (), {"remotes": {r.name: r for r in stale}})()
        for row in probe(sub):
            if not any(s["reachable"] for s in row["servers"]):
                errors[row["name"]] = "; ".join(f"{s['url']}: {s['error']}" for s in row["servers"])
        cache = _read_cache()
    rows = []
    for r in cfg.remotes.values():
        entry = cache.get(r.name) if isinstance(cache.get(r.name), dict) else {}
        ids = list(entry.get("models") or [])
        ids += [m for m in r.models.values() if m not in ids]
        age = round(time.time() - entry["time"], 1) if entry.get("time") else None
        for mid in ids:
            rows.append({"name": f"{r.name}/{mid}", "remote": r.name, "id": mid, "kind": "remote",
                         "aliases": sorted(a for a, m in r.models.items() if m == mid),
                         "listed": mid in (entry.get("models") or []), "age_s": age,
                         "error": errors.get(r.name), "urls": r.urls})
        if not ids:
            rows.append({"name": f"{r.name}/", "remote": r.name, "id": None, "kind": "remote", "aliases": [],
                         "listed": False, "age_s": age, "error": errors.get(r.name) or "lists no models",
                         "urls": r.urls})
    return rows
