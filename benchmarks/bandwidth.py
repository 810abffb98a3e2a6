"""Memory-bandwidth probe and the decode ceiling it implies.

Decode is memory-bound: each token reads every weight once (the embedding only one row).
ceiling tok/s = measured read bandwidth / bytes read per token.

    python benchmarks/bandwidth.py [model ...]      # catalog names or .gguf paths
"""
from __future__ import annotations

import sys
import time

import numpy as np


def read_bandwidth(nbytes: int = 1 << 30, repeats: int = 5) -> float:
    """GB/s of a streaming read (a sum over a buffer far larger than the caches), best of repeats."""
    a = np.ones(nbytes // 8, np.float64)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a.sum()
        best = min(best, time.perf_counter() - t0)
    return nbytes / best / 1e9


def bytes_per_token(path: str) -> int:
    from localai.gguf_file import GGUFFile

    g = GGUFFile(path)
    total = 0
    for name, t in g.tensors.items():
        if name == "token_embd.weight":
            total += t.nbytes // t.shape[0]  # one row looked up
            if "output.weight" not in g.tensors:
                total += t.nbytes  # tied output reads it all
        else:
            total += t.nbytes
    return total


def main(models: list[str]) -> None:
    from localai import store

    bw = read_bandwidth()
    print(f"read bandwidth (numpy sum, 1 GiB, one thread): {bw:.1f} GB/s")
    for m in models or ["smollm2", "gemma3-270m"]:
        path = str(store.resolve(m))
        b = bytes_per_token(path)
        print(f"{m}: {b / 1e6:.1f} MB read per token -> decode ceiling {bw * 1e9 / b:.0f} tok/s")


if __name__ == "__main__":
    main(sys.argv[1:])
