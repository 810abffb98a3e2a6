"""CPU time of each quantizer on the same rows: libggml's C reference (through ctypes), our numba
kernels, and their numpy twins (kquants.py for the K-quants, gguf.quants for the 32-blocks).

    python benchmarks/quantizer_cpu.py [LIBGGML_BASE] [--rows 1024] [--reps 3]

LIBGGML_BASE defaults to /work/cache/llama-build/bin/libggml-base.so. Rows are random
N(0, 0.02) float32, 4096 wide; one thread; the best of --reps process-time measurements.
Prints one line per type and checks the three outputs are the same bytes.
"""
from __future__ import annotations

import argparse
import ctypes
import time

import numpy as np
from gguf import GGML_QUANT_SIZES
from gguf import GGMLQuantizationType as Q
from gguf.quants import quantize

from localai.kquants import quantize_k
from localai.quantizers_numba import quantize_legacy, warmup


def best(fn, reps):
    out, t = None, float("inf")
    for _ in range(reps):
        t0 = time.process_time()
        out = fn()
        t = min(t, time.process_time() - t0)
    return out, t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("lib", nargs="?", default="/work/cache/llama-build/bin/libggml-base.so")
    ap.add_argument("--rows", type=int, default=1024)
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args()
    lib = ctypes.CDLL(a.lib)
    warmup()
    x = (np.random.default_rng(1).standard_normal((a.rows, 4096)) * 0.02).astype(np.float32)
    print("type      C ref s   numba s   numpy twin s   numba/C   same bytes")
    for typ in ["Q4_K", "Q5_K", "Q6_K", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0"]:
        bs, tb = GGML_QUANT_SIZES[Q[typ]]
        fn = getattr(lib, f"quantize_row_{typ.lower().replace('_k', '_K')}_ref")

        def c_ref():
            out = np.zeros((a.rows, 4096 // bs * tb), np.uint8)
            fn(x.ctypes.data_as(ctypes.c_void_p), out.ctypes.data_as(ctypes.c_void_p), ctypes.c_int64(x.size))
            return out
        k = typ.endswith("_K")
        c, tc = best(c_ref, a.reps)
        n, tn = best(lambda: quantize_k(x, typ) if k else quantize_legacy(x, typ), a.reps)
        p, tp = best(lambda: quantize_k(x, typ, "numpy") if k else quantize(x, Q[typ]), a.reps)
        same = np.array_equal(c, n) and np.array_equal(n, p)
        print(f"{typ:8s} {tc:8.3f} {tn:9.3f} {tp:13.3f} {tn / tc:9.2f}   {same}")


if __name__ == "__main__":
    main()
