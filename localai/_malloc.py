"""glibc malloc settings for the numpy backend's forward passes.

A forward pass allocates and frees float32 temporaries of a few MB each (activations,
attention scores, dequantized tiles). glibc serves blocks above its mmap threshold (128 KiB
at start, raised as big blocks are freed) with fresh mmaps, and trims freed memory at the top
of the heap back to the system, so each new temporary costs page faults until the dynamic
threshold has climbed. Early forward passes in a process paid that: a 512-token SmolLM2
prefill ran at ~610 tok/s in a fresh process and ~790 once warm. Fixed thresholds of 64 MiB
give every pass the warm speed (measured 738-756 tok/s in fresh processes, peak RSS +8 MiB).
A threshold the user set in the environment (MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_)
is kept.
"""
from __future__ import annotations

import ctypes
import os
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters
THRESHOLD = 64 << 20


def configure() -> bool:
    """Set the thresholds where the C library is glibc; returns whether it did."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # glibc only (musl has no mallopt)
    except (OSError, AttributeError):
        return False
    done = False
    for param, env in ((M_MMAP_THRESHOLD, "MALLOC_MMAP_THRESHOLD_"), (M_TRIM_THRESHOLD, "MALLOC_TRIM_THRESHOLD_")):
        if env not in os.environ:
            done = bool(mallopt(param, THRESHOLD)) or done
    return done
