"""Where a prefill's time goes: ms in each numba kernel (matmul, attention, glu, norms, RoPE,
the KV store) and in everything else, timed around the kernel calls; the fastest of three
prefills of an n-token prompt (English text) in fresh sessions after a 16-token warm-up, the
kernels' default threads.

    python benchmarks/prefill_split.py smollm2
    LOCALAI_ACTIVATION_BITS=8 python benchmarks/prefill_split.py gemma3-270m 512
"""
from __future__ import annotations

import collections
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from prefill_wall import warm_model  # noqa: E402

KERNELS = ("matmul", "attend", "attend_many", "rms_norm", "rope", "glu", "causal_softmax", "kv_store",
           "dequantize_rows", "dequantize_tile")


def time_kernels(nb, names=KERNELS) -> tuple[collections.Counter, collections.Counter]:
    """Wrap each of the numba kernels module nb's functions in `names` with a timer (in place,
    for this process): the counters of seconds and of calls by name, which the wrappers add to."""
    spent, calls = collections.Counter(), collections.Counter()

    def timed(name, f):
        def call(*args):
            t = time.perf_counter()
            r = f(*args)
            spent[name] += time.perf_counter() - t
            calls[name] += 1
            return r
        return call

    for name in names:
        if hasattr(nb, name):
            setattr(nb, name, timed(name, getattr(nb, name)))
    return spent, calls


def main() -> None:
    from localai.kernels import qmatmul

    model, n, llm, ids = warm_model(sys.argv[1:])
    spent, calls = time_kernels(qmatmul.numba_kernels())
    best = None
    for _ in range(3):
        spent.clear()
        calls.clear()
        s = llm.new_session()
        t = time.perf_counter()
        llm.prefill(s, ids)
        dt = time.perf_counter() - t
        if best is None or dt < best[0]:
            best = (dt, dict(spent), dict(calls))
    dt, sp, cl = best
    parts = ", ".join(f"{k} {v * 1e3:.0f} ({cl[k]} calls)" for k, v in sorted(sp.items(), key=lambda kv: -kv[1]))
    print(f"{model}: {n} tokens, {n / dt:.1f} tok/s; ms: total {dt * 1e3:.0f}, {parts}, "
          f"other {(dt - sum(sp.values())) * 1e3:.0f}")


if __name__ == "__main__":
    main()
