"""GGUF blocks -> MLX affine group quantization, exactly.

MLX stores a quantized matrix (M, K) as `bits`-bit codes packed little-end first into uint32
words (M, K * bits / 32), plus a float scale s and bias b per group of 32 weights along K:
w = s * code + b. Every GGUF type below is such an affine code in disguise:

    type   bits  group  scale s           bias b             code
    Q4_0    4     32    d                 -8 d               q
    Q4_1    4     32    d                 m                  q
    Q5_0    5     32    d                 -16 d              q
    Q5_1    5     32    d                 m                  q
    Q8_0    8     32    d                 -128 d             int8 q + 128
    Q4_K    4     32    d * sc            -dmin * mn         q
    Q5_K    5     32    d * sc            -dmin * mn         q
    Q2_K    2     16    d * (sc & 15)     -dmin * (sc >> 4)  q
    Q3_K    3     16    d * (sc - 32)     -4 d (sc - 32)     low2 | high << 2
    Q6_K    6     16    d * sc            -32 d sc           q

Scales and biases are kept in float32: d * sc needs up to 17 significant bits, more than
float16 holds. s * code is then exact in float32 (at most 24 significant bits), so
s * code + b rounds once, the same single rounding gguf-py's `d * q - m` makes, and
`mx.dequantize` equals `gguf.quants.dequantize` value for value (a zero may come out +0
where gguf-py has -0).

MLX groups are at least 32 wide; the K-quants with 16-weight sub-blocks (Q2_K, Q3_K, Q6_K)
are stored with each sub-block padded to a group of 32 (codes 0), and the input x is padded
the same way with zeros, so the padding adds nothing to x @ W.T. It costs those tensors twice
the codes (still 2-3x smaller than a float copy); a Metal kernel on the raw blocks would not.
"""
from __future__ import annotations

from dataclasses import dataclass

import mlx.core as mx
import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType as T

from ..errors import UnsupportedModel

GROUP = 32          # MLX's affine group along K
F32 = np.float32
CHUNK_BYTES = 8 << 20  # GGUF bytes converted per numpy step


def _f16(b: np.ndarray, at: int) -> np.ndarray:
    """The float16 at byte `at` of every block, as float32 (n, 1)."""
    return b[:, at:at + 2].view(np.float16).astype(F32)


def _nibbles(qs: np.ndarray) -> np.ndarray:
    """(..., L) bytes -> (..., 2L): the low nibbles, then the high nibbles."""
    return np.concatenate([qs & 0x0F, qs >> 4], axis=-1)


def _bits(packed: np.ndarray, n_fields: int, width: int) -> np.ndarray:
    """(n, L) bytes -> (n, n_fields, L): field i is bits [i*width, (i+1)*width) of each byte."""
    shifts = np.arange(0, n_fields * width, width, dtype=np.uint8).reshape(1, -1, 1)
    return (packed[:, None, :] >> shifts) & np.uint8((1 << width) - 1)


# Each decoder: blocks (n, bytes) uint8 -> codes (n, qk) uint8, scales (n, groups), biases
# (n, groups) float32, with groups = qk / sub-block size. Layouts as in kernels/quants.py.

def _q4_0(b):
    d = _f16(b, 0)
    return _nibbles(b[:, 2:18]), d, -8 * d


def _q4_1(b):
    return _nibbles(b[:, 4:20]), _f16(b, 0), _f16(b, 2)


def _q5(b, at):
    qh = _bits(b[:, at:at + 4], 8, 1).transpose(0, 2, 1).reshape(-1, 32)  # bit j -> code j
    return _nibbles(b[:, at + 4:at + 20]) | (qh << 4)


def _q5_0(b):
    d = _f16(b, 0)
    return _q5(b, 2), d, -16 * d


def _q5_1(b):
    return _q5(b, 4), _f16(b, 0), _f16(b, 2)


def _q8_0(b):
    d = _f16(b, 0)
    return b[:, 2:] ^ np.uint8(0x80), d, -128 * d   # int8 q + 128, as a byte


def _k_scale_min(b):
    """Q4_K/Q5_K: the 6-bit (scale, min) pairs of the 8 sub-blocks -> s, b float32 (n, 8)."""
    n = len(b)
    s = b[:, 4:16].reshape(n, 3, 4)
    lo, mid, hi = s[:, 0], s[:, 1], s[:, 2]
    sc = np.concatenate([lo & 0x3F, (hi & 0x0F) | ((lo >> 2) & 0x30)], axis=-1)
    mn = np.concatenate([mid & 0x3F, (hi >> 4) | ((mid >> 2) & 0x30)], axis=-1)
    return _f16(b, 0) * sc.astype(F32), -(_f16(b, 2) * mn.astype(F32))


def _q4_k(b):
    s, m = _k_scale_min(b)
    return _nibbles(b[:, 16:144].reshape(len(b), 4, 32)).reshape(len(b), 256), s, m


def _q5_k(b):
    n = len(b)
    s, m = _k_scale_min(b)
    ql = _nibbles(b[:, 48:176].reshape(n, 4, 32)).reshape(n, 8, 32)
    qh = _bits(b[:, 16:48], 8, 1)  # (n, 8, 32): bit s of qh[j] -> code j of sub-block s
    return (ql | (qh << 4)).reshape(n, 256), s, m


def _q2_k(b):
    n = len(b)
    sc = b[:, :16]
    codes = _bits(b[:, 16:80].reshape(n * 2, 32), 4, 2).reshape(n, 256)
    return codes, _f16(b, 80) * (sc & 0x0F).astype(F32), -(_f16(b, 82) * (sc >> 4).astype(F32))


def _q3_k(b):
    n = len(b)
    low = _nibbles(b[:, 96:104].reshape(n, 1, 8)).reshape(n, 16)
    high = _bits(b[:, 104:108], 4, 2).reshape(n, 16)
    s = _f16(b, 108) * ((low | (high << 4)).astype(np.int8) - np.int8(32)).astype(F32)
    ql = _bits(b[:, 32:96].reshape(n * 2, 32), 4, 2).reshape(n, 256)
    qh = _bits(b[:, :32], 8, 1).reshape(n, 256)
    return ql | (qh << 2), s, -4 * s


def _q6_k(b):
    n = len(b)
    s = _f16(b, 208) * b[:, 192:208].view(np.int8).astype(F32)  # (n, 16)
    ql = _nibbles(b[:, :128].reshape(n, 2, 64)).reshape(n, 2, 128)
    qh = _bits(b[:, 128:192].reshape(n * 2, 32), 4, 2).reshape(n, 2, 128)
    return (ql | (qh << 4)).reshape(n, 256), s, -32 * s


# type: (bits, weights per scale, decoder)
AFFINE = {
    T.Q4_0: (4, 32, _q4_0), T.Q4_1: (4, 32, _q4_1),
    T.Q5_0: (5, 32, _q5_0), T.Q5_1: (5, 32, _q5_1),
    T.Q8_0: (8, 32, _q8_0),
    T.Q4_K: (4, 32, _q4_k), T.Q5_K: (5, 32, _q5_k),
    T.Q2_K: (2, 16, _q2_k), T.Q3_K: (3, 16, _q3_k), T.Q6_K: (6, 16, _q6_k),
}
FLOAT = {T.F32: np.float32, T.F16: np.float16, T.BF16: None}


def pack(codes: np.ndarray, bits: int) -> np.ndarray:
    """codes (R, K) uint8 < 2**bits -> uint32 (R, K * bits / 32), little-end first, as MLX packs."""
    R, K = codes.shape
    if bits == 8:
        return np.ascontiguousarray(codes).view(np.uint32)
    if bits == 4:
        return np.ascontiguousarray(codes[:, 0::2] | (codes[:, 1::2] << 4)).view(np.uint32)
    # any width: 8 codes fill `bits` bytes; build them in a uint64 and keep its low bytes
    c = codes.reshape(R, K // 8, 8).astype(np.uint64)
    v = np.bitwise_or.reduce(c << (np.uint64(bits) * np.arange(8, dtype=np.uint64)), axis=-1)
    return np.ascontiguousarray(v.view(np.uint8).reshape(R, K // 8, 8)[..., :bits]).reshape(R, -1).view(np.uint32)


@dataclass
class QMatrix:
    """A GGUF matrix (M, K) held as MLX affine codes; `sub` is 16 for padded sub-blocks."""
    wq: mx.array        # (M, K' * bits / 32) uint32, K' = K (sub 32) or 2K (sub 16)
    scales: mx.array    # (M, K' / 32) float32
    biases: mx.array    # (M, K' / 32) float32
    bits: int
    sub: int
    shape: tuple        # (M, K)

    def _pad(self, x: mx.array) -> mx.array:
        if self.sub == GROUP:
            return x
        *lead, K = x.shape  # each 16-wide sub-block of x -> a 32-wide group, zeros after
        x = x.reshape(*lead, K // 16, 16)
        return mx.concatenate([x, mx.zeros_like(x)], axis=-1).reshape(*lead, 2 * K)

    def __call__(self, x: mx.array) -> mx.array:
        """x (..., K) -> x @ W.T (..., M)."""
        return mx.quantized_matmul(self._pad(x), self.wq, self.scales, self.biases,
                                   transpose=True, group_size=GROUP, bits=self.bits)

    def dequantize(self, rows: mx.array | None = None) -> mx.array:
        """float32 (len(rows), K): the given rows (all when None), as gguf-py would decode them."""
        wq, s, b = (self.wq, self.scales, self.biases) if rows is None else \
            (self.wq[rows], self.scales[rows], self.biases[rows])
        w = mx.dequantize(wq, s, b, group_size=GROUP, bits=self.bits)
        if self.sub != GROUP:
            n, K = w.shape[0], self.shape[1]
            w = w.reshape(n, K // 16, 32)[:, :, :16].reshape(n, K)
        return w

    rows = dequantize  # an embedding lookup: rows(ids) -> (len(ids), K)


@dataclass
class FMatrix:
    """A float matrix (M, K) from the file, as float32."""
    w: mx.array
    shape: tuple

    def __call__(self, x: mx.array) -> mx.array:
        return x @ self.w.T

    def dequantize(self, rows: mx.array | None = None) -> mx.array:
        return self.w if rows is None else self.w[rows]

    rows = dequantize


def from_gguf(raw: np.ndarray, ggml_type: int, shape: tuple):
    """A GGUF tensor's data (rows, row_bytes) uint8, or a float view -> QMatrix or FMatrix."""
    qtype = T(ggml_type)
    M, K = shape
    if qtype in FLOAT:
        from ..kernels import dequantize
        w = dequantize(raw.reshape(M, -1), qtype, K) if qtype == T.BF16 else raw.reshape(M, K)
        return FMatrix(mx.array(np.asarray(w, F32)), (M, K))
    if qtype not in AFFINE:
        raise UnsupportedModel(
            f"the MLX backend cannot run {qtype.name} weights yet (it runs "
            f"{', '.join(t.name for t in AFFINE)}); use --backend numpy")
    bits, sub, decode = AFFINE[qtype]
    qk, nbytes = GGML_QUANT_SIZES[qtype]
    Kp = K * GROUP // sub                                  # K with padded sub-blocks
    wq = np.empty((M, Kp * bits // 32), np.uint32)
    scales = np.empty((M, Kp // GROUP), F32)
    biases = np.empty((M, Kp // GROUP), F32)
    blocks_per_row = K // qk
    step = max(1, CHUNK_BYTES // (blocks_per_row * nbytes))
    for r in range(0, M, step):
        b = np.ascontiguousarray(raw[r:r + step]).reshape(-1, nbytes)   # (n * K/qk, nbytes)
        n = len(b) // blocks_per_row
        codes, s, bias = decode(b)
        codes = codes.reshape(n, K)
        if sub != GROUP:
            codes = codes.reshape(n, K // sub, sub)
            codes = np.concatenate([codes, np.zeros_like(codes)], axis=-1).reshape(n, Kp)
        wq[r:r + n] = pack(codes, bits)
        scales[r:r + n] = s.reshape(n, -1)
        biases[r:r + n] = bias.reshape(n, -1)
    return QMatrix(mx.array(wq), mx.array(scales), mx.array(biases), bits, sub, (M, K))
