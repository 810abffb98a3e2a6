"""K-quant quantizers Q4_K, Q5_K, Q6_K in numpy, vectorized over blocks.

The algorithm is llama.cpp's reference quantizer (`ggml/src/ggml-quants.c`:
`quantize_row_q{4,5,6}_K_ref`, `make_qkx2_quants`, `make_qx_quants`), the one
llama-quantize uses when no importance matrix is given. Each block is searched for the
scale (and min) with the smallest weighted error, exactly as the C loops do; the per-block
C loops become numpy operations over every block of a chunk at once. Every float is float32
and every sum over a block is taken in index order (`_seqsum`), as the C loop adds, so the
output is bit-exact with the C reference (tests/test_kquants.py checks it against
libggml-base's `quantize_row_q*_K_ref`).

Block layouts (QK_K = 256 values a super-block, gguf-py `GGML_QUANT_SIZES`):
  Q4_K: d f16, dmin f16, scales[12] (8 x (6-bit scale, 6-bit min)), qs[128] (4-bit)   144 bytes
  Q5_K: d f16, dmin f16, scales[12], qh[32] (5th bits), qs[128]                        176 bytes
  Q6_K: ql[128] (low 4 bits), qh[64] (high 2 bits), scales[16] int8, d f16             210 bytes
"""
from __future__ import annotations

import numpy as np

QK_K = 256
F32 = np.float32
GROUP_MAX_EPS = F32(1e-15)
BLOCK_BYTES = {"Q4_K": 144, "Q5_K": 176, "Q6_K": 210}
CHUNK = 2048  # super-blocks per numpy pass: ~0.5M values, a few MB per temporary


def _seqsum(a: np.ndarray) -> np.ndarray:
    """Sum over axis 0 in index order, in float32: a (n, B) -> (B,), as `for (i..) s += a[i]`.
    numpy reduces a non-contiguous axis row by row into the accumulator (no pairwise
    summation there), which is that order; tests/test_kquants.py holds it to the C loop."""
    return np.add.reduce(a, axis=0)


def _rint(a: np.ndarray) -> np.ndarray:
    """llama.cpp's nearest_int: round half to even in float32 (|a| < 2^22)."""
    return np.rint(a)


def _f16(a) -> np.ndarray:
    return np.asarray(a, dtype=F32).astype(np.float16)


def make_qkx2_quants(x: np.ndarray, w: np.ndarray, nmax: int, rmin: float, rdelta: float, nstep: int):
    """Asymmetric quants of many groups at once: x, w (n, B) float32 (n values per group, B groups).

    Returns (scale (B,), the_min (B,), L (n, B) uint8 in [0, nmax]) with x ≈ scale*L - the_min:
    the grid search over `nstep+1` inverse scales of `make_qkx2_quants` (least squares scale and
    min for each candidate rounding, weighted squared error, the best kept)."""
    mx = x.max(axis=0)
    mn = np.minimum(x.min(axis=0), F32(0))
    sum_w = _seqsum(w)
    sum_x = _seqsum(w * x)
    flat = mx == mn
    fnmax = F32(nmax)
    t, wl, u = np.empty_like(x), np.empty_like(x), np.empty_like(x)  # scratch, reused every step

    def rounded(iscale):  # t = clip(nearest_int(iscale * (x - min)), 0, nmax)
        np.subtract(x, mn, out=t)
        np.multiply(t, iscale, out=t)
        np.rint(t, out=t)
        return np.clip(t, 0, fnmax, out=t)

    def error(scale, the_min, lv):  # sum of w * (scale*l + min - x)^2, in the C order
        np.multiply(lv, scale, out=u)
        np.add(u, the_min, out=u)
        np.subtract(u, x, out=u)
        np.multiply(u, u, out=u)
        return _seqsum(np.multiply(w, u, out=u))

    with np.errstate(divide="ignore", invalid="ignore"):
        iscale = fnmax / np.where(flat, F32(1), mx - mn)
        scale = F32(1) / iscale
        L = rounded(iscale).copy()
        best = error(scale, mn, L)
        for step in range(nstep + 1):
            # the search runs from the current min: C updates `min` when a candidate wins
            laux = rounded((F32(rmin) + F32(rdelta) * F32(step) + fnmax) / (mx - mn))
            np.multiply(w, laux, out=wl)
            sum_l = _seqsum(wl)
            sum_l2 = _seqsum(np.multiply(wl, laux, out=u))
            sum_xl = _seqsum(np.multiply(wl, x, out=u))
            D = sum_w * sum_l2 - sum_l * sum_l
            this_scale = (sum_w * sum_xl - sum_x * sum_l) / D
            this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D
            pos = this_min > 0
            this_min = np.where(pos, F32(0), this_min)
            this_scale = np.where(pos, sum_xl / sum_l2, this_scale)
            cur = error(this_scale, this_min, laux)
            better = (D > 0) & (cur < best) & ~flat
            np.copyto(L, laux, where=better)
            best = np.where(better, cur, best)
            scale = np.where(better, this_scale, scale)
            mn = np.where(better, this_min, mn)
    scale = np.where(flat, F32(0), scale)
    L[:, flat] = 0
    return scale, -mn, L.astype(np.uint8)


def make_qx_quants(x: np.ndarray, nmax: int):
    """Symmetric quants of many groups: x (n, B) float32 -> (scale (B,), L (n, B) uint8 in [0, 2*nmax)).

    `make_qx_quants(..., rmse_type=1, qw=NULL)`: weights x², the inverse scale -nmax/max and 18
    neighbours -(nmax + 0.1*is)/max tried, the one with the largest sumlx²/suml2 kept."""
    B = x.shape[1]
    cols = np.arange(B)
    amax_i = np.abs(x).argmax(axis=0)  # first largest |x|, as the C `>` scan
    xmax = x[amax_i, cols]
    zero = np.abs(xmax) < GROUP_MAX_EPS
    xmax = np.where(zero, F32(1), xmax)
    w = x * x
    fnmax = F32(nmax)

    wx = w * x  # C: w*x[i]*l is (w*x)*l
    l, u = np.empty_like(x), np.empty_like(x)

    def trial(iscale):
        np.multiply(x, iscale, out=l)
        np.rint(l, out=l)
        np.clip(l, -fnmax, fnmax - 1, out=l)
        sumlx = _seqsum(np.multiply(wx, l, out=u))
        np.multiply(w, l, out=u)
        suml2 = _seqsum(np.multiply(u, l, out=u))
        return l, sumlx, suml2

    with np.errstate(divide="ignore", invalid="ignore"):
        l, sumlx, suml2 = trial(-fnmax / xmax)
        L = l.copy()
        scale = np.where(suml2 != 0, sumlx / suml2, F32(0))
        best = scale * sumlx
        for step in range(-9, 10):
            if step == 0:
                continue
            l, sumlx, suml2 = trial(-(fnmax + F32(0.1) * F32(step)) / xmax)
            better = (suml2 > 0) & (sumlx * sumlx > best * suml2)
            np.copyto(L, l, where=better)
            scale = np.where(better, sumlx / suml2, scale)
            best = np.where(better, scale * sumlx, best)
    scale = np.where(zero, F32(0), scale)
    L = np.where(zero, F32(0), L + fnmax)
    return scale, L.astype(np.uint8)


def _pack_scale_min_k4(ls: np.ndarray, lm: np.ndarray) -> np.ndarray:
    """8 six-bit scales and mins (nb, 8) -> the 12-byte `scales` field (nb, 12)."""
    out = np.zeros((ls.shape[0], 12), np.uint8)
    out[:, 0:4] = ls[:, :4] | ((ls[:, 4:] >> 4) << 6)
    out[:, 4:8] = lm[:, :4] | ((lm[:, 4:] >> 4) << 6)
    out[:, 8:12] = (ls[:, 4:] & 0xF) | ((lm[:, 4:] & 0xF) << 4)
    return out


def _qkx_superblocks(xb: np.ndarray, nmax: int, rmin: float, rdelta: float, nstep: int):
    """Q4_K/Q5_K common part: xb (nb, 256) -> (d f16 (nb,), dmin f16 (nb,), scales (nb, 12), L (nb, 256))."""
    nb = xb.shape[0]
    xs = np.ascontiguousarray(xb.reshape(nb * 8, 32).T)  # (32, nb*8): a column per 32-value group
    av_x = np.sqrt(_seqsum(xs * xs) / F32(32))
    w = av_x + np.abs(xs)
    scales, mins, L = make_qkx2_quants(xs, w, nmax, rmin, rdelta, nstep)
    scales, mins = scales.reshape(nb, 8), mins.reshape(nb, 8)
    max_scale = np.maximum(scales.max(axis=1), F32(0))
    max_min = np.maximum(mins.max(axis=1), F32(0))
    with np.errstate(divide="ignore"):
        inv_scale = np.where(max_scale > 0, F32(63) / max_scale, F32(0))
        inv_min = np.where(max_min > 0, F32(63) / max_min, F32(0))
    # C stores nearest_int() into a uint8 before MIN(63, ·): keep that wrap-around
    ls = np.minimum(_rint(inv_scale[:, None] * scales).astype(np.int64) & 0xFF, 63).astype(np.uint8)
    lm = np.minimum(_rint(inv_min[:, None] * mins).astype(np.int64) & 0xFF, 63).astype(np.uint8)
    d, dmin = _f16(max_scale / F32(63)), _f16(max_min / F32(63))
    # the final 4/5-bit values from the stored (rounded) scales; a group whose scale rounds to 0
    # keeps the search's values, as the C loop's `if (!d) continue;`
    dj = d.astype(F32)[:, None] * ls.astype(F32)  # (nb, 8)
    dm = dmin.astype(F32)[:, None] * lm.astype(F32)
    xg = xb.reshape(nb, 8, 32)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.clip(_rint((xg + dm[..., None]) / dj[..., None]), 0, nmax).astype(np.uint8)
    L = L.T.reshape(nb, 8, 32)
    L = np.where((dj != 0)[..., None], q, L).reshape(nb, 256)
    return d, dmin, _pack_scale_min_k4(ls, lm), L


def _q4_k(xb: np.ndarray) -> np.ndarray:
    d, dmin, scales, L = _qkx_superblocks(xb, 15, -1.0, 0.1, 20)
    nb = xb.shape[0]
    Lc = L.reshape(nb, 4, 2, 32)  # 64-value chunks: low nibble the first 32, high the next 32
    qs = (Lc[:, :, 0] | (Lc[:, :, 1] << 4)).reshape(nb, 128)
    return np.concatenate([d.view(np.uint8).reshape(nb, 2), dmin.view(np.uint8).reshape(nb, 2), scales, qs], axis=1)


def _q5_k(xb: np.ndarray) -> np.ndarray:
    d, dmin, scales, L = _qkx_superblocks(xb, 31, -0.5, 0.1, 15)
    nb = xb.shape[0]
    Lc = L.reshape(nb, 4, 2, 32)
    lo = Lc & 0xF
    qs = (lo[:, :, 0] | (lo[:, :, 1] << 4)).reshape(nb, 128)
    hi = (Lc >> 4).reshape(nb, 8, 32)  # bit 4 of value j of 32-group g goes to bit g of qh[j]
    qh = np.zeros((nb, 32), np.uint8)
    for g in range(8):
        qh |= hi[:, g] << g
    return np.concatenate([d.view(np.uint8).reshape(nb, 2), dmin.view(np.uint8).reshape(nb, 2), scales, qh, qs], axis=1)


def _q6_k(xb: np.ndarray) -> np.ndarray:
    nb = xb.shape[0]
    xs = np.ascontiguousarray(xb.reshape(nb * 16, 16).T)  # (16, nb*16)
    scales, L = make_qx_quants(xs, 32)
    scales = scales.reshape(nb, 16)
    ia = np.abs(scales).argmax(axis=1)
    max_scale = scales[np.arange(nb), ia]
    zero = np.abs(max_scale) < GROUP_MAX_EPS
    with np.errstate(divide="ignore", invalid="ignore"):
        iscale = F32(-128) / np.where(zero, F32(1), max_scale)
        d = _f16(F32(1) / iscale)
        sc = np.minimum(_rint(iscale[:, None] * scales), 127).astype(np.int8)
        dj = d.astype(F32)[:, None] * sc.astype(F32)  # (nb, 16)
        xg = xb.reshape(nb, 16, 16)
        q = (np.clip(_rint(xg / dj[..., None]), -32, 31) + 32).astype(np.uint8)
    L = L.T.reshape(nb, 16, 16)
    L = np.where((dj != 0)[..., None], q, L).reshape(nb, 2, 4, 32)  # (nb, 128-half, 32-quarter, 32)
    lo, hi = L & 0xF, L >> 4
    ql = np.concatenate([lo[:, :, 0] | (lo[:, :, 2] << 4), lo[:, :, 1] | (lo[:, :, 3] << 4)], axis=2).reshape(nb, 128)
    qh = (hi[:, :, 0] | (hi[:, :, 1] << 2) | (hi[:, :, 2] << 4) | (hi[:, :, 3] << 6)).reshape(nb, 64)
    out = np.concatenate([ql, qh, sc.view(np.uint8), d.view(np.uint8).reshape(nb, 2)], axis=1)
    out[zero] = 0  # an all-zero super-block: every byte 0
    return out


QUANTIZERS = {"Q4_K": _q4_k, "Q5_K": _q5_k, "Q6_K": _q6_k}


def quantize_k(x: np.ndarray, typ: str, impl: str = "numba") -> np.ndarray:
    """float32 (..., cols) with cols % 256 == 0 -> uint8 (..., cols // 256 * block_bytes) of `typ`
    (Q4_K, Q5_K or Q6_K), the bytes llama.cpp's `quantize_row_*_K_ref` writes.

    impl "numba" (default): the compiled twin in `quantizers_numba.py`, one super-block at a time,
    GIL released; "numpy": this module's vectorized version. Both give the same bytes."""
    x = np.asarray(x, dtype=F32)
    if x.shape[-1] % QK_K:
        raise ValueError(f"{typ} needs rows of a multiple of {QK_K} values, got {x.shape[-1]}")
    fn, nbytes = QUANTIZERS[typ], BLOCK_BYTES[typ]
    xb = x.reshape(-1, QK_K)
    out = np.empty((xb.shape[0], nbytes), np.uint8)
    if impl == "numba":
        try:
            from .quantizers_numba import quantize_blocks
        except ImportError:  # numba missing: the numpy twin gives the same bytes
            impl = "numpy"
    if impl == "numba":
        quantize_blocks(typ, np.ascontiguousarray(xb), out)
    else:
        for i in range(0, xb.shape[0], CHUNK):
            out[i:i + CHUNK] = fn(xb[i:i + CHUNK])
    return out.reshape(*x.shape[:-1], x.shape[-1] // QK_K * nbytes)
