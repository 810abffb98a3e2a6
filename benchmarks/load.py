"""Load: N clients at once on a real daemon (default 64), mixed generate / ask / chat /
complete, some cancelling and some hanging up mid-stream; every greedy answer must equal the
one the daemon gives that request alone, every cancelled or abandoned stream a prefix of it,
and afterwards the daemon holds no more threads, fds, connections or busy sessions than before.

    python benchmarks/load.py [--clients 64] [--model smollm2|PATH] [--max-tokens 12]

Default model: a tiny random one (tests/tiny.py); `--model smollm2` serves the real one from
the store. The suite runs the same on the tiny model (tests/test_reliability_load.py).
"""
from __future__ import annotations

import argparse
import collections
import os
import shutil
import signal
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

import load_support as L  # noqa: E402
from test_reliability import start_daemon  # noqa: E402
from tiny import write_tiny  # noqa: E402


def model_path(name: str | None, root: str) -> str:
    if not name:
        return str(write_tiny(os.path.join(root, "tiny.gguf"), n_ctx=256))
    if os.path.exists(name):
        return name
    from localai import store

    return str(store.resolve(name, pull_missing=False))


def start(a, prefix: str) -> tuple[str, dict]:
    """(a temporary root, the daemon) for parsed args `a` (model, n_ctx); SIGTERM (`timeout`)
    still stops the daemon."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    root = tempfile.mkdtemp(prefix=prefix)
    real = {"args": ("--n-ctx", str(a.n_ctx)), "extra_env": {"LOCALAI_KERNELS": ""}} if a.model else {}
    return root, start_daemon(root, model_path(a.model, root), **real)  # a real model: the numba kernels


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--model", help="catalog name or .gguf path (default: a tiny random model)")
    ap.add_argument("--max-tokens", type=int, default=12)
    ap.add_argument("--n-ctx", type=int, default=2048)
    a = ap.parse_args()
    root, d = start(a, "localai-load-")
    try:
        reqs = L.workload(max(4, a.clients // 2), a.max_tokens)
        t0 = time.monotonic()
        L.solo_answers(d["path"], reqs)
        solo_s = time.monotonic() - t0
        print(f"  solo answers of {len(reqs)} requests: {solo_s:.1f} s", flush=True)
        base = L.idle_status(d["path"])
        batch = [reqs[i % len(reqs)] for i in range(a.clients)]
        hows = ["cancel" if i % 8 == 3 else "disconnect" if i % 8 == 6 else "full" for i in range(a.clients)]
        peak = {"in flight": 0, "connections": 0}
        stop = threading.Event()

        def watch():
            while not stop.is_set():
                s = L.status(d["path"])
                peak["in flight"] = max(peak["in flight"], s["active"] + s["queued"])
                peak["connections"] = max(peak["connections"], s["connections"])
                time.sleep(0.1)

        w = threading.Thread(target=watch, daemon=True)
        w.start()
        t0 = time.monotonic()
        outs = L.concurrent(d["path"], batch, hows, timeout=1800)
        wall = time.monotonic() - t0
        stop.set()
        w.join()
        after = L.idle_status(d["path"], base)
        wrong = [o for o in outs if not o.ok]
        for o in wrong:
            print(f"WRONG {o.req.kind}/{o.how}: {o.why}")
        leaks = L.leaks(base, after)
        ends = collections.Counter(f"{o.how}:{o.finish or 'hung up'}" for o in outs)
        kinds = collections.Counter(o.req.kind for o in outs)
        print(f"load: {a.clients} clients at once on {os.path.basename(d['model'])} ({dict(kinds)}); "
              f"{a.clients - len(wrong)} correct, {len(wrong)} wrong; ends {dict(ends)}; "
              f"peak {peak['in flight']} requests in flight, {peak['connections']} connections; "
              f"{wall:.1f} s (solo, one at a time: {solo_s:.1f} s for {len(reqs)}); "
              f"slowest client {max(o.seconds for o in outs):.1f} s; "
              f"threads {base['threads']} -> {after['threads']}, fds {base['fds']} -> {after['fds']}, "
              f"busy sessions {after['sessions_busy']}; leaks: {leaks or 'none'}")
        return 1 if wrong or leaks else 0
    finally:
        d["proc"].terminate()
        d["proc"].wait(10)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
