"""How long a client command takes from exec to its request arriving on the socket.

A stand-in daemon (this process) listens on a temporary socket, notes when each request line
arrives and answers it at once with a `done` event; each variant is started N times,
interleaved, and its exec-to-request time (wall) and the CPU time of the whole process are
reported (min and median):

- `python -c pass`: the interpreter starting and exiting, nothing else
- `floor`: the interpreter plus the least a client can do (connect, send one line, read one)
- `localai ask`: the installed console script (the instant path, localai.cli.fast)
- `localai ask via Typer`: the same command through the Typer app (every command's path before)

    python benchmarks/startup.py [-n 20] [--json]

Run it with the Python of the environment localai is installed in. Bytecode is written and
reused (PYTHONDONTWRITEBYTECODE is dropped), as it is for an installed package.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

FLOOR = ("import json, os, socket; s = socket.socket(socket.AF_UNIX); s.connect(os.environ['LOCALAI_SOCKET']); "
         "s.sendall(json.dumps({'id': 1, 'method': 'chat', 'params': {'messages': "
         "[{'role': 'user', 'content': 'hi'}]}}).encode() + b'\\n'); s.recv(65536)")
TYPER = ("import sys; sys.argv = ['localai', 'ask', 'hi']; from localai.cli import get_app, user_input; "
         "user_input.setup(); get_app()()")


class StandIn:
    """A socket that answers every request line with done; `arrivals` gets perf_counter times."""

    def __init__(self, path: str):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(8)
        self.arrivals: list = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        buf = b""
        with conn:
            while b"\n" not in buf:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                buf += chunk
            self.arrivals.append(time.perf_counter())
            req = json.loads(buf.split(b"\n")[0])
            done = {"id": req.get("id"), "event": "done", "finish_reason": "stop", "text": "ok",
                    "model": "smollm2", "timings": {"predicted_n": 1}}
            conn.sendall(json.dumps(done).encode() + b"\n")


def once(argv: list, env: dict, server: StandIn) -> tuple[float, float]:
    """(exec -> request arrived, CPU seconds of the process); exec -> exit for `pass`."""
    n = len(server.arrivals)
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE)
    t_end = time.perf_counter()
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{argv}: exit {proc.returncode}: {proc.stderr.decode()[-500:]}")
    arrived = server.arrivals[n] if len(server.arrivals) > n else t_end
    return arrived - t0, (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=20, help="runs of each variant (interleaved)")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    a = ap.parse_args()
    root = tempfile.mkdtemp(prefix="localai-startup-")
    try:
        path = os.path.join(root, "localai.sock")
        server = StandIn(path)
        env = dict(os.environ, LOCALAI_SOCKET=path, XDG_CONFIG_HOME=os.path.join(root, "config"))
        env.pop("LOCALAI_CONFIG", None)
        env.pop("PYTHONDONTWRITEBYTECODE", None)  # as installed: compiled once, then read from __pycache__
        script = shutil.which("localai", path=os.path.dirname(sys.executable)) or shutil.which("localai")
        variants = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "floor (connect, send, read)": [sys.executable, "-c", FLOOR],
            "localai ask": [script, "ask", "hi"],
            "localai ask via Typer": [sys.executable, "-c", TYPER],
        }
        for argv in variants.values():  # warm the file cache and .pyc files
            once(argv, env, server)
        runs = {k: [] for k in variants}
        for _ in range(a.n):
            for k, argv in variants.items():
                runs[k].append(once(argv, env, server))
        out = {}
        for k, rs in runs.items():
            wall, cpu = [r[0] * 1000 for r in rs], [r[1] * 1000 for r in rs]
            out[k] = {"wall_ms_min": round(min(wall), 1), "wall_ms_median": round(statistics.median(wall), 1),
                      "cpu_ms_min": round(min(cpu), 1), "cpu_ms_median": round(statistics.median(cpu), 1)}
        if a.json:
            print(json.dumps({"runs": a.n, "python": sys.version.split()[0], "results": out}, indent=2))
            return
        print(f"exec -> request on the socket, {a.n} runs each (ms; `pass`: exec -> exit)")
        print(f"{'variant':<30}{'wall min':>10}{'wall med':>10}{'cpu min':>10}{'cpu med':>10}")
        for k, r in out.items():
            print(f"{k:<30}{r['wall_ms_min']:>10}{r['wall_ms_median']:>10}{r['cpu_ms_min']:>10}{r['cpu_ms_median']:>10}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
