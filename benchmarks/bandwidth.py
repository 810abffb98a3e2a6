"""Memory-bandwidth probe and the decode ceiling it implies.

Decode is memory-bound: each token reads every weight once (the embedding only one row).
ceiling tok/s = measured read bandwidth / bytes read per token. The bandwidth is a streaming
read of a buffer far larger than the caches, on one thread (numpy) and on all the threads
the decode kernels use (numba, as they run).

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


def read_bandwidth_threads(nbytes: int = 1 << 30, repeats: int = 5) -> tuple[float, int]:
    """(GB/s, threads) of the same read split across numba's threads, best of repeats."""
    import numba
    from numba import njit, prange

    @njit(parallel=True, fastmath=True)
    def total(a):
        chunk = 1 << 16
        s = np.zeros((len(a) + chunk - 1) // chunk, np.uint64)
        for c in prange(len(s)):
            acc = np.uint64(0)
            # unsigned bounds: a signed index gets a wraparound check that stops vectorizing
            for i in range(np.uint64(c * chunk), np.uint64(min(len(a), (c + 1) * chunk))):
                acc += a[i]
            s[c] = acc
        return s.sum()

    a = np.ones(nbytes // 8, np.uint64)
    total(a[:1 << 16])
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        total(a)
        best = min(best, time.perf_counter() - t0)
    return nbytes / best / 1e9, numba.get_num_threads()


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

    bw1 = read_bandwidth()
    bw, n = read_bandwidth_threads()
    print(f"read bandwidth, 1 GiB: {bw1:.1f} GB/s on one thread (numpy sum), {bw:.1f} GB/s on {n} threads (numba)")
    for m in models or ["smollm2", "gemma3-270m"]:
        path = str(store.resolve(m))
        b = bytes_per_token(path)
        print(f"{m}: {b / 1e6:.1f} MB read per token -> decode ceiling {bw * 1e9 / b:.0f} tok/s "
              f"({n} threads; {bw1 * 1e9 / b:.0f} on one)")


if __name__ == "__main__":
    main(sys.argv[1:])
