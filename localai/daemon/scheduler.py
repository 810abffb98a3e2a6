"""The scheduler: one thread owns the engine and interleaves every running request between
forward passes.

The engine's streams hand their forward passes to the scheduler (`llm.stream(...,
evals=True)`: an `engine.Eval` per pass). A step is one pass on the picked request's model:
the next token of every decoding request on it and the prompt chunks (`PREFILL_CHUNK`
tokens each) of requests at the picked one's priority or better, up to `PREFILL_CHUNK`
prompt tokens (continuous batching with chunked prefill, localai/batch.py: up to
`batch.MAX_ROWS` decode rows share one read of the weights; the kernels are batch-invariant,
so each request's tokens are those of its run alone; `max_batch` 1 turns it off). Each step picks the request with the smallest (priority, last step)
pair, so editor completions (priority 0) run ahead of chats (priority 1) and requests of one
priority take turns; a long prompt's chunks after its first wait their turn at priority 1, so
an 8k-token completion does not hold a chat's first token for its whole prefill. A cancelled
or disconnected request stops before the next step, within one prompt chunk or one decode
step. Models load on first use, one per path, and unload after `keep_alive` seconds without
a request.
"""
from __future__ import annotations

import fcntl
import gc
import logging
import os
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass, field

from .. import batch, store
from ..errors import LocalAIError
from ..protocol import METHODS, Done, Error, Notice, Request, Token, TokenizeParams
from . import handlers
from .admission import Admission, InsufficientMemory, admit
from .prompt_cache import PromptCache


def _eval_type():
    """engine.Eval, imported when the first stream runs: the daemon starts (and listens)
    without the engine, so a broken install is answered as `broken_install` on the first
    request instead of a daemon that never comes up."""
    from ..engine import Eval

    return Eval

log = logging.getLogger("localai.daemon")

PREFILL_CHUNK = 256  # prompt tokens per step: the longest a decode step waits for a prefill
STEPS = ("decode", "verify")  # passes of generated tokens (and drafts): batched together


@dataclass
class Loaded:
    name: str
    path: str
    llm: object
    cache: PromptCache
    load_ms: float
    last_used: float = field(default_factory=time.monotonic)
    jobs: int = 0  # running requests
    ident: tuple | None = None  # (st_dev, st_ino, st_size, st_mtime_ns) of the file when loaded
    lease: int | None = None    # fd holding a read lease on the file (Linux), see FileWatch


def _ident(path: str) -> tuple | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class FileWatch:
    """Keeps a loaded model file from being changed under its memory map.

    Weights are read through a shared mapping, so a file overwritten in place (`cp` over it,
    `truncate`) would change under the kernels and, once shorter, kill the daemon with SIGBUS
    (Python cannot catch it, and a MAP_PRIVATE copy-on-write map does not help with
    truncation). A Linux read lease (fcntl F_SETLEASE) makes the kernel hold any writer's
    open() (up to /proc/sys/fs/lease-break-time, 45 s) and tell us first (SIGIO): the
    scheduler then ends the requests on that model with an error, drops the model and
    releases the lease, and only then does the writer go on; the next request loads the new
    file (validated like any other). Without leases (macOS, a file of another user, another
    process writing it already) the file's identity is compared before every step, which
    leaves a window of one step. A file replaced by rename (what `localai pull` does) or
    deleted is no hazard: the old mapping stays valid; requests that start after it load the
    new file.
    """

    enabled = False  # set by the daemon once it handles SIGIO (default action: terminate)

    @staticmethod
    def take(path: str) -> int | None:
        if not FileWatch.enabled or not hasattr(fcntl, "F_SETLEASE"):
            return None
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_RDLCK)
            return fd
        except OSError:
            os.close(fd)
            return None

    @staticmethod
    def broken(m: "Loaded") -> bool:
        """True when the file was (or is about to be) changed in place."""
        if m.lease is not None:
            try:
                if fcntl.fcntl(m.lease, fcntl.F_GETLEASE) != fcntl.F_RDLCK:
                    return True  # a writer is waiting on our lease
            except OSError:
                return True
        now = _ident(m.path)
        return now is not None and m.ident is not None and now[:2] == m.ident[:2] and now != m.ident

    @staticmethod
    def release(m: "Loaded") -> None:
        if m.lease is not None:
            try:
                os.close(m.lease)  # drops the lease: the writer goes on
            except OSError:
                pass
            m.lease = None


class Job:
    """One request on the scheduler."""

    def __init__(self, conn, req: Request):
        self.conn, self.id, self.method, self.params = conn, req.id, req.method, req.params
        self.priority = METHODS[req.method].priority
        self.received = time.monotonic()
        self.cancelled = False
        self.last_step = -1          # scheduler step counter when this job last ran
        self.pending: Eval | None = None  # the forward pass its stream waits for
        self.evals = False           # its stream hands over its passes (else one chunk per next())
        self.chunks = 0              # prompt chunks evaluated
        self.model: Loaded | None = None
        self.draft: Loaded | None = None  # the draft model it holds (draft "model")
        self.gen = None              # the engine's chunk iterator
        self.session = None
        self.filter = None
        self.dropped = 0             # chat messages left out to fit the context
        self.done_fields = {}        # more fields of the done event (handlers.Prepared.done)
        self.text: list = []
        self.held_ids: list = []     # generated ids not yet sent in a token event
        self.n_predicted = 0
        self.load_ms = 0.0
        self.started = self.first_token = None


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _open_fds() -> int | None:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return None


class Scheduler:
    def __init__(self, cfg, loader=None, resolve=None, max_models: int = 2):
        self.cfg = cfg
        self.loader = loader  # (path, backend=, n_ctx=, n_threads=, activation_bits=) -> LLM; default localai.load
        self.resolve = resolve or (lambda name: str(store.resolve(name, pull_missing=False)))
        self.max_models = max_models
        self.cond = threading.Condition()
        self.pending: list = []
        self.active: list = []
        self.models: dict = {}  # path -> Loaded
        self.steps = 0
        self.prefill_chunk = PREFILL_CHUNK
        # requests per forward pass (config `max_batch`); 1 runs every request's passes alone
        self.max_batch = getattr(cfg, "max_batch", None) or batch.MAX_ROWS
        self.recent: deque = deque(maxlen=32)  # (requests, tokens) of the last forward passes
        self.stopping = False
        self.step_started: float | None = None  # monotonic time the running step began
        self.started = time.time()
        self.stats = {"requests_served": 0, "tokens_generated": 0, "tokens_evaluated": 0,
                      "tokens_cached": 0, "loads": 0, "unloads": 0, "cancelled": 0, "errors": 0}
        self.fatal: str | None = None  # why the daemon must stop (set with on_fatal called)
        self.on_fatal = None
        self.current: Job | None = None  # the job _step runs now
        self.thread = threading.Thread(target=self._run, name="localai-scheduler", daemon=True)

    # --- called from connection threads -------------------------------------------------------

    def start(self) -> None:
        self.thread.start()

    def submit(self, job: Job) -> None:
        with self.cond:
            if self.stopping:
                job.conn.send(Error(job.id, "shutting_down", "the daemon is stopping"))
                job.conn.job_done(job)
                return
            self.pending.append(job)
            self.cond.notify()

    def wake(self) -> None:
        with self.cond:
            self.cond.notify()

    def stop(self) -> None:
        with self.cond:
            self.stopping = True
            self.cond.notify()

    def count(self, key: str, n: int = 1) -> None:
        self.stats[key] += n

    def status(self) -> dict:
        now = time.monotonic()
        models = [{"name": m.name, "path": m.path, "arch": m.llm.arch, "quant": m.llm.quant,
                   "backend": m.llm.backend, "n_ctx": m.llm.n_ctx, "load_ms": round(m.load_ms, 1),
                   "activation_bits": getattr(m.llm, "activation_bits", None),  # numpy backend only
                   "busy": m.jobs > 0, "idle_s": round(now - m.last_used, 1) if not m.jobs else 0.0,
                   "prompt_cache": m.cache.stats()}
                  for m in list(self.models.values()) if m.llm is not None]
        recent = list(self.recent)
        batches = {"steps": len(recent), "requests_max": max((r for r, _ in recent), default=0),
                   "requests_mean": round(sum(r for r, _ in recent) / len(recent), 2) if recent else 0.0,
                   "tokens_mean": round(sum(t for _, t in recent) / len(recent), 1) if recent else 0.0}
        return {"pid": os.getpid(), "uptime_s": round(time.time() - self.started, 1),
                "model": models[0]["name"] if models else None, "models": models,
                "default_model": self.cfg.model or store.DEFAULT_MODEL, "backend": self.cfg.backend,
                "keep_alive_s": self.cfg.keep_alive, "rss_bytes": _rss_bytes(),
                "active": len(self.active), "queued": len(self.pending),
                "scheduler_alive": self.thread.is_alive(),
                "step_s": round(now - self.step_started, 1) if self.step_started else 0.0,
                "threads": threading.active_count(), "fds": _open_fds(), "batch": batches, **self.stats}

    # --- the scheduler thread ----------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self.cond:
                while not (self.pending or self.active or self.stopping):
                    self.cond.wait(self._expiry_wait())
                    self._expire()
                if self.stopping:
                    break
                self.active += self.pending
                self.pending.clear()
            for job in [j for j in self.active if j.cancelled or j.conn.dead]:
                self._step(job)  # whatever their priority, cancelled requests end now
            if not self.active:
                continue
            job = min(self.active, key=self._key)
            self.steps += 1
            self.step_started = time.monotonic()
            self._step(job)
            self.step_started = None
            try:
                self._expire()
            except Exception:
                log.exception("unloading an idle model failed")
        for job in self.active + self.pending:
            self._fail(job, "shutting_down", "the daemon is stopping")

    @staticmethod
    def _key(job: Job) -> tuple:
        prio = job.priority
        if job.chunks and job.pending is not None and job.pending.save not in STEPS:
            prio = max(prio, 1)  # a long prompt's later chunks take turns with the chats
        return (prio, job.last_step)

    def _notice(self, text: str) -> None:
        """Tell the client whose request is running now (the kernels call this as they compile)."""
        log.info("%s", text)
        job = self.current
        if job is not None and not job.conn.dead:
            job.conn.send(Notice(job.id, text))

    def _check_files(self) -> None:
        """End the requests on a model whose file is being changed in place, and drop it."""
        for m in list(self.models.values()):
            if FileWatch.broken(m):
                for job in [j for j in self.active + self.pending if j.model is m]:
                    self._fail(job, "model_changed", f"the model file {m.path} was changed on disk while "
                               f"this request used it; the request was stopped: send it again")
                self._unload(m, "because its file changed on disk")

    def _step(self, job: Job) -> None:
        """Run one step of `job`; whatever goes wrong ends this job alone, with an `error`."""
        try:
            self._check_files()
        except Exception:
            log.exception("checking the model files failed")
        if job not in self.active:
            return  # ended by the check
        self._guarded(job, self._work)

    def _guarded(self, job: Job, fn, *args) -> None:
        """fn(job, *args), or the job's cancel; whatever goes wrong ends this job alone."""
        try:
            self._try_step(job, fn, *args)
        except BaseException as exc:  # even the error path failed: drop the job, keep serving
            if not isinstance(exc, Exception):
                raise
            log.exception("request %r (%s) could not be ended cleanly", job.id, job.method)
            for jobs in (self.active, self.pending):
                if job in jobs:
                    jobs.remove(job)
            try:
                job.conn.send(Error(job.id, "internal", f"internal error in {job.method}"))
            finally:
                job.conn.job_done(job)

    def _try_step(self, job: Job, fn, *args) -> None:
        self.current = job
        try:
            if job.cancelled or job.conn.dead:
                self._cancel(job)
            else:
                fn(job, *args)
        except LocalAIError as exc:
            self._fail(job, exc.code, exc.message)
        except MemoryError:  # fail soft: drop the cached prompts, answer with an error
            for m in self.models.values():
                m.cache.idle.clear()
            gc.collect()
            self._fail(job, "out_of_memory", f"out of memory while running {job.method}; the prompt "
                       f"cache was emptied: try a shorter prompt or a smaller n_ctx")
        except ImportError as exc:  # its own code cannot load: every later request would fail the same way
            self.fatal = (f"the localai daemon cannot import its own code ({type(exc).__name__}: {exc}) and has "
                          f"stopped; reinstall localai (`pip install .` in its clone) and try again")
            log.critical("%s\n%s", self.fatal, traceback.format_exc())
            self._fail(job, "broken_install", self.fatal)
            if self.on_fatal is not None:
                self.on_fatal()
        except Exception as exc:  # a bug: say so, keep serving everyone else
            log.error("request %r (%s) failed:\n%s", job.id, job.method, traceback.format_exc())
            self._fail(job, "internal", f"internal error in {job.method}: {type(exc).__name__}: {exc}")
        finally:
            self.current = None

    def _start(self, job: Job) -> None:
        p = job.params
        job.model = self._model(p.model, job)
        job.model.jobs += 1
        llm = job.model.llm
        if isinstance(p, TokenizeParams):
            self._finish(job, Done(job.id, model=job.model.name, result=handlers.tokenize(llm, p)))
            return
        prep = handlers.prepare(llm, job.method, p, self.cfg.sampling)
        job.filter, job.dropped, job.done_fields = prep.filter, prep.dropped, prep.done
        if prep.kwargs.get("draft") == "model":
            prep.kwargs["draft_model"] = self._draft_model(job)
        job.session = job.model.cache.acquire(prep.prompt, use_cache=p.cache_prompt)
        job.started = time.monotonic()
        job.evals = hasattr(llm, "evaluate")  # a test's stand-in engine computes its own steps
        more = {"evals": True, "prefill_chunk": self.prefill_chunk} if job.evals else {}
        job.gen = llm.stream(prep.prompt, session=job.session, **prep.kwargs, **more)
        self._advance(job, None)  # to its first pass (a prompt held whole by the cache: its first token)
        if job.pending is not None and job in self.active:
            self._work(job)  # the first prompt chunk, in this step

    def _work(self, job: Job) -> None:
        """One step: `job`'s next forward pass, with the passes of other requests on its model
        that fit (`_group`: one batched pass)."""
        if job.model is None:
            self._start(job)
            return
        job.last_step = self.steps
        ev, llm = job.pending, job.model.llm
        if ev is None:  # a stream that runs its own passes: one chunk
            self.recent.append((1, 1))
            self._advance(job, None)
            return
        group = self._group(job)
        if len(group) > 1:
            try:
                out = batch.evaluate_batch(llm, [j.pending for j in group])
            except Exception:  # e.g. memory: run the picked request alone; the others wait
                log.exception("a batched step of %d requests failed; running them one by one", len(group))
            else:
                self.recent.append((len(group), sum(len(j.pending.ids) for j in group)))
                for j, logits in zip(group, out):
                    j.last_step = self.steps
                    j.chunks += j.pending.save not in STEPS
                    self._guarded(j, self._advance, logits)
                return
        job.chunks += ev.save not in STEPS
        self.recent.append((1, len(ev.ids)))
        self._advance(job, llm.evaluate(ev))

    def _group(self, job: Job) -> list:
        """The requests whose passes share `job`'s forward pass, `job` first: the next token
        (and drafts) of every decoding request on its model, up to `batch.MAX_ROWS` rows, and
        the prompt chunks of requests at `job`'s priority or better, up to `prefill_chunk`
        prompt tokens; at most `max_batch` requests (1: no batching). A prompt chunk does not
        ride along with a more urgent request's decode step: it would make that step as slow as
        a chunk, and an editor completion would wait for a chat's prompt."""
        if self.max_batch <= 1 or not batch.supports(job.model.llm):
            return [job]
        step = job.pending.save in STEPS
        decode, prompt = (len(job.pending.ids), 0) if step else (0, len(job.pending.ids))
        prio, group = self._key(job)[0], [job]
        for j in sorted((j for j in self.active if j is not job and j.model is job.model and j.pending is not None
                         and not (j.cancelled or j.conn.dead)), key=self._key):
            if len(group) >= self.max_batch:
                break
            n = len(j.pending.ids)
            if j.pending.save in STEPS:
                if decode + n <= batch.MAX_ROWS:
                    group.append(j)
                    decode += n
            elif self._key(j)[0] <= prio and prompt + n <= self.prefill_chunk:
                group.append(j)
                prompt += n
        return group

    def _advance(self, job: Job, logits) -> None:
        """Send the job's stream the logits of the pass it asked for; handle the chunks it
        yields until it asks for its next pass (job.pending) or ends."""
        value = logits
        while True:
            try:
                out = job.gen.send(value)
            except StopIteration:
                job.pending = None
                self._done(job, "stop", None)
                return
            value = None
            if isinstance(out, _eval_type()):
                job.pending = out
                return
            job.pending = None
            if not self._chunk(job, out) or not job.evals:
                return

    def _chunk(self, job: Job, chunk) -> bool:
        """Send a generated chunk; False when it ended the request."""
        now = time.monotonic()
        if job.first_token is None:
            job.first_token = now
        job.n_predicted += len(chunk.tokens)
        self.stats["tokens_generated"] += len(chunk.tokens)
        text = job.filter.feed(chunk.text) if job.filter else chunk.text
        if chunk.finish_reason and job.filter:
            text += job.filter.finish()
        self._emit(job, text, chunk.tokens, last=bool(chunk.finish_reason), logprobs=getattr(chunk, "logprobs", None))
        if chunk.finish_reason:
            self._done(job, chunk.finish_reason, chunk.timings)
        elif job.filter is not None and getattr(job.filter, "done", False):
            job.gen.close()
            self._emit(job, job.filter.finish(), [])
            self._done(job, "stop", None)
        elif job.params.t_max_predict_ms is not None and \
                (now - job.first_token) * 1000 >= job.params.t_max_predict_ms:
            job.gen.close()
            self._done(job, "time", None)
        else:
            return True
        return False

    def _emit(self, job: Job, text: str, tokens: list, last: bool = False, logprobs: list | None = None) -> None:
        # ids whose text was held back (half a character, a possible stop string) ride with
        # the next text; the last event may have text "" to report every id exactly once. A
        # token's logprobs go out at once, with the ids held so far, even while its text is held.
        job.held_ids += tokens
        if text:
            job.text.append(text)
        if job.params.stream and (text or logprobs or (last and job.held_ids)):
            job.conn.send(Token(job.id, text, job.held_ids, logprobs))
            job.held_ids = []

    def _timings(self, job: Job, t) -> dict:
        now = time.monotonic()
        if t is not None:
            d = dict(t.as_dict())
        else:  # cut short: count what we saw
            d = {"predicted_n": job.n_predicted,
                 "predicted_ms": round((now - job.first_token) * 1000, 3) if job.first_token else 0.0}
        d["load_ms"] = round(job.load_ms, 3)
        d["queue_ms"] = round(((job.started or now) - job.received) * 1000 - job.load_ms, 3)
        if job.first_token is not None:
            d["ttft_ms"] = round((job.first_token - job.received) * 1000, 3)
        return d

    def _done(self, job: Job, reason: str, t) -> None:
        tail = job.filter.finish() if job.filter and reason in ("time", "cancelled") else ""
        self._emit(job, tail, [], last=True)
        timings = self._timings(job, t)
        self.stats["tokens_evaluated"] += timings.get("prompt_n", 0)
        self.stats["tokens_cached"] += timings.get("cache_n", 0)
        extra = dict(job.done_fields)
        result = {**({"dropped": job.dropped} if job.dropped else {}), **(extra.pop("result", None) or {})}
        self._finish(job, Done(job.id, finish_reason=reason, text="".join(job.text),
                               model=job.model.name, timings=timings, result=result or None, **extra))

    def _cancel(self, job: Job) -> None:
        self.stats["cancelled"] += 1
        if job.gen is not None:
            job.gen.close()
        if job.model is None:
            self._finish(job, Done(job.id, finish_reason="cancelled", text=""))
        else:
            self._done(job, "cancelled", None)

    def _fail(self, job: Job, code: str, message: str) -> None:
        self.stats["errors"] += 1
        if job.gen is not None:
            job.gen.close()
        self._finish(job, Error(job.id, code, message), keep_session=False)

    def _finish(self, job: Job, event, keep_session: bool = True) -> None:
        if job in self.active:
            self.active.remove(job)
        elif job in self.pending:
            self.pending.remove(job)
        try:
            if job.draft is not None:
                job.draft.jobs -= 1
                job.draft.last_used = time.monotonic()
                job.draft = None
            if job.model is not None:
                job.model.jobs -= 1
                job.model.last_used = time.monotonic()
                if job.session is not None:
                    job.model.cache.release(job.session, keep=keep_session)
        finally:
            job.model = job.session = job.gen = job.pending = None
            self.stats["requests_served"] += 1
            job.conn.send(event)
            job.conn.job_done(job)

    # --- model lifetime ------------------------------------------------------------------------

    def _model(self, name: str | None, job: Job) -> Loaded:
        name = name or self.cfg.model or store.DEFAULT_MODEL
        path = self.resolve(name)
        m = self.models.get(path)
        if m is not None and not m.jobs and _ident(path) not in (None, m.ident):
            self._unload(m, "to load the new file at its path")  # replaced (renamed over): reload
            m = None
        if m is None:
            ident = _ident(path)
            t0 = time.monotonic()
            load = self.loader
            if load is None:
                from .. import kernels, load

                kernels.set_compile_notice(self._notice)
            while True:
                try:  # a test's loader (no model file) is not admitted
                    adm = admit(path, self.cfg.n_ctx, self.cfg.cache_bytes, self.cfg.backend) if self.loader is None else \
                        Admission(self.cfg.n_ctx, self.cfg.cache_bytes or 1 << 30, 0, None)
                    break
                except InsufficientMemory:
                    idle = sorted((x for x in self.models.values() if not x.jobs), key=lambda x: x.last_used)
                    if not idle:
                        raise
                    self._unload(idle[0], "to make room")  # least recently used first
            llm = load(path, backend=self.cfg.backend, n_ctx=adm.n_ctx, n_threads=self.cfg.threads,
                       activation_bits=self.cfg.activation_bits)
            job.load_ms = (time.monotonic() - t0) * 1000
            m = Loaded(name, path, llm, PromptCache(llm, self.cfg.cache_sessions, adm.cache_bytes),
                       job.load_ms, ident=ident, lease=FileWatch.take(path))
            self.stats["loads"] += 1
            log.info("loaded %s (%s) in %.0f ms", name, path, job.load_ms)
            self.models[path] = m
            idle = sorted((x for x in self.models.values() if not x.jobs and x is not m),
                          key=lambda x: x.last_used)
            for old in idle[: max(0, len(self.models) - self.max_models)]:
                self._unload(old, "to make room")
        return m

    def _draft_model(self, job: Job):
        """The config's `draft_model`, loaded like any model and held while `job` runs."""
        name = getattr(self.cfg, "draft_model", None)
        if not name:
            return None  # the engine says what is missing
        m = self._model(name, job)
        m.jobs += 1
        job.draft = m
        return m.llm

    def _unload(self, m: Loaded, why: str) -> None:
        del self.models[m.path]
        m.cache.idle.clear()
        m.llm = None
        gc.collect()
        FileWatch.release(m)  # after the map is dropped
        self.stats["unloads"] += 1
        log.info("unloaded %s %s", m.name, why)

    def _expiry_wait(self) -> float | None:
        ka = self.cfg.keep_alive
        idle = [m.last_used for m in self.models.values() if not m.jobs]
        if ka < 0 or not idle:
            return None
        return max(0.0, min(idle) + ka - time.monotonic()) + 0.01

    def _expire(self) -> None:
        self._check_files()
        ka = self.cfg.keep_alive
        if ka < 0:
            return
        now = time.monotonic()
        for m in list(self.models.values()):
            if not m.jobs and now - m.last_used >= ka:
                self._unload(m, f"after {ka:g} s idle")
