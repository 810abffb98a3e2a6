"""Shared by the daemon, CLI and chat tests: one real daemon with the real default model on a
temporary socket (started once per test process), the in-process model to compare against,
and the environment a `localai` subprocess needs to reach that daemon. No tests here."""
from __future__ import annotations

import atexit
import functools
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

from localai.client import Client

N_CTX = 512  # small, so a prompt over the context is cheap to make


@functools.lru_cache(maxsize=None)
def shared_daemon() -> dict:
    """Start `python -m localai.daemon` on a temp socket; returns {path, env, proc}."""
    root = tempfile.mkdtemp(prefix="localai-test-")
    conf = os.path.join(root, "config")
    os.makedirs(conf)
    path = os.path.join(root, "run", "localai.sock")
    env = dict(os.environ, LOCALAI_SOCKET=path, XDG_CONFIG_HOME=conf)
    env.pop("LOCALAI_CONFIG", None)
    proc = subprocess.Popen([sys.executable, "-m", "localai.daemon", "--socket", path, "--n-ctx", str(N_CTX),
                             "--keep-alive", "-1"], env=env, stdout=subprocess.DEVNULL,
                            stderr=open(os.path.join(root, "daemon.log"), "wb"))

    def stop():
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(root, ignore_errors=True)

    atexit.register(stop)
    deadline = time.monotonic() + 30
    while not os.path.exists(path):
        assert proc.poll() is None and time.monotonic() < deadline, open(os.path.join(root, "daemon.log")).read()
        time.sleep(0.05)
    with Client(path, autostart=False) as c:  # load the model and warm the kernels up
        c.call("generate", prompt="Hello", max_tokens=2, temperature=0)
    return {"path": path, "env": env, "proc": proc, "root": root}


@functools.lru_cache(maxsize=None)
def local_llm():
    """The same model in this process, for the reference answers."""
    import localai

    return localai.load("smollm2", n_ctx=N_CTX)


def greedy_chat(messages, max_tokens: int) -> str:
    return local_llm().chat(messages, max_tokens=max_tokens, temperature=0).text


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def run_cli(args, env, input: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "localai", *args], env=env, input=input,
                          capture_output=True, text=True, timeout=timeout,
                          stdin=None if input is not None else subprocess.DEVNULL)
