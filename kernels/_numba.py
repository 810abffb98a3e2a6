"""Numba kernels over quantized rows: the integer GEMM (decode and prefill alike), row
dequantization (BLAS tiles of the numpy path, embedding rows), attention and the elementwise steps.

Two entry points over W, each one parallel loop that dispatches on the type:
    matmul(w, segs, x, out, full)           out_s (N, M_s) = x (N, K) @ dequantize(W_s).T for each
                                            segment s (type, byte offset, bytes per row, M_s) of w
    dequantize_rows(qtype, w, out, full)    out (R, K) = dequantize(w (R, row_bytes))
`full` is FULL, a runtime all-ones uint64 (see below). Inside, arrays are used flat with
uint64 offsets (`w[o + j]`, `x[k + j]`). Their numpy twins are
`quants.dequantize` (bit-exact with dequantize_rows) and dequantize-then-BLAS on x rounded to
int16 with a scale per 256 values (equal to matmul to float32 rounding); tests/test_kernels.py holds them
together. Block layouts are drawn in quants.py.

matmul's per-type block dots are written in LLVM vector IR (see "integer dots" below); the
rest is numba Python, written so that LLVM vectorizes it well (each point checked in the
assembly):
- Inner loops run `range(16 & full)`, not `range(16)`: LLVM fully unrolls a literal trip
  count into scalar code and then vectorizes the block loop around it with gathers; an
  unknown trip count gets a 64-wide main loop that a 16-weight block never enters. A bound
  it knows (<= 16) but cannot prove exact gives one 16-lane pass per block.
- Byte offsets are uint64 (`U`): numba wraps negative signed indices, and that select hides
  the contiguous loads from LLVM.
- Integer expressions are cast back to uint8 (`u8`) and go to float through int32 (`_f`):
  numba widens integer arithmetic to 64 bits, which would halve the vector width.
- Only the F16 dot carries fastmath (reassoc + contract) so its sum vectorizes. The
  dequantizers carry none: `d * q + m` must not fuse into an FMA, to stay bit-exact with
  numpy.

Cost: the first call compiles the whole module (see `qmatmul.warmup`), the integer GEMM's
three tile shapes times eight types most of it: 150-265 s measured on the 2-core dev box while
other jobs saturated it (~8 s before the GEMM, on a quiet box). cache=True keeps the machine
code in numba's cache, and later processes load it in well under a second.
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
import llvmlite.binding  # noqa: E402
from llvmlite import ir  # noqa: E402
import numba  # noqa: E402
from numba import njit, prange, types  # noqa: E402
from numba.core import cgutils  # noqa: E402
from numba.extending import intrinsic  # noqa: E402

from .quants import block_size  # noqa: E402

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


@intrinsic
def _f32_to_half_bits(typingctx, x):
    """float32 -> IEEE half bits as uint16, rounded to nearest even (vcvtps2ph), as numpy's
    astype(float16) rounds."""
    if x != types.float32:
        return None

    def codegen(context, builder, sig, args):
        return builder.bitcast(builder.fptrunc(args[0], ir.HalfType()), ir.IntType(16))

    return types.uint16(x), codegen


@njit(**JIT)
def kv_store(dst, offset, src):
    """dst[:, offset:offset + L] = src rounded to float16: dst (Hkv, cap, hd) uint16, a float16
    KV storage's bits; src (Hkv, L, hd) float32, any strides (a decode step's k transposed)."""
    Hkv, L, hd = src.shape
    for h in range(Hkv):
        for l in range(L):
            for d in range(hd):
                dst[h, offset + l, d] = _f32_to_half_bits(src[h, l, d])


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


# -- integer dots: quantized W times x rounded to int16, in LLVM vector IR ----------------------
# One numba intrinsic, _tile(RX, RW)(qtype, w, o, ws, xs, k, K, nb) -> RX * RW float32: the
# dots of RW quantized rows of W (at bytes o, o + ws, ...) with RX rows of x (from element k,
# k + K, ...), x given as int16 codes with one scale dx per group of XG blocks of 32 values
# (_quantize_x). For each block of 32 weights, an integer dot of the weights' codes with x's
# codes, scaled by the weights' d, summed over x's group and scaled by dx once:
# dx * sum_blocks(d * sum(q * xq)), plus m * dx * sum(xq) for the types with a min. The block is decoded
# once for the RX rows of x (register blocking: 4 dots in flight, 4 accumulators).
#
# Generic LLVM IR only, no target intrinsics: the products of 16-bit pairs summed in pairs are
# one pmaddwd on AVX2 (vpdpwssd where the CPU has AVX-512 VNNI; smull/smlal on NEON).
# 16-bit activations, not llama.cpp's 8-bit ones, on evidence (docs/benchmarks.md, issue 13,
# third session): 8-bit codes (vpmaddubsw through target intrinsics; LLVM does not form it
# from plain IR) were 0-26 % faster in prefill on AVX2 once that (row-at-a-time) tile stopped
# spilling, and they flipped a top token of SmolLM2 that llama.cpp keeps by a margin over 0.5
# (tests/test_reference.py); 16-bit codes move each value by at most amax / 65534, ~256 times
# less. The packed tiles (below) changed that trade on AVX2 without AVX-512: there the
# feed-forward matrices take int8 x (_X8), 1.4-2.1x the int16 tile's speed, within the
# fidelity tests.
#
# Batch invariance: the dot of (x row r, W row i) is the same sequence of operations whatever
# RX and RW are and whichever tile it falls in: its own accumulator, one FMA per block (no
# fastmath flags, so LLVM cannot reorder), the same pairwise horizontal sum at the end. So
# a row's result does not depend on how many rows of x share the call (tests/test_batch_invariance.py).

_f32, _i8, _i16, _i32, _i64 = ir.FloatType(), ir.IntType(8), ir.IntType(16), ir.IntType(32), ir.IntType(64)


def _vec(t, n=32):
    return ir.VectorType(t, n)


class _Emit:
    """IR helpers: byte offsets are i64 values, p the current block's first byte in w."""

    def __init__(self, context, builder, w_type, w, xs_type, xs):
        """w: the flat uint8 array of W; xs: the tuple of x's arrays (codes, scales, sums)."""
        self.b = b = builder
        self.w = context.make_array(w_type)(context, b, w).data
        self.xs = [context.make_array(t)(context, b, b.extract_value(xs, i)).data for i, t in enumerate(xs_type)]

    def c(self, v, t=_i64):
        return ir.Constant(t, v)

    def cv(self, v, t=_i8, n=32):
        return ir.Constant(_vec(t, n), [v] * n if not isinstance(v, list) else v)

    def load(self, base, off, t, align=1):
        ptr = self.b.bitcast(self.b.gep(base, [off]), t.as_pointer())
        return self.b.load(ptr, align=align)

    def at(self, p, i):
        return self.b.add(p, self.c(i))

    def f16x2(self, p, i):
        """The two float16 at p + i and p + i + 2, as float32. (Loaded one at a time, LLVM
        inserts each into whatever vector register is free (vpinsrw), which chains a block's
        scale to the previous block's FMA.)"""
        v = self.b.fpext(self.load(self.w, self.at(p, i), ir.VectorType(ir.HalfType(), 2)), _vec(_f32, 2))
        return self.b.extract_element(v, self.c(0, _i32)), self.b.extract_element(v, self.c(1, _i32))

    def f16(self, p, i):
        return self.f16x2(p, i)[0]

    def bytes(self, p, i, n=32):
        return self.load(self.w, self.at(p, i), _vec(_i8, n))

    def nibbles(self, p, i):
        """The 16 bytes at p + i as 32 values: low nibbles, then high nibbles (<32 x i8>)."""
        v = self.bytes(p, i, 16)
        lo = self.b.and_(v, self.cv(15, n=16))
        hi = self.b.lshr(v, self.cv(4, n=16))
        return self.b.shuffle_vector(lo, hi, self.cv(list(range(32)), _i32))

    def nibbles16(self, p, i):
        """nibbles(p, i) as <32 x i16>: the 16 bytes zero-extended to 16-bit lanes as they load
        (vpmovzxbw), then masked and shifted there (no byte shuffle, no widening after)."""
        v = self.b.zext(self.bytes(p, i, 16), _vec(_i16, 16))
        lo = self.b.and_(v, self.cv(15, _i16, 16))
        hi = self.b.lshr(v, self.cv(4, _i16, 16))
        return self.b.shuffle_vector(lo, hi, self.cv(list(range(32)), _i32))

    def splat(self, v, n=32):
        t = _vec(v.type, n)
        one = self.b.insert_element(ir.Constant(t, ir.Undefined), v, self.c(0, _i32))
        return self.b.shuffle_vector(one, ir.Constant(t, ir.Undefined), self.cv(0, _i32, n))

    def fma(self, a, b, c):
        """a * b + c, rounded once, for float32 scalars or vectors."""
        t = a.type
        name = f"llvm.fma.v{t.count}f32" if isinstance(t, ir.VectorType) else "llvm.fma.f32"
        f = cgutils.get_or_insert_function(self.b.module, ir.FunctionType(t, [t] * 3), name)
        return self.b.call(f, [a, b, c])

    def high_bits(self, qh, shift):
        """(qh >> shift & 1) << 4 for a <32 x i8> qh."""
        bit = self.b.and_(self.b.lshr(qh, self.cv(shift)), self.cv(1))
        return self.b.shl(bit, self.cv(4))


def _q5(e, p, qh_at):
    """The 32 5-bit values: bit j of the u32 at qh_at is the fifth bit of q[j]. (Byte j // 8
    of qh spread to lane j and tested against bit j % 8: byte-wide lanes throughout.)"""
    qh = e.bytes(p, qh_at, 4)
    qh = e.b.shuffle_vector(qh, qh, e.cv([j // 8 for j in range(32)], _i32))
    on = e.b.icmp_unsigned("!=", e.b.and_(qh, e.cv([(1 << (j % 8)) - (256 if j % 8 == 7 else 0) for j in range(32)])),
                           e.cv(0))
    return e.b.or_(e.nibbles(p, qh_at + 4), e.b.select(on, e.cv(16), e.cv(0)))


def _k_scales_mins(e, p):
    """The 8 sub-blocks' 6-bit scales and mins of a Q4_K/Q5_K super-block (12 bytes at p + 4,
    see quants.py), as two <8 x float>, in vector lanes."""
    b = e.b
    s = e.bytes(p, 4, 16)  # 12 used

    def pick(idx):
        return b.shuffle_vector(s, s, e.cv(idx, _i32, 4))

    def six(v):
        return b.shl(b.lshr(v, e.cv(6, n=4)), e.cv(4, n=4))  # the top 2 bits, moved to bits 4, 5

    lo_sc, lo_mn = b.and_(pick([0, 1, 2, 3]), e.cv(63, n=4)), b.and_(pick([4, 5, 6, 7]), e.cv(63, n=4))
    hi = pick([8, 9, 10, 11])
    hi_sc = b.or_(b.and_(hi, e.cv(15, n=4)), six(pick([0, 1, 2, 3])))
    hi_mn = b.or_(b.lshr(hi, e.cv(4, n=4)), six(pick([4, 5, 6, 7])))
    both = [b.shuffle_vector(lo, hi_, e.cv(list(range(8)), _i32, 8)) for lo, hi_ in ((lo_sc, hi_sc), (lo_mn, hi_mn))]
    return [b.uitofp(v, _vec(_f32, 8)) for v in both]


def _k_subblocks(e, p, five):
    """A Q4_K/Q5_K super-block: ([(j, <32 x i8> codes, d * sc_j)] for its 8 sub-blocks,
    <8 x float> dmin * mn_j)."""
    d, dmin = e.f16x2(p, 0)
    sc, mn = _k_scales_mins(e, p)
    dsc, dmn = e.b.fmul(e.splat(d, 8), sc), e.b.fmul(e.splat(dmin, 8), mn)
    out = []
    for g in range(4):  # 32 bytes: sub-block 2g in the low nibbles, 2g + 1 in the high
        v = e.bytes(p, (48 if five else 16) + 32 * g)
        qh = e.bytes(p, 16) if five else None
        nib = (e.b.and_(v, e.cv(15)), e.b.lshr(v, e.cv(4)))
        if not five:  # Q4_K: widened to 16 bits as they load, masked and shifted there
            v = e.b.zext(v, _vec(_i16))
            nib = (e.b.and_(v, e.cv(15, _i16)), e.b.lshr(v, e.cv(4, _i16)))
        for half, q in enumerate(nib):
            j = 2 * g + half
            if five:
                q = e.b.or_(q, e.high_bits(qh, j))
            out.append((j, q, e.b.extract_element(dsc, e.c(j, _i32))))
    return out, dmn


# Each block function: (emit, p) -> ([(32-value sub-block, <32 x i8> or <32 x i16> codes, signed, scale,
# min or None)], mins8 or None); the scale is a float32, or for Q6_K (a scale per 16 weights)
# <8 x float>, lane l for the weights 4l .. 4l + 3 (see the fold in _emit_tile); the K-quants
# with mins give them for their 8 sub-blocks at once, mins8 <8 x float>, lane j sub-block j.

def _iq_q8_0(e, p):
    return [(0, e.bytes(p, 2), True, e.f16(p, 0), None)], None


def _iq_q4_0(e, p):
    return [(0, e.b.sub(e.nibbles16(p, 2), e.cv(8, _i16)), True, e.f16(p, 0), None)], None


def _iq_q4_1(e, p):
    d, m = e.f16x2(p, 0)
    return [(0, e.nibbles16(p, 4), False, d, m)], None


def _iq_q5_0(e, p):
    return [(0, e.b.sub(_q5(e, p, 2), e.cv(16)), True, e.f16(p, 0), None)], None


def _iq_q5_1(e, p):
    d, m = e.f16x2(p, 0)
    return [(0, _q5(e, p, 4), False, d, m)], None


def _iq_qk(e, p, five):
    subs, dmn = _k_subblocks(e, p, five)
    return [(j, q, False, dl, None) for j, q, dl in subs], e.b.fneg(dmn)


def _iq_q6_k(e, p):
    h16 = e.load(e.w, e.at(p, 208), ir.HalfType())
    d = e.b.fpext(e.splat(h16, 16), _vec(_f32, 16))
    sc = e.b.fmul(d, e.b.sitofp(e.bytes(p, 192, 16), _vec(_f32, 16)))  # d * scales[s], s < 16
    out = []
    for h in range(2):  # halves of 128 weights
        a, c, qh = e.bytes(p, 64 * h), e.bytes(p, 64 * h + 32), e.bytes(p, 128 + 32 * h)
        lows = (e.b.and_(a, e.cv(15)), e.b.and_(c, e.cv(15)), e.b.lshr(a, e.cv(4)), e.b.lshr(c, e.cv(4)))
        for i, lo in enumerate(lows):  # weights 128h + 32i + l: scales s (l < 16), s + 1
            hi = e.b.shl(e.b.and_(e.b.lshr(qh, e.cv(2 * i)), e.cv(3)), e.cv(4))
            q = e.b.sub(e.b.or_(lo, hi), e.cv(32))
            s = 8 * h + 2 * i
            scales = e.b.shuffle_vector(sc, sc, e.cv([s] * 4 + [s + 1] * 4, _i32, 8))
            out.append((4 * h + i, q, True, scales, None))
    return out, None


# type: block function (weights per block and bytes per block: quants.block_size)
_IBLOCKS = {
    T.Q8_0: _iq_q8_0,
    T.Q4_0: _iq_q4_0,
    T.Q4_1: _iq_q4_1,
    T.Q5_0: _iq_q5_0,
    T.Q5_1: _iq_q5_1,
    T.Q4_K: lambda e, p: _iq_qk(e, p, False),
    T.Q5_K: lambda e, p: _iq_qk(e, p, True),
    T.Q6_K: _iq_q6_k,
}
INT_TYPE_IDS = frozenset(int(t) for t in _IBLOCKS)
_INT_TYPES = tuple(sorted(INT_TYPE_IDS))  # for matmul: numba reads a tuple, not a frozenset
XG = 8  # 32-value blocks of x per int16 scale (256 values, as a K-quant super-block)
RX, RW = 4, 1  # the register block: rows of x times rows of W per tile (AVX2 has 16 vector
# registers: 4 rows of x codes take 8, and a second row of W spilled them; docs/benchmarks.md)

def _pmaddwd(e, a, b):
    """<n x i32>: a[2i] * b[2i] + a[2i + 1] * b[2i + 1] for <2n x i16> a, b (one pmaddwd per
    register: LLVM matches it)."""
    n2 = a.type.count
    prod = e.b.mul(e.b.sext(a, _vec(_i32, n2)), e.b.sext(b, _vec(_i32, n2)))
    even = e.b.shuffle_vector(prod, prod, e.cv(list(range(0, n2, 2)), _i32, n2 // 2))
    odd = e.b.shuffle_vector(prod, prod, e.cv(list(range(1, n2, 2)), _i32, n2 // 2))
    return e.b.add(even, odd)


def _emit_tile(e, qtype, nx, nw, o, ws, k, K, nb, out):
    """The loop over the blocks of nw rows of W and nx rows of x; dot (r, i) stored to the
    float alloca out[r * nw + i]."""
    block, (qk, size) = _IBLOCKS[qtype], block_size(qtype)
    b = e.b
    vt = _vec(_f32, 8)
    zero8 = ir.Constant(vt, [0.0] * 8)
    accs = [[cgutils.alloca_once_value(b, zero8) for _ in range(nw)] for _ in range(nx)]
    gaccs = [[cgutils.alloca_once_value(b, zero8) for _ in range(nw)] for _ in range(nx)]  # this x group's
    mins = [[cgutils.alloca_once_value(b, ir.Constant(_f32, 0.0)) for _ in range(nw)] for _ in range(nx)]
    mins8 = [[cgutils.alloca_once_value(b, zero8) for _ in range(nw)] for _ in range(nx)]
    wrows = [b.add(o, b.mul(ws, e.c(i))) for i in range(nw)]
    xrows = [b.udiv(b.add(k, b.mul(K, e.c(r))), e.c(32)) for r in range(nx)]  # in 32-value blocks
    xq, xd, xm = e.xs[:3]
    # the 16 pair sums of a block to 8 lanes: halves added (lane l: products 2l, 2l + 1, 2l + 16,
    # 2l + 17), or for Q6_K, whose two scales cover 16 weights each, neighbours (products 4l .. 4l + 3)
    halves = ([list(range(8)), list(range(8, 16))] if qtype != T.Q6_K
              else [list(range(0, 16, 2)), list(range(1, 16, 2))])
    fold = [e.cv(h, _i32, 8) for h in halves]

    def blocks(first, count):
        for j in range(count):
            bi = b.add(first, e.c(j))
            items = [block(e, b.add(wrows[i], b.mul(bi, e.c(size)))) for i in range(nw)]
            if items[0][1] is not None:  # a K-quant's 8 mins: against x's 8 block sums at once
                for r in range(nx):
                    xmv = e.load(xm, b.add(xrows[r], b.mul(bi, e.c(qk // 32))), vt, align=4)
                    for i in range(nw):
                        b.store(e.fma(items[i][1], xmv, b.load(mins8[r][i])), mins8[r][i])
            for n, (sub, *_) in enumerate(items[0][0]):
                svs = [it[0][n][3] if isinstance(it[0][n][3].type, ir.VectorType) else e.splat(it[0][n][3], 8)
                       for it in items]  # W's scales
                for r in range(nx):
                    xb = b.add(xrows[r], b.add(b.mul(bi, e.c(qk // 32)), e.c(sub)))
                    xv = e.load(xq, b.mul(xb, e.c(32)), _vec(_i16), align=2)
                    for i in range(nw):
                        _, q, signed, scale, m = items[i][0][n]
                        if q.type != _vec(_i16):  # codes as bytes: widened here
                            q = (b.sext if signed else b.zext)(q, _vec(_i16))
                        isum = _pmaddwd(e, q, xv)  # <16 x i32>
                        isum = b.add(b.shuffle_vector(isum, isum, fold[0]), b.shuffle_vector(isum, isum, fold[1]))
                        # isum d, summed over x's group; dx once per group (flush)
                        gacc = gaccs[r][i]
                        b.store(e.fma(b.sitofp(isum, vt), svs[i], b.load(gacc)), gacc)
                        if m is not None:  # m times the rounded x's sum, dx * xsq (xm)
                            mn = mins[r][i]
                            b.store(e.fma(m, e.load(xm, xb, _f32, align=4), b.load(mn)), mn)

    def flush(first):
        """acc += (the group's sum) dx, dx the scale of x's group from 32-value block `first`."""
        for r in range(nx):
            dxv = e.splat(e.load(xd, b.add(xrows[r], first), _f32, align=4), 8)
            for i in range(nw):
                b.store(e.fma(b.load(gaccs[r][i]), dxv, b.load(accs[r][i])), accs[r][i])
                b.store(zero8, gaccs[r][i])

    nsb = b.udiv(nb, e.c(qk // 32))  # blocks of this type
    if qk == 32:  # XG blocks per x group, two per loop iteration, then the last group's
        groups = b.udiv(nsb, e.c(XG))
        with cgutils.for_range(b, groups) as g:
            first = b.mul(g.index, e.c(XG))
            with cgutils.for_range(b, e.c(XG // 2)) as loop:
                blocks(b.add(first, b.mul(loop.index, e.c(2))), 2)
            flush(first)
        first = b.mul(groups, e.c(XG))
        rest = b.urem(nsb, e.c(XG))
        with cgutils.for_range(b, rest) as loop:
            blocks(b.add(first, loop.index), 1)
        with cgutils.if_likely(b, b.icmp_unsigned("!=", rest, e.c(0))):
            flush(first)
    else:  # a super-block is an x group
        with cgutils.for_range(b, nsb) as loop:
            blocks(loop.index, 1)
            flush(b.mul(loop.index, e.c(XG)))
    for r in range(nx):
        for i in range(nw):
            v = b.fadd(b.load(accs[r][i]), b.load(mins8[r][i]))
            n = 8
            while n > 1:  # pairwise halves
                n //= 2
                v = b.fadd(b.shuffle_vector(v, v, e.cv(list(range(n)), _i32, n)),
                           b.shuffle_vector(v, v, e.cv(list(range(n, 2 * n)), _i32, n)))
            b.store(b.fadd(b.extract_element(v, e.c(0, _i32)), b.load(mins[r][i])), out[r * nw + i])


def _tile(nx, nw):
    """An intrinsic (qtype, w, o, ws, xs, k, K, nb) -> nx * nw float32, dot (r, i) at r * nw + i:
    nw rows of the flat w at bytes o + i ws against nx rows of x from element k + r K, x as
    the tuple xs = (codes, scales, sums, half sums: _quantize_x); nb: 32-value blocks per row. 0 for a type
    outside _IBLOCKS."""

    @intrinsic
    def tile(typingctx, qtype, w, o, ws, xs, k, K, nb):
        def codegen(context, builder, sig, args):
            e = _Emit(context, builder, sig.args[1], args[1], sig.args[4], args[4])
            o_, ws_, k_, K_, nb_ = args[2], args[3], args[5], args[6], args[7]
            out = [cgutils.alloca_once_value(builder, ir.Constant(_f32, 0.0)) for _ in range(nx * nw)]
            done = builder.append_basic_block("tile.done")
            switch = builder.switch(args[0], done)
            for t in _IBLOCKS:
                bb = builder.append_basic_block(f"tile.{t.name}")
                switch.add_case(ir.Constant(args[0].type, int(t)), bb)
                builder.position_at_end(bb)
                _emit_tile(e, t, nx, nw, o_, ws_, k_, K_, nb_, out)
                builder.branch(done)
            builder.position_at_end(done)
            return context.make_tuple(builder, sig.return_type, [builder.load(v) for v in out])

        return types.UniTuple(types.float32, nx * nw)(qtype, w, o, ws, xs, k, K, nb), codegen

    return tile


R1 = 4  # rows of W against one row of x (decode) for the types of _R1_TYPES: four independent
# sums share x's codes; every dot is the same operations in any tile, so no bit changes. (The
# K-quants' and Q8_0's four-row tiles spill AVX2's 16 vector registers: one row at a time.)
# Measured (min of 1,000s of interleaved calls, one thread, Zen 3): 0.73-0.91x the time of one
# row at a time for K <= 1024, but 1.04-1.2x for Q4_1 at K >= 2048 (four streams of long rows).
_R1_TYPES = (Q4_0, Q4_1)
R1_MAX_K = 1024
_tile_xw, _tile_1w, _tile_11 = _tile(RX, RW), _tile(1, R1), _tile(1, 1)  # (a lone last row of W goes
# in RW times: ws = 0)


@njit(fastmath=FM, error_model="numpy", **JIT)
def _quantize_x(x, k, n, xq, xd, xm, xh, group, qmax):
    """x[k:k + n * 32] float32 -> integer codes xq = rint(x * qmax / amax) with one scale per
    group of `group` blocks of 32 values (the row's last group may be shorter): xd = amax /
    qmax, stored for each block of the group, and per block the rounded values' sum xm = xd *
    sum(xq), at the same offsets (xd, xm: / 32). xh: the integer sum of each 16 rounded values
    (xh: / 16), for the packed tile's code offsets.

    int16 x (xq int16, group XG, qmax 32767): one scale per 256 values (a K-quant super-block)
    lets the integer dots apply it once per group, not once per block. int8 x (xq int8, group
    1, qmax 127: _X8): llama.cpp's Q8_0 rounding of x (quantize_row_q8_0). (A min's term
    takes the rounded x's sum: weights d q + m with m ~ -8 d nearly cancel, and so do their
    errors, only if both halves of the dot see one x.)"""
    for g0 in range(0, n, group):
        nbk = min(group, n - g0)
        o = U(k) + U(g0) * U(32)
        amax = F(0)
        for j in range(o, o + U(32) * U(nbk)):
            a = abs(x[j])
            amax = a if a > amax else amax
        inv = F(qmax) / amax if amax > F(0) else F(0)
        d = amax / F(qmax)
        for blk in range(nbk):
            ob = o + U(blk) * U(32)
            si = np.int32(0)
            for oh in range(ob, ob + U(32), U(16)):
                sh = np.int32(0)
                for j in range(oh, oh + U(16)):
                    q = min(max(np.int32(np.rint(x[j] * inv)), np.int32(-qmax)), np.int32(qmax))
                    xq[j] = q
                    sh += q
                xh[oh // U(16)] = sh
                si += sh
            xd[ob // U(32)] = d
            xm[ob // U(32)] = d * F(si)


@njit(**JIT)
def _quantize_x_row(x, n, K, xs, to16, to8):
    """Row n of x (N, K), flat, rounded into matmul's arrays xs (_quantize_x): to int16
    (xs[:4]) and/or to int8 (xs[4:])."""
    if to16:
        _quantize_x(x, U(n) * U(K), K // 32, xs[0], xs[1], xs[2], xs[3], XG, 32767)
    if to8:
        _quantize_x(x, U(n) * U(K), K // 32, xs[4], xs[5], xs[6], xs[7], 1, 127)


@njit(fastmath=FM, **JIT)
def _dot_f16(w16, o, x, k, n):
    """n float16 weights w16[o:] against x[k:]."""
    s = F(0)
    for j in range(n):
        s += _half_to_f32(w16[o + j]) * x[k + j]
    return s


# -- packed weights: 16 rows of W interleaved, the integer dots of 16 outputs in one vector ----
# llama.cpp's CPU back end repacks Q4_0 and the K-quants at load (ggml-cpu/repack.cpp:
# q4_0_8x8, q4_K_8x8) so that one vector instruction serves 8 or 16 output rows. Here:
# PR = 16 rows of a matrix go in one group; for each 32-value block of those rows, codes are
# stored so that 16-bit vector lane 2i + t holds row i's code for value 2p + t ("pair" p,
# 0..15). One multiply-add of pairs (pmaddwd; vpdpwssd with AVX-512 VNNI) against x's pair p
# broadcast to all lanes then adds 2 products to each of the 16 rows' int32 sums: a block's
# 16 integer dots take 16 of them, with no horizontal sum, and the weights' scales, x's
# scale and the float work apply once per 16 outputs. Same arithmetic as the tiles above:
# integer dots of codes with x's int16 codes, exact; d * isum summed over x's group of XG
# blocks, times dx once; a min's term from x's block sums. A code offset (Q4_0 8, Q5_0 16,
# Q6_K 32) is not subtracted from each pair: offset * sum(x's codes) (xh, per 16 values) is
# subtracted from each integer sum, once per row and block: the same integers, so the same
# bits, with one vector subtraction fewer per pair.
#
# Packed layouts, per group of PR rows (a last group is padded with zero rows), unit after
# unit (a 32-value block, or a K-quant's 256-value super-block):
#   K-quant unit header: d f16[16], then dmin f16[16] (Q4_K, Q5_K; not Q6_K)
#   per 32-value block:  Q4_0, Q5_0, Q8_0: d f16[16]; Q4_1, Q5_1: d f16[16] | m f16[16];
#                        Q4_K, Q5_K: sc u8[16] | mn u8[16]; Q6_K: scale i8[16] of values
#                        0..15 | i8[16] of 16..31; then the codes
#   codes: Q8_0: 16 chunks of 32 bytes, chunk p byte 2i + t = row i's code of value 2p + t.
#     Else nibbles, 8 chunks of 32 bytes: chunk c, byte 2i + t holds row i's code of value
#     2c + t in its low nibble and of 16 + 2c + t in its high one (pairs c and c + 8); then
#     the codes' bits above 4 (HB bits each: 1 for Q5, 2 for Q6_K) in 2 HB chunks of 32
#     bytes: chunk h, byte 2i + t, bits HB s.. HB s + HB - 1 are those of row i's value
#     2(h + 2 HB s) + t (pair h + 2 HB s).
PR = 16
PACK = 1 << 10  # a packed segment's type in matmul's segs: PACK + ggml type
# ggml type: (high bits per code, code offset, has a min, header bytes per unit, bytes per
# 32-value block; PR rows). A unit is the file's block (quants.block_size: values, bytes).
_PACKED = {Q4_0: (0, 8, False, 0, 288), Q4_1: (0, 0, True, 0, 320),
           Q5_0: (1, 16, False, 0, 352), Q5_1: (1, 0, True, 0, 384), Q8_0: (0, 0, False, 0, 544),
           Q4_K: (0, 0, True, 64, 288), Q5_K: (1, 0, True, 64, 352), Q6_K: (2, 32, False, 32, 416)}
PACKED_TYPE_IDS = frozenset(_PACKED)
def _unit_bytes(qtype):
    """Packed bytes of one unit of PR rows."""
    hdr, bb = _PACKED[qtype][3:]
    return hdr + block_size(qtype)[0] // 32 * bb


def packed_bytes(qtype, M, K):
    """Bytes of the packed copy of an (M, K) matrix of ggml type qtype (in PACKED_TYPE_IDS)."""
    return (M + PR - 1) // PR * (K // block_size(qtype)[0]) * _unit_bytes(qtype)


# pack's table, a row per type: ggml type, values and file bytes per unit, then _PACKED's
# fields, then packed bytes per unit
_P = np.array([[q, *block_size(q), *(int(v) for v in _PACKED[q]), _unit_bytes(q)] for q in sorted(_PACKED)],
              np.int64)


@njit(**JIT)
def _unit_codes(qtype, row, o, codes):
    """codes[v] = the code (unsigned, before its offset) of each value v of the unit at byte o
    of row, for the types whose codes are not whole file bytes (Q5_0, Q5_1, the K-quants). The
    type is tested once per unit, not per value (a per-value test made packing a K-quant file
    take ~15 s per GB)."""
    if qtype == Q5_0 or qtype == Q5_1:
        qh, qs = o + (2 if qtype == Q5_0 else 4), o + (6 if qtype == Q5_0 else 8)
        for v in range(32):
            c = np.int64(row[qs + v % 16]) >> (4 * (v // 16)) & 15
            codes[v] = c | (np.int64(row[qh + v // 8]) >> (v % 8) & 1) << 4
    elif qtype == Q4_K or qtype == Q5_K:
        qs = o + (16 if qtype == Q4_K else 48)
        for j in range(8):
            for l in range(32):
                c = np.int64(row[qs + 32 * (j // 2) + l]) >> (4 * (j % 2)) & 15
                if qtype == Q5_K:
                    c |= (np.int64(row[o + 16 + l]) >> j & 1) << 4
                codes[32 * j + l] = c
    else:  # Q6_K: value 128 h + 32 quarter + l
        for h in range(2):
            for quarter in range(4):
                for l in range(32):
                    ql = np.int64(row[o + 64 * h + l + 32 * (quarter % 2)])
                    lo = (ql >> 4) if quarter >= 2 else (ql & 15)
                    codes[128 * h + 32 * quarter + l] = lo | ((np.int64(row[o + 128 + 32 * h + l]) >> (2 * quarter)) & 3) << 4


@njit(parallel=True, **JIT)
def _pack_bytes(qtype, raw, zero, out):
    """pack for Q4_0, Q4_1 and Q8_0, whose code bytes are the file's."""
    M = raw.shape[0]
    p = 0
    while _P[p, 0] != qtype:
        p += 1
    qk, size, hdr, bb, ub = _P[p, 1], _P[p, 2], _P[p, 6], _P[p, 7], _P[p, 8]
    units = raw.shape[1] // size
    for g in prange((M + PR - 1) // PR):
        for u in range(units):
            a, o = (g * units + u) * ub, u * size
            for i in range(PR):
                row = raw[g * PR + i] if g * PR + i < M else zero[0]
                for j in range(qk // 32):
                    s = a + hdr + j * bb
                    out[s + 2 * i], out[s + 2 * i + 1] = row[o], row[o + 1]  # d, and m
                    if qtype == Q4_1:
                        out[s + 32 + 2 * i], out[s + 33 + 2 * i] = row[o + 2], row[o + 3]
                    c0 = s + (64 if qtype == Q4_1 else 32)
                    for t in range(2):
                        if qtype == Q8_0:
                            for q in range(16):
                                out[c0 + 32 * q + 2 * i + t] = row[o + 2 + 2 * q + t]
                            continue
                        for c in range(8):  # Q4_0, Q4_1: the file's byte as it is
                            out[c0 + 32 * c + 2 * i + t] = row[o + (2 if qtype == Q4_0 else 4) + 2 * c + t]


@njit(parallel=True, **JIT)
def _pack_codes(qtype, raw, zero, out):
    """pack for Q5_0, Q5_1 and the K-quants: each row's unit decoded to codes first."""
    M = raw.shape[0]
    p = 0
    while _P[p, 0] != qtype:
        p += 1
    qk, size, hb, hdr, bb, ub = _P[p, 1], _P[p, 2], _P[p, 3], _P[p, 6], _P[p, 7], _P[p, 8]
    units = raw.shape[1] // size
    codes_g = np.empty(((M + PR - 1) // PR, 256), np.uint8)  # one unit's codes (_unit_codes), per group
    for g in prange((M + PR - 1) // PR):
        codes = codes_g[g]
        for u in range(units):
            a, o = (g * units + u) * ub, u * size
            for i in range(PR):
                row = raw[g * PR + i] if g * PR + i < M else zero[0]
                if qk == 256:  # the header: d (Q6_K's at its end), dmin
                    do = o + 208 if qtype == Q6_K else o
                    out[a + 2 * i], out[a + 2 * i + 1] = row[do], row[do + 1]
                    if qtype != Q6_K:
                        out[a + 32 + 2 * i], out[a + 33 + 2 * i] = row[o + 2], row[o + 3]
                _unit_codes(qtype, row, o, codes)
                for j in range(qk // 32):
                    s = a + hdr + j * bb
                    if qtype == Q4_K or qtype == Q5_K:
                        sc, mn = _k_scale(row, U(o + 4), U(j))
                        out[s + i], out[s + 16 + i] = u8(sc), u8(mn)
                    elif qtype == Q6_K:
                        out[s + i], out[s + 16 + i] = row[o + 192 + 2 * j], row[o + 193 + 2 * j]
                    else:  # d, and m
                        out[s + 2 * i], out[s + 2 * i + 1] = row[o], row[o + 1]
                        if qtype == Q5_1:
                            out[s + 32 + 2 * i], out[s + 33 + 2 * i] = row[o + 2], row[o + 3]
                    c0 = s + (64 if qtype == Q5_1 else 32)
                    v0 = 32 * j
                    for c in range(8):
                        for t in range(2):
                            lo = np.int64(codes[v0 + 2 * c + t]) & 15
                            hi = np.int64(codes[v0 + 16 + 2 * c + t]) & 15
                            out[c0 + 32 * c + 2 * i + t] = lo | (hi << 4)
                    for h in range(2 * hb):
                        for t in range(2):
                            bits = np.int64(0)
                            for s2 in range(8 // hb):
                                q = h + 2 * hb * s2
                                bits |= (np.int64(codes[v0 + 2 * q + t]) >> 4) << (hb * s2)
                            out[c0 + 256 + 32 * h + 2 * i + t] = bits


def pack(qtype, raw, zero, out):
    """raw (M, row bytes) uint8 rows of a ggml type in PACKED_TYPE_IDS -> out, flat uint8 of
    packed_bytes(qtype, M, K): the layout above, group after group. zero: (1, row bytes)
    zeros of raw's array type (read-only where raw is), the padding rows."""
    (_pack_bytes if qtype in (Q4_0, Q4_1, Q8_0) else _pack_codes)(qtype, raw, zero, out)


def _target_features():
    """The CPU features numba compiles for: NUMBA_CPU_FEATURES, else the host's
    (numba.core.codegen), as a set of names without their '+'."""
    from numba.core import config
    from numba.core.codegen import get_host_cpu_features

    feats = config.CPU_FEATURES if config.CPU_FEATURES is not None else get_host_cpu_features()
    return {f[1:] for f in feats.split(",") if f.startswith("+")}


_FEATURES = _target_features()
# AVX-512 (F and BW): 32 vector registers of 16 int32. There the packed tile holds 8 rows of x
# (their sums, in CHAINS chains, and a pair of W live at once); with AVX2's 16 registers of 8,
# where every 16-lane vector takes two, 4 rows and one chain (more spill to the stack: seen as
# slower on a Zen 3 and a Haswell target).
_AVX512 = {"avx512f", "avx512bw"} <= _FEATURES
# AVX-512 VNNI: the packed tile sums its pair products with vpdpwssd, one instruction for a
# pmaddwd and the add after it, written as inline assembly: in a chain of them LLVM 22's X86
# back end turns its own intrinsic back into vpmaddwd + vpaddd (seen in the assembly), which
# cost a third of the packed tile's speed on a Xeon (Emerald Rapids). Elsewhere plain IR. The
# same exact integer sums either way, so the same bits. numba keys its cache by the target's
# features, so each variant is cached apart.
_VNNI = _AVX512 and "avx512vnni" in _FEATURES
if _VNNI:  # LLVM emits inline assembly (vpdpwssd) only once its target's parser is registered
    llvmlite.binding.initialize_native_asmparser()
# Rows of W per vector: the packed group's 16 with AVX-512. With 16 registers of 8 int32 (AVX2)
# a 16-lane vector is split by LLVM into two halves and every operation done twice, and a tile
# of several rows of x then holds x's pairs and W's codes for the second half on the stack (seen
# in the assembly of the Q4_0 block: stack loads and stores among the multiply-adds). Tiles of
# more than one row of x therefore do the group's two halves of 8 rows one after the other.
# Measured on a Zen 3 (benchmarks/kernels_ab.py --packed, 1 thread, against 16 lanes): 0.56-0.77x
# the time for 4 and 64 rows of x, every type but Q6_K, whose two scales per block already fill
# the registers (1.0-1.16x with halves: _WIDE_ONLY); one row of x keeps 16 lanes (0.97-1.17x
# with halves).
_WIDE_ONLY = (Q6_K,)  # types whose tiles keep 16 lanes on AVX2
PRX = 8 if _AVX512 else 4  # rows of x per packed tile
PRX2 = PRX // 2  # and per tile for the rows left after whole PRX tiles
CHAINS = 2 if _VNNI else 1  # independent sums per row and block: vpdpwssd's latency is 5 cycles
# Int8 x where the CPU has AVX2 but not AVX-512 (x86 only: pmaddubsw is an x86 instruction, and
# LLVM does not form it from plain IR, so it is called as LLVM's x86 intrinsic). A matrix asks
# for it (QMatrix(x8=True): the feed-forward weights, localai/ops/numpy.py); its packed segment's
# type is then PACK + X8 + ggml type, and x is rounded to int8 with a scale per 32 values
# (_quantize_x, llama.cpp's Q8_0 rounding) for it, still to int16 for the others of the call.
# pmaddubsw multiplies 32 unsigned codes by 32 signed bytes and adds pairs into 16 int16 lanes,
# one per row of W: a 16-row group's pair in one instruction, where int16 x takes two pmaddwd
# and two adds (benchmarks/x8_ab.py: 1.4-2.1x the packed int16 tile's speed, 1 to 64 rows of
# x, one thread, Zen 4 without AVX-512). Types: those whose codes are unsigned, so that a few
# products sum in int16 without saturating (Q8_0's signed codes stay on int16 x). AVX-512 keeps int16 x: vpdpwssd does the multiply and the add
# in one. Accuracy against llama.cpp (tests/test_reference.py, benchmarks/x8_fidelity.py),
# int8 x on the feed-forward matrices: top-20 log-prob |diff| max / mean SmolLM2 0.687 /
# 0.146, Gemma 3 0.822 / 0.123 (int16 x: 0.688 / 0.130, 0.755 / 0.123; the test allows 1.0),
# argmax agreement 450/467 and 569/576 (451 and 571).
_X8 = not _AVX512 and "avx2" in _FEATURES
X8 = 1 << 11  # added to PACK + ggml type in segs: this segment takes int8 x
_X8_TYPES = (Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K) if _X8 else ()
X8_TYPE_IDS = frozenset(_X8_TYPES)


def _store_rows(e, acc, macc, dest, stride, valid, L, part):
    """A packed tile's results: row r's acc + macc (L float32 lanes, rows part * L ... of the
    group) to dest + r * stride + part * L, all L where the group is whole (valid == PR), else
    those below valid."""
    b = e.b
    full = b.icmp_unsigned("==", valid, e.c(PR))
    for r in range(len(acc)):
        v = b.fadd(b.load(acc[r]), b.load(macc[r]))
        dst = b.gep(dest, [b.add(b.mul(stride, e.c(r)), e.c(L * part))])
        with b.if_else(full) as (then, otherwise):
            with then:
                b.store(v, b.bitcast(dst, v.type.as_pointer()), align=4)
            with otherwise:
                for i in range(L):
                    with cgutils.if_likely(b, b.icmp_unsigned("<", e.c(L * part + i), valid)):
                        b.store(b.extract_element(v, e.c(i, _i32)), b.gep(dst, [e.c(i)]))


def _emit_packed(e, qtype, nx, a, k, K, nb, dest, stride, valid, L=16, part=0):
    """The tile of PR packed rows of W (group at address a) against nx rows of x (from
    element k, k + K, ...): row r's 16 results stored at dest + r * stride (float32
    pointers), the first `valid` of them; in vectors of L rows, those of rows
    part * L .. part * L + L - 1 of the group."""
    b = e.b
    qk = block_size(qtype)[0]
    hb, offset, has_min, hdr, bb = _PACKED[qtype]
    ub = _unit_bytes(qtype)
    v16, vi16 = _vec(_f32, L), _vec(_i32, L)
    zero = ir.Constant(v16, [0.0] * L)
    acc = [cgutils.alloca_once_value(b, zero) for _ in range(nx)]
    gacc = [cgutils.alloca_once_value(b, zero) for _ in range(nx)]
    macc = [cgutils.alloca_once_value(b, zero) for _ in range(nx)]
    xq, xd, xm, xh = e.xs[:4]
    xrows = [b.udiv(b.add(k, b.mul(K, e.c(r))), e.c(32)) for r in range(nx)]  # in 32-value blocks
    w = b.inttoptr(a, _i8.as_pointer())

    def ld(off, t):
        return b.load(b.bitcast(b.gep(w, [off]), t.as_pointer()), align=1)

    def f16v(off):
        """The float16 of each of this part's rows, of the 16 at byte off."""
        return b.fpext(ld(b.add(off, e.c(2 * L * part)), _vec(ir.HalfType(), L)), v16)

    def u8v(off, signed=False):
        return (b.sitofp if signed else b.uitofp)(ld(b.add(off, e.c(L * part)), _vec(_i8, L)), v16)

    def chunk(off, signed=False):
        """This part's rows of the 32-byte chunk at off (2 bytes a row), as 16-bit lanes."""
        return (b.sext if signed else b.zext)(ld(b.add(off, e.c(2 * L * part)), _vec(_i8, 2 * L)), _vec(_i16, 2 * L))

    def xpair(r, xb, p):
        """x's codes of values 2p, 2p + 1 of block xb of row r, in every 32-bit lane."""
        ptr = b.bitcast(b.gep(xq, [b.add(b.mul(xb, e.c(32)), e.c(2 * p))]), _i32.as_pointer())
        return b.bitcast(e.splat(b.load(ptr, align=2), L), _vec(_i16, 2 * L))

    def block(p, xblock, head):
        """The 32-value block whose packed bytes start at p; xblock: its index in x's rows."""
        mv = None
        if qk == 32:
            scales = [f16v(p)]
            if has_min:
                mv = f16v(b.add(p, e.c(32)))
        elif qtype == Q6_K:  # a scale per 16 values: pairs 0..7, 8..15
            scales = [b.fmul(head[0], u8v(b.add(p, e.c(16 * h)), True)) for h in range(2)]
        else:
            d, dmin = head
            scales, mv = [b.fmul(d, u8v(p))], b.fneg(b.fmul(dmin, u8v(b.add(p, e.c(16)))))
        codes = b.add(p, e.c(64 if qk == 32 and has_min else 32))
        xbs = [b.add(xrows[r], xblock) for r in range(nx)]
        n = 16 // len(scales)  # Q6_K: two halves of 8 pairs (a scale each), else one of 16
        ch = [[[None] * CHAINS for _ in scales] for _ in range(nx)]

        seq = []

        def use(q, pair):
            """Pair q's products into each row's sums (of its part; chains in turn)."""
            c_ = len(seq) % CHAINS
            seq.append(q)
            sc = q // n  # its scale's sums
            for r in range(nx):
                s = ch[r][sc][c_]
                if _VNNI:  # inline: LLVM splits the intrinsic into pmaddwd + add
                    s = ir.Constant(vi16, [0] * L) if s is None else s
                    s = b.asm(ir.FunctionType(vi16, [vi16] * 3), "vpdpwssd $2, $1, $0", "=v,v,v,0",
                              [b.bitcast(pair, vi16), b.bitcast(xpair(r, xbs[r], q), vi16), s], False)
                else:
                    t = _pmaddwd(e, pair, xpair(r, xbs[r], q))
                    s = t if s is None else b.add(s, t)
                ch[r][sc][c_] = s

        # Each pair is unpacked right before its multiply-adds, in an order where each loaded
        # chunk is used at once: LLVM's X86 scheduler keeps the IR's order, and with all 16
        # pairs unpacked first (32 AVX2 registers' worth) it spilled a third of the tile's
        # instructions to the stack. Integer sums: any order gives the same bits.
        if qtype == Q8_0:
            for q in range(16):
                use(q, chunk(b.add(codes, e.c(32 * q)), True))
        elif hb:  # 5- and 6-bit codes: each pair's code put together in bytes (with 16 rows a
            # vector, one AVX2 register), then widened; in 16-bit lanes (two registers) it took
            # shift, mask, shift, or on each: Q5_0 2048 x 2048 matvec 0.253 -> 0.223 ms, Q6_K
            # 0.261 -> 0.213 (one thread, CPU time)
            step = 2 * hb
            for h in range(step):  # chunks h, h + step, ...: their high bits in top chunk h
                top = ld(b.add(codes, e.c(256 + 32 * h + 2 * L * part)), _vec(_i8, 2 * L))
                for c in range(h, 8, step):
                    v = ld(b.add(codes, e.c(32 * c + 2 * L * part)), _vec(_i8, 2 * L))
                    for q, pair in ((c, b.and_(v, e.cv(15, _i8, 2 * L))), (c + 8, b.lshr(v, e.cv(4, _i8, 2 * L)))):
                        at = hb * (q // step)  # pair q's high bits in top, moved to bits 4..
                        bits = top if at == 4 else (b.shl(top, e.cv(4 - at, _i8, 2 * L)) if at < 4 else
                                                    b.lshr(top, e.cv(at - 4, _i8, 2 * L)))
                        pair = b.or_(pair, b.and_(bits, e.cv(((1 << hb) - 1) << 4, _i8, 2 * L)))
                        use(q, b.zext(pair, _vec(_i16, 2 * L)))
        else:
            for c in range(8):
                v = chunk(b.add(codes, e.c(32 * c)))
                for q, pair in ((c, b.and_(v, e.cv(15, _i16, 2 * L))), (c + 8, b.lshr(v, e.cv(4, _i16, 2 * L)))):
                    use(q, pair)
        allsums = [[] for _ in range(nx)]
        for sc in range(len(scales)):
            for r in range(nx):
                tot = None
                for s in ch[r][sc]:
                    if s is not None:
                        tot = s if tot is None else b.add(tot, s)
                if offset:  # sum (q - offset) x = sum q x - offset sum x: once per row, not per pair
                    x16 = b.mul(xbs[r], e.c(2))  # the block's first 16 values, in xh
                    if len(scales) == 2:
                        xsum = e.load(xh, b.add(x16, e.c(sc)), _i32, align=4)
                    else:
                        xsum = b.add(e.load(xh, x16, _i32, align=4), e.load(xh, b.add(x16, e.c(1)), _i32, align=4))
                    tot = b.sub(tot, e.splat(b.mul(xsum, ir.Constant(_i32, offset)), L))
                allsums[r].append(tot)
        for r in range(nx):
            xb, sums = xbs[r], allsums[r]
            g = b.load(gacc[r])
            for s, sv in zip(sums, scales):
                g = e.fma(b.sitofp(s, v16), sv, g)
            b.store(g, gacc[r])
            if mv is not None:  # the min times the rounded x's block sum (dx * sum xq)
                xs = e.splat(e.load(xm, xb, _f32, align=4), L)
                b.store(e.fma(mv, xs, b.load(macc[r])), macc[r])

    def flush(first):
        for r in range(nx):
            dxv = e.splat(e.load(xd, b.add(xrows[r], first), _f32, align=4), L)
            b.store(e.fma(b.load(gacc[r]), dxv, b.load(acc[r])), acc[r])
            b.store(zero, gacc[r])

    units = b.udiv(nb, e.c(qk // 32 if qk > 32 else XG))  # super-blocks, or whole x groups of blocks
    with cgutils.for_range(b, units) as loop:
        u = loop.index
        base = b.mul(u, e.c(ub if qk > 32 else XG * ub))
        head = None
        if qk > 32:
            head = (f16v(base),) if qtype == Q6_K else (f16v(base), f16v(b.add(base, e.c(32))))
        with cgutils.for_range(b, e.c(8)) as inner:
            j = inner.index
            block(b.add(base, b.add(e.c(hdr), b.mul(j, e.c(bb)))), b.add(b.mul(u, e.c(8)), j), head)
        flush(b.mul(u, e.c(8)))
    if qk == 32:  # the blocks after the last whole group of XG
        first = b.mul(units, e.c(XG))
        rest = b.sub(nb, first)
        with cgutils.for_range(b, rest) as loop:
            bi = b.add(first, loop.index)
            block(b.mul(bi, e.c(ub)), bi, None)
        with cgutils.if_likely(b, b.icmp_unsigned("!=", rest, e.c(0))):
            flush(first)
    _store_rows(e, acc, macc, dest, stride, valid, L, part)


def _maddubs(b, codes, xv):
    """<16 x i16>: codes[2i] * xv[2i] + codes[2i + 1] * xv[2i + 1], codes unsigned and xv
    signed bytes (<32 x i8>), saturated to int16 (never reached here: see _emit_packed8)."""
    t = ir.FunctionType(_vec(_i16, 16), [_vec(_i8, 32)] * 2)
    return b.call(cgutils.get_or_insert_function(b.module, t, "llvm.x86.avx2.pmadd.ub.sw"), [codes, xv])


def _emit_packed8(e, qtype, nx, a, k, K, nb, dest, stride, valid):
    """_emit_packed for int8 x (x's arrays e.xs[4:], _quantize_x): all PR rows of the group
    in one 16-lane vector; per block of 32 values and row of x, 16 pmaddubsw into int16 sums
    (4-bit codes: two sums of 8 pairs, at most 8 * 2 * 15 * 127 = 30480; 5-bit codes: four of
    4 pairs, 31496; Q6_K's 6-bit codes: eight of 2 pairs, 32004), widened to int32 and added
    (Q6_K: a sum per scale of 16 values), the code offset taken off once (offset * the x sum
    of the scale's values), then one FMA per scale with d_w * d_x. Every tile (nx rows of
    x) does each row's sums in this order, so a row's result does not depend on nx."""
    b = e.b
    L = PR
    qk = block_size(qtype)[0]
    hb, offset, has_min, hdr, bb = _PACKED[qtype]
    ub = _unit_bytes(qtype)
    v16, vi32 = _vec(_f32, L), _vec(_i32, L)
    zero = ir.Constant(v16, [0.0] * L)
    acc = [cgutils.alloca_once_value(b, zero) for _ in range(nx)]
    macc = [cgutils.alloca_once_value(b, zero) for _ in range(nx)]
    xq, xd, xm, xh = e.xs[4:]
    xrows = [b.udiv(b.add(k, b.mul(K, e.c(r))), e.c(32)) for r in range(nx)]  # in 32-value blocks
    w = b.inttoptr(a, _i8.as_pointer())

    def ld(off, t):
        return b.load(b.bitcast(b.gep(w, [off]), t.as_pointer()), align=1)

    def f16v(off):
        return b.fpext(ld(off, _vec(ir.HalfType(), L)), v16)

    def u8v(off, signed=False):
        return (b.sitofp if signed else b.uitofp)(ld(off, _vec(_i8, L)), v16)

    def xpair(xb, p):
        """x's int8 codes of values 2p, 2p + 1 of block xb, in every 16-bit lane."""
        v = b.load(b.bitcast(b.gep(xq, [b.add(b.mul(xb, e.c(32)), e.c(2 * p))]), _i16.as_pointer()), align=1)
        return b.bitcast(e.splat(v, L), _vec(_i8, 2 * L))

    def block(p, xblock, head):
        mv = None
        if qk == 32:
            scales = [f16v(p)]
            if has_min:
                mv = f16v(b.add(p, e.c(32)))
        elif qtype == Q6_K:  # a scale per 16 values: the low nibbles' pairs 0..7, the high 8..15
            scales = [b.fmul(head[0], u8v(b.add(p, e.c(16 * h)), True)) for h in range(2)]
        else:
            d, dmin = head
            scales, mv = [b.fmul(d, u8v(p))], b.fneg(b.fmul(dmin, u8v(b.add(p, e.c(16)))))
        codes = b.add(p, e.c(64 if qk == 32 and has_min else 32))
        xbs = [b.add(xrows[r], xblock) for r in range(nx)]
        tot = [[None] * len(scales) for _ in range(nx)]
        step = 2 * hb or 1
        for h in range(step):  # 5- and 6-bit codes: chunks h, h + step, ... (their high bits' chunk h)
            top = ld(b.add(codes, e.c(256 + 32 * h)), _vec(_i8, 32)) if hb else None
            s16 = [[None, None] for _ in range(nx)]  # low and high nibbles' pairs
            for c in range(h, 8, step):
                v = ld(b.add(codes, e.c(32 * c)), _vec(_i8, 32))
                for lh, q, pair in ((0, c, b.and_(v, e.cv(15))), (1, c + 8, b.lshr(v, e.cv(4)))):
                    if hb:  # pair q's high bits: top chunk q % step, at bit hb (q // step)
                        bits = b.and_(b.lshr(top, e.cv(hb * (q // step))), e.cv((1 << hb) - 1))
                        pair = b.or_(pair, b.shl(bits, e.cv(4)))
                    for r in range(nx):
                        m = _maddubs(b, pair, xpair(xbs[r], q))
                        s16[r][lh] = m if s16[r][lh] is None else b.add(s16[r][lh], m)
            for r in range(nx):
                for lh, s in enumerate(s16[r]):
                    s, sc = b.sext(s, vi32), lh if len(scales) == 2 else 0
                    tot[r][sc] = s if tot[r][sc] is None else b.add(tot[r][sc], s)
        for r in range(nx):
            x16 = b.mul(xbs[r], e.c(2))  # the block's x sums of 16 values, in xh
            dx = e.splat(e.load(xd, xbs[r], _f32, align=4), L)
            for sc, sv in enumerate(scales):
                t = tot[r][sc]
                if offset:  # sum (q - offset) x = sum q x - offset sum x
                    if len(scales) == 2:
                        xsum = e.load(xh, b.add(x16, e.c(sc)), _i32, align=4)
                    else:
                        xsum = b.add(e.load(xh, x16, _i32, align=4), e.load(xh, b.add(x16, e.c(1)), _i32, align=4))
                    t = b.sub(t, e.splat(b.mul(xsum, ir.Constant(_i32, offset)), L))
                b.store(e.fma(b.sitofp(t, v16), b.fmul(sv, dx), b.load(acc[r])), acc[r])
            if mv is not None:  # the min times the rounded x's block sum (dx * sum xq)
                xs = e.splat(e.load(xm, xbs[r], _f32, align=4), L)
                b.store(e.fma(mv, xs, b.load(macc[r])), macc[r])

    if qk == 32:
        with cgutils.for_range(b, nb) as loop:
            block(b.mul(loop.index, e.c(ub)), loop.index, None)
    else:
        units = b.udiv(nb, e.c(qk // 32))
        with cgutils.for_range(b, units) as loop:
            u = loop.index
            base = b.mul(u, e.c(ub))
            head = (f16v(base),) if qtype == Q6_K else (f16v(base), f16v(b.add(base, e.c(32))))
            with cgutils.for_range(b, e.c(8)) as inner:
                j = inner.index
                block(b.add(base, b.add(e.c(hdr), b.mul(j, e.c(bb)))), b.add(b.mul(u, e.c(8)), j), head)
    _store_rows(e, acc, macc, dest, stride, valid, L, 0)


def _packed_tile(nx):
    """An intrinsic (qtype, a, xs, k, K, nb, out, o, stride, valid): _emit_packed for each
    type of _PACKED, results to out[o + r * stride + i], i < valid."""

    @intrinsic
    def tile(typingctx, qtype, a, xs, k, K, nb, out, o, stride, valid):
        def codegen(context, builder, sig, args):
            e = _Emit.__new__(_Emit)
            e.b = builder
            e.xs = [context.make_array(t)(context, builder, builder.extract_value(args[2], i)).data
                    for i, t in enumerate(sig.args[2])]
            k_, K_, nb_, o_, stride_, valid_ = args[3], args[4], args[5], args[7], args[8], args[9]
            dest = builder.gep(context.make_array(sig.args[6])(context, builder, args[6]).data, [o_])
            done = builder.append_basic_block("ptile.done")
            switch = builder.switch(args[0], done)
            for t in _PACKED:
                bb = builder.append_basic_block(f"ptile.{t}")
                switch.add_case(ir.Constant(args[0].type, t), bb)
                builder.position_at_end(bb)
                L = 8 if nx > 1 and t not in _WIDE_ONLY and not _AVX512 else 16
                for part in range(PR // L):
                    _emit_packed(e, t, nx, args[1], k_, K_, nb_, dest, stride_, valid_, L, part)
                builder.branch(done)
            for t in _X8_TYPES:
                bb = builder.append_basic_block(f"ptile8.{t}")
                switch.add_case(ir.Constant(args[0].type, X8 + t), bb)
                builder.position_at_end(bb)
                _emit_packed8(e, t, nx, args[1], k_, K_, nb_, dest, stride_, valid_)
                builder.branch(done)
            builder.position_at_end(done)
            return context.get_dummy_value()

        return types.none(qtype, a, xs, k, K, nb, out, o, stride, valid), codegen

    return tile


_ptile_x, _ptile_x2, _ptile_1 = _packed_tile(PRX), _packed_tile(PRX2), _packed_tile(1)


SERIAL_X = 1 << 14  # values of x, at most, that matmul rounds on the calling thread alone
MC = 16  # rows of W per work item, at least
assert MC % PR == 0  # work items start at multiples of MC rows: whole packed groups
NC = 64  # rows of x per pass over a work item's rows of W (their int16 codes stay in L2)
CHUNK_MACS = 1 << 18  # multiply-adds per work item, at least (an atomic add per item)
MIN_ITEMS = 8  # work items per matmul, at least, where M allows
WORKERS = 64  # loops over the work queue per matmul: at least the threads there may be


@intrinsic
def _fetch_add(typingctx, counter):
    """counter[0] += 1, atomically; returns the value before (a work queue's next item)."""
    def codegen(context, builder, sig, args):
        ary = context.make_array(sig.args[0])(context, builder, args[0])
        return builder.atomic_rmw("add", ary.data, ir.Constant(ir.IntType(64), 1), "monotonic")

    return types.int64(counter), codegen


@njit(parallel=True, **JIT)
def matmul(w, segs, x, out, full):
    """out = x (N, K) @ dequantize(W_s).T for each segment s, fused: no float copy of W, for
    any N (decode and prefill alike). The weights W_s of one x (a layer's Q, K and V, or its
    gate and up) go in one call: one thread-team start and one rounding of x, not one each.

    w: flat uint8, the bytes all segments lie in; segs (S, 4) int64 rows (ggml type, byte
    offset of W_s's first row in w, bytes per row, M_s); out: flat float32, segment s's
    (N, M_s) result C-contiguous at N * (M_0 + ... + M_{s-1}). The types of INT_TYPE_IDS
    multiply x rounded to int16 with a scale per 256 values; row n of a result depends on row n of x alone,
    bit for bit, and not on the other segments of the call.

    Work items (a run of rows of one W_s, at least MC and CHUNK_MACS multiply-adds) go to the
    threads from a shared counter, not in equal shares fixed up front: a thread that the OS
    deschedules (another process busy on its core) holds up the others only for the item it
    is in, not for its whole share. Which thread computes an item does not change its bits."""
    N, K = x.shape
    xf = x.reshape(-1)
    w16 = w[:len(w) // 2 * 2].view(np.uint16)  # F16 weights (their offsets are even)
    nb = U(K // 32)
    quantized_x, quantized_x8 = False, False
    for s in range(segs.shape[0]):
        t = segs[s, 0]
        quantized_x = quantized_x or t in _INT_TYPES or PACK <= t < PACK + X8
        quantized_x8 = quantized_x8 or t >= PACK + X8
    nq, nq8 = len(xf) if quantized_x else 0, len(xf) if quantized_x8 else 0
    xq, xd, xm = np.empty(nq, np.int16), np.empty(nq // 32, F), np.empty(nq // 32, F)
    xh = np.empty(nq // 16, np.int32)
    xq8, xd8, xm8 = np.empty(nq8, np.int8), np.empty(nq8 // 32, F), np.empty(nq8 // 32, F)
    xh8 = np.empty(nq8 // 16, np.int32)
    xs = (xq, xd, xm, xh, xq8, xd8, xm8, xh8)
    if (quantized_x or quantized_x8) and N * K > SERIAL_X:
        for n in prange(N):
            _quantize_x_row(xf, n, K, xs, quantized_x, quantized_x8)
    elif quantized_x or quantized_x8:  # a few rows (decode): a thread-team start costs more than rounding them
        for n in range(N):
            _quantize_x_row(xf, n, K, xs, quantized_x, quantized_x8)
    seg_rows = np.empty(segs.shape[0], np.int64)  # rows of W per work item, per segment
    items = 0
    for s in range(segs.shape[0]):
        M = segs[s, 3]
        rows = max(MC, (CHUNK_MACS // max(1, K * N) + MC - 1) // MC * MC)
        seg_rows[s] = rows = min(rows, max(MC, (M // MIN_ITEMS + MC - 1) // MC * MC))
        items += (M + rows - 1) // rows
    item_seg, item_m0, item_m1 = np.empty(items, np.int64), np.empty(items, np.int64), np.empty(items, np.int64)
    first = np.empty(segs.shape[0], np.int64)  # flat offset of each segment's result
    c, col = 0, 0
    for s in range(segs.shape[0]):
        M, rows = segs[s, 3], seg_rows[s]
        for m0 in range(0, M, rows):
            item_seg[c], item_m0[c], item_m1[c] = s, m0, min(M, m0 + rows)
            c += 1
        first[s] = N * col
        col += M
    counter = np.zeros(1, np.int64)
    # Any number of workers >= the threads will do (numba splits them evenly; each drains the
    # queue, and those that come late find it empty): so no call for the thread count, whose
    # function pointer would keep numba from caching this kernel.
    for _t in prange(min(items, WORKERS)):
        c = _fetch_add(counter)
        while c < items:
            s, m0, m1 = item_seg[c], item_m0[c], item_m1[c]
            c = _fetch_add(counter)
            qtype, rb, M, o0 = segs[s, 0], U(segs[s, 2]), segs[s, 3], first[s]
            w0 = U(segs[s, 1])
            if qtype >= PACK:  # w0: the packed copy's address; rb: bytes per group of PR rows (X8: int8 x)
                for n0 in range(0, N, NC):
                    n1 = min(N, n0 + NC)
                    nt = n0 + (n1 - n0) // PRX * PRX
                    nt2 = nt + (n1 - nt) // PRX2 * PRX2
                    for m in range(m0, m1, PR):
                        a, valid = w0 + U(m // PR) * rb, U(min(PR, m1 - m))
                        for i in range(n0, nt, PRX):
                            _ptile_x(qtype - PACK, a, xs, U(i) * U(K), U(K), nb, out, U(o0 + i * M + m), U(M), valid)
                        for i in range(nt, nt2, PRX2):
                            _ptile_x2(qtype - PACK, a, xs, U(i) * U(K), U(K), nb, out, U(o0 + i * M + m), U(M), valid)
                        for i in range(nt2, n1):
                            _ptile_1(qtype - PACK, a, xs, U(i) * U(K), U(K), nb, out, U(o0 + i * M + m), U(M), valid)
                continue
            if qtype == F16:
                for m in range(m0, m1):
                    for i in range(N):
                        out[o0 + i * M + m] = _dot_f16(w16, (w0 + U(m) * rb) // U(2), xf, U(i) * U(K), U(K))
                continue
            for n0 in range(0, N, NC):
                n1 = min(N, n0 + NC)
                nt = n0 + (n1 - n0) // RX * RX  # rows of x in whole RX x RW tiles
                if nt > n0:
                    for m in range(m0, m1, RW):
                        o = w0 + U(m) * rb
                        ws = rb if m + 1 < m1 else U(0)  # a last row alone: computed twice, kept once
                        for i in range(n0, nt, RX):
                            t = _tile_xw(qtype, w, o, ws, xs, U(i) * U(K), U(K), nb)
                            for r in range(RX):
                                for j in range(min(RW, m1 - m)):
                                    out[o0 + (i + r) * M + m + j] = t[r * RW + j]
                for i in range(nt, n1):  # the rows of x left (decode: the only one)
                    m = m0
                    while m + R1 <= m1 and qtype in _R1_TYPES and K <= R1_MAX_K:  # R1 rows of W at a time
                        t1 = _tile_1w(qtype, w, w0 + U(m) * rb, rb, xs, U(i) * U(K), U(K), nb)
                        for j in range(R1):
                            out[o0 + i * M + m + j] = t1[j]
                        m += R1
                    while m < m1:
                        t2 = _tile_11(qtype, w, w0 + U(m) * rb, U(0), xs, U(i) * U(K), U(K), nb)
                        out[o0 + i * M + m] = t2[0]
                        m += 1


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


# -- elementwise: gated activations and the attention softmax ----------------------------------
# Numpy's versions take a pass per operation; these take one, vectorized, on the calling
# thread. Not parallel: between two BLAS calls a numba thread team and OpenBLAS's threads
# fight over the cores (a 512-token SmolLM2 attention: 152 ms with a parallel softmax, 95 ms
# with this one). Their numpy twins are in elementwise.py.

@intrinsic
def _as_f32(typingctx, bits):
    """The float32 whose bits are the int32 `bits`."""
    if not isinstance(bits, types.Integer) or bits.bitwidth != 32:
        return None

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(bits), codegen


@njit(fastmath=FM, inline="always", **JIT)
def _exp(x):
    """e ** x in float32 (Cephes' expf polynomial, ~1 ulp), 0 below -87.3; plain arithmetic
    and selects (no min/max calls), so the loops around it vectorize."""
    xc = x if x > F(-87.3) else F(-87.3)
    xc = xc if xc < F(88.0) else F(88.0)
    n = np.floor(xc * F(1.44269504089) + F(0.5))
    r = (xc - n * F(0.693359375)) + n * F(2.12194440e-4)  # x - n ln 2, ln 2 in two parts
    p = F(1.9875691500e-4)
    p = p * r + F(1.3981999507e-3)
    p = p * r + F(8.3334519073e-3)
    p = p * r + F(4.1665795894e-2)
    p = p * r + F(1.6666665459e-1)
    p = p * r + F(5.0000001201e-1)
    y = (p * r * r + r + F(1)) * _as_f32(np.int32((np.int32(n) + np.int32(127)) << np.int32(23)))
    return F(0) if x < F(-87.3) else y


# error_model="numpy": no zero-divisor check on `/`, whose exception branch stops vectorizing
@njit(fastmath=FM, error_model="numpy", **JIT)
def glu(gate, up, gelu):
    """gate (N, F) := act(gate) * up, in place; act is GELU (tanh form) if gelu, else SiLU.
    Both are g * sigmoid(z): z = g for SiLU, 2 sqrt(2 / pi) (g + 0.044715 g^3) for GELU."""
    g_flat, u_flat = gate.reshape(-1), up.reshape(-1)
    n = len(g_flat)
    chunk = 4096
    for c in range((n + chunk - 1) // chunk):
        for j in range(U(c * chunk), U(min(n, (c + 1) * chunk))):  # unsigned: no wraparound select
            g = g_flat[j]
            z = F(1.5957691216) * (g + F(0.044715) * g * g * g) if gelu else g
            g_flat[j] = g / (F(1) + _exp(-z)) * u_flat[j]


@njit(fastmath=FM, error_model="numpy", **JIT)
def causal_softmax(s, L, offset, scale, window):
    """s (R, T) attention scores := softmax(scale * s) per row, in place. Row r is the query at
    position offset + r % L; it sees keys j <= that position (and, if window > 0, within
    `window` of it); the others become 0."""
    R, T = s.shape
    flat = s.reshape(-1)
    for r in range(R):
        p = offset + r % L
        lo = U(max(0, p - window + 1) if window > 0 else 0)  # unsigned: no wraparound select
        hi = U(min(T, p + 1))
        o = U(r) * U(T)
        m = F(-np.inf)
        for j in range(o + lo, o + hi):
            m = flat[j] if flat[j] > m else m
        tot = F(0)
        for j in range(o + lo, o + hi):
            e = _exp((flat[j] - m) * F(scale))
            flat[j] = e
            tot += e
        inv = F(1) / tot
        for j in range(o + lo, o + hi):
            flat[j] *= inv
        for j in range(o, o + lo):
            flat[j] = F(0)
        for j in range(o + hi, o + U(T)):
            flat[j] = F(0)


@njit(fastmath=FM, error_model="numpy", **JIT)
def rms_norm(x, w, eps, out):
    """out (R, D) = x / sqrt(mean(x ** 2) + eps) * w, row by row."""
    R, D = x.shape
    xf, of = x.reshape(-1), out.reshape(-1)
    for r in range(R):
        o = U(r) * U(D)
        ss = F(0)
        for j in range(o, o + U(D)):
            ss += xf[j] * xf[j]
        inv = F(1) / np.sqrt(ss / F(D) + F(eps))
        for j in range(U(D)):
            of[o + j] = xf[o + j] * inv * w[j]


@njit(fastmath=FM, error_model="numpy", **JIT)
def rope(x, cos, sin, neox, out):
    """out (L, H, hd) = x rotated: position l by cos[l], sin[l] (L, n) over its first 2n dims,
    pairs (i, i + n) if neox, else (2i, 2i + 1); dims past 2n copied."""
    L, H, hd = x.shape
    n = cos.shape[1]
    xf, of, cf, sf = x.reshape(-1), out.reshape(-1), cos.reshape(-1), sin.reshape(-1)
    for l in range(L):
        t = U(l) * U(n)
        for h in range(H):
            o = (U(l) * U(H) + U(h)) * U(hd)
            for i in range(U(2 * n), U(hd)):
                of[o + i] = xf[o + i]
            if neox:
                for i in range(U(n)):
                    a, b, c, s = xf[o + i], xf[o + U(n) + i], cf[t + i], sf[t + i]
                    of[o + i] = a * c - b * s
                    of[o + U(n) + i] = a * s + b * c
            else:
                for i in range(U(n)):
                    a, b, c, s = xf[o + U(2) * i], xf[o + U(2) * i + U(1)], cf[t + i], sf[t + i]
                    of[o + U(2) * i] = a * c - b * s
                    of[o + U(2) * i + U(1)] = a * s + b * c


@njit(parallel=True, error_model="numpy", **JIT)
def attend(q, kb, vb, offset, window, scale, out):
    """Causal attention of L new positions: q (L, H, hd) at positions
    offset..offset+L-1; kb, vb (Hkv, cap, hd) KV storage holding them and every earlier one,
    float32 or float16 as its uint16 bits (a KV cache's storage; each element goes to float32
    exactly, in the dot products: `_kv_f32`);
    out (L, H, hd) = softmax(scale q k^T) v over the keys j <= p (and p - j < window if
    window > 0). Query head h reads KV head h // (H / Hkv).

    Where hd is a multiple of the tiles' vector width AL (every model the engine runs): work
    items are tiles (`_attend_tile`) of up to ART rows of one KV head, its G query heads of
    one query, then the next query's (row l G + gh), so the rows of a tile share each load of
    a key and value; a row's arithmetic is fixed whatever shares its tile, so a position's
    output does not depend on how the prompt was split (decode is L = 1). Tiles go to the
    threads in the order 0, n-1, 1, n-2, ... (`_zigzag`), so numba's even split of the range
    gives each thread the same mix of short and long rows of the causal triangle. Else each
    (head, query) alone by `_attend_query`, head-major. No BLAS: in decode, OpenBLAS's
    threads and the numba kernels' fought over the cores (SmolLM2 at 3,000 tokens of
    context: 9.7 tok/s)."""
    L, H, hd = q.shape
    Hkv, cap, _ = kb.shape
    G = H // Hkv
    qf, kf, vf, of = q.reshape(-1), kb.reshape(-1), vb.reshape(-1), out.reshape(-1)
    tiles = hd % AL == 0
    for t in prange(_work_items(L, H, Hkv, tiles)):
        _attend_item(t, tiles, qf, kf, vf, of, 0, L, offset, cap, H, G, hd, window, scale)


@njit(fastmath=FM, error_model="numpy", **JIT)
def _attend_query(qf, qo, kf, vf, base, n, hd, scale, of, pv4):
    """One query of `attend` and `attend_many` (the same machine code for both, so a row's
    output does not depend on which kernel ran it): of[qo:qo + hd] = softmax(scale q k_j^T)
    summed over v_j, for the n keys and values stored from flat offset `base`, hd apart
    (kf, vf as attend's kb, vb, flat); q = qf[qo:qo + hd].

    Four keys at a time (the tail one by one): four dot products share each load of q, and
    with `pv4` four rows of V share each load and store of the output; 1.2-1.5x faster than
    one key at a time (benchmarks/attention.py: SmolLM2 decode at 2,900 positions, Gemma 3
    prefill of 512, a Llama-3 shape at 1,000). Without grouped-query attention (`pv4` false:
    each KV head read by one query head, LLaMA-7B) four V rows at a time ran 1.4-1.7x slower
    once the KV cache outgrew the caches (32 heads at 1,000-3,000 positions), so V goes one
    row at a time there. Which keys go together depends only on the query's own key count n
    and the model's heads, so every path still gives a query the same bits."""
    s = np.empty(n, F)
    j = 0
    while j + 4 <= n:
        k0 = base + U(j) * U(hd)
        k1, k2, k3 = k0 + U(hd), k0 + U(2) * U(hd), k0 + U(3) * U(hd)
        a0 = a1 = a2 = a3 = F(0)
        for d in range(U(hd)):
            qd = qf[qo + d]
            a0 += qd * _kv_f32(kf[k0 + d])
            a1 += qd * _kv_f32(kf[k1 + d])
            a2 += qd * _kv_f32(kf[k2 + d])
            a3 += qd * _kv_f32(kf[k3 + d])
        s[j], s[j + 1], s[j + 2], s[j + 3] = a0 * F(scale), a1 * F(scale), a2 * F(scale), a3 * F(scale)
        j += 4
    while j < n:
        k0 = base + U(j) * U(hd)
        a0 = F(0)
        for d in range(U(hd)):
            a0 += qf[qo + d] * _kv_f32(kf[k0 + d])
        s[j] = a0 * F(scale)
        j += 1
    m = F(-np.inf)
    for j in range(n):
        m = s[j] if s[j] > m else m
    tot = F(0)
    for j in range(n):
        e = _exp(s[j] - m)
        s[j] = e
        tot += e
    inv = F(1) / tot
    for d in range(U(hd)):
        of[qo + d] = F(0)
    j = 0
    while pv4 and j + 4 <= n:
        p0, p1, p2, p3 = s[j] * inv, s[j + 1] * inv, s[j + 2] * inv, s[j + 3] * inv
        v0 = base + U(j) * U(hd)
        v1, v2, v3 = v0 + U(hd), v0 + U(2) * U(hd), v0 + U(3) * U(hd)
        for d in range(U(hd)):
            of[qo + d] += (((p0 * _kv_f32(vf[v0 + d]) + p1 * _kv_f32(vf[v1 + d])) + p2 * _kv_f32(vf[v2 + d]))
                           + p3 * _kv_f32(vf[v3 + d]))
        j += 4
    while j < n:
        pj = s[j] * inv
        v0 = base + U(j) * U(hd)
        for d in range(U(hd)):
            of[qo + d] += pj * _kv_f32(vf[v0 + d])
        j += 1


@intrinsic
def _kv_f32(typingctx, x):
    """A KV storage element as float32: uint16 is a float16's bits (converted exactly, as
    _half_to_f32: vcvtph2ps, 8 or 16 per instruction), float32 is itself. (Defined after
    `attend`, which resolves it when it compiles.)"""
    if isinstance(x, types.Integer) and x.bitwidth == 16 and not x.signed:
        def codegen(context, builder, sig, args):
            return builder.fpext(builder.bitcast(args[0], ir.HalfType()), ir.FloatType())
    elif x == types.float32:
        def codegen(context, builder, sig, args):
            return args[0]
    else:
        return None
    return types.float32(x), codegen


@intrinsic
def _ptr_like(typingctx, addr, proto):
    """The integer address `addr` as a pointer to elements of proto's dtype (for carray)."""
    if not isinstance(addr, types.Integer) or not isinstance(proto, types.Array):
        return None
    ptr = types.CPointer(proto.dtype)

    def codegen(context, builder, sig, args):
        return builder.inttoptr(args[0], context.get_value_type(ptr))

    return ptr(addr, proto), codegen


# -- attention tiles: a few query rows against the same keys, in LLVM vector IR -----------------
# A tile is up to ART query rows (the G query heads of one KV head, over one or more queries of a
# sequence) that read the same keys and values: each key row (and value row) is loaded and
# converted to float32 once for all of them, instead of once per query head and query. Every
# row's arithmetic is fixed by the IR, whatever else shares its tile:
# - score (row, key j) = hsum(acc) * scale, acc = fma(q_c, k_jc, acc) over the chunks c of AL
#   values in order from acc = 0 (llvm.fma: one rounding), hsum the halving tree (lanes i and
#   i + w/2 added, w = AL, AL/2, ... 2);
# - out[row] = sum over its keys j in ascending order of p_j v_j, one FMA per key per lane, the
#   accumulator kept in float32 (in registers, or in `out` between calls).
# No fastmath flags reach these instructions (the functions that call them carry none), so LLVM
# cannot reorder them. So a row gives the same bits alone, in a decode step, in a prefill tile
# of four queries or in a batched step (tests/test_kernels.py, tests/test_batch_invariance.py).
AL = 16 if _AVX512 else 8  # float32 lanes of a tile's vectors (AVX-512: 32 registers of 16)
ART = 4  # query rows per tile
AKB = 4 if _AVX512 else 2  # keys per score tile: ART * AKB accumulators, AKB key vectors and a
# query's in registers (AVX-512: 16 + 4 + 1 of 32; AVX2: 8 + 2 + 1 of 16)
APV = AKB  # chunks of AL values of each row's output held in registers per pass over V
# (Eight rows a tile, two keys at a time, was no faster: 1.06x the time of a 17-row verify in
# benchmarks/attention.py, the same in the rewrite benchmark.)


def _kv_vec(b, base, off, half):
    """AL elements of a KV storage (i16* float16 bits, or float*) from element off, as float32."""
    t = ir.HalfType() if half else _f32
    v = b.load(b.bitcast(b.gep(base, [off]), _vec(t, AL).as_pointer()), align=2 if half else 4)
    return b.fpext(v, _vec(_f32, AL)) if half else v


def _f32_vec(b, base, off):
    return b.load(b.bitcast(b.gep(base, [off]), _vec(_f32, AL).as_pointer()), align=4)


def _hsums(b, vs):
    """The lane sums of the <AL x float> vectors vs, each by the halving tree (lanes i and
    i + w/2 added, w = AL, AL/2, ..., 2), several vectors' steps sharing each vector add: a
    list of float32 values, in vs's order."""
    groups = [[i] for i in range(len(vs))]  # the accumulators each vector holds, segment by segment
    w = AL
    while w > 1:
        h = w // 2
        nv, ng = [], []
        for a in range(0, len(vs), 2):
            x = vs[a]
            y = vs[a + 1] if a + 1 < len(vs) else vs[a]
            gy = groups[a + 1] if a + 1 < len(vs) else []
            segs = [(0, s) for s in range(len(groups[a]))] + [(1, s) for s in range(len(gy))]
            lo = [src * AL + s * w + i for src, s in segs for i in range(h)]
            hi = [src * AL + s * w + h + i for src, s in segs for i in range(h)]
            n = len(lo)
            lo += [0] * (AL - n) if n < AL else []
            hi += [0] * (AL - n) if n < AL else []
            idx = lambda ix: ir.Constant(_vec(_i32, len(ix)), ix)
            nv.append(b.fadd(b.shuffle_vector(x, y, idx(lo)), b.shuffle_vector(x, y, idx(hi))))
            ng.append(groups[a] + gy)
        vs, groups, w = nv, ng, h
    out = {}
    for v, g in zip(vs, groups):
        for s, acc in enumerate(g):
            out[acc] = b.extract_element(v, ir.Constant(_i32, s))
    return [out[i] for i in range(len(out))]


def _args(context, b, sig, args):
    """An intrinsic's arguments as IR values: an array as its data pointer, the rest as they are."""
    return [context.make_array(t)(context, b, v).data if isinstance(t, types.Array) else v
            for t, v in zip(sig.args, args)]


def _c64(v):
    return ir.Constant(_i64, v)


_ZERO = ir.Constant(_vec(_f32, AL), [0.0] * AL)


def _rows_switch(b, R, emit):
    """emit(nr) for the run-time row count R (an i64, 1..ART), one case each."""
    done = b.append_basic_block("rows.done")
    sw = b.switch(R, done)
    for nr in range(1, ART + 1):
        bb = b.append_basic_block(f"rows.{nr}")
        sw.add_case(ir.Constant(R.type, nr), bb)
        b.position_at_end(bb)
        emit(nr)
        b.branch(done)
    b.position_at_end(done)


def _qk_tile(nk):
    """An intrinsic (R, qf, qo, kf, kpos, hd, scale, s, so, ss, nblk): s[so + r ss + j] = scale *
    dot(qf[qo[r]:+hd], key j) for the R (1..ART) rows r and the nblk * nk keys j at
    kf[kpos + j hd:+hd], nk keys at a time (hd a multiple of AL; kf float32, or uint16:
    float16 bits). Offsets uint64."""

    @intrinsic
    def qk(typingctx, R, qf, qo, kf, kpos, hd, scale, s, so, ss, nblk):
        half = kf.dtype == types.uint16

        def codegen(context, b, sig, args):
            R_, qd, qod, kd, kpos_, hd_, scale_, sd, so_, ss_, nblk_ = _args(context, b, sig, args)
            c, zero = _c64, _ZERO
            e = _Emit.__new__(_Emit)  # its fma only
            e.b = b

            def rows(nr):
                qos = [b.load(b.gep(qod, [c(r)])) for r in range(nr)]
                acc = [[cgutils.alloca_once_value(b, zero) for _ in range(nk)] for _ in range(nr)]
                with cgutils.for_range(b, nblk_) as blk:
                    j0 = b.mul(blk.index, c(nk))
                    kos = [b.add(kpos_, b.mul(b.add(j0, c(k)), hd_)) for k in range(nk)]
                    for r in range(nr):
                        for k in range(nk):
                            b.store(zero, acc[r][k])
                    with cgutils.for_range(b, b.udiv(hd_, c(AL))) as loop:
                        d = b.mul(loop.index, c(AL))
                        kv = [_kv_vec(b, kd, b.add(ko, d), half) for ko in kos]
                        for r in range(nr):
                            qv = _f32_vec(b, qd, b.add(qos[r], d))
                            for k in range(nk):
                                b.store(e.fma(qv, kv[k], b.load(acc[r][k])), acc[r][k])
                    sums = _hsums(b, [b.load(acc[r][k]) for r in range(nr) for k in range(nk)])
                    for r in range(nr):
                        for k in range(nk):
                            at = b.add(b.add(so_, b.mul(c(r), ss_)), b.add(j0, c(k)))
                            b.store(b.fmul(sums[r * nk + k], scale_), b.gep(sd, [at]))

            _rows_switch(b, R_, rows)
            return context.get_dummy_value()

        return types.void(R, qf, qo, kf, kpos, hd, scale, s, so, ss, nblk), codegen

    return qk


def _pv_tile():
    """An intrinsic (R, vf, vpos, n, hd, p, po, ps, of, oo): for the R (1..ART) rows r, of[oo[r] + d] +=
    p[po + r ps + j] * vf[vpos + j hd + d] for the n keys j in ascending order, one FMA each,
    for every d < hd (a multiple of AL). Offsets uint64."""

    @intrinsic
    def pv(typingctx, R, vf, vpos, n, hd, p, po, ps, of, oo):
        half = vf.dtype == types.uint16

        def codegen(context, b, sig, args):
            R_, vd, vpos_, n_, hd_, pd, po_, ps_, od, ood = _args(context, b, sig, args)
            c, zero = _c64, _ZERO
            e = _Emit.__new__(_Emit)  # its splat and fma only
            e.b = b

            def rows(nr):
                oos = [b.load(b.gep(ood, [c(r)])) for r in range(nr)]
                pos = [b.add(po_, b.mul(c(r), ps_)) for r in range(nr)]
                acc = [[cgutils.alloca_once_value(b, zero) for _ in range(APV)] for _ in range(nr)]
                nch = b.udiv(hd_, c(AL))
                full = b.udiv(nch, c(APV))

                def chunks(count, width, first):
                    with cgutils.for_range(b, count) as g:
                        d0 = b.mul(b.add(first, b.mul(g.index, c(width))), c(AL))
                        outs = [[b.gep(od, [b.add(oos[r], b.add(d0, c(i * AL)))]) for i in range(width)] for r in range(nr)]
                        for r in range(nr):
                            for i in range(width):
                                b.store(b.load(b.bitcast(outs[r][i], _vec(_f32, AL).as_pointer()), align=4), acc[r][i])
                        with cgutils.for_range(b, n_) as jl:
                            j = jl.index
                            row = b.add(b.add(vpos_, b.mul(j, hd_)), d0)
                            vv = [_kv_vec(b, vd, b.add(row, c(i * AL)), half) for i in range(width)]
                            for r in range(nr):
                                pr = e.splat(b.load(b.gep(pd, [b.add(pos[r], j)])), AL)
                                for i in range(width):
                                    b.store(e.fma(pr, vv[i], b.load(acc[r][i])), acc[r][i])
                        for r in range(nr):
                            for i in range(width):
                                b.store(b.load(acc[r][i]), b.bitcast(outs[r][i], _vec(_f32, AL).as_pointer()), align=4)

                chunks(full, APV, c(0))
                chunks(b.sub(nch, b.mul(full, c(APV))), 1, b.mul(full, c(APV)))

            _rows_switch(b, R_, rows)
            return context.get_dummy_value()

        return types.void(R, vf, vpos, n, hd, p, po, ps, of, oo), codegen

    return pv


_qk_wide, _qk_one, _pv_rows = _qk_tile(AKB), _qk_tile(1), _pv_tile()  # scores AKB keys at a time, or one


@njit(fastmath=FM, error_model="numpy", **JIT)
def _softmax_row(s, o, n):
    """s[o:o + n] := softmax(s[o:o + n]), the scores already scaled."""
    m = F(-np.inf)
    for j in range(o, o + U(n)):
        m = s[j] if s[j] > m else m
    tot = F(0)
    for j in range(o, o + U(n)):
        e = _exp(s[j] - m)
        s[j] = e
        tot += e
    inv = F(1) / tot
    for j in range(o, o + U(n)):
        s[j] *= inv


@njit(error_model="numpy", **JIT)
def _attend_tile(qf, qo, lo, hi, R, kf, vf, kvbase, hd, scale, of):
    """R (1..ART) query rows of one KV head: row r's query is qf[qo[r]:+hd], it sees the keys
    lo[r] <= j < hi[r] stored at kf[kvbase + j hd:+hd] (values likewise in vf), and its output
    goes to of[qo[r]:+hd] (q's layout). Scores of the rows' union of keys in one buffer; each
    row's softmax over its own keys; values: each row's keys below the shared range alone, the
    shared range for all rows at once, each row's keys above it alone (ascending for every
    row, so the same sums as alone)."""
    jl, jh, lmax, hmin = lo[0], hi[0], lo[0], hi[0]
    for r in range(1, R):
        jl, jh = min(jl, lo[r]), max(jh, hi[r])
        lmax, hmin = max(lmax, lo[r]), min(hmin, hi[r])
    ss = U(jh - jl)
    s = np.empty(R * (jh - jl), F)
    hdu, sc = U(hd), F(scale)
    nw = (jh - jl) // AKB
    _qk_wide(R, qf, qo, kf, kvbase + U(jl) * hdu, hdu, sc, s, U(0), ss, U(nw))
    j = jl + nw * AKB
    _qk_one(R, qf, qo, kf, kvbase + U(j) * hdu, hdu, sc, s, U(j - jl), ss, U(jh - j))
    for r in range(R):
        _softmax_row(s, U(r) * ss + U(lo[r] - jl), hi[r] - lo[r])
        for d in range(hdu):
            of[qo[r] + d] = F(0)
    if lmax < hmin:
        for r in range(R):
            if lo[r] < lmax:
                _pv_rows(1, vf, kvbase + U(lo[r]) * hdu, U(lmax - lo[r]), hdu, s, U(r) * ss + U(lo[r] - jl), ss, of, qo[r:])
        _pv_rows(R, vf, kvbase + U(lmax) * hdu, U(hmin - lmax), hdu, s, U(lmax - jl), ss, of, qo)
        for r in range(R):
            if hmin < hi[r]:
                _pv_rows(1, vf, kvbase + U(hmin) * hdu, U(hi[r] - hmin), hdu, s, U(r) * ss + U(hmin - jl), ss, of, qo[r:])
    else:
        for r in range(R):
            _pv_rows(1, vf, kvbase + U(lo[r]) * hdu, U(hi[r] - lo[r]), hdu, s, U(r) * ss + U(lo[r] - jl), ss, of, qo[r:])


@njit(**JIT)
def _zigzag(i, n):
    """The i-th of n tiles in the order 0, n-1, 1, n-2, ...: any run of consecutive work items
    mixes short and long rows of the causal triangle, so an even split balances the threads."""
    return i // 2 if i % 2 == 0 else n - 1 - i // 2


@njit(**JIT)
def _tile_rows(l0, L, G, g, H, hd, i, offset, window, qo, lo, hi):
    """Rows i*ART .. of KV head g's L * G rows (query l, head g G + gh at row l G + gh), for the
    queries at positions offset.. whose q rows start at row l0 of q (L, H, hd): fills qo, lo,
    hi; returns the row count."""
    R = min(ART, L * G - i * ART)
    for r in range(R):
        t = i * ART + r
        l, gh = t // G, t % G
        p = offset + l
        qo[r] = (U(l0 + l) * U(H) + U(g * G + gh)) * U(hd)
        lo[r] = max(0, p - window + 1) if window > 0 else 0
        hi[r] = p + 1
    return R


@njit(**JIT)
def _work_items(L, H, Hkv, tiles):
    """Work items of one sequence's L new positions: tiles of each KV head's L G rows, or
    (head, query) pairs."""
    return Hkv * ((L * (H // Hkv) + ART - 1) // ART) if tiles else L * H


@njit(error_model="numpy", **JIT)
def _attend_item(u, tiles, qf, kf, vf, of, l0, L, offset, cap, H, G, hd, window, scale):
    """Work item u of `_work_items` for one sequence (attend, attend_many): its L queries at
    positions offset.. are rows l0.. of q (flat qf, out of), its KV storage (Hkv, cap, hd) is
    kf, vf. Tiles: KV head by KV head, in `_zigzag` order within one; else (head, query),
    head-major."""
    if tiles:
        nt = (L * G + ART - 1) // ART
        g, i = u // nt, _zigzag(u % nt, nt)
        qo, lo, hi = np.empty(ART, U), np.empty(ART, np.int64), np.empty(ART, np.int64)
        R = _tile_rows(l0, L, G, g, H, hd, i, offset, window, qo, lo, hi)
        _attend_tile(qf, qo, lo, hi, R, kf, vf, U(g) * U(cap) * U(hd), hd, scale, of)
    else:
        h, l = u // L, u % L
        p = offset + l
        lo1 = max(0, p - window + 1) if window > 0 else 0
        base = (U(h // G) * U(cap) + U(lo1)) * U(hd)
        _attend_query(qf, (U(l0 + l) * U(H) + U(h)) * U(hd), kf, vf, base, p + 1 - lo1, hd, scale, of, G > 1)


@njit(parallel=True, error_model="numpy", **JIT)
def attend_many(q, proto, table, window, scale, out):
    """`attend` for several sequences in one call (a batched step, localai/batch.py): q, out
    (R, H, hd) the rows of all of them. Sequence i (table int64 (S, 6)) has rows
    table[i, 0] .. + table[i, 1] - 1 at positions table[i, 2] .., and its K and V storage
    (Hkv, table[i, 3], hd) at addresses table[i, 4], table[i, 5], of proto's type (float32,
    or uint16: float16 bits; proto is one of them, alive like all of them during the call).
    Work items are (sequence, tile) as in attend (or (sequence, head, query) where attend
    takes `_attend_query`), so every row is bit for bit what attend gives its sequence
    alone; one parallel region per step instead of one per sequence."""
    R, H, hd = q.shape
    Hkv = proto.shape[0]
    G = H // Hkv
    S = table.shape[0]
    tiles = hd % AL == 0
    first = np.zeros(S + 1, np.int64)  # first work item of each sequence
    for i in range(S):
        first[i + 1] = first[i] + _work_items(table[i, 1], H, Hkv, tiles)
    qf, of = q.reshape(-1), out.reshape(-1)
    for t in prange(first[S]):
        i = np.searchsorted(first, t, side="right") - 1
        a, L, offset, cap = table[i, 0], table[i, 1], table[i, 2], table[i, 3]
        kf = numba.carray(_ptr_like(table[i, 4], proto), Hkv * cap * hd)
        vf = numba.carray(_ptr_like(table[i, 5], proto), Hkv * cap * hd)
        _attend_item(t - first[i], tiles, qf, kf, vf, of, a, L, offset, cap, H, G, hd, window, scale)
