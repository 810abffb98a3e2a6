"""The socket client: talks the protocol of `localai.protocol` to the daemon, starting one
(`python -m localai.daemon`, detached) when none answers.

    from localai.client import Client
    with Client() as c:
        for ev in c.request("chat", messages=[{"role": "user", "content": "Hi"}], max_tokens=32):
            print(ev.text if ev.event == "token" else "", end="")    # the last event is Done
        print(c.call("status")["tokens_generated"])

Imports nothing heavy (no numpy, no engine), so shell and editor commands start fast.
"""
from __future__ import annotations

import itertools
import os
import socket
import sys
from collections import deque

from . import protocol
from .errors import LocalAIError
from .protocol import Done, Error, Notice


class DaemonError(LocalAIError):
    """An `error` event; `.code` is the protocol's error code."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


class NotRunning(LocalAIError):
    code = "daemon_not_running"


class NotOurDaemon(LocalAIError):
    code = "permission_denied"


def check_peer(sock: socket.socket, path: str) -> None:
    """Refuse a socket served by another user, before a byte is sent: the peer's uid
    (SO_PEERCRED; getpeereid on the BSDs and macOS) must be ours."""
    uid = _peer_uid(sock)
    if uid is not None and uid != os.getuid():
        raise NotOurDaemon(f"{path} is served by uid {uid}, not by you (uid {os.getuid()}): refusing to "
                           f"talk to it (another user may be impersonating the localai daemon); set "
                           f"XDG_RUNTIME_DIR or LOCALAI_SOCKET to a directory of your own")


def _peer_uid(sock: socket.socket) -> int | None:
    import struct

    if hasattr(socket, "SO_PEERCRED"):  # Linux: struct ucred {pid, uid, gid}
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        return struct.unpack("3i", creds)[1]
    if hasattr(socket, "LOCAL_PEERCRED"):  # macOS/BSD: struct xucred {u_int version; uid_t uid; ...}
        creds = sock.getsockopt(0, socket.LOCAL_PEERCRED, 76)
        return struct.unpack_from("2I", creds)[1]
    return None


class BaseClient:
    """What every client offers; subclasses provide send, events, cancel and close."""

    def request(self, method: str, **params):
        """Send a request and iterate over its events (Token..., then Done)."""
        return self.events(self.send(method, params))

    def call(self, method: str, **params) -> dict:
        """Run a request to its end. Generating methods return the Done event's fields (text,
        finish_reason, model, timings, result); the others return `done.result`."""
        done = None
        for ev in self.request(method, **params):
            done = ev
        if protocol.METHODS[method].kind == "generate":
            return {k: v for k, v in vars(done).items() if k != "event"}
        return done.result

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


CONNECT_TIMEOUT = 5.0   # s: a daemon that accepts but never answers is not left hanging on
CHECK_AFTER = 10.0      # s of silence before the client asks the daemon (`status`) if it still works


class Client(BaseClient):
    """`timeout`: the most seconds to wait for any event (None = as long as the daemon is
    alive: after CHECK_AFTER s of silence the client asks for `status` on a second connection
    and gives up with `not_answering` when that gets no answer or the scheduler has died)."""

    def __init__(self, path: str | None = None, *, autostart: bool = True, start_args: tuple = (),
                 timeout: float | None = None):
        self.path = path or protocol.socket_path()
        self.timeout = timeout
        self.sock = self._connect(autostart, start_args)
        self.sock.settimeout(min(timeout, CHECK_AFTER) if timeout is not None else CHECK_AFTER)
        self._buf = b""
        self._queues: dict = {}  # id -> deque of events not yet read
        self._ids = itertools.count(1)

    def _connect(self, autostart: bool, start_args: tuple) -> socket.socket:
        try:
            return self._try_connect()
        except (FileNotFoundError, ConnectionRefusedError):
            if not autostart:
                raise NotRunning(f"no localai daemon is running on {self.path}: start one with "
                                 f"`localai serve --background`") from None
        from .daemon import start_background  # light: the engine loads inside the daemon

        try:
            start_background(self.path, start_args)
        except LocalAIError as exc:
            # two clients may race to start one; the loser's daemon refuses, the winner answers
            try:
                return self._try_connect()
            except OSError:
                raise exc from None
        return self._try_connect()

    def _try_connect(self) -> socket.socket:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(CONNECT_TIMEOUT)
        try:
            s.connect(self.path)
        except PermissionError:
            s.close()
            raise LocalAIError(f"permission denied on {self.path}: that daemon belongs to another "
                               f"user; set LOCALAI_SOCKET or XDG_RUNTIME_DIR to a directory of your own") from None
        except OSError:
            s.close()
            raise
        try:
            check_peer(s, self.path)
        except BaseException:
            s.close()
            raise
        return s

    # --- requests ----------------------------------------------------------------------------------

    def send(self, method: str, params: dict | None = None, id=None):
        """Send a request without waiting; returns its id."""
        if id is None:
            id = next(self._ids)
        self._queues[id] = deque()
        self._sendall(protocol.encode_request(id, method, params))
        return id

    def _sendall(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except socket.timeout:
            raise self._not_answering("took no request for") from None
        except OSError as exc:
            raise DaemonError("disconnected", f"the localai daemon closed the connection ({self.path}: "
                              f"{exc.strerror or exc}); its log is {protocol.sidecar(self.path, '.log')}") from None

    def events(self, id):
        """The events of request `id` up to and including its `done`; an `error` raises DaemonError,
        a `notice` goes to `on_notice`."""
        q = self._queues[id]  # stays until the last event, so a caller may stop and resume reading
        while True:
            while not q:
                self._read()
            ev = q.popleft()
            if isinstance(ev, Notice):
                self.on_notice(ev.text)
                continue
            if isinstance(ev, (Done, Error)):
                del self._queues[id]
            if isinstance(ev, Error):
                raise DaemonError(ev.code, ev.message)
            yield ev
            if isinstance(ev, Done):
                return

    def on_notice(self, text: str) -> None:
        """A `notice` event (e.g. the daemon compiles its kernels): one line on stderr."""
        print(f"localai: {text}", file=sys.stderr, flush=True)

    def cancel(self, id) -> None:
        """Ask the daemon to stop request `id`; its events end with done/cancelled."""
        self._sendall(protocol.encode_request(f"cancel-{id}", "cancel", {"target": id}))

    def _not_answering(self, what: str, waited: float | None = None, why: str = "") -> DaemonError:
        waited = waited if waited is not None else CONNECT_TIMEOUT
        return DaemonError("not_answering", f"the localai daemon on {self.path} stopped answering ({what} "
                           f"{waited:.1f} s{why}); "
                           f"`localai stop` (or kill pid {pid_of(self.path) or '?'}) and try again; "
                           f"its log is {protocol.sidecar(self.path, '.log')}")

    def _health(self) -> str | None:
        """None when the daemon answers `status` with a live scheduler, else why not."""
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(CONNECT_TIMEOUT)
        try:
            s.connect(self.path)
            check_peer(s, self.path)
            s.sendall(protocol.encode_request("health", "status"))
            buf = b""
            while not buf.endswith(b"\n"):
                chunk = s.recv(1 << 16)
                if not chunk:
                    return "closed the connection"
                buf += chunk
            ev = protocol.decode_event(buf.split(b"\n")[0])
            if isinstance(ev, Done) and ev.result and ev.result.get("scheduler_alive") is False:
                return "has a dead scheduler"
            return None
        except (OSError, ValueError, KeyError, TypeError, LocalAIError):
            return "does not answer `status`"
        finally:
            s.close()

    def _recv(self) -> bytes:
        import time

        start = time.monotonic()
        while True:
            try:
                return self.sock.recv(1 << 16)
            except socket.timeout:
                waited = time.monotonic() - start
                if self.timeout is not None and waited >= self.timeout:
                    raise self._not_answering("sent nothing for", waited) from None
                why = self._health()
                if why is not None:
                    raise self._not_answering("sent nothing for", waited, f" and {why}") from None
            except OSError as exc:
                raise DaemonError("disconnected", f"the localai daemon closed the connection ({self.path}: "
                                  f"{exc.strerror or exc}); its log is {protocol.sidecar(self.path, '.log')}") from None

    def _read(self) -> None:
        data = self._recv()
        if not data:
            raise DaemonError("disconnected", f"the localai daemon closed the connection ({self.path}); "
                              f"its log is {protocol.sidecar(self.path, '.log')}")
        self._buf += data
        *lines, self._buf = self._buf.split(b"\n")
        for line in lines:
            if not line.strip():
                continue
            try:
                ev = protocol.decode_event(line)
            except (ValueError, KeyError, TypeError):
                raise DaemonError("bad_event", f"the daemon sent a line that is not an event: {line[:80]!r}") from None
            if ev.id in self._queues:
                self._queues[ev.id].append(ev)
            elif ev.id is None and isinstance(ev, Error):  # about the connection: tell everyone
                for q in self._queues.values():
                    q.append(ev)

    def close(self) -> None:
        self.sock.close()


def running(path: str | None = None) -> bool:
    """True when a daemon answers on the socket."""
    try:
        Client(path, autostart=False).close()
        return True
    except (NotRunning, OSError, LocalAIError):
        return False


def pid_of(path: str | None = None) -> int | None:
    try:
        with open(protocol.sidecar(path or protocol.socket_path(), ".pid")) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None
