"""Prefill wall time in a fresh process: tok/s of a 512-token prompt (English text), the median
and best of 6 after a 16-token warm-up, the kernels' default threads. For A/B of settings that
act at process start (e.g. glibc's malloc thresholds, localai/_malloc.py), alternate runs:

    python benchmarks/prefill_wall.py gemma3-270m
    MALLOC_MMAP_THRESHOLD_=8388608 MALLOC_TRIM_THRESHOLD_=16777216 python benchmarks/prefill_wall.py gemma3-270m
"""
from __future__ import annotations

import sys
import time


def warm_model(argv: list[str]):
    """argv [MODEL [N]] (default smollm2, 512) -> (model, n, the numpy-backend LLM, n prompt
    ids of English text), after a 16-token prefill that compiles and warms the kernels."""
    import localai
    from localai import bench

    model = argv[0] if argv else "smollm2"
    n = int(argv[1]) if len(argv) > 1 else 512
    llm = localai.load(model, backend="numpy", n_ctx=max(2048, n + 64))
    ids = bench._text_tokens(llm, n)
    llm.prefill(llm.new_session(), ids[:16])
    return model, n, llm, ids


def main() -> None:
    model, n, llm, ids = warm_model(sys.argv[1:])
    ts = []
    for _ in range(6):
        s = llm.new_session()
        t = time.perf_counter()
        llm.prefill(s, ids)
        ts.append(time.perf_counter() - t)
    ts.sort()
    print(f"{model}: pp{n} tok/s median {n / ts[len(ts) // 2]:.0f} best {n / ts[0]:.0f}")


if __name__ == "__main__":
    main()
