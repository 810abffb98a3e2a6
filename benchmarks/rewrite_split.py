"""Where a rewrite's time goes: batching.py's rewrite task (SmolLM2 by default) through an
in-process daemon, with timers around each numba kernel (matmul, attention, norms, RoPE,
KV store, GLU); per run the wall time, the tokens, and the seconds and calls of each kernel.

    python benchmarks/rewrite_split.py                      # none, auto, none, auto
    python benchmarks/rewrite_split.py --model smollm2 --modes auto,auto

The timers add ~10 % to a run (a Python call around each of ~120 kernel calls a step).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import batching  # noqa: E402
from prefill_split import time_kernels  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--modes", default="none,auto,none,auto", help="draft modes, one run each")
    ap.add_argument("--tokens", type=int, default=1500)
    a = ap.parse_args()
    from localai.kernels import qmatmul

    server, path = batching.start(a.model, 4096)
    spent, calls = time_kernels(qmatmul.numba_kernels())
    params = {"text": batching.FUNC, "instruction": "Rename the parameter discount_rate to rebate. Change nothing else.",
              "language": "python", "max_tokens": a.tokens, "temperature": 0, "cache_prompt": False}
    for mode in a.modes.split(","):
        spent.clear()
        calls.clear()
        out, wall = batching.concurrent(path, [("rewrite", {**params, "draft": mode})])
        t = out[0][0].timings
        parts = ", ".join(f"{k} {v:.2f} s / {calls[k]}" for k, v in spent.items())
        print(f"{mode}: {wall:.2f} s, prompt {t.get('prompt_n')}, generated {t.get('predicted_n')}, drafts "
              f"{t.get('draft_n')}; {parts}; other {wall - sum(spent.values()):.2f} s", flush=True)
    server.shutdown()


if __name__ == "__main__":
    main()
