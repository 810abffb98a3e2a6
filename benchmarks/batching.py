"""Continuous batching and speculative decoding, measured through the real daemon code.

    python benchmarks/batching.py streams --model smollm2 --tokens 64 --ns 1 2 4 8 16
    python benchmarks/batching.py editor --model smollm2 --chats 8
    python benchmarks/batching.py alone --model smollm2 --tokens 128 --repeats 3
    python benchmarks/batching.py steps --model smollm2 --repeats 5
    python benchmarks/batching.py rewrite --model smollm2 --tokens 160 --repeats 3
    python benchmarks/batching.py rewrite --model gemma3-270m --base --tokens 160 --repeats 3

`streams`: N concurrent greedy `generate` streams (distinct prompts, `--tokens` each): the
aggregate generated tok/s from the first request sent to the last `done`, and whether every
stream's text is the same in every run (and, for stream 0, equal to its run alone).
`editor`: time to first token of a `complete` alone, and while `--chats` chats stream.
`alone`: one request alone, with batching on (`max_batch` 32) and off (1), alternated (ABBA),
`--repeats` times each: decode tok/s and time to first token from `done.timings`, medians
and spread (the issue's "no request slower alone than without batching by more than 10%").
`steps`: in this process, no daemon: one batched decode pass (`batch.evaluate_batch`) of
1, 2, 4, 8, 16 sequences (13-token contexts), median ms: what a row costs the batch.
`--attention both` (streams, steps): the batched step's attention as one kernel call and as
one call per sequence, alternated at each n in the same run.
`rewrite`: a 60-line Python function, "rename one identifier", with `draft` none and auto
(prompt lookup), alternated, `--repeats` times each: end-to-end ms, medians, identical text.
The daemon runs in this process on a temporary socket (the scheduler and engine are the real
ones). The machine may be shared: compare the ratios within one run.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time

from localai import config
from localai.client import Client
from localai.daemon.server import Server

PROMPTS = [f"Here is a long story about a {a} and a {b}.\n\nOnce upon a time, the {a}" for a, b in
           [("cat", "key"), ("robot", "map"), ("baker", "letter"), ("pilot", "shell"), ("child", "coin"),
            ("dragon", "book"), ("farmer", "clock"), ("sailor", "lamp"), ("teacher", "seed"), ("fox", "ring"),
            ("miner", "feather"), ("queen", "stone"), ("wizard", "cup"), ("doctor", "box"), ("owl", "bell"),
            ("poet", "door")]]


def start(model: str, n_ctx: int) -> tuple[Server, str]:
    path = os.path.join(tempfile.mkdtemp(prefix="localai-bench-"), "localai.sock")
    server = Server(config.Config(keep_alive=-1, n_ctx=n_ctx, model=model), path)
    server.bind()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    with Client(path, autostart=False) as c:
        c.call("generate", prompt="Hello", max_tokens=2, temperature=0, cache_prompt=False)
    return server, path


def _one(path, method, params, out, i):
    t0 = time.perf_counter()
    first = None
    with Client(path, autostart=False) as c:
        for ev in c.events(c.send(method, params)):
            if first is None and ev.event == "token":
                first = time.perf_counter()
            last = ev
    out[i] = (last, (first or time.perf_counter()) - t0, time.perf_counter() - t0)


def concurrent(path, reqs):
    out = [None] * len(reqs)
    threads = [threading.Thread(target=_one, args=(path, m, p, out, i)) for i, (m, p) in enumerate(reqs)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out, time.perf_counter() - t0


MODES = {"one-call": [True], "per-sequence": [False], "both": [True, False]}  # --attention: elementwise.ONE_CALL


def _attention(one_call: bool) -> str:
    from localai.kernels import elementwise

    elementwise.ONE_CALL = one_call
    return "one call" if one_call else "per sequence"


def streams(args):
    server, path = start(args.model, args.n_ctx)
    modes = MODES[args.attention]
    texts, got = {}, {(m, n): [] for m in modes for n in args.ns}
    for mode in modes:  # warm-up, not timed: the largest batch's kernels (a first compile) and first touches
        _attention(mode)
        concurrent(path, [("generate", {"prompt": PROMPTS[i], "max_tokens": 8, "temperature": 0,
                                        "cache_prompt": False}) for i in range(max(args.ns))])
    for r in range(args.repeats):  # 1, 2, 4, ... then again: a drift in the load hits every n
        for n, mode in ((n, m) for n in args.ns for m in modes):  # both: alternated at each n
            label = _attention(mode)
            reqs = [("generate", {"prompt": PROMPTS[i], "max_tokens": args.tokens, "temperature": 0,
                                  "cache_prompt": False}) for i in range(n)]
            server.scheduler.recent.clear()
            out, wall = concurrent(path, reqs)
            toks = sum(d.timings["predicted_n"] for d, _, _ in out)
            batch = server.scheduler.status()["batch"]
            for i, (d, _, _) in enumerate(out):
                texts.setdefault(i, set()).add(d.text)
            got[mode, n].append((toks, wall, toks / wall, batch["requests_max"]))
            print(f"n={n}: {toks} tokens in {wall:.1f} s = {toks / wall:.2f} tok/s (batch up to {batch['requests_max']}, "
                  f"attention {label})", flush=True)
    print(f"\n{args.model}, {args.tokens} tokens per stream, {args.repeats} repeats:")
    print("| streams | attention | tokens | wall s (median) | aggregate tok/s (median, range) | x one stream | largest batch |")
    print("|---|---|---|---|---|---|---|")
    for n, mode in ((n, m) for n in args.ns for m in modes):
        base = statistics.median(t for _, _, t, _ in got[mode, args.ns[0]]) or float("nan")
        toks, walls, tps, mx = zip(*got[mode, n])
        m = statistics.median(tps)
        print(f"| {n} | {_attention(mode)} | {toks[0]} | {statistics.median(walls):.1f} | {m:.2f} "
              f"({min(tps):.2f}-{max(tps):.2f}) | {m / base:.2f} | {max(mx)} |")
    same = all(len(v) == 1 for v in texts.values())
    print(f"\nevery stream's text identical across runs (stream 0 alone included): {same}")
    server.shutdown()


def editor(args):
    server, path = start(args.model, 1024)
    src = open(os.path.join(os.path.dirname(__file__), "..", "localai", "speculative.py")).read()[:1500]
    comp = ("complete", {"prefix": src, "suffix": "", "max_tokens": 4, "cache_prompt": False})
    alone, loaded = [], []
    for _ in range(args.repeats):
        out, _ = concurrent(path, [comp])
        alone.append(out[0][1])
        done = [None]
        chats = [("generate", {"prompt": PROMPTS[i], "max_tokens": 10_000, "temperature": 0,
                               "cache_prompt": False, "t_max_predict_ms": 600_000}) for i in range(args.chats)]
        clients = []
        for m, p in chats:  # start the chats, let them reach decode
            c = Client(path, autostart=False)
            clients.append((c, c.send(m, p)))
        for c, rid in clients:
            next(iter(c.events(rid)))
        out, _ = concurrent(path, [comp])
        loaded.append(out[0][1])
        for c, rid in clients:
            c.close()
        time.sleep(1)
        print(f"ttft alone {alone[-1] * 1000:.0f} ms, with {args.chats} chats streaming {loaded[-1] * 1000:.0f} ms",
              flush=True)
    a, b = statistics.median(alone), statistics.median(loaded)
    print(f"\nmedian time to first token: alone {a * 1000:.0f} ms, with {args.chats} chats {b * 1000:.0f} ms: "
          f"{b / a:.2f}x")
    server.shutdown()


def alone(args):
    server, path = start(args.model, 1024)
    params = {"prompt": PROMPTS[0], "max_tokens": args.tokens, "temperature": 0, "cache_prompt": False}
    got = {"on": [], "off": []}
    texts = set()
    concurrent(path, [("generate", params)])  # warm-up: the first request pays for first-touch costs
    for r in range(args.repeats):  # on, off, off, on, ...: a drift in the machine's load hits both
        for mode in (("on", "off") if r % 2 == 0 else ("off", "on")):
            server.scheduler.max_batch = 32 if mode == "on" else 1
            out, wall = concurrent(path, [("generate", params)])
            t = out[0][0].timings
            texts.add(out[0][0].text)
            got[mode].append((t["predicted_n"] / t["predicted_ms"] * 1000, t["ttft_ms"], wall))
            print(f"batching {mode}: decode {got[mode][-1][0]:.2f} tok/s, ttft {t['ttft_ms']:.0f} ms, "
                  f"wall {wall:.2f} s", flush=True)
    print(f"\none request alone ({args.model}, {args.tokens} tokens, {args.repeats} repeats each, interleaved):")
    print("| batching | decode tok/s (median, range) | ttft ms (median, range) | wall s (median) |")
    print("|---|---|---|---|")
    for mode in ("on", "off"):
        tps, ttft, wall = zip(*got[mode])
        print(f"| {mode} | {statistics.median(tps):.2f} ({min(tps):.2f}-{max(tps):.2f}) | "
              f"{statistics.median(ttft):.0f} ({min(ttft):.0f}-{max(ttft):.0f}) | {statistics.median(wall):.2f} |")
    on = statistics.median(t for t, _, _ in got["on"]) / statistics.median(t for t, _, _ in got["off"])
    ft = statistics.median(f for _, f, _ in got["on"]) / statistics.median(f for _, f, _ in got["off"])
    print(f"\non/off: decode tok/s {on:.3f}x, time to first token {ft:.3f}x; same text: {len(texts) == 1}")
    server.shutdown()


def steps(args):
    from localai import batch, load
    from localai.engine import Eval

    llm = load(args.model, n_ctx=512)
    sessions = []
    for i in range(max(args.ns)):
        s = llm.new_session()
        llm.evaluate(Eval(s, llm.tokenize(PROMPTS[i % len(PROMPTS)])[:13], "prefill"))
        sessions.append(s)

    def step(n):
        t = time.perf_counter()
        batch.evaluate_batch(llm, [Eval(s, [42], "decode") for s in sessions[:n]])
        for s in sessions[:n]:
            s.keep(len(s.tokens) - 1)
        return time.perf_counter() - t

    modes = MODES[args.attention]
    for n in args.ns:
        step(n)
    ms = {(m, n): [] for m in modes for n in args.ns}
    for _ in range(args.repeats):
        for n, mode in ((n, m) for n in args.ns for m in modes):  # both: alternated at each n
            _attention(mode)
            ms[mode, n].append(step(n) * 1000)
    print(f"\n{args.model}: one batched decode pass, median of {args.repeats}")
    print("| rows | attention | ms (median, range) | x one row |\n|---|---|---|---|")
    for n, mode in ((n, m) for n in args.ns for m in modes):
        one = statistics.median(ms[mode, args.ns[0]])
        m = statistics.median(ms[mode, n])
        print(f"| {n} | {_attention(mode)} | {m:.1f} ({min(ms[mode, n]):.1f}-{max(ms[mode, n]):.1f}) | {m / one:.2f} |")


FUNC = "\n".join(
    ["def summarize_orders(orders, discount_rate):",
     '    """Totals, counts and averages of a list of orders."""',
     "    report = {}"]
    + [line for i in range(19) for line in (
        f"    count_{i} = sum(1 for order in orders if order.kind == {i})",
        f"    amount_{i} = sum(order.amount for order in orders if order.kind == {i})",
        f"    report[{i}] = (count_{i}, amount_{i} * (1 - discount_rate))")]
    + ["    return report"])  # 61 lines


def rewrite(args):
    server, path = start(args.model, 4096)  # the whole function back: ~1,400 prompt + ~1,300 generated tokens
    instruction = "Rename the parameter discount_rate to rebate. Change nothing else."
    if args.base:  # a base model cannot take the rewrite chat: the same task as text to continue
        method, params = "generate", {"prompt": f"```python\n{FUNC}\n```\n\n{instruction}\n\n```python\n"}
    else:
        method, params = "rewrite", {"text": FUNC, "instruction": instruction, "language": "python"}
    params.update({"max_tokens": args.tokens, "temperature": 0, "cache_prompt": False})
    times = {"none": [], "auto": []}
    texts, drafted = {"none": set(), "auto": set()}, []
    for _ in range(args.repeats):
        for mode in ("none", "auto"):
            draft = "lookup" if mode == "auto" and method == "generate" else mode  # generate's auto is none
            out, wall = concurrent(path, [(method, {**params, "draft": draft})])
            d = out[0][0]
            times[mode].append(wall)
            texts[mode].add(d.text)
            if mode == "auto":
                drafted.append((d.timings["draft_n"], d.timings["draft_accepted_n"], d.timings["predicted_n"]))
            print(f"{mode}: {wall:.1f} s, {d.timings['predicted_n']} tokens, drafts {d.timings['draft_n']} "
                  f"accepted {d.timings['draft_accepted_n']}", flush=True)
    a, b = statistics.median(times["none"]), statistics.median(times["auto"])
    same = len(texts["none"]) == 1 and texts["none"] == texts["auto"]
    print(f"\nrewrite ({args.model}, {len(FUNC.splitlines())}-line function, max_tokens {args.tokens}): "
          f"median {a:.1f} s without speculation, {b:.1f} s with: {a / b:.2f}x; identical text: {same}; "
          f"drafts (proposed, accepted, generated): {drafted}")
    server.shutdown()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["streams", "editor", "alone", "steps", "rewrite"])
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--ns", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    ap.add_argument("--chats", type=int, default=8)
    ap.add_argument("--n-ctx", type=int, default=1024, help="streams: the context (a 7B's KV cache is 0.5 MB a position)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--attention", choices=list(MODES), default="one-call", help="streams, steps: a batched "
                    "step's attention in one kernel call, one per sequence (as before issue 14's fourth "
                    "session), or both alternated in one run")
    ap.add_argument("--base", action="store_true", help="rewrite: a base model (gemma3-270m): `generate` "
                    "continuing the function and the instruction, draft lookup vs none")
    args = ap.parse_args()
    {"streams": streams, "editor": editor, "alone": alone, "steps": steps, "rewrite": rewrite}[args.what](args)
    sys.exit(0)


if __name__ == "__main__":
    main()
