"""Where a decode step's time goes: ms per token in the numba matmul kernel, in attention,
and in everything else (norms, RoPE, the KV store, Python), timed around the kernel calls.

    python benchmarks/decode_split.py /work/cache/bench-models/llama-7b-shape.Q4_0.gguf
    python benchmarks/decode_split.py smollm2 --context 2900   # after a prompt of n tokens

A short prompt, 8 warm-up tokens, then 32 greedy decode steps; the kernels' default threads.
"""
from __future__ import annotations

import argparse
import collections
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--context", type=int, default=0, help="prompt tokens before decoding (default: a short one)")
    ap.add_argument("--tokens", type=int, default=32)
    a = ap.parse_args()
    import localai
    from localai import bench
    from localai.kernels import qmatmul

    llm = localai.load(a.model, backend="numpy", n_ctx=max(1024, a.context + a.tokens + 64))
    ids = bench._text_tokens(llm, a.context) if a.context else llm.tokenize("Once upon a time, in a land far away")
    s = llm.new_session()
    gen = llm.stream(ids, session=s, max_tokens=a.tokens + 8, temperature=0)
    for _ in range(8):
        next(gen)
    nb = qmatmul.numba_kernels()
    spent = collections.Counter()

    def timed(name, f):
        def call(*args):
            t = time.perf_counter()
            r = f(*args)
            spent[name] += time.perf_counter() - t
            return r
        return call

    nb.matmul, nb.attend = timed("matmul", nb.matmul), timed("attention", nb.attend)
    t, n = time.perf_counter(), 0
    for ch in gen:
        n += len(ch.tokens)
    total = (time.perf_counter() - t) / n * 1e3
    parts = {k: v / n * 1e3 for k, v in spent.items()}
    other = total - sum(parts.values())
    print(f"{a.model}: {n} tokens, {1e3 / total:.1f} tok/s; ms per token: total {total:.1f}, "
          + ", ".join(f"{k} {v:.1f}" for k, v in parts.items()) + f", other {other:.1f}")


if __name__ == "__main__":
    main()
