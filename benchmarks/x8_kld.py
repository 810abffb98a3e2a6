"""What int8 x costs in the output distribution: KL divergence and perplexity, llama-perplexity's
measures, of localai with int16 x and with int8 x against llama.cpp's logits on the same tokens,
and of int8 x against int16 x.

Text: tests/data/ppl_text.txt (the perplexity test's), cut into chunks of --ctx tokens as
llama-perplexity cuts it; the second half of each chunk is scored. llama.cpp's logits come
from llama-cpp-python (`logits_all`) run by --peer-python on our token ids, so both engines
see the same tokens. int8 x goes on the matrices --which names (the patterns of
benchmarks/x8_fidelity.py; `ffn` is what activation_bits = 8 does) where the kernel has the
int8 tile (x86 AVX2 without AVX-512).

    PEER=~/.cache/localai-test/llamacpp-0.3.36/bin/python
    python benchmarks/x8_kld.py smollm2 --peer-python $PEER
    python benchmarks/x8_kld.py gemma3-270m --peer-python $PEER --which all
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
TEXT = HERE.parent / "tests" / "data" / "ppl_text.txt"

PEER = r"""
import sys, json, numpy as np
from llama_cpp import Llama
path, src, dst, n_ctx, first = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
llm = Llama(model_path=path, n_ctx=n_ctx, n_batch=n_ctx, logits_all=True, verbose=False, n_threads=2)
for i, ids in enumerate(json.load(open(src))):
    llm.reset(); llm.eval(ids)
    np.save(f"{dst}/{i}.npy", np.array(llm.scores[first:len(ids) - 1], dtype=np.float32))
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model")
    p.add_argument("--peer-python", default=os.environ.get("PEER_PYTHON", "/tmp/peervenv/bin/python"))
    p.add_argument("--which", default="ffn", help="ffn | ffn+attn | attn | all (benchmarks/x8_fidelity.py)")
    p.add_argument("--ctx", type=int, default=128)
    p.add_argument("--chunks", type=int, default=12)
    a = p.parse_args()

    sys.path.insert(0, str(HERE))
    from x8_fidelity import PATTERNS

    import localai
    from localai import perplexity as P
    from localai.ops import numpy as ops
    from localai.store import resolve

    path = str(resolve(a.model))
    ops._X8_NAMES = re.compile(PATTERNS[a.which])
    m16 = localai.load(path, backend="numpy", activation_bits=16)
    m8 = localai.load(path, backend="numpy", activation_bits=8)
    n8 = sum(1 for mat in _matrices(m8.model) if getattr(mat, "x8_active", False))
    if not n8:
        sys.exit("no matrix takes int8 x here (the int8 tile is for x86 AVX2 without AVX-512)")
    _, cks = P.chunks(m16, TEXT.read_text(encoding="utf-8"), a.ctx, a.chunks)
    first = a.ctx // 2
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "ids.json").write_text(json.dumps(cks))
        subprocess.run([a.peer_python, "-c", PEER, path, f"{d}/ids.json", d, str(a.ctx), str(first)], check=True)
        ref = [np.load(f"{d}/{i}.npy") for i in range(len(cks))]
    pairs = {"int16 x vs llama.cpp": ("16", "ref"), "int8 x vs llama.cpp": ("8", "ref"),
             "int8 x vs int16 x": ("8", "16")}
    klds = {k: P._KLD() for k in pairs}
    for i, ids in enumerate(cks):
        lg = {"16": P.chunk_logits(m16, ids, first), "8": P.chunk_logits(m8, ids, first), "ref": ref[i]}
        t = np.asarray(ids[first + 1:])
        lp = {k: P._log_softmax(v) for k, v in lg.items()}
        for name, (q, b) in pairs.items():
            klds[name].add(lp[q], lp[b], t)
    print(f"{Path(path).name}: {len(cks)} chunks of {a.ctx}, {len(cks) * (a.ctx - 1 - first)} scored tokens; "
          f"int8 x on {n8} matrices ({a.which})")
    print("| pair | PPL(Q) / PPL(base) | KLD mean | KLD p99 | KLD max | same top token |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, k in klds.items():
        s = k.stats()
        print(f"| {name} | {s['ppl_q']:.4f} / {s['ppl_base']:.4f} | {s['kld_mean']:.5f} ± {s['kld_error']:.5f} "
              f"| {s['kld_p99']:.4f} | {s['kld_max']:.4f} | {100 * s['same_top']:.2f} % |")


def _matrices(model):
    from kernels import QMatrix
    import gc
    return [o for o in gc.get_objects() if type(o) is QMatrix]


if __name__ == "__main__":
    main()
