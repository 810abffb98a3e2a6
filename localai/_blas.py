"""OpenBLAS settings that must be in the environment before numpy loads it.

numpy's wheels bundle OpenBLAS, which reads these once, when numpy is first imported, so
`import localai` calls `configure()` before anything imports numpy; a process that imported
numpy earlier keeps what it had. A variable the user has set is never changed.

- OPENBLAS_THREAD_TIMEOUT=16: an idle OpenBLAS thread spins 2**n cycles before it sleeps,
  2**28 (~0.1 s) by default. Between two BLAS calls of a forward pass run the numba kernels,
  on the same cores; spinning BLAS threads took those cores (SmolLM2 on the 2-core box:
  decode 135 -> 168 tok/s, a 20-token prefill on a cached prefix 190 -> 64 ms).
- OPENBLAS_CORETYPE=SkylakeX, on x86-64 CPUs with AVX-512 (F, CD, BW, DQ, VL): the bundled
  OpenBLAS picks its kernels from the CPU's family and model, and CPUs newer than the
  library (AMD Zen 5 here) get the AVX2 ones. Float32 GEMM went 231 -> 414 GFLOP/s and a
  512-token SmolLM2 prefill 523 -> 625 tok/s.
"""
from __future__ import annotations

import os
import platform
import sys

AVX512 = {"avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"}  # what OpenBLAS's SkylakeX kernels use


def cpu_flags() -> set[str]:
    """The x86 feature flags of /proc/cpuinfo (Linux); empty elsewhere."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.partition(":")[2].split())
    except OSError:
        pass
    return set()


def configure() -> None:
    if "numpy" in sys.modules:
        return  # OpenBLAS has read its settings already
    os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "16")
    if (sys.platform == "linux" and platform.machine() == "x86_64" and "OPENBLAS_CORETYPE" not in os.environ
            and AVX512 <= cpu_flags()):
        os.environ["OPENBLAS_CORETYPE"] = "SkylakeX"
