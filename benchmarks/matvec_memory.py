"""A decode matvec with its weights streamed from memory, on one thread and on two: copies of
one random matrix, more bytes in all than the last-level cache, multiplied in turn (one row
of x), as GB/s of weight bytes read. Tells a kernel bound by its own instructions (one
thread well below a streaming read, two nearly twice one) from one bound by memory.

    python benchmarks/matvec_memory.py                       # Q4_K and Q6_K, int8 x
    python benchmarks/matvec_memory.py Q4_1:1536x576 --bits 16
"""
from __future__ import annotations

import argparse
import time

import localai  # noqa: F401  (first: it sets OpenBLAS's environment before numpy loads it)
import numba
import numpy as np
from gguf import GGMLQuantizationType as T

from kernels import random_weights  # benchmarks/kernels.py
from localai.kernels import QMatrix


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cases", nargs="?", default="Q4_K:8192x3072,Q6_K:3072x8192", help="TYPE:MxK, comma-separated")
    ap.add_argument("--bits", type=int, choices=(8, 16), default=8, help="x rounded to int8 or int16")
    ap.add_argument("--total-mb", type=float, default=240.0, help="bytes of all copies together")
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    for case in a.cases.split(","):
        name, shape = case.split(":")
        qtype = T[name]
        M, K = (int(v) for v in shape.split("x"))
        raw = random_weights(qtype, M, K, rng)
        copies = max(2, int(a.total_mb * 1e6 // raw.nbytes))
        mats = [QMatrix(raw.copy(), qtype, (M, K), x8=a.bits == 8) for _ in range(copies)]
        x = rng.standard_normal((1, K)).astype(np.float32)
        for W in mats:
            W.matmul(x)
        row = []
        for threads in (1, 2):
            numba.set_num_threads(threads)
            ts = []
            for _ in range(a.rounds):
                t0 = time.perf_counter()
                for W in mats:
                    W.matmul(x)
                ts.append((time.perf_counter() - t0) / copies)
            row.append(f"{threads} thread{'s' if threads > 1 else ''} {raw.nbytes / np.median(ts) / 1e9:5.1f} GB/s "
                       f"({raw.nbytes / max(ts) / 1e9:.1f}-{raw.nbytes / min(ts) / 1e9:.1f})")
        active = mats[0].x8_active if a.bits == 8 else False
        print(f"{name} {M}x{K}, {copies} copies of {raw.nbytes / 1e6:.1f} MB, x int{8 if active else 16}: "
              + "; ".join(row), flush=True)


if __name__ == "__main__":
    main()
