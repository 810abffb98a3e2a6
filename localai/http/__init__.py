"""The daemon's optional HTTP listener: OpenAI's API and llama-server's native endpoints,
served beside the Unix socket by the same scheduler, prompt cache and models.

    localai serve --http 8080            # 127.0.0.1:8080
    localai serve --http 0.0.0.0:8080 --api-key KEY

Modules: `app` (the Starlette app: routes, key check, body limit, the bridge to the
scheduler), `openai` (/v1/... requests and responses), `llamacpp` (/completion, /infill).
Built on Starlette (routing, requests, server-sent events) served by uvicorn (HTTP/1.1 with
h11, keep-alive, graceful shutdown) on a thread of the daemon: both are small, widely used,
pure-Python-installable, and let the daemon keep its threads and its scheduler as they are.
See docs/http.md.
"""
from __future__ import annotations

import ipaddress

from ..errors import LocalAIError

DEFAULT_HOST = "127.0.0.1"


class HTTPConfigError(LocalAIError):
    code = "bad_config"


def parse_address(value: str) -> tuple[str, int]:
    """"8080" -> ("127.0.0.1", 8080); "0.0.0.0:8080"; "[::1]:8080"; "localhost:8080"."""
    value = str(value).strip()
    host, sep, port = value.rpartition(":")
    if not sep:
        host, port = DEFAULT_HOST, value
    host = host.strip("[]") or DEFAULT_HOST
    try:
        n = int(port)
    except ValueError:
        n = -1
    if not 0 <= n <= 65535:
        raise HTTPConfigError(f"--http {value!r}: expected [HOST:]PORT, e.g. 8080 or 127.0.0.1:8080")
    return host, n


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve anywhere


def check_bind(host: str, api_key: str | None) -> None:
    """Any address but loopback needs an API key: the HTTP API runs code-writing models for
    whoever reaches it."""
    if not is_loopback(host) and not api_key:
        raise HTTPConfigError(
            f"refusing to serve HTTP on {host}, which is not a loopback address, without an API key: "
            f"set one with --api-key or LOCALAI_API_KEY, or bind 127.0.0.1")


def start(server, address: str, api_key: str | None = None, cors: list | None = None):
    """Bind `address` now (errors here, before anything is served) and serve the HTTP API
    for `server` (a daemon.server.Server) on a background thread; returns the HTTPServer."""
    from .app import HTTPServer

    host, port = parse_address(address)
    check_bind(host, api_key)
    return HTTPServer(server, host, port, api_key=api_key, cors=cors)
