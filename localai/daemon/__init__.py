"""The localai daemon: one process per user keeps models warm and serves every client (CLI,
shells, editors) over a private Unix socket. See docs/protocol.md for the wire protocol.

    serve(cfg)                 run in the foreground until `shutdown`, SIGTERM or Ctrl-C
    start_background(args)     detach a daemon (`localai serve --background`), wait until it answers

This package imports the engine only when a request needs a model.
"""
from __future__ import annotations

import logging
import os
import subprocess
import sys
import time

from .. import protocol
from .._spawn import module_argv
from ..errors import LocalAIError


class DaemonStartError(LocalAIError):
    code = "daemon_start_failed"


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
    os.makedirs(os.path.dirname(os.path.abspath(path)), mode=0o700, exist_ok=True)
    log_path = protocol.sidecar(path, ".log")
    with open(log_path, "ab") as log:
        os.chmod(log_path, 0o600)
        proc = subprocess.Popen(
            module_argv("localai.daemon", "--socket", path, *args),
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True, close_fds=True)
    pid_path = protocol.sidecar(path, ".pid")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise DaemonStartError(f"the localai daemon did not start (exit {proc.returncode}); "
                                   f"{log_path} says:\n{_log_tail(log_path)}")
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
