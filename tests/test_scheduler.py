"""The scheduler on a real model: long prompts are evaluated in chunks interleaved with other
requests' steps, decode steps of several requests share one batched pass, and neither
changes a single token (the kernels are batch-invariant). The daemon runs in this process
(localai.daemon.server.Server on a temporary socket) so a test can see its jobs."""
from __future__ import annotations

import threading
import time

import pytest

from localai import config, load
from localai.client import Client
from localai.daemon.server import Server

CHUNK = 32  # prompt tokens per step here (the daemon's default is 256): many steps, cheap ones
N_CTX = 1024
LONG = " ".join(f"Item {i} of the list is a word." for i in range(60))  # ~540 tokens: 17 chunks


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    cfg = config.Config(keep_alive=-1, n_ctx=N_CTX)
    path = str(tmp_path_factory.mktemp("sched") / "localai.sock")
    server = Server(cfg, path)
    server.scheduler.prefill_chunk = CHUNK
    server.bind()
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    with Client(path, autostart=False) as c:  # load smollm2 and gemma3 now
        for model in ("smollm2", "gemma3-270m"):
            c.call("generate", prompt="Hi", max_tokens=1, temperature=0, model=model, cache_prompt=False)
    yield server
    server.shutdown()
    t.join(10)


@pytest.fixture(scope="module")
def local():
    """The models in this process, for the answers of each request alone (unchunked prefill)."""
    return {m: load(m, n_ctx=N_CTX) for m in ("smollm2", "gemma3-270m")}


def _jobs(server, pred=lambda j: True):
    with server.scheduler.cond:
        return [j for j in server.scheduler.active + server.scheduler.pending if pred(j)]


def _wait(cond, timeout=300.0):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def _record(path, params, log, name):
    """Run a request, appending (monotonic time, name, event) to log."""
    with Client(path, autostart=False) as c:
        for ev in c.events(c.send("generate", params)):
            log.append((time.monotonic(), name, ev))


def _watch_cancel(server, monkeypatch):
    """Record (n_predicted, chunks) of the job a `cancel` reaches, the moment it is flagged."""
    seen = {}
    orig = server.m_cancel

    def m_cancel(conn, params):
        with conn.lock:
            job = conn.jobs.get(params.target)
        seen["at"] = (job.n_predicted, job.chunks)
        seen["job"] = job
        return orig(conn, params)

    monkeypatch.setattr(server, "m_cancel", m_cancel)
    return seen


def test_short_request_is_answered_during_a_long_prefill(daemon, local):
    long_p = {"prompt": LONG, "max_tokens": 3, "temperature": 0, "cache_prompt": False}
    short_p = {"prompt": "The capital of France is", "max_tokens": 3, "temperature": 0, "cache_prompt": False}
    log: list = []
    t_long = threading.Thread(target=_record, args=(daemon.path, long_p, log, "long"))
    t_long.start()
    _wait(lambda: any(j.chunks >= 1 for j in _jobs(daemon)))  # the long prompt's prefill is under way
    _record(daemon.path, short_p, log, "short")
    t_long.join()
    order = [(name, ev.event) for _, name, ev in log]
    short_done = order.index(("short", "done"))
    long_first = order.index(("long", "token"))
    assert short_done < long_first, f"the short request waited for the long prefill: {order}"
    # and neither answer changed: chunked and interleaved == each alone, evaluated unchunked
    text = {name: ev.text for _, name, ev in log if ev.event == "done"}
    smol = local["smollm2"]
    assert text["long"] == smol.generate(LONG, max_tokens=3, temperature=0).text
    assert text["short"] == smol.generate(short_p["prompt"], max_tokens=3, temperature=0).text
    done = [ev for _, name, ev in log if name == "long" and ev.event == "done"][0]
    assert done.timings["prompt_n"] > 10 * CHUNK


def test_cancel_mid_prefill_ends_within_one_chunk(daemon, monkeypatch):
    seen = _watch_cancel(daemon, monkeypatch)
    with Client(daemon.path, autostart=False) as c:
        req = c.send("generate", {"prompt": LONG, "max_tokens": 3, "temperature": 0, "cache_prompt": False})
        _wait(lambda: any(j.chunks >= 2 for j in _jobs(daemon)))
        c.cancel(req)
        events = list(c.events(req))
    assert events[-1].event == "done" and events[-1].finish_reason == "cancelled"
    assert not [e for e in events if e.event == "token"]
    n_at, chunks_at = seen["at"]
    assert 2 <= chunks_at and seen["job"].chunks <= chunks_at + 1, (chunks_at, seen["job"].chunks)
    assert seen["job"].chunks * CHUNK < len(LONG) // 4  # far from the end of the prompt


def test_disconnect_mid_prefill_ends_within_one_chunk(daemon):
    c = Client(daemon.path, autostart=False)
    c.send("generate", {"prompt": LONG, "max_tokens": 3, "temperature": 0, "cache_prompt": False})
    _wait(lambda: any(j.chunks >= 2 for j in _jobs(daemon)))
    job = _jobs(daemon)[0]
    c.close()
    chunks_at = job.chunks
    _wait(lambda: not _jobs(daemon), timeout=60)
    assert job.chunks <= chunks_at + 1


PROMPTS = ["The sky is", "Once upon a time", "def fibonacci(n):", "My favourite food is",
           "The capital of Italy is"]


@pytest.mark.parametrize("model", ["smollm2", "gemma3-270m"])
def test_batched_streams_equal_their_solo_greedy_runs(daemon, local, model):
    want = [local[model].generate(p, max_tokens=12, temperature=0).tokens for p in PROMPTS]
    got = [None] * len(PROMPTS)

    def run(i):
        with Client(daemon.path, autostart=False) as c:
            ids = []
            for ev in c.events(c.send("generate", {"prompt": PROMPTS[i], "max_tokens": 12, "temperature": 0,
                                                   "model": model, "cache_prompt": False})):
                ids += ev.tokens if ev.event == "token" else []
            got[i] = ids

    daemon.scheduler.recent.clear()
    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(PROMPTS))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got == want
    with Client(daemon.path, autostart=False) as c:
        batch = c.call("status")["batch"]
    assert batch["requests_max"] >= 3, batch  # decode steps really were shared


def test_cancel_within_one_step_under_batching(daemon, local, monkeypatch):
    seen = _watch_cancel(daemon, monkeypatch)
    others = [None, None]

    def run(i):
        with Client(daemon.path, autostart=False) as c:
            others[i] = c.call("generate", prompt=PROMPTS[i], max_tokens=24, temperature=0, cache_prompt=False)["text"]

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    with Client(daemon.path, autostart=False) as c:
        req = c.send("generate", {"prompt": PROMPTS[2], "max_tokens": 200, "temperature": 0, "cache_prompt": False})
        n = 0
        for ev in c.events(req):
            n += ev.event == "token"
            if n == 3:
                break
        c.cancel(req)
        last = list(c.events(req))[-1]
    for t in threads:
        t.join()
    assert last.event == "done" and last.finish_reason == "cancelled"
    n_at, _ = seen["at"]
    assert last.timings["predicted_n"] <= n_at + 1, (n_at, last.timings)
    smol = local["smollm2"]
    assert others == [smol.generate(p, max_tokens=24, temperature=0).text for p in PROMPTS[:2]]
