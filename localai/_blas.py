"""OpenBLAS settings that must be in the environment before numpy loads it.

numpy's wheels bundle OpenBLAS, which reads its environment once, when numpy is first
imported, so `import localai` calls `configure()` before anything imports numpy; a process
that imported numpy earlier keeps what it had. A variable the user has set is never changed.

- OPENBLAS_THREAD_TIMEOUT=16: an idle OpenBLAS thread spins 2**n cycles before it sleeps,
  2**28 (~0.1 s) by default. Between two BLAS calls of a forward pass run the numba kernels,
  on the same cores; spinning BLAS threads took those cores (SmolLM2 on the 2-core box:
  decode 135 -> 168 tok/s, a 20-token prefill on a cached prefix 190 -> 64 ms).
"""
from __future__ import annotations

import os
import sys


def configure() -> None:
    if "numpy" in sys.modules:
        return  # OpenBLAS has read its settings already
    os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "16")


def describe() -> str:
    """The BLAS numpy uses and its kernel family, e.g. "openblas SkylakeX x2" (needs
    threadpoolctl for the kernel; "unknown" without it)."""
    try:
        import threadpoolctl
    except ImportError:
        return "unknown (pip install threadpoolctl to see)"
    import numpy  # noqa: F401  (loads the BLAS so that threadpoolctl finds it)

    for lib in threadpoolctl.threadpool_info():
        if lib.get("user_api") == "blas":
            return f"{lib.get('internal_api')} {lib.get('architecture') or ''} x{lib.get('num_threads')}".replace("  ", " ")
    return "none found"
