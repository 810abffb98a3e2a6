"""`--no-daemon`: the client interface with the engine in this process. Same requests, same
events, same prompt preparation (handlers.py) as the daemon, so the answers are the same."""
from __future__ import annotations

import itertools
import time

from .. import protocol, store
from ..client import BaseClient, DaemonError
from ..errors import LocalAIError
from ..protocol import Done, Token, TokenizeParams
from . import handlers
from .prompt_cache import PromptCache


class InProcessClient(BaseClient):
    def __init__(self, cfg):
        self.cfg = cfg
        self._models: dict = {}    # path -> (llm, PromptCache)
        self._requests: dict = {}  # id -> (method, params)
        self._cancelled: set = set()
        self._ids = itertools.count(1)

    def _model(self, name: str | None):
        from .. import remote

        if remote.route(self.cfg, name) is not None:
            raise DaemonError("invalid_request", f"{name or self.cfg.model!r} is a model of a remote engine: it runs "
                              f"through the daemon (leave out --no-daemon)")
        path = str(store.resolve(name or self.cfg.model or store.DEFAULT_MODEL))
        if path not in self._models:
            from .. import load
            from .admission import admit

            adm = admit(path, self.cfg.n_ctx, self.cfg.cache_bytes, self.cfg.backend)  # as the daemon: fits, or one line
            llm = load(path, backend=self.cfg.backend, n_ctx=adm.n_ctx, n_threads=self.cfg.threads,
                       activation_bits=self.cfg.activation_bits)
            self._models[path] = (llm, PromptCache(llm, max_sessions=2, max_bytes=adm.cache_bytes))
        return self._models[path]

    def send(self, method: str, params: dict | None = None, id=None):
        if method not in protocol.METHODS:
            raise DaemonError("unknown_method", f"unknown method {method!r}")
        clean = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            p = protocol.make_params(method, clean)
        except protocol.ProtocolError as exc:
            raise DaemonError(exc.code, exc.message) from None
        id = next(self._ids) if id is None else id
        if method == "action":  # the prompt is built here, as the daemon's connection does
            from ..actions.registry import Registry, bind

            if getattr(self, "_actions", None) is None:
                self._actions = Registry(self.cfg.actions_path)
            try:
                p.bound = bind(self._actions, p.name, p.context)
            except LocalAIError as exc:
                raise DaemonError(exc.code, exc.message) from None
            p.model = p.model or p.bound.action.model
        self._requests[id] = (method, p)
        return id

    def cancel(self, id) -> None:
        self._cancelled.add(id)  # checked between decode steps (safe from a signal handler)

    def events(self, id):
        method, p = self._requests.pop(id)
        try:
            if method == "models":
                yield Done(id, result={"models": store.list_models(), "loaded": []})
                return
            if method == "actions":
                from ..actions.registry import Registry

                if getattr(self, "_actions", None) is None:
                    self._actions = Registry(self.cfg.actions_path)
                yield Done(id, result=self._actions.listing())
                return
            if protocol.METHODS[method].kind == "daemon":
                raise DaemonError("unknown_method", f"`{method}` needs the daemon (drop --no-daemon)")
            llm, cache = self._model(p.model)
            if isinstance(p, TokenizeParams):
                yield Done(id, model=p.model or self.cfg.model or store.DEFAULT_MODEL,
                           result=handlers.tokenize(llm, p))
                return
            yield from self._generate(id, method, p, llm, cache)
        except LocalAIError as exc:
            if isinstance(exc, DaemonError):
                raise
            raise DaemonError(exc.code, exc.message) from None
        finally:
            self._cancelled.discard(id)

    def _generate(self, id, method, p, llm, cache):
        t0 = time.monotonic()
        prep = handlers.prepare(llm, method, p, self.cfg.sampling)
        session = cache.acquire(prep.prompt, use_cache=p.cache_prompt)
        gen = llm.stream(prep.prompt, session=session, **prep.kwargs)
        text, n, first, reason, timings, held = [], 0, None, None, None, []
        try:
            for chunk in gen:
                first = first or time.monotonic()
                n += len(chunk.tokens)
                piece = prep.filter.feed(chunk.text) if prep.filter else chunk.text
                if chunk.finish_reason and prep.filter:
                    piece += prep.filter.finish()
                held += chunk.tokens  # ids of held-back text ride with the next text
                if piece:
                    text.append(piece)
                lp = getattr(chunk, "logprobs", None)
                if p.stream and (piece or lp or (chunk.finish_reason and held)):
                    yield Token(id, piece, held, lp)
                    held = []
                if chunk.finish_reason:
                    reason, timings = chunk.finish_reason, chunk.timings.as_dict()
                    break
                if prep.filter is not None and getattr(prep.filter, "done", False):
                    reason = "stop"
                elif id in self._cancelled:
                    reason = "cancelled"
                elif p.t_max_predict_ms is not None and (time.monotonic() - first) * 1000 >= p.t_max_predict_ms:
                    reason = "time"
                if reason:
                    tail = prep.filter.finish() if prep.filter else ""
                    if tail:
                        text.append(tail)
                    if p.stream and (tail or held):
                        yield Token(id, tail, held)
                    break
        finally:
            gen.close()
            cache.release(session, keep=reason is not None)
        if timings is None:
            timings = {"predicted_n": n, "predicted_ms": round((time.monotonic() - (first or t0)) * 1000, 3)}
        if first:
            timings["ttft_ms"] = round((first - t0) * 1000, 3)
        model = p.model or self.cfg.model or store.DEFAULT_MODEL
        extra = dict(prep.done)
        result = {**({"dropped": prep.dropped} if prep.dropped else {}), **(extra.pop("result", None) or {})}
        yield Done(id, finish_reason=reason or "stop", text="".join(text), model=model, timings=timings,
                   result=result or None, **extra)

    def close(self) -> None:
        self._models.clear()
