"""Decode at long context with a float32 and a float16 KV cache, in the same process:
CPU milliseconds per token (one numba thread; steadier than wall time on a shared machine).

Both sessions are prefilled with the same n-token text, then decode in alternating rounds
of `steps` tokens (float32, float16, float32, ...), so the two see the same machine; each
figure is the best round. The cache type is switched through localai.models.cache.DTYPE
(the engine stores float16; float32 is what it stored before).

    python benchmarks/kv_cache.py [--ctx 2000] [--rounds 3] smollm2 gemma3-270m
"""
from __future__ import annotations

import argparse
import time

import localai  # noqa: F401  (first: it sets OpenBLAS's environment before numpy loads it)
import numpy as np

from localai import bench
from localai.models import cache as kv

DTYPES = {"float32": np.float32, "float16": np.float16}


def run(model: str, ctx: int, rounds: int, steps: int) -> dict[str, tuple[float, int]]:
    """{dtype name: (best CPU ms per decode step, KV cache bytes after prefill)}."""
    llm = localai.load(model, n_threads=1, n_ctx=ctx + (rounds + 1) * steps + 16)
    ids = bench._text_tokens(llm, ctx)
    sessions = {}
    for name, dt in DTYPES.items():
        kv.DTYPE = dt
        s = llm.new_session()
        llm.prefill(s, ids)
        for _ in range(4):
            llm.decode_one(s, 42)
        sessions[name] = s
    kv.DTYPE = np.float16
    best = {name: float("inf") for name in DTYPES}
    for _ in range(rounds):
        for name, s in sessions.items():
            t0 = time.process_time()
            for _ in range(steps):
                llm.decode_one(s, 42)
            best[name] = min(best[name], (time.process_time() - t0) / steps * 1e3)
    return {name: (best[name], sessions[name].nbytes) for name in DTYPES}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("models", nargs="+")
    p.add_argument("--ctx", type=int, default=2000, help="prompt tokens before decoding")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=16, help="decode steps per round")
    a = p.parse_args()
    for m in a.models:
        r = run(m, a.ctx, a.rounds, a.steps)
        f32, f16 = r["float32"][0], r["float16"][0]
        print(f"{m}: {a.ctx} tokens of context, decode CPU ms per token: float32 KV {f32:.2f}, "
              f"float16 KV {f16:.2f} ({f16 / f32:.2f}x); KV cache {r['float32'][1] / 2**20:.1f} -> "
              f"{r['float16'][1] / 2**20:.1f} MiB", flush=True)


if __name__ == "__main__":
    main()
