"""Load and soak workloads for a real daemon (issue 19, item 6), shared by
tests/test_reliability_load.py (short versions) and benchmarks/load.py, benchmarks/soak.py.

Every request is greedy (temperature 0), so each has one right answer: the one the same
daemon gives it alone, asked first (`solo_answers`). Under load a request must get exactly
that answer; one cancelled or whose client hung up must have streamed a prefix of it (and
a cancelled one ends with `done`, finish_reason "cancelled" or its natural end). No test
code here.

    workload(n)                 -> [Req]: distinct generate / ask / chat / complete requests
    solo_answers(path, reqs)    fills Req.want, one request at a time
    run_client(path, req, how)  -> Outcome: how = "full" | "cancel" | "disconnect" | "bad"
    concurrent(path, reqs, hows) -> [Outcome] (all started at once, one connection each)
    idle_status(path, base)     -> the daemon's status once its work has drained
    soak(path, ...)             -> a report dict (RSS, prompt cache, threads, fds, sessions, counts)
"""
from __future__ import annotations

import random
import threading
import time
import zlib
from dataclasses import dataclass, field

from localai.client import Client, DaemonError

TOPICS = ["the cat", "a red boat", "the old mill", "winter rain", "our garden", "the night train",
          "a blue kite", "the river", "bread and salt", "the lighthouse", "a paper crane", "the hills",
          "copper wire", "the market", "a quiet road", "the orchard"]


@dataclass
class Req:
    kind: str          # generate | ask | chat | complete (ask = a one-question chat, as `localai ask` sends)
    method: str
    params: dict
    want: str | None = None  # the solo answer


def workload(n: int, max_tokens: int = 12) -> list[Req]:
    """n distinct greedy requests, the four kinds in turn; prompts differ from the first
    word, so no two share a cached prefix by design (but they may, and that must not
    change an answer)."""
    out = []
    for i in range(n):
        t = f"{TOPICS[i % len(TOPICS)]} {i}"
        base = {"temperature": 0, "max_tokens": max_tokens + i % 5}
        kind = ("generate", "ask", "chat", "complete")[i % 4]
        if kind == "generate":
            out.append(Req(kind, "generate", {"prompt": f"{t}: once upon a time", **base}))
        elif kind == "ask":
            out.append(Req(kind, "chat", {"messages": [{"role": "user", "content": f"Tell me about {t}."}], **base}))
        elif kind == "chat":  # a few turns, truncate on, as `localai chat` sends
            msgs = [{"role": "system", "content": "Be brief."}]
            for k in range(1 + i % 3):
                msgs += [{"role": "user", "content": f"{t}, turn {k}?"}, {"role": "assistant", "content": f"yes {k}"}]
            msgs.append({"role": "user", "content": f"and {t}?"})
            out.append(Req(kind, "chat", {"messages": msgs, "truncate": True, **base}))
        else:
            out.append(Req(kind, "complete", {"prefix": f"def f_{i}(x):\n    # {t}\n    return ",
                                               "suffix": "\n\nprint(f(1))\n", **base}))
    return out


def solo_answers(path: str, reqs: list[Req]) -> None:
    with Client(path, autostart=False, timeout=300) as c:
        for r in reqs:
            r.want = c.call(r.method, **r.params)["text"]


@dataclass
class Outcome:
    req: Req
    how: str
    ok: bool
    why: str = ""
    finish: str | None = None
    tokens: int = 0
    seconds: float = 0.0


BAD = [  # (method, params, the error code it must get)
    ("generate", {"prompt": "x", "max_tokens": 10 ** 50}, "invalid_request"),
    ("chat", {"messages": "hi"}, "invalid_request"),
    ("generate", {"prompt": "x", "model": "no-such-model"}, "model_not_found"),
]


def run_client(path: str, req: Req, how: str, after: int = 2, timeout: float = 300) -> Outcome:
    """One client on its own connection. `after`: tokens to read before cancelling or
    hanging up."""
    t0 = time.monotonic()
    o = Outcome(req, how, False)
    c = Client(path, autostart=False, timeout=timeout)
    try:
        if how == "bad":
            method, params, code = BAD[zlib.crc32(repr(req.params).encode()) % len(BAD)]
            try:
                c.call(method, **params)
                o.why = f"{method} {params} was answered, not refused"
            except DaemonError as exc:
                o.ok, o.why = exc.code == code, f"got {exc.code}, not {code}: {exc.message}"
            return o
        rid = c.send(req.method, dict(req.params, stream=True))
        streamed, cancelled = "", False
        for ev in c.events(rid):
            if ev.event == "token":
                streamed += ev.text
                o.tokens += len(ev.tokens)
                if o.tokens >= after and how == "disconnect":
                    c.close()
                    o.ok = req.want.startswith(streamed)
                    o.why = "" if o.ok else f"streamed {streamed!r}, not a prefix of {req.want!r}"
                    return o
                if o.tokens >= after and how == "cancel" and not cancelled:
                    c.cancel(rid)
                    cancelled = True
            elif ev.event == "done":
                o.finish = ev.finish_reason
                if ev.text != streamed:
                    o.why = f"done.text {ev.text!r} is not what was streamed ({streamed!r})"
                elif ev.finish_reason == "cancelled":
                    o.ok = how == "cancel" and req.want.startswith(ev.text)
                    o.why = "" if o.ok else f"cancelled with {ev.text!r}, not a prefix of {req.want!r}"
                else:
                    o.ok = ev.text == req.want
                    o.why = "" if o.ok else f"answered {ev.text!r}, alone {req.want!r}"
        if how == "disconnect" and not o.why:  # finished before `after` tokens: a full answer
            o.ok = o.finish is not None and streamed == req.want
    except DaemonError as exc:
        o.why = f"{exc.code}: {exc.message}"
    finally:
        o.seconds = time.monotonic() - t0
        c.close()
    return o


def concurrent(path: str, reqs: list[Req], hows: list[str], timeout: float = 300) -> list[Outcome]:
    """Start one client per request at once (a barrier), wait for all."""
    outs: list = [None] * len(reqs)
    gate = threading.Barrier(len(reqs))

    def one(i):
        try:
            gate.wait(60)
        except threading.BrokenBarrierError:
            pass
        try:
            outs[i] = run_client(path, reqs[i], hows[i], timeout=timeout)
        except Exception as exc:  # the harness itself: recorded, not lost
            outs[i] = Outcome(reqs[i], hows[i], False, f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(len(reqs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout + 60)
    return [o or Outcome(r, h, False, "client thread did not finish") for o, r, h in zip(outs, reqs, hows)]


def status(path: str) -> dict:
    with Client(path, autostart=False, timeout=60) as c:
        return c.call("status")


def idle_status(path: str, base: dict | None = None, wait: float = 10.0) -> dict:
    """Status once nothing runs: no active, queued or busy session, one connection (this one),
    and (given a baseline) no more threads or fds than it had."""
    deadline = time.monotonic() + wait
    while True:
        s = status(path)
        settled = (s["active"] == 0 and s["queued"] == 0 and s["sessions_busy"] == 0 and s["connections"] == 1
                   and (base is None or (s["threads"] <= base["threads"] and s["fds"] <= base["fds"])))
        if settled or time.monotonic() > deadline:
            return s
        time.sleep(0.1)


def leaks(base: dict, now: dict) -> list[str]:
    """What `now` holds that an idle daemon at `base` did not."""
    out = []
    for k in ("threads", "fds"):
        if now[k] > base[k]:
            out.append(f"{k} {base[k]} -> {now[k]}")
    for k, v in (("active", 0), ("queued", 0), ("sessions_busy", 0), ("connections", 1)):
        if now[k] != v:
            out.append(f"{k} {now[k]} (want {v})")
    for m in now["models"]:
        pc = m["prompt_cache"]
        if pc["sessions"] > pc["max_sessions"] or pc["bytes"] > max(pc["max_bytes"], 0) + _largest_session(m):
            out.append(f"prompt cache of {m['name']}: {pc['sessions']} sessions, {pc['bytes']:,} bytes "
                       f"(limits {pc['max_sessions']}, {pc['max_bytes']:,})")
    if not now["scheduler_alive"]:
        out.append("the scheduler died")
    return out


def _largest_session(m: dict) -> int:
    # the cache may hold one session over its byte budget while that one is the only one kept
    pc = m["prompt_cache"]
    return pc["bytes"] if pc["sessions"] <= 1 else 0


# --- the soak -----------------------------------------------------------------------------------

HOWS = ["full"] * 16 + ["cancel"] * 2 + ["disconnect"] * 2 + ["bad"]  # 76 % full, 10 % cancel, 10 % hang up, 5 % refused


@dataclass
class Soak:
    requests: int = 0
    wrong: list = field(default_factory=list)
    by_how: dict = field(default_factory=dict)
    samples: list = field(default_factory=list)  # (requests done, rss_bytes, prompt_cache_bytes)


def soak(path: str, reqs: list[Req], n_requests: int, minutes: float, workers: int = 4,
         warmup: int | None = None, seed: int = 0, progress=None) -> dict:
    """`n_requests` mixed requests (or `minutes`, whichever ends first) from `workers`
    concurrent clients, drawn from `reqs` (solo answers filled in). The daemon's idle status
    is taken after a warm-up (`warmup` requests, default a tenth) and at the end; the report
    says the RSS before/after, the prompt cache's bytes at each, growth with and without it,
    and any leak (threads, fds, connections, sessions)."""
    rng = random.Random(seed)
    plan = [(rng.choice(reqs), rng.choice(HOWS)) for _ in range(n_requests)]
    warmup = warmup if warmup is not None else max(len(reqs), n_requests // 10)
    res = Soak()
    lock = threading.Lock()
    end = time.monotonic() + minutes * 60
    before = {}

    def phase(lo, hi):
        nxt = iter(range(lo, hi))

        def work():
            while time.monotonic() < end:
                with lock:
                    i = next(nxt, None)
                if i is None:
                    return
                req, how = plan[i]
                try:
                    o = run_client(path, req, how)
                except Exception as exc:  # e.g. the daemon is gone: a wrong answer, not a lost thread
                    o = Outcome(req, how, False, f"{type(exc).__name__}: {exc}")
                with lock:
                    res.requests += 1
                    res.by_how[how] = res.by_how.get(how, 0) + 1
                    if not o.ok:
                        res.wrong.append(f"{req.kind}/{how}: {o.why}")
                    if res.requests % 50 == 0:
                        s = status(path)
                        res.samples.append((res.requests, s["rss_bytes"], s["prompt_cache_bytes"]))
                        if progress:
                            progress(res, s)

        ts = [threading.Thread(target=work, daemon=True) for _ in range(workers)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()

    t0 = time.monotonic()
    phase(0, min(warmup, n_requests))
    before = idle_status(path)
    t1 = time.monotonic()
    phase(min(warmup, n_requests), n_requests)
    after = idle_status(path, before)
    t2 = time.monotonic()
    rss0, rss1 = before["rss_bytes"], after["rss_bytes"]
    pc0, pc1 = before["prompt_cache_bytes"], after["prompt_cache_bytes"]
    after_warm = [s for s in res.samples if s[0] > warmup]
    return {
        "requests": res.requests, "warmup": min(warmup, res.requests), "wrong": res.wrong, "by_how": res.by_how,
        "seconds": round(t2 - t0, 1), "measured_seconds": round(t2 - t1, 1),
        "rss_before": rss0, "rss_after": rss1, "rss_growth": rss1 / rss0 - 1,
        "rss_peak": max([s[1] for s in after_warm] + [rss1]),
        "prompt_cache_before": pc0, "prompt_cache_after": pc1,
        "rss_growth_without_cache": (rss1 - pc1) / (rss0 - pc0) - 1,
        "leaks": leaks(before, after), "before": before, "after": after,
    }


def mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"
