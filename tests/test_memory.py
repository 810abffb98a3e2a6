"""Weights stay quantized in the memory map: generating with the real model costs at most
1.3x the GGUF file plus the KV cache on top of the loaded model's bookkeeping (the
process's code — Python, numpy, numba — and the tokenizer's tables are reported apart)."""
from __future__ import annotations

import json
import subprocess
import sys

SCRIPT = r"""
import json, os, resource, sys
import localai.engine, localai.kernels as k
import numpy as np
k.warmup()
a = np.ones((512, 1024), np.float32); a @ a.T  # BLAS's per-thread buffers belong to the runtime
def rss_mib():
    return int(open('/proc/self/statm').read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2**20
base = rss_mib()
llm = localai.load(sys.argv[1])
loaded = rss_mib()
s = llm.new_session()
out = llm.generate("Once upon a time", max_tokens=64, temperature=0, session=s)
llm.prefill(s, list(range(1000, 1400)))  # a longer prompt on top: batched path too
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"base": base, "loaded": loaded, "peak": peak, "kv": s.nbytes / 2**20, "file": os.path.getsize(llm.path) / 2**20}))
"""


def test_peak_rss_within_file_size_plus_kv(smollm2_path):
    r = subprocess.run([sys.executable, "-c", SCRIPT, str(smollm2_path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    m = json.loads(r.stdout)
    used = m["peak"] - m["loaded"]
    print(f"\ngenerating: +{used:.1f} MiB (file {m['file']:.1f} MiB, KV {m['kv']:.1f} MiB); "
          f"process code {m['base']:.1f} MiB, tokenizer and metadata {m['loaded'] - m['base']:.1f} MiB")
    assert used <= 1.3 * m["file"] + m["kv"], m
