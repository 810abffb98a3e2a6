"""Quantized-weight kernels: GGUF weights stay in the memory map and are multiplied in place.

    from localai.kernels import QMatrix, dequantize, KERNEL_BACKEND
    W = QMatrix(t.data, t.ggml_type, t.shape)   # (M, K)
    y = W.matmul(x)                              # x (N, K) float32 -> (N, M) = x @ W.T
    q, k, v = matmul_many([Wq, Wk, Wv], x)       # several W of one K: one kernel call
    e = W.rows(token_ids)                        # (len(ids), K): an embedding lookup
    dequantize(raw, ggml_type, n_cols)           # raw (R, row_bytes) -> float32 (R, n_cols)
    rms_norm, rope, glu, causal_softmax, attend, attend_one   # the other steps (elementwise.py)

KERNEL_BACKEND is "numba" (fused numba kernels) or "numpy" (dequantize a tile + BLAS).
LOCALAI_KERNELS=numpy forces numpy; without numba, or if its kernels fail to compile,
numpy is used automatically. `warmup()` compiles the numba kernels up front; `set_threads(n)`
pins how many threads they use; `set_threads(None)` (the default) lets them use up to the
physical cores (`physical_cores()`), fewer while that measures faster, as when another
process keeps a core busy (threads.py: an online A/B test of the count). Compiled kernels are cached in ~/.cache/localai/numba, never in
the install, and a compile (not a cache load) is announced once on stderr, or to
`set_compile_notice(fn)` (see _numba_setup.py).

Depends on numpy, numba (optional) and gguf's format tables only.
"""
from __future__ import annotations

import sys

from . import _numba_setup

_numba_setup.configure()  # before qmatmul imports numba: compiled kernels go to the user's cache

from . import qmatmul  # noqa: E402
from .elementwise import attend, attend_one, causal_softmax, glu, rms_norm, rope
from .qmatmul import QMatrix, backend, matmul_many, physical_cores, set_backend, set_threads, warmup
from .quants import BLOCK, dequantize  # noqa: E402

if "numba" in sys.modules:
    _numba_setup.announce_compiles()
set_compile_notice = _numba_setup.set_compile_notice

__all__ = ["QMatrix", "matmul_many", "set_compile_notice", "dequantize", "KERNEL_BACKEND", "set_threads", "physical_cores", "warmup", "backend", "set_backend",
           "BLOCK", "glu", "causal_softmax", "rms_norm", "rope", "attend", "attend_one"]


def __getattr__(name: str):
    if name == "KERNEL_BACKEND":  # live: it turns to "numpy" if the numba kernels fail to compile
        return qmatmul.backend()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
