"""Decode cost in CPU milliseconds per token, one thread: steadier than wall time on a shared
machine, for comparing two versions of the kernels in the same minutes.

Each figure: a 44-token prompt, 8 warm-up tokens, then the best of `repeats` runs of 32
decode steps (greedy input, one numba thread), CPU ms per token.

    python benchmarks/decode_cpu.py smollm2 gemma3-270m
"""
from __future__ import annotations

import argparse
import time


def decode_cpu_ms(model: str, repeats: int = 3, steps: int = 32) -> float:
    from localai import engine

    llm = engine.load(model, n_threads=1)
    s = llm.new_session()
    llm.prefill(s, llm.tokenize("The quick brown fox jumps over the lazy dog. " * 4))
    for _ in range(8):
        llm.decode_one(s, 42)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.process_time()
        for _ in range(steps):
            llm.decode_one(s, 42)
        best = min(best, (time.process_time() - t0) / steps)
    return best * 1e3


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("models", nargs="+")
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    for m in a.models:
        print(f"{m:40s} decode {decode_cpu_ms(m, a.repeats):.2f} CPU ms per token", flush=True)


if __name__ == "__main__":
    main()
