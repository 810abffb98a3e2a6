"""Sampler cost per step on a 262,144-token vocabulary (Gemma 3's), best of N.

    python benchmarks/sampler.py [--repeats 20]

Each sampler chain should cost a few ms: a full sort of the vocabulary takes ~30 ms.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from localai.sampling import make_sampler


def best_ms(sampler, logits, history, reps: int) -> float:
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        sampler(logits, history)
        times.append(time.perf_counter() - t)
    return 1000 * min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args()
    logits = (np.random.default_rng(4).standard_normal(262_144) * 3).astype(np.float32)
    history = list(range(0, 6400, 100))
    cases = [("defaults + repeat_penalty 1.1", dict(seed=0, repeat_penalty=1.1), logits),
             ("top_k 0", dict(seed=0, top_k=0), logits),
             ("top_k 0, min_p 0, peaked logits", dict(seed=0, top_k=0, min_p=0), logits * 2)]
    for name, kw, x in cases:
        print(f"{name}: {best_ms(make_sampler(**kw), x, history, args.repeats):.2f} ms")


if __name__ == "__main__":
    main()
