"""GGUF weight formats and their plain numpy dequantizers.

These are the slow, obvious twins of the numba kernels in `_numba.py`: vectorized numpy,
one small function per type with its bit layout drawn above it. They are bit-exact with
gguf-py's `gguf.quants.dequantize` (same float32 operations in the same order); any type
without one here falls back to gguf-py itself, so such files still load.

A row of a quantized matrix is K // qk blocks laid end to end, each `BLOCK[type]` =
(qk weights, bytes); the layout of each block is drawn above its dequantizer.
"""
from __future__ import annotations

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType as T
from gguf import quants as _gguf_quants

QK_K = 256  # weights per K-quant super-block

# type: (weights per block, bytes per block)
BLOCK = {
    T.F32:  (1, 4),
    T.F16:  (1, 2),
    T.BF16: (1, 2),
    T.Q4_0: (32, 2 + 16),                   # d, 32 x 4-bit q
    T.Q4_1: (32, 2 + 2 + 16),               # d, m, 32 x 4-bit q
    T.Q5_0: (32, 2 + 4 + 16),               # d, 32 high bits, 32 x 4-bit low q
    T.Q5_1: (32, 2 + 2 + 4 + 16),           # d, m, 32 high bits, 32 x 4-bit low q
    T.Q8_0: (32, 2 + 32),                   # d, 32 x int8 q
    T.Q2_K: (QK_K, 16 + 64 + 2 + 2),        # 16 x (4-bit scale, 4-bit min), 256 x 2-bit q, d, dmin
    T.Q3_K: (QK_K, 32 + 64 + 12 + 2),       # 256 high bits, 256 x 2-bit low q, 16 x 6-bit scale, d
    T.Q4_K: (QK_K, 2 + 2 + 12 + 128),       # d, dmin, 8 x (6-bit scale, 6-bit min), 256 x 4-bit q
    T.Q5_K: (QK_K, 2 + 2 + 12 + 32 + 128),  # as Q4_K, plus 256 high bits
    T.Q6_K: (QK_K, 128 + 64 + 16 + 2),      # 256 x 4-bit low q, 256 x 2-bit high q, 16 x int8 scale, d
}
for _t, _size in BLOCK.items():
    assert GGML_QUANT_SIZES[_t] == _size, (_t.name, _size)

F32 = np.float32


def block_size(ggml_type: int) -> tuple[int, int]:
    """(weights per block, bytes per block) of any type gguf knows."""
    return GGML_QUANT_SIZES[T(ggml_type)]


def row_bytes(ggml_type: int, n_cols: int) -> int:
    qk, nbytes = block_size(ggml_type)
    if n_cols % qk:
        raise ValueError(f"{T(ggml_type).name} rows hold a multiple of {qk} weights, not {n_cols}")
    return n_cols // qk * nbytes


# -- small helpers; `b` is always (n_blocks, bytes per block) uint8 -----------------------------

def _f16(b: np.ndarray, at: int) -> np.ndarray:
    """The float16 at byte `at` of every block, as float32 (n, 1)."""
    return b[:, at:at + 2].view(np.float16).astype(F32)


def _nibbles(qs: np.ndarray) -> np.ndarray:
    """(n, c, L) packed bytes -> (n, c, 2L): the low nibbles, then the high nibbles."""
    return np.concatenate([qs & 0x0F, qs >> 4], axis=-1)


def _bits(packed: np.ndarray, n_bits: int, width: int = 1) -> np.ndarray:
    """(n, L) bytes -> (n, n_bits // width, L): field i is bits [i*width, (i+1)*width) of each byte."""
    shifts = np.arange(0, n_bits, width, dtype=np.uint8).reshape(1, -1, 1)
    return (packed[:, None, :] >> shifts) & np.uint8((1 << width) - 1)


# -- float types ------------------------------------------------------------------------------

def _f32(b):
    return b.view(F32).copy()


def _f16_values(b):
    return b.view(np.float16).astype(F32)


# BF16: the top half of a float32.
def _bf16(b):
    return (b.view(np.uint16).astype(np.uint32) << 16).view(F32)


# -- 32-weight blocks -------------------------------------------------------------------------
# The 16 bytes qs hold 32 4-bit values: byte j = q[j] | q[j + 16] << 4.
#
#   Q4_0  | d f16 | qs[16] |                        w = d * (q - 8)
#   Q4_1  | d f16 | m f16 | qs[16] |                w = d * q + m
#   Q5_0  | d f16 | qh u32 | qs[16] |               w = d * (q - 16),  q = nibble | (bit j of qh) << 4
#   Q5_1  | d f16 | m f16 | qh u32 | qs[16] |       w = d * q + m
#   Q8_0  | d f16 | q int8[32] |                    w = d * q

def _q4_0(b):
    q = _nibbles(b[:, 2:18]).astype(np.int8) - np.int8(8)
    return _f16(b, 0) * q.astype(F32)


def _q4_1(b):
    q = _nibbles(b[:, 4:20]).astype(F32)
    return _f16(b, 0) * q + _f16(b, 2)


def _q5(b, qh_at):
    """The 32 5-bit values of Q5_0/Q5_1 blocks, uint8 (n, 32)."""
    qh = _bits(b[:, qh_at:qh_at + 4], 8).transpose(0, 2, 1).reshape(-1, 32)  # bit j -> q[j]
    return _nibbles(b[:, qh_at + 4:qh_at + 20]) | (qh << 4)


def _q5_0(b):
    q = _q5(b, 2).astype(np.int8) - np.int8(16)
    return _f16(b, 0) * q.astype(F32)


def _q5_1(b):
    return _f16(b, 0) * _q5(b, 4).astype(F32) + _f16(b, 2)


def _q8_0(b):
    return b[:, 2:].view(np.int8).astype(F32) * _f16(b, 0)


# -- 256-weight K-quant super-blocks ----------------------------------------------------------
# Q2_K  | scales[16] | qs[64] | d f16 | dmin f16 |
#   sub-block s (16 weights): w = d * (scales[s] & 15) * q - dmin * (scales[s] >> 4)
#   qs: 2 groups of 32 bytes; bits 2i..2i+1 of byte j in group g -> q[128g + 32i + j]

def _q2_k(b):
    n = len(b)
    scales = b[:, :16]
    dl = (_f16(b, 80) * (scales & 0x0F).astype(F32)).reshape(n, 16, 1)
    ml = (_f16(b, 82) * (scales >> 4).astype(F32)).reshape(n, 16, 1)
    q = _bits(b[:, 16:80].reshape(n * 2, 32), 8, 2).reshape(n, 16, 16).astype(F32)
    return (dl * q - ml).reshape(n, QK_K)


# Q3_K  | hmask[32] | qs[64] | scales[12] | d f16 |
#   sub-block s (16 weights): w = d * (scale_s - 32) * (low2 - 4 * (1 - high))
#   low 2 bits as in Q2_K; high bit i of hmask[j] -> q[32i + j] (a clear bit subtracts 4)
#   the 6-bit scales: low nibbles of bytes 0..7 then their high nibbles, plus 2 bits from 8..11
#    0: IIIIAAAA   4: MMMMEEEE   8: MMIIEEAA
#    1: JJJJBBBB   5: NNNNFFFF   9: NNJJFFBB
#    2: KKKKCCCC   6: OOOOGGGG  10: OOKKGGCC
#    3: LLLLDDDD   7: PPPPHHHH  11: PPLLHHDD

def _q3_k(b):
    n = len(b)
    low = _nibbles(b[:, 96:104].reshape(n, 1, 8)).reshape(n, 16)
    high = _bits(b[:, 104:108], 8, 2).reshape(n, 16)
    scales = (low | (high << 4)).astype(np.int8) - np.int8(32)
    dl = (_f16(b, 108) * scales.astype(F32)).reshape(n, 16, 1)
    ql = _bits(b[:, 32:96].reshape(n * 2, 32), 8, 2).reshape(n, 16, 16)
    qh = _bits(b[:, :32], 8).reshape(n, 16, 16) ^ np.uint8(1)
    q = (ql.astype(np.int8) - (qh << 2).astype(np.int8)).astype(F32)
    return (dl * q).reshape(n, QK_K)


# Q4_K  | d f16 | dmin f16 | scales[12] | qs[128] |
#   sub-block s (32 weights): w = d * sc[s] * q - dmin * mn[s]
#   qs: 4 groups of 32 bytes; group g holds sub-block 2g in its low nibbles, 2g+1 in its high
#   the 6-bit scales (sc: A..H) and mins (mn: a..h):
#    0: EEAAAAAA   4: eeaaaaaa   8: eeeeEEEE
#    1: FFBBBBBB   5: ffbbbbbb   9: ffffFFFF
#    2: GGCCCCCC   6: ggcccccc  10: ggggGGGG
#    3: HHDDDDDD   7: hhdddddd  11: hhhhHHHH

def _k_scales(b):
    """The eight (scale, min) pairs of Q4_K/Q5_K super-blocks: two float32 (n, 8, 1)."""
    n = len(b)
    s = b[:, 4:16].reshape(n, 3, 4)
    d, m, md = s[:, 0], s[:, 1], s[:, 2]
    sc = np.concatenate([d & 0x3F, (md & 0x0F) | ((d >> 2) & 0x30)], axis=-1)
    mn = np.concatenate([m & 0x3F, (md >> 4) | ((m >> 2) & 0x30)], axis=-1)
    dl = (_f16(b, 0) * sc.astype(F32)).reshape(n, 8, 1)
    ml = (_f16(b, 2) * mn.astype(F32)).reshape(n, 8, 1)
    return dl, ml


def _q4_k(b):
    n = len(b)
    dl, ml = _k_scales(b)
    q = _nibbles(b[:, 16:144].reshape(n, 4, 32)).reshape(n, 8, 32).astype(F32)
    return (dl * q - ml).reshape(n, QK_K)


# Q5_K  | d f16 | dmin f16 | scales[12] | qh[32] | qs[128] |
#   as Q4_K, with a fifth bit: bit s of qh[j] -> weight j of sub-block s

def _q5_k(b):
    n = len(b)
    dl, ml = _k_scales(b)
    ql = _nibbles(b[:, 48:176].reshape(n, 4, 32)).reshape(n, 8, 32)
    qh = _bits(b[:, 16:48], 8)  # (n, 8, 32)
    q = (ql | (qh << 4)).astype(F32)
    return (dl * q - ml).reshape(n, QK_K)


# Q6_K  | ql[128] | qh[64] | scales int8[16] | d f16 |
#   sub-block s (16 weights): w = d * scales[s] * (q - 32), q = 4 low bits | 2 high bits << 4
#   two halves of 128 weights; half h uses ql[64h : 64h+64] and qh[32h : 32h+32]:
#     low nibbles of ql -> weights 0..63, high nibbles -> 64..127
#     bits 2i..2i+1 of qh[j] -> weight 32i + j

def _q6_k(b):
    n = len(b)
    dl = (_f16(b, 208) * b[:, 192:208].view(np.int8).astype(F32)).reshape(n, 16, 1)
    ql = _nibbles(b[:, :128].reshape(n, 2, 64)).reshape(n, 2, 128)
    qh = _bits(b[:, 128:192].reshape(n * 2, 32), 8, 2).reshape(n, 2, 128)
    q = (ql | (qh << 4)).astype(np.int8) - np.int8(32)
    return (dl * q.reshape(n, 16, 16).astype(F32)).reshape(n, QK_K)


DEQUANTIZE_BLOCKS = {
    T.F32: _f32, T.F16: _f16_values, T.BF16: _bf16,
    T.Q4_0: _q4_0, T.Q4_1: _q4_1, T.Q5_0: _q5_0, T.Q5_1: _q5_1, T.Q8_0: _q8_0,
    T.Q2_K: _q2_k, T.Q3_K: _q3_k, T.Q4_K: _q4_k, T.Q5_K: _q5_k, T.Q6_K: _q6_k,
}

TILE_BYTES = 4 << 20  # numpy temporaries per step stay around a few of these


def _gguf_blocks(qtype):
    def dequantize_blocks(b):  # gguf-py's own, for the exotic types (IQ*, TQ*, MXFP4, ...)
        return _gguf_quants.dequantize(np.ascontiguousarray(b), qtype).reshape(len(b), -1)
    return dequantize_blocks


def dequantize(raw: np.ndarray, ggml_type: int, n_cols: int, out: np.ndarray | None = None) -> np.ndarray:
    """Rows of a GGUF tensor -> float32 (R, n_cols).

    raw: (R, row_bytes) uint8, or (R, n_cols) float32/float16 for F32/F16. Works a few MB at
    a time, so only `out` is ever the size of the whole input."""
    qtype = T(ggml_type)
    qk, nbytes = block_size(qtype)
    blocks = np.ascontiguousarray(raw).view(np.uint8).reshape(-1, nbytes)  # (R * K // qk, nbytes)
    rows = blocks.size // row_bytes(qtype, n_cols)
    if out is None:
        out = np.empty((rows, n_cols), F32)
    assert out.shape == (rows, n_cols) and out.flags.c_contiguous, "out must be C-contiguous (R, n_cols)"
    flat = out.reshape(-1, qk)  # (R * K // qk, qk): a view, since out is C-contiguous
    fn = DEQUANTIZE_BLOCKS.get(qtype) or _gguf_blocks(qtype)
    step = max(1, TILE_BYTES // (qk * 4))
    for i in range(0, len(blocks), step):
        flat[i:i + step] = fn(blocks[i:i + step])
    return out
