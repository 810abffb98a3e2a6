"""GGUF fuzzing: every structural mutation (truncation at each region boundary, lying counts,
string lengths, offsets, shapes, types, the hyperparameters that once corrupted the heap) plus
random bit flips, of the tiny llama and gemma3 models and of the real SmolLM2 (and Gemma 3
270M with --gemma), each loaded in a worker process (numba kernels, RLIMIT_AS 4 GiB): it must
load and generate, or be refused with ModelFileError/UnsupportedModel. Never a crash, a hang,
another traceback or a multi-GB allocation.

    python benchmarks/fuzz_gguf.py [--flips 200] [--real] [--gemma] [--no-tiny]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

import test_gguf_fuzz as F  # noqa: E402
from tiny import write_tiny  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--flips", type=int, default=200, help="random bit flips per file")
    ap.add_argument("--real", action="store_true", help="also SmolLM2 (from the store)")
    ap.add_argument("--gemma", action="store_true", help="also Gemma 3 270M (from the store)")
    ap.add_argument("--no-tiny", action="store_true", help="only the real models")
    a = ap.parse_args()
    total, bad = {}, []
    with tempfile.TemporaryDirectory(prefix="localai-gguf-fuzz-") as tmp:
        files = [(str(write_tiny(os.path.join(tmp, f"tiny-{arch}.gguf"), arch, n_ctx=64)), arch)
                 for arch in ("llama", "gemma3") if not a.no_tiny]
        from localai import store

        if a.real:
            files.append((str(store.resolve("smollm2", pull_missing=False)), "llama"))
        if a.gemma:
            files.append((str(store.resolve("gemma3-270m", pull_missing=False)), "gemma3"))
        for seed, (path, arch) in enumerate(files):
            muts = F.structural_mutations(path, arch, seed=seed, n_flips=a.flips)
            work = tempfile.mkdtemp(dir=tmp)
            results = F.run_mutations(path, muts, work)
            counts = F.summarize(results)
            print(f"{os.path.basename(path)}: {len(results)} mutations: {counts}", flush=True)
            for k, v in counts.items():
                total[k] = total.get(k, 0) + v
            bad += [f"{os.path.basename(path)}: {r['label']}: {r['outcome']} {r.get('detail', '')}"
                    for r in results if r["outcome"] not in ("ran", "refused")]
    print(f"total: {sum(total.values())} mutations: {total}")
    for line in bad:
        print("  BAD", line)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
