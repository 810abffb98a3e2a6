"""Process settings localai makes before its engine runs: OpenBLAS's environment (localai/_blas.py)
and glibc's malloc thresholds (localai/_malloc.py). Each runs in a fresh interpreter, since
both only work before numpy (or the first big allocation) has happened."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest


def run(code: str, *args: str, **env: str) -> str:
    base = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_THREAD_TIMEOUT", "MALLOC_MMAP_THRESHOLD_",
                                                              "MALLOC_TRIM_THRESHOLD_")}
    out = subprocess.run([sys.executable, "-c", code, *args], env=base | env, capture_output=True, text=True,
                         check=True)
    return out.stdout.strip()


TIMEOUT = "import os, sys; {first}; print(os.environ.get('OPENBLAS_THREAD_TIMEOUT'))"


def test_openblas_threads_sleep_soon():
    assert run(TIMEOUT.format(first="import localai")) == "16"


def test_a_users_openblas_setting_is_kept():
    assert run(TIMEOUT.format(first="import localai"), OPENBLAS_THREAD_TIMEOUT="24") == "24"


def test_too_late_once_numpy_is_loaded():
    """OpenBLAS read its environment when numpy loaded it: setting it afterwards would lie."""
    assert run(TIMEOUT.format(first="import numpy, localai")) == "None"


def test_bench_names_the_blas():
    from localai import _blas

    assert _blas.describe().startswith("openblas ")  # numpy's wheels bundle OpenBLAS


# Minor page faults of a forward pass's allocation pattern: float32 temporaries of 2, 3, 5 and
# 8 MiB (Gemma 3's gate/up output in a 512-token prefill: 512 x 4096), freed last-first, twenty
# times over.
FAULTS = """if True:
    import resource, sys
    import numpy as np
    from localai import _malloc
    if sys.argv[1] == "1":
        assert _malloc.configure()
    def step():
        a = np.ones(1 << 19, np.float32); b = np.ones(3 << 18, np.float32); c = np.ones(5 << 18, np.float32)
        d = np.ones(2 << 20, np.float32)
        del d, c, b, a
    step()
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(20):
        step()
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_malloc_keeps_temporaries_mapped():
    default, tuned = int(run(FAULTS, "0")), int(run(FAULTS, "1"))
    assert tuned * 10 < default, (tuned, default)  # 20 x 10 MB re-faulted: ~50,000 pages
