"""Weights stay quantized in the memory map: generating with the real model costs at most
1.3x the GGUF file plus the KV cache on top of the loaded model's bookkeeping (the
process's code — Python, numpy, numba — and the tokenizer's tables are reported apart)."""
from __future__ import annotations

import json
import subprocess
import sys

# The peak is the kernel's VmHWM, reset once the model is loaded (ru_maxrss would carry the
# parent's RSS across fork and so depend on what the test process did before).
SCRIPT = r"""
import json, os, sys
import numpy as np
import localai.engine, localai.kernels as k
k.warmup()
a = np.ones((512, 1024), np.float32); a @ a.T  # BLAS's per-thread buffers belong to the runtime
def status(key):
    for line in open('/proc/self/status'):
        if line.startswith(key + ':'):
            return int(line.split()[1]) / 1024
base = status('VmRSS')
llm = localai.load(sys.argv[1])
loaded = status('VmRSS')
with open('/proc/self/clear_refs', 'w') as f:
    f.write('5')  # reset VmHWM to the current RSS
s = llm.new_session()
out = llm.generate("Once upon a time", max_tokens=64, temperature=0, session=s)
llm.prefill(s, list(range(1000, 1400)))  # a longer prompt on top: batched path too
print(json.dumps({"base": base, "loaded": loaded, "peak": status('VmHWM'), "kv": s.nbytes / 2**20,
                  "file": os.path.getsize(llm.path) / 2**20}))
"""


def test_peak_rss_within_file_size_plus_kv(smollm2_path):
    r = subprocess.run([sys.executable, "-c", SCRIPT, str(smollm2_path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    m = json.loads(r.stdout)
    used = m["peak"] - m["loaded"]
    print(f"\ngenerating: +{used:.1f} MiB (file {m['file']:.1f} MiB, KV {m['kv']:.1f} MiB); "
          f"process code {m['base']:.1f} MiB, tokenizer and metadata {m['loaded'] - m['base']:.1f} MiB")
    assert used <= 1.3 * m["file"] + m["kv"], m
