"""Two versions of the numba matmul kernel in one process, timed call against call.

On a shared machine wall and even CPU time move by 10-30 % between minutes; here both
versions run alternately, thousands of times, and each keeps its fastest call (the least
disturbed one), so their ratio is steady. The other version is a checkout's `kernels/`
directory (e.g. `git worktree add /tmp/old <commit>`); its results are also compared with
this one's bit for bit.

    python benchmarks/kernels_ab.py /tmp/old/kernels --threads 1 --ns 1,64
    python benchmarks/kernels_ab.py /tmp/old/kernels --packed --ns 1,64  # the packed copy (W at load)

Both are compiled into a temporary numba cache (loading a kernel module under another name
must not write the user's cache).
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
import time
import types
from pathlib import Path

os.environ["NUMBA_CACHE_DIR"] = tempfile.mkdtemp(prefix="localai-kernels-ab-")
HERE = Path(__file__).resolve().parent.parent

import numpy as np  # noqa: E402  (after the cache is set: numba comes with the kernels)

CASES = [("Q4_1", 576, 576), ("Q4_1", 1536, 576), ("Q8_0", 8192, 576), ("Q4_K", 2048, 640), ("Q6_K", 2048, 640),
         ("Q5_0", 640, 2048), ("Q4_0", 4096, 4096), ("Q4_0", 11008, 4096)]


def load(name: str, path: Path):
    """kernels/_numba.py of `path` as module `name`._numba (with its quants.py)."""
    pkg = types.ModuleType(name)
    pkg.__path__ = [str(path)]
    sys.modules[name] = pkg
    for mod in ("quants", "_numba"):
        spec = importlib.util.spec_from_file_location(f"{name}.{mod}", path / f"{mod}.py")
        m = importlib.util.module_from_spec(spec)
        sys.modules[f"{name}.{mod}"] = m
        spec.loader.exec_module(m)
    return sys.modules[f"{name}._numba"]


def caller(nb, qtype: int, w, x, packed: bool = False):
    """A no-argument call of nb.matmul on (w, x), either signature; returns (call, out). With
    `packed`, on the copy that nb.pack makes of w (kernels.qmatmul.QMatrix._pack), whose
    buffer the call keeps alive."""
    N, M = x.shape[0], w.shape[0]
    if packed:
        K = w.shape[1] // nb.block_size(qtype)[1] * nb.block_size(qtype)[0]
        buf = np.empty(nb.packed_bytes(qtype, M, K), np.uint8)
        nb.pack(qtype, w, np.zeros((1, w.shape[1]), np.uint8), buf)
        buf.flags.writeable = False
        segs = np.array([[nb.PACK + qtype, buf.ctypes.data, buf.nbytes // ((M + nb.PR - 1) // nb.PR), M]], np.int64)
        out = np.empty(N * M, np.float32)
        return (lambda: nb.matmul(buf, segs, x, out, nb.FULL)), out
    if nb.matmul.py_func.__code__.co_varnames[0] == "qtype":  # before matmul_many: one matrix
        out = np.empty((N, M), np.float32)
        return (lambda: nb.matmul(qtype, w, x, out, nb.FULL)), out
    out = np.empty(N * M, np.float32)
    segs = np.array([[qtype, 0, w.shape[1], M]], np.int64)
    flat = w.reshape(-1)
    return (lambda: nb.matmul(flat, segs, x, out, nb.FULL)), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("other", type=Path, help="the other version's kernels/ directory")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--ns", default="1,64", help="rows of x, comma-separated")
    ap.add_argument("--packed", action="store_true", help="time the packed copy's kernel (integer types)")
    ap.add_argument("--cases", help="type:MxK, comma-separated, instead of the built-in list")
    ap.add_argument("--macs", type=float, default=3e8, help="multiply-adds per case and version")
    a = ap.parse_args()
    import numba
    from gguf import GGMLQuantizationType as T

    other, this = load("other_kernels", a.other.resolve()), load("this_kernels", HERE / "kernels")
    numba.set_num_threads(a.threads)
    rng = np.random.default_rng(0)
    print("| type | M x K | N | other us | this us | this / other | bits equal |\n|---|---|---|---|---|---|---|")
    cases = CASES if not a.cases else [(c.split(":")[0], *map(int, c.split(":")[1].split("x"))) for c in a.cases.split(",")]
    for name, M, K in cases:
        t = T[name]
        qk, nbytes = this.block_size(t)
        w = rng.integers(0, 256, (M * K // qk, nbytes), dtype=np.uint8).reshape(M, -1)
        w.flags.writeable = False
        for N in (int(n) for n in a.ns.split(",")):
            x = rng.standard_normal((N, K)).astype(np.float32)
            (f_old, o_old), (f_new, o_new) = caller(other, int(t), w, x, a.packed), caller(this, int(t), w, x, a.packed)
            f_old(), f_new()
            same = np.array_equal(o_old.reshape(-1), o_new.reshape(-1), equal_nan=True)
            best_old = best_new = float("inf")
            for _ in range(max(20, int(a.macs // (M * K * N)))):
                t0 = time.perf_counter_ns()
                f_old()
                t1 = time.perf_counter_ns()
                f_new()
                t2 = time.perf_counter_ns()
                best_old, best_new = min(best_old, t1 - t0), min(best_new, t2 - t1)
            print(f"| {name} | {M}x{K} | {N} | {best_old / 1e3:.1f} | {best_new / 1e3:.1f} | "
                  f"{best_new / best_old:.2f} | {same} |", flush=True)


if __name__ == "__main__":
    main()
