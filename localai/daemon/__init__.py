"""The localai daemon: one process per user keeps models warm and serves every client (CLI,
shells, editors) over a private Unix socket. See docs/protocol.md for the wire protocol.

    serve(cfg)                 run in the foreground until `shutdown`, SIGTERM or Ctrl-C
    start_background(args)     detach a daemon (`localai serve --background`), wait until it answers

This package imports the engine only when a request needs a model.
"""
from __future__ import annotations

import errno
import logging
import os
import stat
import subprocess
import sys
import time

from .. import protocol
from .._spawn import module_argv
from ..errors import LocalAIError


class DaemonStartError(LocalAIError):
    code = "daemon_start_failed"


class UnsafeRuntimeDir(LocalAIError):
    code = "unsafe_runtime_dir"


_ADVICE = ("refusing to use it (another user may be impersonating the localai daemon); remove it, "
           "or set XDG_RUNTIME_DIR or LOCALAI_SOCKET to a directory of your own")


def private_dir(path: str) -> None:
    """Create the socket's directory 0700 (`mkdir`, never through a symlink) and make sure it
    is ours before anything is opened in it: `lstat` says a real directory (not a symlink),
    owned by us; a mode other than 0700 is set to 0700 through a descriptor opened with
    O_NOFOLLOW. Anything else: UnsafeRuntimeDir, one line.

    The fallback `/tmp/localai-$UID` (when XDG_RUNTIME_DIR is unset: ssh, cron, containers)
    lives in a directory every user can write, so another user may have made it first."""
    path = os.path.abspath(path)
    parent = os.path.dirname(path)
    if not os.path.isdir(parent):
        os.makedirs(parent, mode=0o700, exist_ok=True)
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        raise UnsafeRuntimeDir(f"{path} is a symbolic link, not a directory of yours: {_ADVICE}")
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafeRuntimeDir(f"{path} is not a directory: {_ADVICE}")
    if st.st_uid != os.getuid():
        raise UnsafeRuntimeDir(f"{path} belongs to uid {st.st_uid}, not to you (uid {os.getuid()}): {_ADVICE}")
    if stat.S_IMODE(st.st_mode) != 0o700:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        try:
            fst = os.fstat(fd)
            if (fst.st_dev, fst.st_ino, fst.st_uid) != (st.st_dev, st.st_ino, os.getuid()):
                raise UnsafeRuntimeDir(f"{path} changed while it was checked: {_ADVICE}")
            os.fchmod(fd, 0o700)
        finally:
            os.close(fd)


def open_private(path: str, flags: int) -> int:
    """os.open(path, flags | O_NOFOLLOW | O_CLOEXEC, 0o600) for the log, pid and lock files
    beside the socket; refuses a symlink (ELOOP), a file of another user or not a regular
    file, and makes the file 0600."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafeRuntimeDir(f"{path} is a symbolic link: {_ADVICE}") from None
        if exc.errno == errno.EEXIST:
            raise UnsafeRuntimeDir(f"{path} appeared while localai was creating it: {_ADVICE}") from None
        raise
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid():
        os.close(fd)
        raise UnsafeRuntimeDir(f"{path} is not a file of yours (uid {st.st_uid}): {_ADVICE}")
    if stat.S_IMODE(st.st_mode) != 0o600:
        os.fchmod(fd, 0o600)
    return fd


def serve(cfg, path: str | None = None, *, loader=None, log_level: str = "INFO") -> None:
    """Run the daemon in this process until it is told to stop."""
    from .server import Server

    logging.basicConfig(level=log_level, stream=sys.stderr,
                        format="%(asctime)s localai[%(process)d] %(levelname)s %(message)s")
    server = Server(cfg, path, loader=loader)
    server.bind()  # fails fast (DaemonRunning) before anything else
    server.install_signal_handlers()
    server.serve_forever()
    if server.scheduler.fatal:
        raise LocalAIError(server.scheduler.fatal)


def _log_tail(path: str, n: int = 12) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return "".join(f.readlines()[-n:]).strip()
    except OSError:
        return ""


def start_background(path: str | None = None, args: tuple = (), timeout: float = 30.0) -> int:
    """Start a detached daemon on `path` and return its pid once its socket answers.
    Its output goes to the log file beside the socket (localai.log)."""
    import socket

    path = path or protocol.socket_path()
    private_dir(os.path.dirname(os.path.abspath(path)))
    log_path = protocol.sidecar(path, ".log")
    with os.fdopen(open_private(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT), "ab") as log:
        proc = subprocess.Popen(
            module_argv("localai.daemon", "--socket", path, *args),
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True, close_fds=True)
    pid_path = protocol.sidecar(path, ".pid")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = _log_tail(log_path)
            last = tail.splitlines()[-1] if tail else ""
            if last.startswith("localai: "):  # the daemon's own one-line error (a bad config file, ...)
                raise DaemonStartError(f"the localai daemon did not start: {last.removeprefix('localai: ')}")
            raise DaemonStartError(f"the localai daemon did not start (exit {proc.returncode}); "
                                   f"{log_path} says:\n{tail}")
        try:
            with open(pid_path) as f:
                ours = f.read().strip() == str(proc.pid)  # not some other daemon's socket
        except OSError:
            ours = False
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            if ours:
                s.connect(path)
                return proc.pid
        except OSError:
            pass
        finally:
            s.close()
        time.sleep(0.05)
    raise DaemonStartError(f"the localai daemon did not answer on {path} within {timeout:.0f} s; see {log_path}")
