"""The quantizers compiled with numba.

K-quants Q4_K, Q5_K, Q6_K (`quantize_blocks`): the C loops of llama.cpp's
reference quantizer (`ggml/src/ggml-quants.c`: `quantize_row_q{4,5,6}_K_ref`,
`make_qkx2_quants`, `make_qx_quants`, `nearest_int`) one super-block at a time.

Twin of the numpy version in `kquants.py`; both are bit-exact with the C library
(tests/test_kquants.py holds numba == numpy == libggml byte for byte). What keeps it exact:
- every value and constant is float32 (`F32(...)`; a bare Python float would widen the
  expression to float64) and every sum runs in the C loop's order;
- no `fastmath`: without it LLVM neither reassociates nor contracts `a * b + c` into an FMA;
- `nearest_int` is `np.rint` (round half to even, what the C's 1.5*2^23 trick does for
  |v| < 2^22); the uint8 stores wrap as C's do;
- float -> half is round to nearest even (GGML_FP32_TO_FP16), computed exactly in float64.
The domain is the C's: finite weights whose block scale fits a half (|x| up to ~1e5); past
that d overflows to inf in both and the C's NaN handling is not copied.

The kernels release the GIL (`nogil`): `quantize.py` runs row chunks of a tensor on a thread
pool. `cache=True` keeps the machine code in numba's cache (`~/.cache/localai/numba`, as the
inference kernels: `kernels/_numba_setup.py`); the first use compiles the kernels (~7 s,
`warmup()`), later processes load them. Without numba the callers use the numpy twins.
Entry point: `quantize_blocks(typ, xb, out)`, xb float32 (nb, 256) C-contiguous, out uint8
(nb, block_bytes).

32-value block types Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 (`quantize_legacy`): twins of gguf-py's
`gguf.quants` numpy code, bit-exact with it (tests/test_quantize.py), several times faster.
"""
from __future__ import annotations

import math

import numpy as np

from .kernels import _numba_setup

_numba_setup.configure()  # before numba is imported: compiled kernels go to the user's cache
from numba import njit  # noqa: E402

F32 = np.float32
EPS = F32(1e-15)  # GROUP_MAX_EPS


@njit(cache=True, nogil=True, inline="always")
def _half_bits(f):
    """float32 -> IEEE half bits, round to nearest even (finite input)."""
    a = abs(float(f))
    sign = 0x8000 if math.copysign(1.0, float(f)) < 0 else 0
    if a < 6.103515625e-05:  # below 2^-14: subnormal half, steps of 2^-24 (1024 -> 0x400 is exact)
        q = int(np.rint(a * 16777216.0))
        return sign | q
    m, e = math.frexp(a)  # a = m * 2^e, m in [0.5, 1): half exponent E = e - 1
    E = e - 1
    q = int(np.rint(math.ldexp(a, 10 - E)))  # 1024 .. 2048 (2048 carries into the exponent)
    bits = ((E + 15) << 10) + q - 1024
    if bits >= 0x7C00:
        bits = 0x7C00
    return sign | bits


@njit(cache=True, nogil=True, inline="always")
def _half_value(h):
    """IEEE half bits -> float32 (finite)."""
    e = (h >> 10) & 0x1F
    m = h & 0x3FF
    v = math.ldexp(float(m), -24) if e == 0 else math.ldexp(float(m + 1024), e - 25)
    return F32(-v if h & 0x8000 else v)


@njit(cache=True, nogil=True, inline="always")
def _make_qkx2(x, off, w, nmax, rmin, rdelta, nstep, L, Laux):
    """make_qkx2_quants(32, nmax, x + off, w, L + off, &the_min, Laux, rmin, rdelta, nstep, false)
    -> (scale, the_min)."""
    fnmax = F32(nmax)
    mn = x[off]
    mx = x[off]
    sum_w = w[0]
    sum_x = sum_w * x[off]
    for i in range(1, 32):
        xi = x[off + i]
        if xi < mn:
            mn = xi
        if xi > mx:
            mx = xi
        wi = w[i]
        sum_w += wi
        sum_x += wi * xi
    if mn > F32(0):
        mn = F32(0)
    if mx == mn:
        for i in range(32):
            L[off + i] = 0
        return F32(0), -mn
    iscale = fnmax / (mx - mn)
    scale = F32(1) / iscale
    best = F32(0)
    for i in range(32):
        li = np.rint(iscale * (x[off + i] - mn))
        li = min(max(li, F32(0)), fnmax)
        L[off + i] = np.uint8(li)
        diff = scale * li + mn - x[off + i]
        best += w[i] * (diff * diff)
    for step in range(nstep + 1):
        iscale = (rmin + rdelta * F32(step) + fnmax) / (mx - mn)
        sum_l = F32(0)
        sum_l2 = F32(0)
        sum_xl = F32(0)
        for i in range(32):
            li = np.rint(iscale * (x[off + i] - mn))
            li = min(max(li, F32(0)), fnmax)
            Laux[i] = np.uint8(li)
            wl = w[i] * li
            sum_l += wl
            sum_l2 += wl * li
            sum_xl += wl * x[off + i]
        D = sum_w * sum_l2 - sum_l * sum_l
        if D > F32(0):
            this_scale = (sum_w * sum_xl - sum_x * sum_l) / D
            this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D
            if this_min > F32(0):
                this_min = F32(0)
                this_scale = sum_xl / sum_l2
            cur = F32(0)
            for i in range(32):
                diff = this_scale * F32(Laux[i]) + this_min - x[off + i]
                cur += w[i] * (diff * diff)
            if cur < best:
                for i in range(32):
                    L[off + i] = Laux[i]
                best = cur
                scale = this_scale
                mn = this_min
    return scale, -mn


@njit(cache=True, nogil=True)
def _qkx_blocks(xb, out, nmax, rmin_, rdelta_, nstep, five):
    """Q4_K (five=0: nmax 15, rmin -1, rdelta 0.1, nstep 20) or Q5_K (five=1: 31, -0.5, 0.1, 15)."""
    rmin = F32(rmin_)
    rdelta = F32(rdelta_)
    fnmax = F32(nmax)
    L = np.empty(256, np.uint8)
    Laux = np.empty(32, np.uint8)
    w = np.empty(32, F32)
    scales = np.empty(8, F32)
    mins = np.empty(8, F32)
    ls = np.empty(8, np.int64)
    lm = np.empty(8, np.int64)
    for b in range(xb.shape[0]):
        x = xb[b]
        o = out[b]
        max_scale = F32(0)
        max_min = F32(0)
        for j in range(8):
            off = 32 * j
            sum_x2 = F32(0)
            for i in range(32):
                sum_x2 += x[off + i] * x[off + i]
            av_x = np.sqrt(sum_x2 / F32(32))
            for i in range(32):
                w[i] = av_x + abs(x[off + i])
            s, m = _make_qkx2(x, off, w, nmax, rmin, rdelta, nstep, L, Laux)
            scales[j] = s
            mins[j] = m
            if s > max_scale:
                max_scale = s
            if m > max_min:
                max_min = m
        inv_scale = F32(63) / max_scale if max_scale > F32(0) else F32(0)
        inv_min = F32(63) / max_min if max_min > F32(0) else F32(0)
        for j in range(8):
            ls[j] = min(int(np.rint(inv_scale * scales[j])) & 0xFF, 63)  # uint8 store, then MIN(63, .)
            lm[j] = min(int(np.rint(inv_min * mins[j])) & 0xFF, 63)
        for j in range(4):
            o[4 + j] = ls[j] | ((ls[j + 4] >> 4) << 6)
            o[8 + j] = lm[j] | ((lm[j + 4] >> 4) << 6)
            o[12 + j] = (ls[j + 4] & 0xF) | ((lm[j + 4] & 0xF) << 4)
        hd = _half_bits(max_scale / F32(63))
        hm = _half_bits(max_min / F32(63))
        o[0] = hd & 0xFF
        o[1] = hd >> 8
        o[2] = hm & 0xFF
        o[3] = hm >> 8
        fd = _half_value(hd)
        fm = _half_value(hm)
        for j in range(8):
            dj = fd * F32(ls[j])
            if dj == F32(0):
                continue
            dm = fm * F32(lm[j])
            for i in range(32):
                li = np.rint((x[32 * j + i] + dm) / dj)
                L[32 * j + i] = np.uint8(min(max(li, F32(0)), fnmax))
        if five:
            for i in range(32):
                o[16 + i] = 0
            for c in range(4):
                for i in range(32):
                    l1 = L[64 * c + i]
                    l2 = L[64 * c + i + 32]
                    o[16 + i] |= ((l1 >> 4) << (2 * c)) | ((l2 >> 4) << (2 * c + 1))
                    o[48 + 32 * c + i] = (l1 & 0xF) | ((l2 & 0xF) << 4)
        else:
            for c in range(4):
                for i in range(32):
                    o[16 + 32 * c + i] = L[64 * c + i] | (L[64 * c + i + 32] << 4)


@njit(cache=True, nogil=True, inline="always")
def _make_qx(x, off, L):
    """make_qx_quants(16, 32, x + off, L + off, 1, NULL) -> scale; L in 0..63."""
    nmax = 32
    fnmax = F32(32)
    mx = F32(0)
    amax = F32(0)
    for i in range(16):
        ax = abs(x[off + i])
        if ax > amax:
            amax = ax
            mx = x[off + i]
    if amax < EPS:
        for i in range(16):
            L[off + i] = 0
        return F32(0)
    iscale = -fnmax / mx
    sumlx = F32(0)
    suml2 = F32(0)
    for i in range(16):
        xi = x[off + i]
        li = min(max(np.rint(iscale * xi), -fnmax), fnmax - F32(1))
        L[off + i] = np.int64(li) + nmax
        w = xi * xi
        sumlx += w * xi * li
        suml2 += w * li * li
    scale = sumlx / suml2 if suml2 != F32(0) else F32(0)
    best = scale * sumlx
    for step in range(-9, 10):
        if step == 0:
            continue
        iscale = -(fnmax + F32(0.1) * F32(step)) / mx
        sumlx = F32(0)
        suml2 = F32(0)
        for i in range(16):
            xi = x[off + i]
            li = min(max(np.rint(iscale * xi), -fnmax), fnmax - F32(1))
            w = xi * xi
            sumlx += w * xi * li
            suml2 += w * li * li
        if suml2 > F32(0) and sumlx * sumlx > best * suml2:
            for i in range(16):
                li = min(max(np.rint(iscale * x[off + i]), -fnmax), fnmax - F32(1))
                L[off + i] = np.int64(li) + nmax
            scale = sumlx / suml2
            best = scale * sumlx
    return scale


@njit(cache=True, nogil=True)
def _q6_k_blocks(xb, out):
    L = np.empty(256, np.int64)
    scales = np.empty(16, F32)
    sc = np.empty(16, np.int64)
    for b in range(xb.shape[0]):
        x = xb[b]
        o = out[b]
        max_scale = F32(0)
        max_abs = F32(0)
        for g in range(16):
            s = _make_qx(x, 16 * g, L)
            scales[g] = s
            if abs(s) > max_abs:
                max_abs = abs(s)
                max_scale = s
        if max_abs < EPS:
            for i in range(210):
                o[i] = 0
            continue
        iscale = F32(-128) / max_scale
        hd = _half_bits(F32(1) / iscale)
        fd = _half_value(hd)
        for g in range(16):
            sc[g] = min(127, int(np.rint(iscale * scales[g])))
            o[192 + g] = sc[g] & 0xFF  # int8 store
        o[208] = hd & 0xFF
        o[209] = hd >> 8
        for g in range(16):
            d = fd * F32(sc[g])
            if d == F32(0):
                continue
            for i in range(16):
                li = min(max(np.rint(x[16 * g + i] / d), F32(-32)), F32(31))
                L[16 * g + i] = np.int64(li) + 32
        for h in range(2):
            j = 128 * h
            for i in range(32):
                q1 = L[j + i]
                q2 = L[j + i + 32]
                q3 = L[j + i + 64]
                q4 = L[j + i + 96]
                o[64 * h + i] = (q1 & 0xF) | ((q3 & 0xF) << 4)
                o[64 * h + i + 32] = (q2 & 0xF) | ((q4 & 0xF) << 4)
                o[128 + 32 * h + i] = (q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6)


def quantize_blocks(typ: str, xb: np.ndarray, out: np.ndarray) -> None:
    """Fill out (nb, block_bytes) uint8 with the `typ` blocks of xb (nb, 256) float32."""
    if typ == "Q4_K":
        _qkx_blocks(xb, out, 15, -1.0, 0.1, 20, 0)
    elif typ == "Q5_K":
        _qkx_blocks(xb, out, 31, -0.5, 0.1, 15, 1)
    else:
        _q6_k_blocks(xb, out)


# --- 32-value blocks: twins of gguf-py's `gguf.quants` Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 -------------
# Each line follows gguf.quants' numpy expression (float32 throughout, `np.trunc(v + 0.5)`
# rounding, `np_roundf` for Q8_0), which is itself bit-exact with ggml's quantize_row_*_ref.

@njit(cache=True, nogil=True, inline="always")
def _absmax_signed(x, off):
    """The first value of largest |x| in x[off:off+32], with its sign (argmax of abs)."""
    amax = F32(-1)
    mx = F32(0)
    for i in range(32):
        a = abs(x[off + i])
        if a > amax:
            amax = a
            mx = x[off + i]
    return mx


@njit(cache=True, nogil=True, inline="always")
def _put_half(o, at, h):
    o[at] = h & 0xFF
    o[at + 1] = h >> 8


@njit(cache=True, nogil=True)
def _legacy_blocks(x, out, kind):
    """x float32 (n,) with n % 32 == 0, out uint8 (n // 32, type_size). kind: 0 Q4_0, 1 Q4_1,
    2 Q5_0, 3 Q5_1, 4 Q8_0."""
    q = np.empty(32, np.int64)
    for b in range(out.shape[0]):
        off = 32 * b
        o = out[b]
        if kind == 0 or kind == 2:  # symmetric: d = max / -8 (-16), q = trunc(x / d + 8.5 (16.5))
            half_n = F32(8) if kind == 0 else F32(16)
            top = 15 if kind == 0 else 31
            d = _absmax_signed(x, off) / -half_n
            idd = F32(0) if d == F32(0) else F32(1) / d
            for i in range(32):
                v = np.trunc(x[off + i] * idd + (half_n + F32(0.5)))
                q[i] = min(int(v) & 0xFF, top)  # astype(uint8).clip(0, top)
            _put_half(o, 0, _half_bits(d))
            at = 2
        elif kind == 1 or kind == 3:  # asymmetric: d = (max - min) / 15 (31), q = trunc((x - min) / d + 0.5)
            mx = x[off]
            mn = x[off]
            for i in range(1, 32):
                mx = max(mx, x[off + i])
                mn = min(mn, x[off + i])
            top = 15 if kind == 1 else 31
            d = (mx - mn) / F32(top)
            idd = F32(0) if d == F32(0) else F32(1) / d
            for i in range(32):
                v = np.trunc((x[off + i] - mn) * idd + F32(0.5))
                q[i] = min(int(v) & 0xFF, top)
            _put_half(o, 0, _half_bits(d))
            _put_half(o, 2, _half_bits(mn))
            at = 4
        else:  # Q8_0: d = amax / 127, q = np_roundf(x / d) (half away from zero)
            amax = F32(0)
            for i in range(32):
                amax = max(amax, abs(x[off + i]))
            d = amax / F32(127)
            idd = F32(0) if d == F32(0) else F32(1) / d
            _put_half(o, 0, _half_bits(d))
            for i in range(32):
                n = x[off + i] * idd
                a = abs(n)
                fl = np.floor(a)
                r = fl + np.floor(F32(2) * (a - fl))
                r = -r if n < F32(0) else (r if n > F32(0) else F32(0))
                o[2 + i] = int(r) & 0xFF
            continue
        if kind >= 2:  # the fifth bits, bit i of a little-endian uint32
            h = 0
            for i in range(32):
                h |= ((q[i] >> 4) & 1) << i
            for k in range(4):
                o[at + k] = (h >> (8 * k)) & 0xFF
            at += 4
        for i in range(16):
            o[at + i] = (q[i] & 0xF) | ((q[i + 16] << 4) & 0xFF)


LEGACY = {"Q4_0": (0, 18), "Q4_1": (1, 20), "Q5_0": (2, 22), "Q5_1": (3, 24), "Q8_0": (4, 34)}


def quantize_legacy(x: np.ndarray, typ: str) -> np.ndarray:
    """float32 (..., cols), cols % 32 == 0 -> uint8 (..., cols // 32 * type_size): the bytes
    `gguf.quants.quantize(x, typ)` gives (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0)."""
    kind, size = LEGACY[typ]
    x = np.ascontiguousarray(x, dtype=F32)
    if x.shape[-1] % 32:
        raise ValueError(f"{typ} needs rows of a multiple of 32 values, got {x.shape[-1]}")
    out = np.empty((x.size // 32, size), np.uint8)
    _legacy_blocks(x.reshape(-1), out, kind)
    return out.reshape(*x.shape[:-1], x.shape[-1] // 32 * size)


def warmup() -> None:
    """Compile (or load from numba's cache) the kernels: three K-quants and the 32-block one."""
    x = np.zeros((1, 256), F32)
    for typ, n in (("Q4_K", 144), ("Q5_K", 176), ("Q6_K", 210)):
        quantize_blocks(typ, x, np.empty((1, n), np.uint8))
    quantize_legacy(x, "Q8_0")
