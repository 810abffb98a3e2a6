"""The socket side of the daemon: a private Unix socket, one reader and one writer thread per
connection, and the methods that need no model (status, models, cancel, shutdown).

Private by construction: the socket's directory is 0700, the socket 0600, and every
connection's peer uid (SO_PEERCRED) must be ours. A lock file beside the socket makes a
second daemon refuse to start; a socket left by a crashed daemon is replaced.
"""
from __future__ import annotations

import errno
import fcntl
import logging
import os
import queue
import select
import selectors
import signal
import socket
import struct
import threading

from .. import protocol
from ..errors import LocalAIError
from ..protocol import METHODS, Done, Error, ProtocolError
from . import open_private, private_dir
from ..remote import RemoteJob, Router
from .scheduler import FileWatch, Job, Scheduler

log = logging.getLogger("localai.daemon")


class DaemonRunning(LocalAIError):
    code = "daemon_running"


class SocketError(LocalAIError):
    code = "socket_error"


# --- the socket and its directory -------------------------------------------------------------

def _answers(path: str) -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(2.0)
    try:
        s.connect(path)
        return True
    except OSError:
        return False
    finally:
        s.close()


class Listener:
    """Owns the lock, the socket and the pid file; `close()` removes them."""

    def __init__(self, path: str):
        self.path = path
        private_dir(os.path.dirname(os.path.abspath(path)))
        self.lock_fd = open_private(protocol.sidecar(path, ".lock"), os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(self.lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self.lock_fd)
            raise DaemonRunning(f"a localai daemon is already running on {path} (pid "
                                f"{_read_pid(path) or '?'}): `localai stop` stops it") from None
        if os.path.lexists(path):
            if _answers(path):  # not ours, but something serves there
                os.close(self.lock_fd)
                raise DaemonRunning(f"something already answers on {path}; not starting")
            log.info("removing stale socket %s", path)
            os.unlink(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)  # the socket is 0600 from the moment it exists
        try:
            self.sock.bind(path)
        finally:
            os.umask(old)
        os.chmod(path, 0o600)
        self.ino = os.stat(path).st_ino
        self.sock.listen(64)
        pid_path = protocol.sidecar(path, ".pid")
        try:
            os.unlink(pid_path)  # a stale one (we hold the lock); O_EXCL creates ours afresh
        except FileNotFoundError:
            pass
        with os.fdopen(open_private(pid_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL), "w") as f:
            f.write(f"{os.getpid()}\n")

    def close(self) -> None:
        self.sock.close()
        try:
            if os.stat(self.path).st_ino == self.ino:
                os.unlink(self.path)
        except OSError:
            pass
        for suffix in (".pid",):
            try:
                os.unlink(protocol.sidecar(self.path, suffix))
            except OSError:
                pass
        os.close(self.lock_fd)


def _encode(event) -> bytes:
    """An event as one line of UTF-8. Text with lone surrogates (a client may send "\\ud800"
    in an id or a key) goes out \\u-escaped, as JSON allows; anything else that cannot be
    encoded becomes an `internal` error for the same request."""
    try:
        return protocol.encode_event(event)
    except UnicodeEncodeError:
        pass
    except Exception:
        log.exception("cannot encode an event")
    from dataclasses import asdict
    import json

    try:
        d = {k: v for k, v in asdict(event).items() if v is not None or k == "id"}
        return (json.dumps(d) + "\n").encode("ascii")
    except Exception:
        log.exception("cannot encode an event")
    rid = getattr(event, "id", None)
    if not isinstance(rid, (int, str)) or isinstance(rid, bool):
        rid = None
    try:
        return (json.dumps({"id": rid, "code": "internal", "event": "error",
                            "message": "internal error: the answer could not be encoded"}) + "\n").encode("ascii")
    except Exception:
        return b'{"id": null, "code": "internal", "event": "error", "message": "internal error"}\n'


def _read_pid(path: str) -> int | None:
    try:
        with open(protocol.sidecar(path, ".pid")) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def peer_uid(sock: socket.socket) -> int:
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return uid


# --- one client connection ----------------------------------------------------------------------

class Connection:
    """Reads request lines, writes events. A writer thread keeps a slow reader from
    stalling the scheduler; a vanished peer marks the connection dead, which cancels its jobs."""

    def __init__(self, server: "Server", sock: socket.socket):
        self.server, self.sock = server, sock
        self.jobs: dict = {}  # id -> Job (running on the scheduler)
        self.lock = threading.Lock()
        self.out: queue.SimpleQueue = queue.SimpleQueue()
        self.dead = False
        self.reading = True

    def start(self) -> None:
        self.writer = threading.Thread(target=self._write_loop, name="localai-conn-w", daemon=True)
        threading.Thread(target=self._read_loop, name="localai-conn-r", daemon=True).start()
        self.writer.start()

    def send(self, event) -> None:
        """Queue an event for the writer; never raises (an event that cannot be encoded is
        replaced by an `internal` error for the same request). A generating request's last
        event goes to the history too."""
        if isinstance(event, (Done, Error)) and self.server.history is not None:
            job = self.jobs.get(event.id) if event.id is not None else None
            if job is not None and METHODS[job.method].kind == "generate" and \
                    (isinstance(event, Error) or event.finish_reason is not None):
                self.server.history.record(job.method, job.params, event)
        if not self.dead:
            self.out.put(_encode(event))

    def job_done(self, job: Job) -> None:
        with self.lock:
            if self.jobs.get(job.id) is job:
                del self.jobs[job.id]
            last = not self.reading and not self.jobs
        if last:
            self.out.put(None)

    def _lost(self) -> None:
        if not self.dead:
            self.dead = True
            with self.lock:
                jobs = list(self.jobs.values())
            for job in jobs:
                job.cancelled = True
            self.server.scheduler.wake()
            self.out.put(None)

    def _write_loop(self) -> None:
        while True:
            data = self.out.get()
            if data is None or self.dead:
                break
            try:
                self.sock.sendall(data)
            except OSError:
                self._lost()
                break
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self.server.conns.discard(self)

    def _read_loop(self) -> None:
        try:
            self._read_lines()
        except Exception:  # a bug; the connection still ends cleanly (no leaked thread or fd)
            log.exception("connection reader failed")
            self._lost()
        self._end_of_input()

    def _read_lines(self) -> None:
        f = self.sock.makefile("rb", buffering=1 << 16)
        try:
            while not self.dead:
                line = f.readline(protocol.MAX_LINE_BYTES + 1)
                if not line:
                    break
                if len(line) > protocol.MAX_LINE_BYTES and not line.endswith(b"\n"):
                    self.send(Error(None, "line_too_long", f"request line longer than "
                                    f"{protocol.MAX_LINE_BYTES} bytes: skipped"))
                    while line and not line.endswith(b"\n"):  # skip the rest of the line
                        line = f.readline(1 << 16)
                    continue
                if line.strip():
                    self._handle_safely(line)
        except OSError:
            pass
        finally:
            f.close()

    def _end_of_input(self) -> None:
        # EOF: a peer that hung up (POLLHUP) cancels its work; one that only shut down its
        # writing side (`nc -N`) still gets its answers.
        try:
            p = select.poll()
            p.register(self.sock, select.POLLIN)
            hung_up = any(ev & (select.POLLHUP | select.POLLERR) for _, ev in p.poll(0))
        except (OSError, ValueError):  # the writer closed it already
            hung_up = True
        if hung_up:
            self._lost()
        with self.lock:
            self.reading = False
            last = not self.jobs
        if last:
            self.out.put(None)

    def _handle_safely(self, line: bytes) -> None:
        """One line, whatever it holds, ends in events for it; the reader carries on."""
        try:
            self._handle(line)
        except Exception as exc:  # a bug: answer, log, keep reading
            log.exception("a request line could not be handled")
            self.server.scheduler.count("errors")
            self.send(Error(None, "internal", f"internal error while reading a request: "
                            f"{type(exc).__name__}"))

    def _handle(self, line: bytes) -> None:
        try:
            req = protocol.parse_request(line)
        except ProtocolError as exc:
            self.server.scheduler.count("errors")
            self.send(Error(exc.id, exc.code, exc.message))
            return
        except RecursionError:  # json's C decoder gives up on ~1,000 nested arrays/objects
            self.server.scheduler.count("errors")
            self.send(Error(None, "invalid_json", "not valid JSON: nested too deeply"))
            return
        if req.method == "action" and not self._bind_action(req):
            return
        if METHODS[req.method].kind != "daemon":  # needs a model: the scheduler runs it
            try:  # a model of a configured remote runs there, beside the scheduler
                job = self.server.remotes.job(self, req) or Job(self, req)
            except LocalAIError as exc:
                self.send(Error(req.id, exc.code, exc.message))
                return
            with self.lock:
                if req.id is not None and req.id in self.jobs:
                    self.send(Error(req.id, "duplicate_id", f"request {req.id!r} is still running on this connection"))
                    return
                self.jobs[req.id] = job
            (self.server.remotes if isinstance(job, RemoteJob) else self.server.scheduler).submit(job)
            return
        try:
            result = getattr(self.server, "m_" + req.method)(self, req.params)
            self.send(Done(req.id, result=result))
        except LocalAIError as exc:
            self.send(Error(req.id, exc.code, exc.message))
        except Exception as exc:
            log.exception("%s failed", req.method)
            self.send(Error(req.id, "internal", f"internal error in {req.method}: {exc}"))
        if req.method != "status":  # asking how many were served is not one of them
            self.server.scheduler.count("requests_served")
        if req.method == "shutdown":
            self.server.shutdown()

    def _bind_action(self, req) -> bool:
        """Build an action's prompt here, in the connection's thread (the user's code and
        `git diff` never hold up the scheduler); an error answers the request at once."""
        from ..actions.registry import bind

        try:
            run = bind(self.server.actions(), req.params.name, req.params.context)
        except LocalAIError as exc:
            self.server.scheduler.count("errors")
            self.send(Error(req.id, exc.code, exc.message))
            return False
        req.params.bound = run
        req.params.model = req.params.model or run.action.model
        return True


# --- the server -----------------------------------------------------------------------------------

class Server:
    def __init__(self, cfg, path: str | None = None, loader=None, resolve=None):
        self.cfg = cfg
        self.path = path or protocol.socket_path()
        self.scheduler = Scheduler(cfg, loader=loader, resolve=resolve)
        self.scheduler.on_fatal = self.shutdown
        self.remotes = Router(cfg, self.scheduler.count)  # [remotes.NAME] of the config
        self.listener: Listener | None = None
        self.http = None  # localai.http.app.HTTPServer when cfg.http is set
        self.conns: set = set()
        self.history = None  # localai.history.Recorder, unless the config says `log = false`
        if getattr(cfg, "log", True):
            from ..history import Recorder

            self.history = Recorder()
        self._wake_r, self._wake_w = os.pipe()
        self.stopping = False
        from ..actions.registry import Registry  # the standard library only; loads no file yet

        self._actions = Registry(getattr(self.cfg, "actions_path", None) or [])

    def actions(self):
        """The action registry: built-ins, the user's action files and the config's `actions_path`."""
        return self._actions

    def bind(self) -> None:
        http = getattr(self.cfg, "http", None)
        if http:
            from .. import http as http_api  # starlette and uvicorn load only when asked for

            http_api.check_bind(http_api.parse_address(http)[0], self.cfg.api_key)
        self.listener = Listener(self.path)
        if http:
            try:
                self.http = http_api.start(self, http, self.cfg.api_key, self.cfg.http_cors)
            except BaseException:
                self.listener.close()
                raise

    def serve_forever(self) -> None:
        """Accept connections until `shutdown()` (the `shutdown` method, SIGTERM, SIGINT)."""
        if self.listener is None:
            self.bind()
        self.scheduler.start()
        try:  # load the action files now, so the log says at once what failed
            for e in self.actions().listing()["errors"]:
                log.warning("action file %s:%s failed to load: %s", e["file"], e["line"], e["message"])
        except Exception:
            log.exception("loading the action files failed")
        log.info("listening on %s (pid %d)", self.path, os.getpid())
        if self.http is not None:
            self.http.start()
        sel = selectors.DefaultSelector()
        sel.register(self.listener.sock, selectors.EVENT_READ)
        sel.register(self._wake_r, selectors.EVENT_READ)
        try:
            while not self.stopping:
                for key, _ in sel.select():
                    if key.fileobj is self.listener.sock and not self.stopping:
                        self._accept()
        finally:
            sel.close()
            if self.http is not None:
                self.http.stop()
            self.scheduler.stop()
            self.remotes.stop()
            self.scheduler.thread.join(timeout=10)
            for conn in list(self.conns):  # let the last events (the `shutdown` answer) out
                conn.out.put(None)
                conn.writer.join(timeout=2)
            self.listener.close()
            if self.history is not None:
                self.history.close()
            os.close(self._wake_r)
            os.close(self._wake_w)
            log.info("stopped")

    def _accept(self) -> None:
        try:
            sock, _ = self.listener.sock.accept()
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.ECONNABORTED, errno.EINTR):
                return
            raise
        uid = peer_uid(sock)
        if uid != os.getuid():
            log.warning("refused a connection from uid %d", uid)
            try:
                sock.sendall(protocol.encode_event(Error(None, "permission_denied",
                             f"this localai daemon belongs to uid {os.getuid()}; start your own")))
            except OSError:
                pass
            sock.close()
            return
        conn = Connection(self, sock)
        self.conns.add(conn)
        conn.start()

    def shutdown(self) -> None:
        self.stopping = True
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass

    def install_signal_handlers(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, lambda *_: self.shutdown())
        if hasattr(signal, "SIGIO"):  # a model file's lease is being broken: see FileWatch
            signal.signal(signal.SIGIO, lambda *_: self.scheduler.wake())
            FileWatch.enabled = True

    # --- methods answered without the scheduler -----------------------------------------------

    def m_status(self, conn, params) -> dict:
        st = self.scheduler.status()
        caches = [m["prompt_cache"] for m in st["models"]]
        # what a long-running daemon must not leak: connections (this one included), KV-cache
        # sessions (all in the prompt caches; busy ones belong to running requests) and their bytes
        return {"version": _version(), "protocol": protocol.PROTOCOL_VERSION, "socket": self.path,
                "http": self.http.url if self.http is not None else None, **st,
                "connections": len(self.conns), "sessions": sum(c["sessions"] for c in caches),
                "sessions_busy": sum(c["busy"] for c in caches),
                "prompt_cache_bytes": sum(c["bytes"] for c in caches)}

    def m_models(self, conn, params) -> dict:
        from .. import store

        from .. import remote

        loaded = [m["name"] for m in self.scheduler.status()["models"]]
        return {"models": store.list_models() + remote.list_models(self.cfg), "loaded": loaded}

    def m_actions(self, conn, params) -> dict:
        return self.actions().listing()

    def m_cancel(self, conn, params) -> dict:
        with conn.lock:
            job = conn.jobs.get(params.target)
        if job is not None:
            job.cancelled = True
            self.scheduler.wake()
        return {"cancelled": job is not None}

    def m_shutdown(self, conn, params) -> dict:
        return {"ok": True, "pid": os.getpid()}


def _version() -> str:
    from .. import __version__

    return __version__
