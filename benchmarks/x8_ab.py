"""Int8 against int16 x on the same packed matrix: the numba kernel's time per call for each,
one process, alternating, the fastest of three rounds (kernels/_numba.py, _X8: x86 with AVX2
and without AVX-512; elsewhere both are the int16 tile and the ratio is ~1).

    python benchmarks/x8_ab.py             # one thread
    python benchmarks/x8_ab.py --threads 2
"""
from __future__ import annotations

import argparse
import time

import numba
import numpy as np
from gguf import GGMLQuantizationType as T

from localai.kernels import QMatrix, qmatmul

CASES = [(T.Q4_0, 4096, 4096), (T.Q4_0, 11008, 4096), (T.Q4_1, 1536, 576), (T.Q4_1, 576, 1536),
         (T.Q4_K, 2048, 2048), (T.Q5_K, 2048, 2048), (T.Q5_0, 2048, 2048)]


def random_rows(qtype, M, K, seed):
    """Random bytes in the file's layout with finite float16 scales (as tests/test_kernels.py)."""
    from gguf import GGML_QUANT_SIZES
    rng = np.random.default_rng(seed)
    block, size = GGML_QUANT_SIZES[qtype]
    raw = rng.integers(0, 256, (M, K // block, size), dtype=np.uint8)
    scales = rng.uniform(0.001, 0.02, (M, K // block, 2)).astype(np.float16).view(np.uint8)
    raw[:, :, :4] = scales.reshape(M, K // block, 4)  # d (and dmin / m): the first 2-4 bytes
    if qtype == T.Q6_K:
        raw[:, :, -2:] = rng.uniform(0.001, 0.02, (M, K // block)).astype(np.float16).view(np.uint8).reshape(M, -1, 2)
    return raw.reshape(M, -1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--ns", default="1,4,64", help="rows of x, comma-separated")
    a = ap.parse_args()
    nb = qmatmul.numba_kernels()
    numba.set_num_threads(a.threads)
    print(f"int8 tile on this CPU: {nb._X8}; threads {a.threads}; us per call, int16 / int8 (ratio)")
    for t, M, K in CASES:
        raw = random_rows(t, M, K, seed=1)
        A, B = QMatrix(raw, t, (M, K)), QMatrix(raw, t, (M, K), x8=True)
        res = []
        for N in map(int, a.ns.split(",")):
            x = np.random.default_rng(0).standard_normal((N, K)).astype(np.float32)
            out = np.empty(N * M, np.float32)
            reps = max(3, int(2e8 / (M * K * N)))
            best = {}
            for _ in range(3):
                for name, W in (("i16", A), ("i8", B)):
                    t0 = time.perf_counter()
                    for _ in range(reps):
                        nb.matmul(W._flat, W._segs, x, out, nb.FULL)
                    best[name] = min(best.get(name, 1e9), (time.perf_counter() - t0) / reps)
            res.append(f"N={N}: {best['i16'] * 1e6:.0f} / {best['i8'] * 1e6:.0f} ({best['i16'] / best['i8']:.2f}x)")
        print(f"{t.name} {M}x{K}  " + "  ".join(res), flush=True)


if __name__ == "__main__":
    main()
