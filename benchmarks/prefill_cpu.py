"""Prefill cost in CPU seconds, one thread: the integer GEMM against dequantize + BLAS.

On a shared machine wall-clock figures move by 2x between minutes; the CPU time of one
thread moves much less. Each figure is a 512-token prefill of English text in a fresh
session after a warmup, one numba thread and one OpenBLAS thread; tokens per CPU second.

    python benchmarks/prefill_cpu.py smollm2 gemma3-270m
    python benchmarks/prefill_cpu.py --n-prompt 128 /work/cache/bench-models/qwen2.5-1.5b-shape.Q4_K_M.gguf
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time


def worker(model: str, blas_min_n: int, n_prompt: int, repeats: int) -> list[float]:
    import localai
    from localai import bench
    from localai.kernels import qmatmul

    qmatmul.BLAS_MIN_N = blas_min_n
    llm = localai.load(model, backend="numpy", n_threads=1, n_ctx=max(2048, n_prompt + 64))
    ids = bench._text_tokens(llm, n_prompt)
    llm.prefill(llm.new_session(), ids[:16])
    out = []
    for _ in range(repeats):
        s = llm.new_session()
        t0 = time.process_time()
        llm.prefill(s, ids)
        out.append(n_prompt / (time.process_time() - t0))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="*", default=["smollm2", "gemma3-270m"])
    p.add_argument("--n-prompt", type=int, default=512)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        print(" ".join(f"{v:.1f}" for v in worker(a.worker[0], int(a.worker[1]), a.n_prompt, a.repeats)))
        return
    env = dict(os.environ, NUMBA_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    print(f"{'model':40s} {'integer GEMM tok/CPU-s':>26s} {'dequantize+BLAS tok/CPU-s':>28s}")
    for m in a.models:
        row = []
        for blas_min_n in (0, 32):
            r = subprocess.run([sys.executable, __file__, "--worker", m, str(blas_min_n), "--n-prompt", str(a.n_prompt),
                                "--repeats", str(a.repeats)], env=env, capture_output=True, text=True, check=True)
            v = sorted(float(x) for x in r.stdout.split())
            row.append(f"{v[len(v) // 2]:.0f} ({v[0]:.0f}-{v[-1]:.0f})")
        print(f"{os.path.basename(m):40s} {row[0]:>26s} {row[1]:>28s}", flush=True)


if __name__ == "__main__":
    main()
