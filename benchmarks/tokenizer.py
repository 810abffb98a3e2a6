"""Tokenizer load and encode time on the real models (medians of N runs).

    python benchmarks/tokenizer.py [--repeats 5] [--chars 10000]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from localai import store  # noqa: E402
from localai.gguf_file import GGUFFile  # noqa: E402
from localai.tokenizer import from_gguf  # noqa: E402
from test_tokenizer import english  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--chars", type=int, default=10_000)
    args = ap.parse_args()
    text = english(args.chars)
    for name in ("smollm2", "gemma3-270m"):
        g = GGUFFile(store.resolve(name))
        loads, encs = [], []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            tok = from_gguf(g)
            loads.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            ids = tok.encode(text, add_bos=False)
            encs.append(time.perf_counter() - t0)
        print(f"{name}: load {statistics.median(loads):.3f} s ({min(loads):.3f}..{max(loads):.3f}), "
              f"encode {args.chars} chars -> {len(ids)} tokens {statistics.median(encs) * 1e3:.1f} ms "
              f"({min(encs) * 1e3:.1f}..{max(encs) * 1e3:.1f})")


if __name__ == "__main__":
    main()
