"""Numba kernels over quantized rows: fused dequantize-and-dot (decode) and row
dequantization (prefill tiles, embedding rows).

Two entry points, each one parallel loop over the rows of W that dispatches on the type:
    matvec(qtype, w, x, out, full)          out (N, M) = x (N, K) @ dequantize(w (M, row_bytes)).T
    dequantize_rows(qtype, w, out, full)    out (R, K) = dequantize(w (R, row_bytes))
`full` is FULL, a runtime all-ones uint64 (see below). Inside, arrays are used flat with
uint64 offsets (`w[o + j]`, `x[k + j]`). Their numpy twins are
`quants.dequantize` (bit-exact with dequantize_rows) and dequantize-then-BLAS (equal to
matvec to float32 rounding); tests/test_kernels.py holds them together. Block layouts are
drawn in quants.py.

Written so that LLVM vectorizes it well (each point checked in the assembly):
- Inner loops run `range(16 & full)`, not `range(16)`: LLVM fully unrolls a literal trip
  count into scalar code and then vectorizes the block loop around it with gathers; an
  unknown trip count gets a 64-wide main loop that a 16-weight block never enters. A bound
  it knows (<= 16) but cannot prove exact gives one 16-lane pass per block.
- Byte offsets are uint64 (`U`): numba wraps negative signed indices, and that select hides
  the contiguous loads from LLVM.
- Integer expressions are cast back to uint8 (`u8`) and go to float through int32 (`_f`):
  numba widens integer arithmetic to 64 bits, which would halve the vector width.
- Only the innermost dots (`_dot_*`) carry fastmath (reassoc + contract) so their sums
  vectorize; the block loops around them stay strict. The dequantizers carry none:
  `d * q + m` must not fuse into an FMA, to stay bit-exact with numpy.

Cost: the first call compiles the whole module (~7 s for both entry points on the 2-core
dev box, see `qmatmul.warmup`); cache=True keeps the machine code in kernels/__pycache__,
and later processes load it in ~0.3 s.
"""
from __future__ import annotations

import os

# libgomp (numba's "omp" threading layer) reads this when numba starts its threads, on the
# first parallel call. Its default, 300000, keeps a finished worker spinning for milliseconds;
# on a 2-core machine that starves the BLAS threads of the numpy call that follows, and the
# next kernel waits on them in turn (12 ms for a 50 us matvec, 28 ms for a 4 ms GEMM,
# measured). 10000 (~0.1 ms) keeps workers warm between the matvecs of one token.
os.environ.setdefault("GOMP_SPINCOUNT", "10000")

import numpy as np  # noqa: E402
from gguf import GGMLQuantizationType as T  # noqa: E402
from llvmlite import ir  # noqa: E402
import numba  # noqa: E402
from numba import njit, prange, types  # noqa: E402
from numba.extending import intrinsic  # noqa: E402

F = np.float32
U = np.uint64
u8 = np.uint8
FM = {"reassoc", "contract"}
JIT = dict(nogil=True, cache=True)
FULL = np.uint64(0xFFFF_FFFF_FFFF_FFFF)  # pass as `full`
BIT = np.array([1 << i for i in range(32)], np.uint32)  # Q5 high bits are tested against masks,
# not shifted out: a variable shift would run in 64-bit lanes

# type ids as plain ints: numba folds them into the dispatch below
F16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 = int(T.F16), int(T.Q4_0), int(T.Q4_1), int(T.Q5_0), int(T.Q5_1), int(T.Q8_0)
Q4_K, Q5_K, Q6_K = int(T.Q4_K), int(T.Q5_K), int(T.Q6_K)
TYPES = (T.F16, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0, T.Q4_K, T.Q5_K, T.Q6_K)  # both entry points
TYPE_IDS = frozenset(int(t) for t in TYPES)


@intrinsic
def _half_to_f32(typingctx, bits):
    """IEEE half bits (an integer; the low 16 bits are used) -> float32, exactly (vcvtph2ps)."""
    if not isinstance(bits, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        h = builder.trunc(args[0], ir.IntType(16)) if bits.bitwidth > 16 else args[0]
        return builder.fpext(builder.bitcast(h, ir.HalfType()), ir.FloatType())

    return types.float32(bits), codegen


@njit(**JIT)
def _f(i):
    """A small integer to float32 through int32 (an int64 conversion vectorizes at half width)."""
    return F(np.int32(i))


@njit(**JIT)
def _f16(w, o):
    """The little-endian float16 at byte o of w, as float32."""
    return _half_to_f32(U(w[o]) | (U(w[o + U(1)]) << U(8)))


@njit(**JIT)
def _u32(w, o):
    return np.uint32(U(w[o]) | (U(w[o + U(1)]) << U(8)) | (U(w[o + U(2)]) << U(16)) | (U(w[o + U(3)]) << U(24)))


@njit(**JIT)
def _k_scale(w, o, j):
    """(scale, min) of sub-block j of a Q4_K/Q5_K super-block whose 12 scale bytes start at o."""
    if j < 4:
        return _f(w[o + j] & 63), _f(w[o + j + U(4)] & 63)
    sc = (w[o + j + U(4)] & 15) | ((w[o + j - U(4)] >> 6) << 4)
    mn = (w[o + j + U(4)] >> 4) | ((w[o + j] >> 6) << 4)
    return _f(sc), _f(mn)


# -- innermost dots (fastmath); `full` is FULL, see the module docstring --------------------------

@njit(fastmath=FM, **JIT)
def _dot_i8(w, o, x, k, full):
    """A Q8_0 block: sum of int8(w[o + j]) * x[k + j]."""
    s = F(0)
    for j in range(U(32) & full):
        s += F(np.int8(w[o + j])) * x[k + j]
    return s


@njit(fastmath=FM, **JIT)
def _dot_q4(w, o, x, k, full, bias):
    """A Q4_0/Q4_1 block: (low nibble of w[o + j] - bias) * x[k + j], high nibble against x[k + 16 + j]."""
    s = F(0)
    for j in range(U(16) & full):
        v = w[o + j]
        s += (_f(v & 15) - bias) * x[k + j] + (_f(v >> 4) - bias) * x[k + U(16) + j]
    return s


@njit(fastmath=FM, **JIT)
def _dot_q5(w, o, qh, x, k, full, bias):
    """A Q5_0/Q5_1 block: as _dot_q4, with bit j of qh as the fifth bit of q[j]."""
    s = F(0)
    for j in range(U(16) & full):
        v = w[o + j]
        lo = _f(u8(v & 15) | u8(16 if qh & BIT[j] else 0))
        hi = _f(u8(v >> 4) | u8(16 if qh & BIT[j + U(16)] else 0))
        s += (lo - bias) * x[k + j] + (hi - bias) * x[k + U(16) + j]
    return s


@njit(fastmath=FM, **JIT)
def _dot_q4k(w, o, x, k, full):
    """Two Q4_K sub-blocks: low nibbles of w[o + j] against x[k + j], high against x[k + 32 + j]."""
    lo = F(0)
    hi = F(0)
    for j in range(U(32) & full):
        v = w[o + j]
        lo += _f(v & 15) * x[k + j]
        hi += _f(v >> 4) * x[k + U(32) + j]
    return lo, hi


@njit(fastmath=FM, **JIT)
def _dot_q5k(w, o, oh, bit, x, k, full):
    """Two Q5_K sub-blocks: as _dot_q4k, with bits `bit`, `bit + 1` of w[oh + j] as fifth bits."""
    m_lo = u8(1 << bit)
    m_hi = u8(2 << bit)
    lo = F(0)
    hi = F(0)
    for j in range(U(32) & full):
        v = w[o + j]
        h = w[oh + j]
        lo += _f(u8(v & 15) | u8(16 if u8(h & m_lo) else 0)) * x[k + j]
        hi += _f(u8(v >> 4) | u8(16 if u8(h & m_hi) else 0)) * x[k + U(32) + j]
    return lo, hi


@njit(fastmath=FM, **JIT)
def _dot_q6k(w, ol, oh, x, k, full):
    """Four 16-weight Q6_K sub-blocks sharing ql bytes ol.., ol+32.. and qh bytes oh..:
    weights k + j, k + 32 + j, k + 64 + j, k + 96 + j."""
    s1 = F(0)
    s2 = F(0)
    s3 = F(0)
    s4 = F(0)
    for j in range(U(16) & full):
        a = w[ol + j]
        b = w[ol + U(32) + j]
        h = w[oh + j]
        s1 += (_f(u8(a & 15) | u8((h & 3) << 4)) - F(32)) * x[k + j]
        s2 += (_f(u8(b & 15) | u8((h & 12) << 2)) - F(32)) * x[k + U(32) + j]
        s3 += (_f(u8(a >> 4) | u8(h & 48)) - F(32)) * x[k + U(64) + j]
        s4 += (_f(u8(b >> 4) | u8((h >> 2) & 48)) - F(32)) * x[k + U(96) + j]
    return s1, s2, s3, s4


@njit(fastmath=FM, **JIT)
def _dot_f16(w16, o, x, k, n):
    """n float16 weights w16[o:] against x[k:]."""
    s = F(0)
    for j in range(n):
        s += _half_to_f32(w16[o + j]) * x[k + j]
    return s


# -- one row of W against one row of x --------------------------------------------------------
# All arrays are flat: w (M * row_bytes,) uint8 with the row at byte o; x (N * K,) float32
# with the row at k; xs (N * K // 32,) sums of x per 32 weights, that row's at k // 32;
# nb = K // 32. (No views: making one in the parallel loop is an atomic refcount update on
# memory both threads share.) Strict block loops around the dots, with one `acc +=` per
# block: a second add on that dependency chain costs ~25%.

@njit(**JIT)
def _row_q8_0(w, o, x, k, xs, nb, full):
    acc = F(0)
    for b in range(nb):
        p = o + b * U(34)
        acc += _f16(w, p) * _dot_i8(w, p + U(2), x, k + b * U(32), full)
    return acc


@njit(**JIT)
def _row_q4_0(w, o, x, k, xs, nb, full):
    acc = F(0)
    for b in range(nb):
        p = o + b * U(18)
        acc += _f16(w, p) * _dot_q4(w, p + U(2), x, k + b * U(32), full, F(8))
    return acc


@njit(**JIT)
def _row_q4_1(w, o, x, k, xs, nb, full):
    acc = F(0)
    for b in range(nb):  # sum (d q + m) x = d sum q x + m sum x
        p = o + b * U(20)
        acc += (_f16(w, p) * _dot_q4(w, p + U(4), x, k + b * U(32), full, F(0))
                + _f16(w, p + U(2)) * xs[k // U(32) + b])
    return acc


@njit(**JIT)
def _row_q5_0(w, o, x, k, xs, nb, full):
    acc = F(0)
    for b in range(nb):
        p = o + b * U(22)
        acc += _f16(w, p) * _dot_q5(w, p + U(6), _u32(w, p + U(2)), x, k + b * U(32), full, F(16))
    return acc


@njit(**JIT)
def _row_q5_1(w, o, x, k, xs, nb, full):
    acc = F(0)
    for b in range(nb):
        p = o + b * U(24)
        acc += (_f16(w, p) * _dot_q5(w, p + U(8), _u32(w, p + U(4)), x, k + b * U(32), full, F(0))
                + _f16(w, p + U(2)) * xs[k // U(32) + b])
    return acc


@njit(**JIT)
def _row_qk(w, o, x, k, xs, nb, full, five):
    """Q4_K, or Q5_K when `five`."""
    size = U(176) if five else U(144)
    acc = F(0)
    for sb in range(nb // U(8)):
        p = o + sb * size
        d, dmin = _f16(w, p), _f16(w, p + U(2))
        for g in range(U(4)):  # 64 weights: sub-blocks 2g (low nibbles) and 2g + 1 (high)
            kg = k + sb * U(256) + g * U(64)
            if five:
                lo, hi = _dot_q5k(w, p + U(48) + g * U(32), p + U(16), g * U(2), x, kg, full)
            else:
                lo, hi = _dot_q4k(w, p + U(16) + g * U(32), x, kg, full)
            sc0, mn0 = _k_scale(w, p + U(4), g * U(2))
            sc1, mn1 = _k_scale(w, p + U(4), g * U(2) + U(1))
            i = kg // U(32)
            acc += d * (sc0 * lo + sc1 * hi) - dmin * (mn0 * xs[i] + mn1 * xs[i + U(1)])
    return acc


@njit(**JIT)
def _row_q6_k(w, o, x, k, xs, nb, full):
    acc = F(0)
    for sb in range(nb // U(8)):
        p = o + sb * U(210)
        d = _f16(w, p + U(208))
        for h in range(U(2)):  # halves of 128 weights
            for t in range(U(2)):  # 16-byte halves of the ql/qh strips
                s1, s2, s3, s4 = _dot_q6k(w, p + h * U(64) + t * U(16), p + U(128) + h * U(32) + t * U(16),
                                          x, k + sb * U(256) + h * U(128) + t * U(16), full)
                i = p + U(192) + h * U(8) + t  # the int8 scale of s1's sub-block; s2.. are 2, 4, 6 on
                acc += d * (_f(np.int8(w[i])) * s1 + _f(np.int8(w[i + U(2)])) * s2
                            + _f(np.int8(w[i + U(4)])) * s3 + _f(np.int8(w[i + U(6)])) * s4)
    return acc


@njit(**JIT)
def _row_dot(qtype, w, w16, o, x, k, xs, nb, full):
    if qtype == Q8_0:
        return _row_q8_0(w, o, x, k, xs, nb, full)
    if qtype == Q4_0:
        return _row_q4_0(w, o, x, k, xs, nb, full)
    if qtype == Q4_1:
        return _row_q4_1(w, o, x, k, xs, nb, full)
    if qtype == Q5_0:
        return _row_q5_0(w, o, x, k, xs, nb, full)
    if qtype == Q5_1:
        return _row_q5_1(w, o, x, k, xs, nb, full)
    if qtype == Q4_K or qtype == Q5_K:
        return _row_qk(w, o, x, k, xs, nb, full, qtype == Q5_K)
    if qtype == Q6_K:
        return _row_q6_k(w, o, x, k, xs, nb, full)
    return F(0)


@njit(**JIT)
def _block_sums(x, K):
    """(len(x) // 32,) sums of the flat x (N * K,) per 32 weights, for the min terms. Outside
    the parallel function: there, each .sum() would become a parallel region of its own."""
    xs = np.zeros(len(x) // K * (K // 32), F)
    for i in range(len(x) // K):
        for j in range(K // 32 * 32):
            xs[i * (K // 32) + j // 32] += x[i * K + j]
    return xs


@njit(parallel=True, **JIT)
def matvec(qtype, w, x, out, full):
    """out (N, M) = x (N, K) @ dequantize(w (M, row_bytes)).T, fused: no float copy of W."""
    M, row_bytes = w.shape
    N, K = x.shape
    wf, xf = w.reshape(-1), x.reshape(-1)  # flat views, made once
    w16 = wf[:len(wf) // 2 * 2].view(np.uint16)  # F16 weights
    xs = _block_sums(xf, K)
    nb = U(K // 32)
    for m in prange(M):
        o = U(m) * U(row_bytes)
        for i in range(N):
            k = U(i) * U(K)
            if qtype == F16:
                out[i, m] = _dot_f16(w16, o // U(2), xf, k, U(K))
            else:
                out[i, m] = _row_dot(qtype, wf, w16, o, xf, k, xs, nb, full)


# -- dequantization: numpy's float32 operations exactly, no fastmath ----------------------------
# Flat arrays as above: the row's bytes at w[o:], its K floats to y[k:].

@njit(**JIT)
def _dq_q4(w, o, y, k, full, d, m, bias, has_m):
    for j in range(U(16) & full):
        v = w[o + j]
        if has_m:
            y[k + j] = d * (_f(v & 15) - bias) + m
            y[k + U(16) + j] = d * (_f(v >> 4) - bias) + m
        else:  # no "+ 0": -0.0 must stay -0.0
            y[k + j] = d * (_f(v & 15) - bias)
            y[k + U(16) + j] = d * (_f(v >> 4) - bias)


@njit(**JIT)
def _dq_q5(w, o, qh, y, k, full, d, m, bias, has_m):
    for j in range(U(16) & full):
        v = w[o + j]
        lo = _f(u8(v & 15) | u8(16 if qh & BIT[j] else 0)) - bias
        hi = _f(u8(v >> 4) | u8(16 if qh & BIT[j + U(16)] else 0)) - bias
        if has_m:
            y[k + j] = d * lo + m
            y[k + U(16) + j] = d * hi + m
        else:
            y[k + j] = d * lo
            y[k + U(16) + j] = d * hi


@njit(**JIT)
def _dq_k(w, o, oh, bit, y, k, full, dl_lo, ml_lo, dl_hi, ml_hi, five):
    m_lo = u8(1 << bit) if five else u8(0)
    m_hi = u8(2 << bit) if five else u8(0)
    for j in range(U(32) & full):
        v = w[o + j]
        h = w[oh + j]
        y[k + j] = dl_lo * _f(u8(v & 15) | u8(16 if u8(h & m_lo) else 0)) - ml_lo
        y[k + U(32) + j] = dl_hi * _f(u8(v >> 4) | u8(16 if u8(h & m_hi) else 0)) - ml_hi


@njit(**JIT)
def _dq_q6k(w, ol, oh, y, k, full, d1, d2, d3, d4):
    for j in range(U(16) & full):
        a = w[ol + j]
        b = w[ol + U(32) + j]
        h = w[oh + j]
        y[k + j] = d1 * (_f(u8(a & 15) | u8((h & 3) << 4)) - F(32))
        y[k + U(32) + j] = d2 * (_f(u8(b & 15) | u8((h & 12) << 2)) - F(32))
        y[k + U(64) + j] = d3 * (_f(u8(a >> 4) | u8(h & 48)) - F(32))
        y[k + U(96) + j] = d4 * (_f(u8(b >> 4) | u8((h >> 2) & 48)) - F(32))


@njit(**JIT)
def _row_dequant(qtype, w, w16, o, y, k, K, full):
    nb = K // U(32)
    if qtype == Q8_0:
        for b in range(nb):
            p = o + b * U(34)
            d = _f16(w, p)
            for j in range(U(32) & full):
                y[k + b * U(32) + j] = F(np.int8(w[p + U(2) + j])) * d
    elif qtype == Q4_0 or qtype == Q4_1:
        size, bias = (U(18), F(8)) if qtype == Q4_0 else (U(20), F(0))
        for b in range(nb):
            p = o + b * size
            m = _f16(w, p + U(2)) if qtype == Q4_1 else F(0)
            _dq_q4(w, p + size - U(16), y, k + b * U(32), full, _f16(w, p), m, bias, qtype == Q4_1)
    elif qtype == Q5_0 or qtype == Q5_1:
        size, bias = (U(22), F(16)) if qtype == Q5_0 else (U(24), F(0))
        for b in range(nb):
            p = o + b * size
            m = _f16(w, p + U(2)) if qtype == Q5_1 else F(0)
            _dq_q5(w, p + size - U(16), _u32(w, p + size - U(20)), y, k + b * U(32), full,
                   _f16(w, p), m, bias, qtype == Q5_1)
    elif qtype == Q4_K or qtype == Q5_K:
        size = U(144) if qtype == Q4_K else U(176)
        for sb in range(nb // U(8)):
            p = o + sb * size
            d, dmin = _f16(w, p), _f16(w, p + U(2))
            for g in range(U(4)):
                sc0, mn0 = _k_scale(w, p + U(4), g * U(2))
                sc1, mn1 = _k_scale(w, p + U(4), g * U(2) + U(1))
                pq = p + (U(16) if qtype == Q4_K else U(48)) + g * U(32)
                _dq_k(w, pq, p + U(16), g * U(2), y, k + sb * U(256) + g * U(64), full,
                      d * sc0, dmin * mn0, d * sc1, dmin * mn1, qtype == Q5_K)
    elif qtype == Q6_K:
        for sb in range(nb // U(8)):
            p = o + sb * U(210)
            d = _f16(w, p + U(208))
            for h in range(U(2)):
                for t in range(U(2)):
                    i = p + U(192) + h * U(8) + t
                    _dq_q6k(w, p + h * U(64) + t * U(16), p + U(128) + h * U(32) + t * U(16),
                            y, k + sb * U(256) + h * U(128) + t * U(16), full,
                            d * _f(np.int8(w[i])), d * _f(np.int8(w[i + U(2)])),
                            d * _f(np.int8(w[i + U(4)])), d * _f(np.int8(w[i + U(6)])))
    elif qtype == F16:
        for j in range(K):
            y[k + j] = _half_to_f32(w16[o // U(2) + j])


@njit(parallel=True, **JIT)
def dequantize_rows(qtype, w, out, full):
    """out (R, K) float32 = dequantize(w (R, row_bytes) uint8), bit-exact with quants.py."""
    R, row_bytes = w.shape
    K = out.shape[1]
    wf, yf = w.reshape(-1), out.reshape(-1)
    w16 = wf[:len(wf) // 2 * 2].view(np.uint16)
    for r in prange(R):
        _row_dequant(qtype, wf, w16, U(r) * U(row_bytes), yf, U(r) * U(K), U(K), full)


def dequantize_tile(qtype, w, out, full):
    """dequantize_rows on the calling thread alone, for a tile that BLAS multiplies next:
    BLAS brings its own threads, and ours, still spinning, would slow them down (a 512-row
    prefill GEMM measured 4.1 ms this way, ~4.5 ms and erratic with both pools)."""
    n = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        dequantize_rows(qtype, w, out, full)
    finally:
        numba.set_num_threads(n)
