"""Matmul per weight type: the fused numba kernels (integer GEMM) against their numpy twin.

For each type and shape, the median time of out = x @ W.T for N rows of x (default 1: a
decode matvec), as GB/s of weight bytes read and GOP/s; "numpy" is the twin (dequantize a
tile, then BLAS). Random weights with small valid scales. K-quant shapes round K down to a
multiple of 256. --cpu: CPU time of one thread instead of wall time (steadier on a shared
machine).

    python benchmarks/kernels.py                          # all fused types, 2 shapes
    python benchmarks/kernels.py Q4_0,Q8_0 11008x4096     # some types, some shapes (M x K)
    python benchmarks/kernels.py Q4_0,Q4_K 2048x4096 128 --cpu   # 128 rows of x (prefill)
"""
from __future__ import annotations

import sys
import time

import localai  # noqa: F401  (first: it sets OpenBLAS's environment before numpy loads it)
import numpy as np
from gguf import GGMLQuantizationType as T

from localai.kernels import QMatrix, qmatmul, quants

TYPES = "Q4_0,Q4_1,Q5_0,Q5_1,Q8_0,Q4_K,Q5_K,Q6_K"
SHAPES = "1536x576,11008x4096"  # SmolLM2's FFN, LLaMA-7B's


def random_weights(qtype: T, M: int, K: int, rng) -> np.ndarray:
    qk, size = quants.block_size(qtype)
    w = rng.integers(0, 256, size=(M, K // qk, size), dtype=np.uint8)
    scale = lambda: (rng.random((M, K // qk)) * 0.02).astype(np.float16).view(np.uint8).reshape(M, K // qk, 2)
    if qtype == T.Q6_K:
        w[:, :, 208:210] = scale()
    else:
        w[:, :, 0:2] = scale()
        if qtype in (T.Q4_1, T.Q5_1, T.Q4_K, T.Q5_K):
            w[:, :, 2:4] = scale()
    return w.reshape(M, -1)


CLOCK = time.perf_counter


def median_ms(f, n: int = 30) -> float:
    f()
    ts = []
    for _ in range(n):
        t0 = CLOCK()
        f()
        ts.append(CLOCK() - t0)
    return float(np.median(ts)) * 1e3


def main(types: str, shapes: str, N: int = 1) -> None:
    rng = np.random.default_rng(0)
    print(f"{'type':6s} {'M x K':>12s} {'N':>4s} {'fused ms':>9s} {'GB/s':>6s} {'GOP/s':>6s} "
          f"{'numpy ms':>9s} {'GB/s':>6s} {'GOP/s':>6s}")
    for name in types.split(","):
        qtype = T[name]
        for shape in shapes.split(","):
            M, K = (int(v) for v in shape.split("x"))
            K -= K % quants.block_size(qtype)[0]
            raw = random_weights(qtype, M, K, rng)
            W = QMatrix(raw, qtype, (M, K))
            x = rng.standard_normal((N, K)).astype(np.float32)
            row = [f"{name:6s} {f'{M}x{K}':>12s} {N:4d}"]
            for backend, n in (("numba", 30 if N < 16 else 5), ("numpy", 5)):
                qmatmul.set_backend(backend)
                ms = median_ms(lambda: W.matmul(x), n)
                row.append(f"{ms:9.3f} {raw.nbytes / ms / 1e6:6.1f} {2 * M * K * N / ms / 1e6:6.1f}")
            qmatmul.set_backend("numba")
            print(" ".join(row), flush=True)


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--cpu"]
    if "--cpu" in sys.argv:
        import numba
        import threadpoolctl

        CLOCK = time.process_time
        threadpoolctl.threadpool_limits(1)
        numba.set_num_threads(1)
    main(args[0] if args else TYPES, args[1] if len(args) > 1 else SHAPES, int(args[2]) if len(args) > 2 else 1)
