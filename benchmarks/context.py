"""Decode speed as the context grows: tok/s of 30 steps after a prompt of n tokens, for
localai and (with --peer-python, a Python that has llama-cpp-python) llama.cpp on the same
file, one after the other.

Each step reads the whole KV cache once (SmolLM2: 23 MB at 1,000 tokens, float16), so decode
slows as the context fills; Gemma 3's sliding-window layers read at most 512 positions.

    python benchmarks/context.py [--peer-python /tmp/peervenv/bin/python] [model] [n ...]
    # default: smollm2 16 1000 3000
"""
from __future__ import annotations

import argparse
import subprocess
import time

import localai  # noqa: F401  (first: it sets OpenBLAS's environment before numpy loads it)
import numpy as np

from localai import bench, store

STEPS = 30

PEER = """if True:
    import sys, time
    from llama_cpp import Llama
    path, text, sizes = sys.argv[1], open(sys.argv[2]).read(), [int(a) for a in sys.argv[3:]]
    llm = Llama(model_path=path, n_ctx=max(sizes) + 64, n_threads=2, n_threads_batch=2, n_batch=512, verbose=False)
    toks = llm.tokenize(text.encode())
    while len(toks) < max(sizes) + 40:
        toks += toks
    for n in sizes:
        llm.reset()
        llm.eval(toks[:n])
        t0 = time.perf_counter()
        for i in range(STEPS):
            llm.eval([toks[n + i]])
        print(n, STEPS / (time.perf_counter() - t0), flush=True)
""".replace("STEPS", str(STEPS))


def ours(model: str, sizes: list[int]) -> dict[int, float]:
    llm = localai.load(model, n_threads=2, n_ctx=max(sizes) + 64)
    out = {}
    for n in sizes:
        s = llm.new_session()
        logits = llm.prefill(s, bench._text_tokens(llm, n))
        for _ in range(5):
            logits = llm.decode_one(s, int(np.argmax(logits)))
        t0 = time.perf_counter()
        for _ in range(STEPS):
            logits = llm.decode_one(s, int(np.argmax(logits)))
        out[n] = STEPS / (time.perf_counter() - t0)
    return out


def peer(python: str, path: str, sizes: list[int]) -> dict[int, float]:
    r = subprocess.run([python, "-c", PEER, path, bench.__file__, *map(str, sizes)],
                       capture_output=True, text=True, check=True)
    return {int(n): float(v) for n, v in (line.split() for line in r.stdout.split("\n") if line.strip())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", nargs="?", default="smollm2")
    p.add_argument("sizes", nargs="*", type=int, default=[16, 1000, 3000])
    p.add_argument("--peer-python", help="a Python with llama-cpp-python, to measure llama.cpp too")
    a = p.parse_args()
    path = str(store.resolve(a.model))
    mine = ours(path, a.sizes)
    theirs = peer(a.peer_python, path, a.sizes) if a.peer_python else {}
    print(f"{a.model}: decode tok/s after n tokens of context, {STEPS} steps")
    print(f"{'n':>6s} {'localai':>9s} {'llama.cpp':>10s} {'ratio':>6s}")
    for n in a.sizes:
        t = theirs.get(n)
        print(f"{n:6d} {mine[n]:9.1f} " + (f"{t:10.1f} {mine[n] / t:6.2f}" if t else f"{'-':>10s}"))


if __name__ == "__main__":
    main()
