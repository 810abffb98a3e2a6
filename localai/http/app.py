"""The Starlette app and its bridge to the daemon's scheduler.

An HTTP request becomes one protocol request per choice (`n`), submitted to the scheduler
exactly as the socket path submits them (protocol.make_params checks them, handlers.prepare
turns them into prompts): a `_Bridge` stands in for the socket connection, and the
scheduler's events come back on an asyncio queue. The API modules (`openai`, `llamacpp`)
only translate requests into params and events into their response shapes.
"""
from __future__ import annotations

import asyncio
import hmac
import json
import logging
import socket
import threading
import time

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from .. import protocol, store
from ..daemon.scheduler import Job
from ..errors import LocalAIError
from ..protocol import Done, Error, ProtocolError

log = logging.getLogger("localai.http")

MAX_BODY_BYTES = protocol.MAX_LINE_BYTES   # a larger body gets 413
MAX_N = 16                                  # most choices (`n`) per request
OPEN_PATHS = ("/health", "/v1/models", "/models")   # no API key needed, as llama-server

# protocol error code -> HTTP status (4xx: the client's fault; the openai package retries 5xx)
STATUS = {"invalid_json": 400, "invalid_request": 400, "line_too_long": 413, "unknown_method": 404,
          "context_overflow": 400, "model_not_found": 404, "unsupported_model": 400,
          "bad_model_file": 500, "out_of_memory": 503, "shutting_down": 503, "internal": 500,
          "unauthorized": 401, "not_found": 404, "method_not_allowed": 405,
          "remote_unreachable": 502, "remote_key_refused": 502, "remote_error": 502, "remote_timeout": 504}
# our code -> OpenAI's `code` where it has its own name
OPENAI_CODE = {"context_overflow": "context_length_exceeded", "model_not_found": "model_not_found",
               "unauthorized": "invalid_api_key"}


class HTTPError(Exception):
    def __init__(self, code: str, message: str, param: str | None = None):
        super().__init__(message)
        self.code, self.message, self.param = code, message, param


def error_body(code: str, message: str, param: str | None = None) -> dict:
    """OpenAI's error shape (llama-server's too): {"error": {"message", "type", "param", "code"}}."""
    status = STATUS.get(code, 500)
    kind = {401: "authentication_error", 404: "not_found_error"}.get(
        status, "invalid_request_error" if status < 500 else "server_error")
    return {"error": {"message": message, "type": kind, "param": param,
                      "code": OPENAI_CODE.get(code, code)}}


def error_response(code: str, message: str, param: str | None = None) -> JSONResponse:
    return JSONResponse(error_body(code, message, param), status_code=STATUS.get(code, 500))


# --- the bridge to the scheduler ----------------------------------------------------------------

class _Bridge:
    """What the scheduler needs of a connection (send, job_done, dead) for one HTTP request."""

    def __init__(self, scheduler, loop, remotes=None):
        self.scheduler, self.loop, self.remotes = scheduler, loop, remotes
        self.queue: asyncio.Queue = asyncio.Queue()
        self.dead = False

    def send(self, event) -> None:  # scheduler thread
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, event)
        except RuntimeError:  # the event loop is closed: the HTTP server is stopping
            pass

    def job_done(self, job) -> None:
        pass

    def submit(self, method: str, params: list) -> None:
        for i, p in enumerate(params):
            req = protocol.Request(i, method, p)
            job = self.remotes.job(self, req) if self.remotes is not None else None  # a remote model
            (self.remotes if job is not None else self.scheduler).submit(job or Job(self, req))

    def cancel(self) -> None:
        """The client went away: every job of this request stops within one decode step."""
        if not self.dead:
            self.dead = True
            self.scheduler.wake()


class Choice:
    """What came back for one choice: text, token ids, logprobs entries, then Done."""

    def __init__(self, index: int):
        self.index = index
        self.text: list = []
        self.tokens: list = []
        self.logprobs: list = []
        self.done: Done | None = None

    def add(self, ev) -> None:
        self.text.append(ev.text)
        self.tokens += ev.tokens
        self.logprobs += ev.logprobs or []


async def _next(bridge: _Bridge, request: Request):
    """The next event; a client that hung up cancels the request (ClientGone)."""
    while True:
        try:
            return await asyncio.wait_for(bridge.queue.get(), 1.0)
        except asyncio.TimeoutError:
            if await request.is_disconnected():
                bridge.cancel()
                raise ClientGone() from None


class ClientGone(Exception):
    pass


async def run(request: Request, api, method: str, params: list[dict], opts: dict):
    """Submit one request per choice; answer with api.response(...) or an SSE stream."""
    objs = []
    for p in params:
        try:
            objs.append(protocol.make_params(method, p))
        except ProtocolError as exc:
            raise HTTPError(exc.code, exc.message.split(": ", 1)[-1]) from None
    daemon = request.app.state.daemon
    bridge = _Bridge(daemon.scheduler, asyncio.get_running_loop(), getattr(daemon, "remotes", None))
    try:
        bridge.submit(method, objs)
    except LocalAIError as exc:  # e.g. a method that runs on local models only
        raise HTTPError(exc.code, exc.message) from None
    choices = [Choice(i) for i in range(len(objs))]
    try:
        first = await _next(bridge, request)
    except ClientGone:
        return JSONResponse({}, status_code=499)
    if isinstance(first, Error):  # before anything was sent: a proper 4xx/5xx
        bridge.cancel()
        raise HTTPError(first.code, first.message)
    if not opts.get("stream"):
        return await _collect(request, bridge, api, choices, first, opts)
    return StreamingResponse(_sse(bridge, api, choices, first, opts), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def _collect(request, bridge, api, choices, ev, opts):
    left = len(choices)
    try:
        while True:
            c = choices[ev.id]
            if isinstance(ev, Error):
                bridge.cancel()
                raise HTTPError(ev.code, ev.message)
            if isinstance(ev, Done):
                c.done = ev
                left -= 1
                if not left:
                    break
            else:
                c.add(ev)
            ev = await _next(bridge, request)
    except ClientGone:
        return JSONResponse({}, status_code=499)
    return JSONResponse(api.response(choices, opts, _model_info(request, choices[0].done.model)))


def _sse_line(obj) -> bytes:
    return b"data: " + json.dumps(obj, ensure_ascii=False).encode() + b"\n\n"


async def _sse(bridge, api, choices, ev, opts):
    left = len(choices)
    try:
        for c in choices:
            for obj in api.stream_start(c, opts):
                yield _sse_line(obj)
        while True:
            c = choices[ev.id]
            if isinstance(ev, Error):
                # an error after the first byte: an SSE event the SDKs raise (openai: APIError)
                bridge.cancel()
                yield _sse_line(error_body(ev.code, ev.message))
                return
            if isinstance(ev, Done):
                c.done = ev
                left -= 1
                for obj in api.stream_done(c, opts):
                    yield _sse_line(obj)
                if not left:
                    break
            else:
                c.add(ev)
                for obj in api.stream_token(c, ev, opts):
                    yield _sse_line(obj)
            ev = await bridge.queue.get()
        for obj in api.stream_end(choices, opts):
            yield _sse_line(obj)
        if api.done_marker:
            yield b"data: [DONE]\n\n"
    finally:  # the client hung up mid-stream (the task is cancelled) or we are done
        if left:
            bridge.cancel()


def _model_info(request: Request, name: str | None) -> dict:
    for m in list(request.app.state.daemon.scheduler.models.values()):
        if m.name == name and m.llm is not None:
            return {"name": name, "n_ctx": m.llm.n_ctx}
    return {"name": name, "n_ctx": None}


# --- requests -----------------------------------------------------------------------------------

async def read_json(request: Request) -> dict:
    """The body as a JSON object; 413 over MAX_BODY_BYTES, 400 if it is not a JSON object."""
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > MAX_BODY_BYTES:
        raise HTTPError("line_too_long", f"the request body is over {MAX_BODY_BYTES} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise HTTPError("line_too_long", f"the request body is over {MAX_BODY_BYTES} bytes")
    try:
        obj = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise HTTPError("invalid_json", f"the body is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise HTTPError("invalid_json", "the body must be a JSON object")
    return obj


_cfg = None  # the daemon's config (make_app): which model names are remote


def model_name(name) -> str | None:
    """A model the store knows (catalog name or .gguf path), else None = the daemon's default
    model, as llama-server serves whatever `model` says."""
    if not isinstance(name, str) or not name:
        return None
    from .. import remote

    if _cfg is not None and remote.route(_cfg, name) is not None:  # a model of a configured remote
        return name
    try:
        store.resolve(name, pull_missing=False, progress=False)
        return name
    except Exception:
        return None


def default_model(request: Request) -> str:
    return request.app.state.daemon.cfg.model or store.DEFAULT_MODEL


def _authorized(request: Request) -> bool:
    key = request.app.state.api_key
    if not key or request.url.path in OPEN_PATHS:
        return True
    auth = request.headers.get("authorization", "")
    given = auth[7:].strip() if auth[:7].lower() == "bearer " else request.headers.get("x-api-key", "")
    return hmac.compare_digest(given.encode(), key.encode())  # constant time


def endpoint(fn):
    """Key check, JSON errors for every failure, and the daemon's request counter."""
    async def wrapped(request: Request):
        if not _authorized(request):
            return error_response("unauthorized", "a valid API key is needed: `Authorization: Bearer KEY` "
                                  "or `X-Api-Key: KEY`")
        try:
            return await fn(request)
        except HTTPError as exc:
            request.app.state.daemon.scheduler.count("errors")
            return error_response(exc.code, exc.message, exc.param)
        except Exception as exc:
            log.exception("%s failed", request.url.path)
            return error_response("internal", f"internal error: {type(exc).__name__}: {exc}")
    return wrapped


# --- endpoints that need no model ------------------------------------------------------------

async def health(request: Request):
    return JSONResponse({"status": "ok"})


async def models(request: Request):
    loaded = {m.name for m in list(request.app.state.daemon.scheduler.models.values())}
    d = store.models_dir()
    names = [e.name for e in store.CATALOG.values() if (d / e.filename).is_file()]
    names += sorted(p.stem for p in d.glob("*.gguf")
                    if p.name not in {e.filename for e in store.CATALOG.values()}) if d.is_dir() else []
    data = [{"id": n, "object": "model", "created": 0, "owned_by": "localai", "loaded": n in loaded}
            for n in names]
    return JSONResponse({"object": "list", "data": data})


async def _not_found(request, exc):
    code = {404: "not_found", 405: "method_not_allowed"}.get(getattr(exc, "status_code", 404), "not_found")
    return error_response(code, f"{request.method} {request.url.path}: {getattr(exc, 'detail', 'not found')}")


def make_app(daemon_server, api_key: str | None = None, cors: list | None = None) -> Starlette:
    from . import llamacpp, openai

    routes = [Route("/health", endpoint(health), methods=["GET"]),
              Route("/v1/models", endpoint(models), methods=["GET"]),
              Route("/models", endpoint(models), methods=["GET"])]
    for path, fn in {**openai.ROUTES, **llamacpp.ROUTES}.items():
        routes.append(Route(path, endpoint(fn), methods=["POST"]))
    middleware = []
    if cors:
        from starlette.middleware import Middleware
        from starlette.middleware.cors import CORSMiddleware

        middleware.append(Middleware(CORSMiddleware, allow_origins=list(cors), allow_methods=["GET", "POST"],
                                     allow_headers=["Authorization", "Content-Type", "X-Api-Key"]))
    app = Starlette(routes=routes, middleware=middleware,
                    exception_handlers={404: _not_found, 405: _not_found})
    app.state.daemon = daemon_server
    global _cfg
    _cfg = daemon_server.cfg
    app.state.api_key = api_key
    return app


# --- the listener -------------------------------------------------------------------------------

class HTTPServer:
    """uvicorn on a daemon thread, on a socket bound here (so a busy port fails at once)."""

    def __init__(self, daemon_server, host: str, port: int, api_key: str | None = None,
                 cors: list | None = None):
        import uvicorn

        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.sock.bind((host, port))
        except OSError as exc:
            self.sock.close()
            from . import HTTPConfigError

            raise HTTPConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        self.sock.listen(128)
        self.host, self.port = host, self.sock.getsockname()[1]
        config = uvicorn.Config(make_app(daemon_server, api_key, cors), log_level="warning",
                                access_log=False, lifespan="off", timeout_graceful_shutdown=3)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                       name="localai-http", daemon=True)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and self.thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        log.info("HTTP API on %s", self.url)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=5)
        self.sock.close()
