"""Load and soak on a real daemon (`python -m localai.daemon`) serving the tiny test model
(issue 19, item 6): 64 clients at once, mixed complete / ask / chat / generate, some
cancelling and some hanging up mid-stream, each greedy answer equal to the one the daemon
gives that request alone; then a short soak of mixed requests with RSS flat after warm-up and
no leaked thread, fd, connection or session (counted by `status`). The long versions:
benchmarks/load.py and benchmarks/soak.py.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time

import pytest

import load_support as L
from test_reliability import start_daemon
from tiny import write_tiny


@pytest.fixture(scope="module")
def daemon():
    root = tempfile.mkdtemp(prefix="localai-load-")
    model = str(write_tiny(os.path.join(root, "tiny.gguf"), n_ctx=256))
    d = start_daemon(root, model)
    reqs = L.workload(32)
    L.solo_answers(d["path"], reqs)
    d["reqs"] = reqs
    yield d
    d["proc"].terminate()
    d["proc"].wait(10)
    shutil.rmtree(root, ignore_errors=True)


def test_status_counts_connections_sessions_and_cache_bytes(daemon):
    path = daemon["path"]
    base = L.idle_status(path)
    assert base["connections"] == 1 and base["sessions_busy"] == 0
    (m,) = base["models"]
    assert base["sessions"] == m["prompt_cache"]["sessions"] > 0  # the solo answers left sessions
    assert base["prompt_cache_bytes"] == m["prompt_cache"]["bytes"] > 0
    held = [L.Client(path, autostart=False) for _ in range(5)]
    try:
        assert L.status(path)["connections"] == 6
    finally:
        for c in held:
            c.close()
    assert not L.leaks(base, L.idle_status(path, base))


def test_64_concurrent_clients_mixed_all_get_their_solo_answer(daemon):
    path, reqs = daemon["path"], daemon["reqs"]
    base = L.idle_status(path)
    batch = reqs + reqs  # each request twice at once: the prompt cache must not mix them up
    hows = ["cancel" if i % 8 == 3 else "disconnect" if i % 8 == 6 else "full" for i in range(64)]
    seen = {"active": 0, "connections": 0}
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            s = L.status(path)
            seen["active"] = max(seen["active"], s["active"] + s["queued"])
            seen["connections"] = max(seen["connections"], s["connections"])
            time.sleep(0.05)

    w = threading.Thread(target=watch, daemon=True)
    w.start()
    outs = L.concurrent(path, batch, hows, timeout=240)
    stop.set()
    w.join()
    wrong = [f"{o.req.kind}/{o.how}: {o.why}" for o in outs if not o.ok]
    assert not wrong, f"{len(wrong)} of 64 wrong:\n" + "\n".join(wrong[:10])
    kinds = {(o.req.kind, o.how) for o in outs}
    assert {k for k, _ in kinds} == {"generate", "ask", "chat", "complete"}
    assert sum(o.finish == "cancelled" for o in outs) >= 4, [o.finish for o in outs if o.how == "cancel"]
    assert seen["active"] >= 16 and seen["connections"] >= 16, seen  # they really overlapped
    assert not L.leaks(base, L.idle_status(path, base))
    assert L.status(path)["scheduler_alive"]


def test_short_soak_keeps_rss_flat_and_leaks_nothing(daemon):
    r = L.soak(daemon["path"], daemon["reqs"], n_requests=400, minutes=1.0, workers=4, warmup=60)
    print(f"soak: {r['requests']} requests in {r['seconds']} s, RSS {L.mib(r['rss_before'])} -> "
          f"{L.mib(r['rss_after'])} ({r['rss_growth']:+.1%}; without the prompt cache "
          f"{r['rss_growth_without_cache']:+.1%}), prompt cache {L.mib(r['prompt_cache_before'])} -> "
          f"{L.mib(r['prompt_cache_after'])}, {r['by_how']}")
    assert r["requests"] - r["warmup"] >= 60, r["requests"]  # at most a minute, on a loaded machine
    assert not r["wrong"], r["wrong"][:10]
    assert not r["leaks"], r["leaks"]
    assert r["rss_growth_without_cache"] < 0.05, r
    assert all(r["by_how"].get(h) for h in ("full", "cancel", "disconnect", "bad")), r["by_how"]
