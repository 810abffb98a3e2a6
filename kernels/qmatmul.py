"""QMatrix: a weight matrix that stays quantized in the memory map.

    W = QMatrix(data, ggml_type, (M, K))
    y = W.matmul(x)        # x (N, K) -> y (N, M) = x @ W.T

Numba backend, every N (decode and prefill): one fused pass over the quantized bytes, integer
dot products of the weights' codes with x rounded to int16, no float copy of W; a row of the
result depends on its row of x alone, bit for bit, whatever N is (batch invariance). The
integer types are read from a packed copy made at load (QMatrix._pack: 16 rows interleaved,
the file's size), whose file pages are handed back to the OS; LOCALAI_PACK=0 keeps the file's
layout (the row kernels).
Numpy backend (and F32 weights, and types the numba kernels do not cover): W is dequantized
TILE_BYTES at a time into a reused float32 buffer and multiplied by BLAS, so memory stays
bounded whatever M is.
"""
from __future__ import annotations

import logging
import mmap
import os
import threading
import time

import numpy as np
from gguf import GGMLQuantizationType as T

from . import quants
from . import threads as _threads_mod

log = logging.getLogger(__name__)

BLAS_MIN_N = 0        # if > 0: N >= this goes to dequantize + BLAS (faster prefill, not batch invariant)
DECODE_MAX_N = 16    # rows of x up to which a matmul counts as decode for the thread tuner
TILE_BYTES = 8 << 20  # float32 tile of W per BLAS call in the tiled path
PACK = os.environ.get("LOCALAI_PACK", "1").strip() != "0"  # numba backend: repack W at load (QMatrix._pack)


def _load_numba():
    if os.environ.get("LOCALAI_KERNELS", "").strip().lower() == "numpy":
        return None
    try:
        from . import _numba
    except Exception as e:  # numba missing, or a numba/llvmlite that cannot build these kernels
        log.debug("numba kernels unavailable (%s); using numpy", e)
        return None
    return _numba


_nb = _load_numba()
_compiled = False


def backend() -> str:
    """"numba" or "numpy": which kernels matmul uses now."""
    return "numba" if _nb is not None else "numpy"


def set_backend(name: str) -> str:
    """Force "numpy", or go back to "numba" where it loads; returns the backend in use."""
    global _nb
    _nb = _load_numba() if name == "numba" else None
    return backend()


def physical_cores() -> int:
    """Physical cores this process may run on (hyperthread siblings counted once), as
    llama.cpp picks its default thread count; os.cpu_count() where topology is unreadable."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1
    cores = set()
    for c in cpus:
        try:
            with open(f"/sys/devices/system/cpu/cpu{c}/topology/core_id") as f:
                core = f.read().strip()
            with open(f"/sys/devices/system/cpu/cpu{c}/topology/physical_package_id") as f:
                cores.add((f.read().strip(), core))
        except OSError:
            cores.add(("cpu", str(c)))
    return max(1, len(cores))


_threads = 0  # set_threads' count (the most threads) for every thread that runs kernels; 0 = numba's default
_tuner: _threads_mod.Tuner | None = None  # picks 1.._threads per call when adaptive


def set_threads(n: int | None, adaptive: bool | None = None) -> int:
    """Threads for the numba kernels, for every thread that calls them from now on (numba keeps
    the count per calling thread; the kernels apply this one before each call). None or 0:
    the physical cores (at most NUMBA_NUM_THREADS, numba's pool). `adaptive` (default: when n
    is None or 0) lets the kernels use fewer when that measures faster, as when another
    process keeps a core busy (threads.Tuner); a given n pins the count. Returns the most
    threads the kernels may use."""
    global _threads, _tuner
    if _nb is None:
        return 1
    import numba

    if adaptive is None:
        adaptive = not n
    _threads = max(1, min(int(n or physical_cores()), numba.config.NUMBA_NUM_THREADS))
    _tuner = _threads_mod.Tuner(_threads, pinned=not adaptive)
    numba.set_num_threads(_threads)
    _local.threads = _threads
    return _threads


def tuner() -> _threads_mod.Tuner | None:
    """The thread-count tuner set_threads made (None before set_threads)."""
    return _tuner


def _kind(rows: int) -> str:
    """The tuner's kind of a kernel call on `rows` rows of x (or query positions)."""
    return "decode" if rows <= DECODE_MAX_N else "prefill"


def _apply_threads(n: int = 0, rows: int | None = None) -> None:
    """Give the calling thread n threads (a daemon runs models on its own threads). n = 0:
    set_threads' count, or, when the count is tuned and `rows` is given, the count the tuner
    picks now for a call of that many rows: attention follows the matmuls, since a team
    that waits at its end for a descheduled thread loses as much there (with one core
    busy, SmolLM2 decoded at 41 tok/s with the matmuls on one thread and attention on two,
    150 with both on one)."""
    if not n:
        t = _tuner
        n = t.threads(_kind(rows)) if rows is not None and t is not None and not t.pinned else _threads
    if n and getattr(_local, "threads", 0) != n:
        import numba

        numba.set_num_threads(n)
        _local.threads = n


def warmup() -> str:
    """Compile the numba kernels now (or load them from numba's cache) on tiny inputs.

    The entry points cover every type, so this is all the compiling there is: minutes cold
    on a small machine (once per machine and source version; then cached in ~/.cache/localai/numba), ~0.3 s cached.
    Runs by itself on the first matmul otherwise. If compiling fails, switches to numpy.
    Returns the backend."""
    global _nb, _compiled
    if _nb is None or _compiled:
        return backend()
    try:
        w = _readonly(np.zeros((2, 34), np.uint8))
        x = np.zeros((1, 32), np.float32)
        _nb.matmul(w.reshape(-1), np.array([[int(T.Q8_0), 0, 34, 2]], np.int64), x, np.empty(2, np.float32), _nb.FULL)
        _nb.dequantize_rows(int(T.Q8_0), w, np.empty((2, 32), np.float32), _nb.FULL)
        g = np.zeros((2, 2), np.float32)
        _nb.glu(g, g.copy(), False)
        _nb.causal_softmax(g, 1, 0, 1.0, 0)
        _nb.rms_norm(g, g[0], 1e-6, g.copy())
        _nb.rope(g.reshape(1, 1, 4), g[:1, :1], g[:1, :1], False, g.reshape(1, 1, 4).copy())
        _nb.attend(g.reshape(1, 1, 4), g.reshape(1, 2, 2), g.reshape(1, 2, 2), 1, 0, 1.0, g.reshape(1, 1, 4).copy())
        _compiled = True
    except Exception as e:
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else ""
        log.warning("numba kernels failed to compile (%s: %s); using numpy, which is much slower",
                    type(e).__name__, first_line)
        _nb = None
    return backend()


def x8_available() -> bool:
    """Whether the kernels in use have int8-x tiles (QMatrix x8): the numba kernels on x86 with
    AVX2 and without AVX-512."""
    return _nb is not None and bool(_nb._X8)


def numba_kernels():
    """The numba kernels' module when they are in use (compiled on first call), else None."""
    return _nb if _nb is not None and (_compiled or warmup() == "numba") else None


def _numba_kernel(ggml_type: int) -> bool:
    """Whether the numba kernels are in use and cover this type."""
    return _nb is not None and ggml_type in _nb.TYPE_IDS and numba_kernels() is not None


def _readonly(a: np.ndarray) -> np.ndarray:
    """A read-only view: numba compiles once per array type, and mmap views are read-only."""
    if a.flags.writeable:
        a = a.view()
        a.flags.writeable = False
    return a


_local = threading.local()


def _scratch(n: int) -> np.ndarray:
    """A float32 buffer of n values, reused by each thread across all matrices."""
    buf = getattr(_local, "buf", None)
    if buf is None or buf.size < n:
        buf = _local.buf = np.empty(n, np.float32)
    return buf[:n]


def _fused(flat: np.ndarray, segs: np.ndarray, x: np.ndarray, M: int, K: int) -> np.ndarray:
    """The numba matmul of x (N, K) against the segments `segs` of `flat` (_numba.matmul),
    M rows of W in all: the flat float32 result, segment after segment; the thread count
    from the tuner."""
    N = x.shape[0]
    out = np.empty(N * M, np.float32)
    t = _tuner
    if t is None or t.pinned:
        _apply_threads()
        _nb.matmul(flat, segs, x, out, _nb.FULL)
    else:  # the count the tuner picks, timed for it (attention follows the same count)
        kind = _kind(N)
        _apply_threads(t.threads(kind))
        t0 = time.perf_counter()
        _nb.matmul(flat, segs, x, out, _nb.FULL)
        t.record(kind, M * K * N, time.perf_counter() - t0)
    return out


def _rows_of(x: np.ndarray, K: int) -> np.ndarray:
    """x as the kernels take it: C-contiguous, writeable float32 (N, K) (a 1-D x is one row)."""
    x2 = np.ascontiguousarray(x, dtype=np.float32).reshape(-1, K)
    return x2 if x2.flags.writeable else x2.copy()


def _release(a: np.ndarray) -> None:
    """Drop the pages of a (a view of a read-only file mapping) from this process's resident
    memory (madvise MADV_DONTNEED): they stay in the OS's page cache and come back on the next
    read. Nothing happens where a is not a view of an mmap or the OS cannot."""
    owner = _owner(a)
    if not isinstance(owner, mmap.mmap) or not hasattr(mmap, "MADV_DONTNEED"):
        return
    try:
        base = np.frombuffer(owner, np.uint8).ctypes.data
    except (TypeError, ValueError):
        return
    off = a.ctypes.data - base
    start = off // mmap.PAGESIZE * mmap.PAGESIZE
    try:
        owner.madvise(mmap.MADV_DONTNEED, start, off + a.nbytes - start)
    except (OSError, ValueError):
        pass


def _owner(a):
    """The object whose memory the array a views (an mmap for a model's weights), or a itself."""
    while isinstance(a, np.ndarray) and a.base is not None:
        a = a.base
    return a.obj if isinstance(a, memoryview) else a


class _Group:
    """One numba kernel view of several matrices of one K that lie in one buffer: flat bytes,
    segs (S, 4) and where each result starts (matmul_many)."""

    def __init__(self, mats, flat, segs):
        self.mats, self.flat, self.segs = mats, flat, segs  # mats: holds them, so their ids stay theirs
        self.Ms = [m.shape[0] for m in mats]
        self.M, self.K = sum(self.Ms), mats[0].shape[1]


def _group(mats) -> _Group | None:
    """The matrices' _Group, or None where one call cannot take them (another backend, a type
    the kernel does not cover, different buffers)."""
    if not all(isinstance(m, QMatrix) and m._numba_covers() for m in mats) or len({m.shape[1] for m in mats}) != 1:
        return None
    for m in mats:
        m._packs()
    plain = [m for m in mats if m._packed is None]  # a packed segment carries its own address
    if not plain:
        return _Group(list(mats), mats[0]._flat, np.concatenate([m._segs for m in mats]))
    owner = _owner(plain[0].raw)
    if any(_owner(m.raw) is not owner for m in plain):
        return None
    if isinstance(owner, np.ndarray):
        if not owner.flags.c_contiguous:
            return None
        flat = owner.reshape(-1).view(np.uint8)
    else:
        try:
            flat = np.frombuffer(owner, np.uint8)
        except (TypeError, ValueError):
            return None
    flat = _readonly(flat)
    segs = []
    for m in mats:
        if m._packed is not None:
            segs.append(list(m._segs[0]))
            continue
        off = m.raw.ctypes.data - flat.ctypes.data
        if not 0 <= off <= flat.nbytes - m.raw.nbytes or (m.type == T.F16 and off % 2):
            return None
        segs.append([m.ggml_type, off, m.raw.shape[1], m.shape[0]])
    return _Group(list(mats), flat, np.array(segs, np.int64))


def matmul_many(mats, x: np.ndarray) -> list[np.ndarray]:
    """x (N, K) float32 against matrices W_i (M_i, K) -> [x @ W_i.T (N, M_i)], bit for bit what
    each W_i.matmul(x) gives. Where the numba kernels cover them all and they lie in one
    buffer (a layer's Q, K, V or gate and up, in one model file), one kernel call: x rounded
    once and one start of the thread team, which in decode costs as much as a small matmul."""
    first = mats[0]
    groups = getattr(first, "_groups", None)
    if groups is None:  # not a QMatrix
        return [m.matmul(x) for m in mats]
    key = tuple(map(id, mats))  # the group holds the matrices: an id stays theirs while it lives
    g = groups.get(key, False)
    if g is False:
        g = groups[key] = _group(mats)
    if g is None or _nb is None or 0 < BLAS_MIN_N <= (x.shape[0] if x.ndim == 2 else 1):
        return [m.matmul(x) for m in mats]
    x2 = _rows_of(x, g.K)
    N = x2.shape[0]
    flat = _fused(g.flat, g.segs, x2, g.M, g.K)
    outs, at = [], 0
    for M in g.Ms:
        outs.append(flat[at:at + N * M].reshape(N, M) if x.ndim == 2 else flat[at:at + M])
        at += N * M
    return outs


class QMatrix:
    """A 2-D GGUF weight (M, K), kept as the bytes of the file; dequantized only a tile or a
    row at a time."""

    def __init__(self, data: np.ndarray, ggml_type: int, shape: tuple[int, int], pack: bool = True,
                 x8: bool = False):
        """data: the file's bytes of W (M rows); pack: make the packed copy now, not at the first
        matmul; x8: round x to int8 (a scale per 32 values, as llama.cpp rounds it) for this
        matrix where the numba kernel has an int8 tile for its type on this CPU (x8_active),
        else to int16 as for every matrix (kernels/_numba.py, _X8)."""
        self.ggml_type = int(ggml_type)
        self.x8 = bool(x8)
        self.type = T(self.ggml_type)
        M, K = self.shape = (int(shape[0]), int(shape[1]))
        self._blas = self.type == T.F32
        data = np.asarray(data)
        if self._blas:
            self.raw = _readonly(data.view(np.float32).reshape(M, K))  # (M, K): BLAS reads it as is
        else:
            self.raw = _readonly(np.ascontiguousarray(data).view(np.uint8).reshape(M, -1))  # (M, row_bytes)
            if self.raw.shape[1] != quants.row_bytes(self.type, K):
                raise ValueError(f"{self.type.name} weight of shape {self.shape} needs "
                                 f"{quants.row_bytes(self.type, K)} bytes per row, got {self.raw.shape[1]}")
            # the numba kernel's view: the flat bytes and one segment (type, offset, bytes per row, M)
            self._flat = self.raw.reshape(-1)
            self._segs = np.array([[self.ggml_type, 0, self.raw.shape[1], M]], np.int64)
        self._packed: np.ndarray | None = None  # the numba kernel's row-interleaved copy (_pack)
        self._pack_lock = threading.Lock()
        if pack:  # else on the first matmul (an embedding table: rows() alone reads it, unless tied)
            self._packs()
        self._groups: dict = {}  # matmul_many's kernel views of this matrix with others

    def __repr__(self) -> str:
        return f"QMatrix({self.type.name}, shape={self.shape})"

    def matmul(self, x: np.ndarray) -> np.ndarray:
        """x (N, K) float32 -> (N, M) float32 = x @ W.T (a 1-D x gives a 1-D result)."""
        M, K = self.shape
        x2 = _rows_of(x, K)  # (N, K)
        N = x2.shape[0]
        if self._blas:
            out = x2 @ self.raw.T
        elif self._numba_covers() and not 0 < BLAS_MIN_N <= N:
            self._packs()
            out = _fused(self._flat, self._segs, x2, M, K).reshape(N, M)
        else:
            out = self._tiled_matmul(x2)
        return out.reshape(M) if np.ndim(x) == 1 else out

    def _packs(self) -> bool:
        """Whether the numba kernel multiplies the packed copy, which this makes if not yet."""
        if self._packed is None and not self._blas and PACK and self._numba_covers() \
                and self.ggml_type in _nb.PACKED_TYPE_IDS:
            with self._pack_lock:
                if self._packed is None:
                    self._pack()
        return self._packed is not None

    def _pack(self) -> None:
        """Copy W into the numba kernel's packed layout (_numba.pack: 16 rows interleaved, so
        one vector instruction serves 16 outputs), which every matmul of this matrix uses from
        now on, whatever N (so batch invariance holds). The copy is the size of the file's
        bytes, or within 3 % of it; the file's pages it read are handed back to the OS (the
        mapping stays, for rows() and the numpy backend), so resident memory stays ~1x."""
        M, K = self.shape
        packed = np.empty(_nb.packed_bytes(self.ggml_type, M, K), np.uint8)
        # padding rows: zeros of raw's array type (raw is read-only, so one numba signature)
        _nb.pack(self.ggml_type, self.raw, _readonly(np.zeros((1, self.raw.shape[1]), np.uint8)), packed)
        self._packed = packed
        self._flat = _readonly(packed)
        group_bytes = packed.nbytes // ((M + _nb.PR - 1) // _nb.PR)
        kind = _nb.PACK + (_nb.X8 if self.x8_active else 0) + self.ggml_type
        self._segs = np.array([[kind, packed.ctypes.data, group_bytes, M]], np.int64)
        _release(self.raw)

    @property
    def x8_active(self) -> bool:
        """Whether this matrix's products take x rounded to int8 (x8 asked, and the numba kernel
        has an int8 tile for its type on this CPU: x86 with AVX2, without AVX-512)."""
        return self.x8 and _nb is not None and self.ggml_type in _nb.X8_TYPE_IDS and self._numba_covers()

    def _numba_covers(self) -> bool:
        """Whether the numba kernel multiplies this matrix (its _flat and _segs)."""
        return not self._blas and _numba_kernel(self.ggml_type)

    def _tiled_matmul(self, x: np.ndarray) -> np.ndarray:
        M, K = self.shape
        rows = max(1, min(M, TILE_BYTES // (4 * K)))
        buf = _scratch(rows * K)
        out = np.empty((x.shape[0], M), np.float32)  # (N, M)
        for r0 in range(0, M, rows):
            r1 = min(M, r0 + rows)
            tile = self._dequantize(self.raw[r0:r1], buf[:(r1 - r0) * K].reshape(r1 - r0, K), tile=True)  # (r, K)
            if r1 - r0 == M:
                np.matmul(x, tile.T, out=out)
            else:
                out[:, r0:r1] = x @ tile.T
        return out

    def rows(self, ids) -> np.ndarray:
        """Dequantize only rows `ids` (an embedding lookup): float32 (len(ids), K)."""
        ids = np.asarray(ids, dtype=np.intp).reshape(-1)
        raw = self.raw[ids]  # (n, row_bytes): a copy of just those rows
        if self._blas:
            return raw
        return self._dequantize(_readonly(raw), np.empty((len(ids), self.shape[1]), np.float32))

    def dequantize(self) -> np.ndarray:
        """The whole matrix as float32 (M, K). For tests and small tensors only."""
        if self._blas:
            return np.array(self.raw)
        return self._dequantize(self.raw, np.empty(self.shape, np.float32))

    def _dequantize(self, raw: np.ndarray, out: np.ndarray, tile: bool = False) -> np.ndarray:
        """raw (r, row_bytes) rows of W -> out (r, K) float32; `tile`: BLAS multiplies it next."""
        if _numba_kernel(self.ggml_type):
            (_nb.dequantize_tile if tile else _nb.dequantize_rows)(self.ggml_type, raw, out, _nb.FULL)
            return out
        return quants.dequantize(raw, self.ggml_type, self.shape[1], out=out)
