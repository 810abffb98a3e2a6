"""Decode with the thread count pinned against `threads=auto` (the tuner, kernels/threads.py),
alternated in one process: what the tuner's trials cost where the most threads are best.

    python benchmarks/decode_threads.py /work/cache/bench-models/llama-7b-shape.Q4_0.gguf
    python benchmarks/decode_threads.py smollm2 --tokens 128 --repeats 3

Each run: a short prompt, 4 warm-up tokens, then `--tokens` greedy tokens timed; `auto`
starts a fresh tuner, as a new process would.
"""
from __future__ import annotations

import argparse
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--threads", type=int, default=2, help="the pinned count")
    ap.add_argument("--tokens", type=int, default=24)
    ap.add_argument("--repeats", type=int, default=2)
    a = ap.parse_args()
    import localai
    from localai.kernels import qmatmul

    llm = localai.load(a.model, backend="numpy", n_ctx=512)
    ids = llm.tokenize("Once upon a time, in a land far away")
    for mode in [str(a.threads), "auto"] * a.repeats:
        qmatmul.set_threads(None if mode == "auto" else a.threads)
        gen = llm.stream(ids, session=llm.new_session(), max_tokens=a.tokens + 4, temperature=0)
        for _ in range(4):
            next(gen)
        t, n = time.perf_counter(), 0
        for ch in gen:
            n += len(ch.tokens)
        print(f"threads {mode}: {n / (time.perf_counter() - t):.2f} tok/s", flush=True)


if __name__ == "__main__":
    main()
