"""The attention kernel alone (`attend` in kernels/_numba.py): microseconds per call for
attention shapes of real models, float16 KV as the cache stores it; optionally against
another version's kernels in the same process, calls alternated.

    python benchmarks/attention.py                          # the shapes below
    python benchmarks/attention.py --shape 9,3,64,2900,1    # H, Hkv, hd, T, L
    git worktree add /tmp/old <commit>
    python benchmarks/attention.py --other /tmp/old/kernels # this / other, same process

Each figure: L queries at positions T-L..T-1 against T keys, the median of `--calls` calls
after a warm-up, 2 threads (numba's pool, as decode runs); with --other both versions'
outputs are compared too (a change of arithmetic shows as a nonzero difference). Both
versions compile into a temporary numba cache (kernels_ab.load).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from kernels_ab import HERE, load  # noqa: E402  (sets NUMBA_CACHE_DIR before numba loads)

import numpy as np  # noqa: E402

SHAPES = [  # name, H, Hkv, hd, T, L
    ("SmolLM2 decode at 2,900", 9, 3, 64, 2900, 1),
    ("SmolLM2 verify of 17 rows at 2,900", 9, 3, 64, 2900, 17),
    ("Gemma 3 270M prefill of 512", 4, 1, 256, 512, 512),
    ("Llama-3.2-3B decode at 1,000", 24, 8, 128, 1000, 1),
    ("LLaMA-7B decode at 1,000", 32, 32, 128, 1000, 1),
]


def caller(nb, H: int, Hkv: int, hd: int, T: int, L: int):
    """A no-argument call of nb.attend on random data of this shape; returns (call, out)."""
    rng = np.random.default_rng(0)
    kb = rng.standard_normal((Hkv, T, hd)).astype(np.float16).view(np.uint16)
    vb = rng.standard_normal((Hkv, T, hd)).astype(np.float16).view(np.uint16)
    q = rng.standard_normal((L, H, hd)).astype(np.float32)
    out = np.empty((L, H, hd), np.float32)
    scale = 1.0 / hd ** 0.5
    return (lambda: nb.attend(q, kb, vb, T - L, 0, scale, out)), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--other", type=Path, help="another version's kernels/ directory")
    ap.add_argument("--shape", help="H,Hkv,hd,T,L (default: the real models' shapes)")
    ap.add_argument("--calls", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    import numba

    numba.set_num_threads(min(a.threads, numba.config.NUMBA_NUM_THREADS))
    mods = {"this": load("kernels_this", HERE / "kernels")}
    if a.other:
        mods["other"] = load("kernels_other", a.other)
    shapes = [("--shape", *map(int, a.shape.split(",")))] if a.shape else SHAPES
    print("| shape | H, Hkv, hd, T, L | " + " | ".join(f"{n} us" for n in mods)
          + (" | this / other | max abs diff |" if a.other else " |"))
    print("|---|---|" + "---|" * len(mods) + ("---|---|" if a.other else ""))
    for name, H, Hkv, hd, T, L in shapes:
        calls = {n: caller(m, H, Hkv, hd, T, L) for n, m in mods.items()}
        ts = {n: [] for n in mods}
        for n, (f, _) in calls.items():
            f()
        for _ in range(a.calls):
            for n, (f, _) in calls.items():
                t = time.perf_counter()
                f()
                ts[n].append(time.perf_counter() - t)
        med = {n: statistics.median(v) * 1e6 for n, v in ts.items()}
        row = f"| {name} | {H}, {Hkv}, {hd}, {T}, {L} | " + " | ".join(f"{med[n]:.1f}" for n in mods)
        if a.other:
            diff = float(np.abs(calls["this"][1] - calls["other"][1]).max())
            row += f" | {med['this'] / med['other']:.2f} | {diff:.2g}"
        print(row + " |")


if __name__ == "__main__":
    main()
