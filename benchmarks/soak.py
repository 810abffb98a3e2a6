"""Soak: mixed requests on a real daemon for M minutes or N requests, whichever ends first
(generate / ask / chat / complete; 76 % read to the end, 10 % cancelled, 10 % hung up
mid-stream, 5 % refused as they must be), from a few concurrent clients. Every greedy answer
must equal that request's solo answer. After a warm-up and at the end the daemon's idle
`status` is read: RSS before/after (growth with and without the prompt cache's bytes, which
are reported on their own), threads, fds, connections, KV-cache sessions.

    python benchmarks/soak.py --minutes 30 [--requests 2000] [--model smollm2|PATH] [--workers 4]

Default model: a tiny random one; the suite runs a short version (tests/test_reliability_load.py).
Exit status 1 if any answer was wrong, anything leaked or RSS (without the cache) grew 5 % or more.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

import load_support as L  # noqa: E402
from load import start  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--model", help="catalog name or .gguf path (default: a tiny random model)")
    ap.add_argument("--workers", type=int, default=4, help="concurrent clients")
    ap.add_argument("--distinct", type=int, default=48, help="distinct requests to draw from")
    ap.add_argument("--warmup", type=int, help="requests before the first measurement (default: a tenth)")
    ap.add_argument("--max-tokens", type=int, default=12)
    ap.add_argument("--n-ctx", type=int, default=2048)
    a = ap.parse_args()
    root, d = start(a, "localai-soak-")
    try:
        reqs = L.workload(a.distinct, a.max_tokens)
        L.solo_answers(d["path"], reqs)

        def progress(res, s):
            if res.requests % 250 == 0:
                print(f"  {res.requests} requests, rss {L.mib(s['rss_bytes'])}, prompt cache "
                      f"{L.mib(s['prompt_cache_bytes'])}, wrong {len(res.wrong)}", flush=True)

        r = L.soak(d["path"], reqs, a.requests, a.minutes, workers=a.workers, warmup=a.warmup, progress=progress)
        for w in r["wrong"][:20]:
            print(f"WRONG {w}")
        b, e = r["before"], r["after"]
        (m,) = e["models"]
        print(f"soak: {r['requests']} requests ({r['by_how']}) on {os.path.basename(d['model'])} in "
              f"{r['seconds']:.0f} s, {a.workers} clients at a time; {len(r['wrong'])} wrong.\n"
              f"  after {r['warmup']} warm-up requests -> end: RSS {L.mib(r['rss_before'])} -> "
              f"{L.mib(r['rss_after'])} ({r['rss_growth']:+.1%}; peak {L.mib(r['rss_peak'])}); prompt cache "
              f"{L.mib(r['prompt_cache_before'])} -> {L.mib(r['prompt_cache_after'])} (budget "
              f"{L.mib(m['prompt_cache']['max_bytes'])}, {e['sessions']} of {m['prompt_cache']['max_sessions']} "
              f"sessions); RSS without it {r['rss_growth_without_cache']:+.1%}\n"
              f"  threads {b['threads']} -> {e['threads']}, fds {b['fds']} -> {e['fds']}, connections "
              f"{e['connections']} (this one), busy sessions {e['sessions_busy']}, scheduler alive "
              f"{e['scheduler_alive']}; leaks: {r['leaks'] or 'none'}")
        bad = r["wrong"] or r["leaks"] or r["rss_growth_without_cache"] >= 0.05
        return 1 if bad else 0
    finally:
        d["proc"].terminate()
        d["proc"].wait(10)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
