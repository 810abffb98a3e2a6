"""glibc malloc settings for the numpy backend's forward passes.

A forward pass allocates and frees float32 temporaries of a few MB each (activations,
attention scores, dequantized tiles). glibc serves blocks above its mmap threshold (128 KiB
at start, raised as big blocks are freed) with fresh mmaps, and trims freed memory at the top
of the heap back to the system, so each new temporary costs page faults until the dynamic
threshold has climbed. Early forward passes in a process paid that: a 512-token SmolLM2
prefill ran at ~610 tok/s in a fresh process and ~790 once warm. An 8 MiB mmap threshold and
a 16 MiB trim threshold gave every pass the warm speed (827-857 tok/s in fresh processes, peak
RSS unchanged). Gemma 3's fused gate/up output in a 512-token prefill is 512 x 4096 float32,
exactly 8 MiB, so it still came from a fresh mmap each layer: 16 MiB and 32 MiB measured
pp512 medians of 1,165-1,440 tok/s against 817-1,160 with 8 MiB (alternated fresh
processes, AVX-512 Zen 5, 2026-12-02; SmolLM2 unchanged), hence 16 MiB and a 32 MiB trim
threshold. Larger ones (64 MiB) kept freed KV-cache steps of a 7B model on the heap (peak
RSS +128 MiB). A threshold the user set in the environment
(MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_) is kept.
"""
from __future__ import annotations

import ctypes
import os
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters
SETTINGS = ((M_MMAP_THRESHOLD, 16 << 20, "MALLOC_MMAP_THRESHOLD_"), (M_TRIM_THRESHOLD, 32 << 20, "MALLOC_TRIM_THRESHOLD_"))


def configure() -> bool:
    """Set the thresholds where the C library is glibc; returns whether it did."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # glibc only (musl has no mallopt)
    except (OSError, AttributeError):
        return False
    done = False
    for param, value, env in SETTINGS:
        if env not in os.environ:
            done = bool(mallopt(param, value)) or done
    return done
