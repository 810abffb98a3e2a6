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


@pytest.mark.parametrize("model", ["smollm2", "gemma3-270m"])
def test_prompt_chunks_share_the_decode_pass(daemon, local, monkeypatch, model):
    """A long prompt arriving while two streams decode: its chunks go into the same forward
    passes as their next tokens (only each sequence's last row gets logits), and every answer
    still equals its greedy run alone."""
    from localai import batch

    kinds = []
    orig = batch.evaluate_batch

    def record(llm, evals):
        kinds.append(sorted(str(ev.save) for ev in evals))
        return orig(llm, evals)

    monkeypatch.setattr(batch, "evaluate_batch", record)
    reqs = [(PROMPTS[0], 40), (PROMPTS[1], 40), (LONG, 4), (PROMPTS[3], 6)]
    got = [None] * len(reqs)
    decoding = threading.Barrier(3)

    def run(i):
        prompt, n = reqs[i]
        with Client(daemon.path, autostart=False) as c:
            ids, waited = [], i >= 2
            for ev in c.events(c.send("generate", {"prompt": prompt, "max_tokens": n, "temperature": 0,
                                                   "model": model, "cache_prompt": False})):
                ids += ev.tokens if ev.event == "token" else []
                if not waited and ids:
                    waited = True
                    decoding.wait(300)
            got[i] = ids

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    decoding.wait(300)  # both streams decode now: send the long prompt and a short one
    threads += [threading.Thread(target=run, args=(i,)) for i in (2, 3)]
    for t in threads[2:]:
        t.start()
    for t in threads:
        t.join()
    mixed = [k for k in kinds if "decode" in k and ("None" in k or "prefill" in k)]
    assert len(mixed) >= 5, kinds  # the 17 chunks of LONG rode with the decode steps
    assert any("decode" in k and "prefill" in k for k in kinds), kinds  # a last chunk's logits read mid-batch
    llm = local[model]
    assert got == [llm.generate(p, max_tokens=n, temperature=0).tokens for p, n in reqs]


def test_max_batch_config_key(tmp_path):
    p = tmp_path / "config.toml"
    p.write_text("max_batch = 1\n")
    assert config.load(str(p)).max_batch == 1
    p.write_text("max_batch = 0\n")
    with pytest.raises(config.ConfigError, match="`max_batch` must be 1 or more"):
        config.load(str(p))
    with pytest.raises(config.ConfigError, match="--max-batch"):
        config.override(config.Config(), max_batch=0)
    assert config.daemon_args(max_batch=1) == ["--max-batch", "1"]
    from localai.daemon.scheduler import Scheduler
    assert Scheduler(config.Config(max_batch=1)).max_batch == 1
    assert Scheduler(config.Config()).max_batch > 8


def test_max_batch_1_runs_every_pass_alone(daemon, local):
    """Batching off (`max_batch = 1`, the baseline benchmarks/batching.py alone compares with):
    concurrent requests take turns, one request per forward pass, same answers."""
    got = [None] * 3

    def run(i):
        with Client(daemon.path, autostart=False) as c:
            got[i] = c.call("generate", prompt=PROMPTS[i], max_tokens=6, temperature=0, cache_prompt=False)["text"]

    daemon.scheduler.max_batch = 1
    daemon.scheduler.recent.clear()
    try:
        threads = [threading.Thread(target=run, args=(i,)) for i in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        daemon.scheduler.max_batch = 32
    assert {r for r, _ in daemon.scheduler.recent} == {1}
    assert len(daemon.scheduler.recent) >= 3 * 6
    assert got == [local["smollm2"].generate(p, max_tokens=6, temperature=0).text for p in PROMPTS[:3]]
