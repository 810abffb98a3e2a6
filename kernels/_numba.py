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

matvec's per-type row dots are written in LLVM vector IR (see "decode dots" below); the
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

Cost: the first call compiles the whole module (~8 s for all the entry points on the 2-core
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


# -- decode dots in LLVM vector IR ------------------------------------------------------------
# One numba intrinsic per type, _ROW[type](w, o, x, k, nb) -> float32: the dot of the quantized
# row at byte o of the flat w with the floats at x[k:], nb blocks of 32 weights long. Each
# block (each K-quant super-block: 8 of them) becomes <32 x float> dequantized weights, and
# weights * x accumulate in vector registers; the only horizontal sum is at the end of the
# row. Numba's own loops summed every 32 weights to a scalar: that reduction, and a 16-bit
# scale load that LLVM merged into a register still busy with the previous block's FMA, were
# most of a decode matvec (1.5-3x slower, see docs/benchmarks.md). Generic LLVM IR only, no
# target intrinsics: LLVM picks AVX2 / AVX-512 on x86 and NEON on Apple Silicon.
# The weights are d * q + m as one FMA, so they can differ from quants.py's in the last bit.

_f32, _i8, _i16, _i32, _i64 = ir.FloatType(), ir.IntType(8), ir.IntType(16), ir.IntType(32), ir.IntType(64)


def _vec(t, n=32):
    return ir.VectorType(t, n)


class _Emit:
    """IR helpers over one row: byte offsets are i64 values, p the current block's first byte."""

    def __init__(self, context, builder, argtypes, args):
        """args: w, o, xs, k, K, nb (see _row_dots); self.xs: the data pointers of the tuple xs."""
        self.b = b = builder
        w, self.o, xs, self.k, self.stride, self.nb = args
        self.w = context.make_array(argtypes[0])(context, b, w).data
        self.xs = [context.make_array(t)(context, b, b.extract_value(xs, i)).data for i, t in enumerate(argtypes[2])]

    def c(self, v, t=_i64):
        return ir.Constant(t, v)

    def cv(self, v, t=_i8, n=32):
        return ir.Constant(_vec(t, n), [v] * n if not isinstance(v, list) else v)

    def load(self, base, off, t, align=1):
        ptr = self.b.bitcast(self.b.gep(base, [off]), t.as_pointer())
        return self.b.load(ptr, align=align)

    def at(self, p, i):
        return self.b.add(p, self.c(i))

    def byte(self, p, i):
        return self.load(self.w, self.at(p, i), _i8)

    def f16x2(self, p, i):
        """The two float16 at p + i and p + i + 2, as float32. (Loaded one at a time, LLVM
        inserts each into whatever vector register is free (vpinsrw), which chains a block's
        scale to the previous block's FMA.)"""
        v = self.b.fpext(self.load(self.w, self.at(p, i), ir.VectorType(ir.HalfType(), 2)), _vec(_f32, 2))
        return self.b.extract_element(v, self.c(0, _i32)), self.b.extract_element(v, self.c(1, _i32))

    def f16(self, p, i):
        return self.f16x2(p, i)[0]

    def f16_splat(self, p, i, n=32):
        """The float16 at p + i as <n x float>: broadcast, then converted."""
        h = self.load(self.w, self.at(p, i), ir.HalfType())
        return self.b.fpext(self.splat(h, n), _vec(_f32, n))

    def bytes(self, p, i, n=32):
        return self.load(self.w, self.at(p, i), _vec(_i8, n))

    def nibbles(self, p, i):
        """The 16 bytes at p + i as 32 values: low nibbles, then high nibbles (<32 x i8>)."""
        v = self.bytes(p, i, 16)
        lo = self.b.and_(v, self.cv(15, n=16))
        hi = self.b.lshr(v, self.cv(4, n=16))
        return self.b.shuffle_vector(lo, hi, self.cv(list(range(32)), _i32))

    def splat(self, v, n=32):
        t = _vec(v.type, n)
        one = self.b.insert_element(ir.Constant(t, ir.Undefined), v, self.c(0, _i32))
        return self.b.shuffle_vector(one, ir.Constant(t, ir.Undefined), self.cv(0, _i32, n))

    def cf(self, v):
        return ir.Constant(_vec(_f32), [v] * 32)

    def fma(self, a, b, c):
        t = a.type
        f = cgutils.get_or_insert_function(self.b.module, ir.FunctionType(t, [t] * 3), f"llvm.fma.v{t.count}f32")
        return self.b.call(f, [a, b, c])

    def uf(self, q):
        return self.b.uitofp(q, _vec(_f32))

    def sf(self, q):
        return self.b.sitofp(q, _vec(_f32))

    def scalar_uf(self, v):
        return self.b.uitofp(v, _f32)

    def high_bits(self, qh, shift):
        """(qh >> shift & 1) << 4 for a <32 x i8> qh."""
        bit = self.b.and_(self.b.lshr(qh, self.cv(shift)), self.cv(1))
        return self.b.shl(bit, self.cv(4))


# Each block function: (emit, p) -> [(x offset within the block, <32 x float> weights)].

def _blk_q8_0(e, p):
    return [(0, e.b.fmul(e.sf(e.bytes(p, 2)), e.f16_splat(p, 0)))]


def _blk_q4_0(e, p):
    d = e.f16_splat(p, 0)
    return [(0, e.fma(e.uf(e.nibbles(p, 2)), d, e.b.fmul(d, e.cf(-8.0))))]  # d q - 8 d


def _blk_q4_1(e, p):
    d, m = e.f16x2(p, 0)
    return [(0, e.fma(e.uf(e.nibbles(p, 4)), e.splat(d), e.splat(m)))]


def _q5(e, p, qh_at):
    """The 32 5-bit values: bit j of the u32 at qh_at is the fifth bit of q[j]."""
    qh = e.splat(e.load(e.w, e.at(p, qh_at), _i32))
    on = e.b.icmp_unsigned("!=", e.b.and_(qh, e.cv([1 << j for j in range(32)], _i32)), e.cv(0, _i32))
    return e.b.or_(e.nibbles(p, qh_at + 4), e.b.select(on, e.cv(16), e.cv(0)))


def _blk_q5_0(e, p):
    d = e.f16_splat(p, 0)
    return [(0, e.fma(e.uf(_q5(e, p, 2)), d, e.b.fmul(d, e.cf(-16.0))))]  # d q - 16 d


def _blk_q5_1(e, p):
    d, m = e.f16x2(p, 0)
    return [(0, e.fma(e.uf(_q5(e, p, 4)), e.splat(d), e.splat(m)))]


def _k_scale_min(e, p, j):
    """Sub-block j's 6-bit (scale, min) of a Q4_K/Q5_K super-block, as float32 (see quants.py)."""
    s = [e.byte(p, 4 + i) for i in range(12)]
    b = e.b
    if j < 4:
        sc = b.and_(s[j], e.c(63, _i8))
        mn = b.and_(s[j + 4], e.c(63, _i8))
    else:
        sc = b.or_(b.and_(s[j + 4], e.c(15, _i8)), b.shl(b.lshr(s[j - 4], e.c(6, _i8)), e.c(4, _i8)))
        mn = b.or_(b.lshr(s[j + 4], e.c(4, _i8)), b.shl(b.lshr(s[j], e.c(6, _i8)), e.c(4, _i8)))
    return e.scalar_uf(sc), e.scalar_uf(mn)


def _k_subblocks(e, p, five):
    """The 8 sub-blocks of a Q4_K/Q5_K super-block: [(j, <32 x i8> codes, d * sc_j, dmin * mn_j)]."""
    d, dmin = e.f16x2(p, 0)
    out = []
    for g in range(4):  # 32 bytes: sub-block 2g in the low nibbles, 2g + 1 in the high
        v = e.bytes(p, (48 if five else 16) + 32 * g)
        qh = e.bytes(p, 16) if five else None
        for half, q in enumerate((e.b.and_(v, e.cv(15)), e.b.lshr(v, e.cv(4)))):
            j = 2 * g + half
            if five:
                q = e.b.or_(q, e.high_bits(qh, j))
            sc, mn = _k_scale_min(e, p, j)
            out.append((j, q, e.b.fmul(d, sc), e.b.fmul(dmin, mn)))
    return out


def _blk_qk(e, p, five):
    return [(32 * j, e.fma(e.uf(q), e.splat(dl), e.splat(e.b.fneg(ml)))) for j, q, dl, ml in _k_subblocks(e, p, five)]


def _blk_q6_k(e, p):
    d = e.b.fpext(e.splat(e.load(e.w, e.at(p, 208), ir.HalfType()), 16), _vec(_f32, 16))
    sc = e.b.fmul(d, e.b.sitofp(e.bytes(p, 192, 16), _vec(_f32, 16)))  # d * scales[s]
    out = []
    for h in range(2):  # halves of 128 weights
        a, c, qh = e.bytes(p, 64 * h), e.bytes(p, 64 * h + 32), e.bytes(p, 128 + 32 * h)
        lows = (e.b.and_(a, e.cv(15)), e.b.and_(c, e.cv(15)), e.b.lshr(a, e.cv(4)), e.b.lshr(c, e.cv(4)))
        for i, lo in enumerate(lows):  # weights 128h + 32i + l: sub-blocks s, s + 1
            hi = e.b.shl(e.b.and_(e.b.lshr(qh, e.cv(2 * i)), e.cv(3)), e.cv(4))
            q = e.b.sub(e.b.or_(lo, hi), e.cv(32))
            s = 8 * h + 2 * i
            scales = e.b.shuffle_vector(sc, sc, e.cv([s] * 16 + [s + 1] * 16, _i32))
            out.append((128 * h + 32 * i, e.b.fmul(scales, e.sf(q))))
    return out


# type: block function (weights per block and bytes per block: quants.block_size)
_BLOCKS = {
    T.Q8_0: _blk_q8_0,
    T.Q4_0: _blk_q4_0,
    T.Q4_1: _blk_q4_1,
    T.Q5_0: _blk_q5_0,
    T.Q5_1: _blk_q5_1,
    T.Q4_K: lambda e, p: _blk_qk(e, p, False),
    T.Q5_K: lambda e, p: _blk_qk(e, p, True),
    T.Q6_K: _blk_q6_k,
}
R_ROWS = 4  # rows of x that one pass over W serves, each block dequantized once for all


def _float_term(e, base, bi, qk, item):
    """A float block item (x offset, <32 x float> weights) for the row of x at element `base`:
    (weights, x) for the FMA, no min."""
    xo, wv = item
    return wv, e.load(e.xs[0], e.b.add(base, e.b.add(e.b.mul(bi, e.c(qk)), e.c(xo))), _vec(_f32), align=4), None


def _emit_row_dots(e, kind, qtype, R, out):
    """The loop over one row's blocks for R rows of x (R_ROWS or 1), their dots stored to the
    float allocas `out`. `kind` is _FLOAT or _INT16: its table of block functions, vector
    width, where row r of x starts (in its own units), and `term`, which turns a block item and
    a row into (a, b, min or None): acc += a * b, and the row's scalar sum += min."""
    blocks_of, width, row_base, term = kind
    block, (qk, size) = blocks_of[qtype], block_size(qtype)
    step = 2 if qk == 32 else 1  # blocks per loop iteration
    b, vt = e.b, _vec(_f32, width)
    nacc = 2 if R == 1 else 1  # one row alone: two FMA chains, taken in turn
    accs = [[cgutils.alloca_once_value(b, ir.Constant(vt, [0.0] * width)) for _ in range(nacc)] for _ in range(R)]
    mins = [cgutils.alloca_once_value(b, ir.Constant(_f32, 0.0)) for _ in range(R)]
    bases = [row_base(e, b.add(e.k, b.mul(e.stride, e.c(r)))) for r in range(R)]

    def blocks(first, count):
        n = 0
        for j in range(count):
            bi = b.add(first, e.c(j))
            p = b.add(e.o, b.mul(bi, e.c(size)))
            for item in block(e, p):
                for r in range(R):
                    x, y, m = term(e, bases[r], bi, qk, item)
                    acc = accs[r][n % nacc]
                    b.store(e.fma(x, y, b.load(acc)), acc)
                    if m is not None:
                        b.store(b.fadd(b.load(mins[r]), m), mins[r])
                n += 1

    nsb = b.udiv(e.nb, e.c(qk // 32))  # blocks of this type
    main = b.udiv(nsb, e.c(step))
    with cgutils.for_range(b, main) as loop:
        blocks(b.mul(loop.index, e.c(step)), step)
    with cgutils.for_range(b, b.urem(nsb, e.c(step))) as loop:  # the tail, one block at a time
        blocks(b.add(b.mul(main, e.c(step)), loop.index), 1)
    for r in range(R):
        v = b.load(accs[r][0])
        for acc in accs[r][1:]:
            v = b.fadd(v, b.load(acc))
        n = width
        while n > 1:  # pairwise halves
            n //= 2
            v = b.fadd(b.shuffle_vector(v, v, e.cv(list(range(n)), _i32, n)),
                       b.shuffle_vector(v, v, e.cv(list(range(n, 2 * n)), _i32, n)))
        b.store(b.fadd(b.extract_element(v, e.c(0, _i32)), b.load(mins[r])), out[r])


def _row_dots(kind, R):
    """An intrinsic (qtype, w, o, xs, k, K, nb) -> R float32: the quantized row at byte o of w
    against R rows of x, row r from element k + r K; xs is the tuple of x's arrays that `kind`
    reads ((x,) for _FLOAT). One branch per type of kind's table, 0 for any other."""

    @intrinsic
    def row_dots(typingctx, qtype, w, o, xs, k, K, nb):
        def codegen(context, builder, sig, args):
            e = _Emit(context, builder, sig.args[1:], args[1:])
            out = [cgutils.alloca_once_value(builder, ir.Constant(_f32, 0.0)) for _ in range(R)]
            done = builder.append_basic_block("dots.done")
            switch = builder.switch(args[0], done)
            for t in kind[0]:
                bb = builder.append_basic_block(f"dots.{t.name}")
                switch.add_case(ir.Constant(args[0].type, int(t)), bb)
                builder.position_at_end(bb)
                _emit_row_dots(e, kind, t, R, out)
                builder.branch(done)
            builder.position_at_end(done)
            return context.make_tuple(builder, sig.return_type, [builder.load(v) for v in out])

        return types.UniTuple(types.float32, R)(qtype, w, o, xs, k, K, nb), codegen

    return row_dots


_FLOAT = (_BLOCKS, 32, lambda e, k: k, _float_term)



# -- decode dots on 16-bit activations ---------------------------------------------------------
# x is rounded to int16 codes per 32 values (_quantize_x: scale amax / 32767, so each value
# moves by at most amax / 65534, ~256 times less than llama.cpp's 8-bit activations), and a
# block's dot is an integer dot of its weight codes with x's codes, scaled once:
# d * dx * sum(q * xq), plus m * dx * sum(xq) for the types with a min. Generic IR: the
# products of 16-bit pairs summed in pairs are one pmaddwd (vpdpwssd where the CPU has VNNI;
# smull/smlal on NEON). Fewer instructions than the float dots above (no int-to-float
# conversion of every weight), which stay for Q6_K and F16.

def _iq_q8_0(e, p):
    return [(0, e.b.sext(e.bytes(p, 2), _vec(_i16)), e.f16_splat(p, 0, 16), None)]


def _iq_q4_0(e, p):
    return [(0, e.b.sext(e.b.sub(e.nibbles(p, 2), e.cv(8)), _vec(_i16)), e.f16_splat(p, 0, 16), None)]


def _iq_q4_1(e, p):
    d, m = e.f16x2(p, 0)
    return [(0, e.b.zext(e.nibbles(p, 4), _vec(_i16)), e.splat(d, 16), m)]


def _iq_q5_0(e, p):
    return [(0, e.b.sext(e.b.sub(_q5(e, p, 2), e.cv(16)), _vec(_i16)), e.f16_splat(p, 0, 16), None)]


def _iq_q5_1(e, p):
    d, m = e.f16x2(p, 0)
    return [(0, e.b.zext(_q5(e, p, 4), _vec(_i16)), e.splat(d, 16), m)]


def _iq_qk(e, p, five):
    return [(j, e.b.zext(q, _vec(_i16)), e.splat(dl, 16), e.b.fneg(ml)) for j, q, dl, ml in _k_subblocks(e, p, five)]


# type: block function -> [(32-value sub-block, <32 x i16> codes, <16 x float> scale, min or None)]
_IBLOCKS = {
    T.Q8_0: _iq_q8_0,
    T.Q4_0: _iq_q4_0,
    T.Q4_1: _iq_q4_1,
    T.Q5_0: _iq_q5_0,
    T.Q5_1: _iq_q5_1,
    T.Q4_K: lambda e, p: _iq_qk(e, p, False),
    T.Q5_K: lambda e, p: _iq_qk(e, p, True),
}
I16_TYPE_IDS = frozenset(int(t) for t in _IBLOCKS)
_I16_TYPES = tuple(sorted(I16_TYPE_IDS))  # for matvec: numba reads a tuple, not a frozenset


def _pmaddwd(e, a, b):
    """<16 x i32>: a[2i] * b[2i] + a[2i + 1] * b[2i + 1] for <32 x i16> a, b."""
    prod = e.b.mul(e.b.sext(a, _vec(_i32)), e.b.sext(b, _vec(_i32)))
    even = e.b.shuffle_vector(prod, prod, e.cv(list(range(0, 32, 2)), _i32, 16))
    odd = e.b.shuffle_vector(prod, prod, e.cv(list(range(1, 32, 2)), _i32, 16))
    return e.b.add(even, odd)


def _int16_term(e, xb0, bi, qk, item):
    """An integer block item for the row of x whose first 32-value block is xb0, x given as
    (codes, scales, code sums) (_quantize_x): (integer dot, scale * dx) for the FMA, and
    m * dx * sum(codes) for the types with a min (the rounded x's sum)."""
    sub, q, scale, m = item
    b = e.b
    xq, xd, xsq = e.xs
    xb = b.add(xb0, b.add(b.mul(bi, e.c(qk // 32)), e.c(sub)))
    isum = _pmaddwd(e, q, e.load(xq, b.mul(xb, e.c(32)), _vec(_i16), align=2))
    dx = e.load(xd, xb, _f32, align=4)
    if m is not None:
        m = b.fmul(m, b.fmul(dx, b.sitofp(e.load(xsq, xb, _i32, align=4), _f32)))
    return b.sitofp(isum, _vec(_f32, 16)), b.fmul(scale, e.splat(dx, 16)), m


_INT16 = (_IBLOCKS, 16, lambda e, k: e.b.udiv(k, e.c(32)), _int16_term)
_row_dot1, _row_dots_r = _row_dots(_FLOAT, 1), _row_dots(_FLOAT, R_ROWS)
_row_dot1_i16, _row_dots_r_i16 = _row_dots(_INT16, 1), _row_dots(_INT16, R_ROWS)


@njit(fastmath=FM, error_model="numpy", **JIT)
def _quantize_x(x, xq, xd, xsq):
    """x (n * 32,) float32 -> per 32 values: int16 codes xq = rint(x * 32767 / amax), the
    scale xd = amax / 32767 and the code sum xsq (int32). (A min's term takes the rounded x's
    sum, xd * xsq: weights d q + m with m ~ -8 d nearly cancel, and so do their errors, only
    if both halves of the dot see one x.)"""
    for blk in range(len(x) // 32):
        o = U(blk) * U(32)
        amax = F(0)
        for j in range(o, o + U(32)):
            a = abs(x[j])
            amax = a if a > amax else amax
        inv = F(32767) / amax if amax > F(0) else F(0)
        si = np.int32(0)
        for j in range(o, o + U(32)):
            q = np.int32(np.rint(x[j] * inv))
            xq[j] = np.int16(q)
            si += q
        xd[blk] = amax / F(32767)
        xsq[blk] = si


@njit(fastmath=FM, **JIT)
def _dot_f16(w16, o, x, k, n):
    """n float16 weights w16[o:] against x[k:]."""
    s = F(0)
    for j in range(n):
        s += _half_to_f32(w16[o + j]) * x[k + j]
    return s


@njit(parallel=True, **JIT)
def matvec(qtype, w, x, out, full):
    """out (N, M) = x (N, K) @ dequantize(w (M, row_bytes)).T, fused: no float copy of W.
    The types of I16_TYPE_IDS multiply x rounded to int16 per 32 values."""
    M, row_bytes = w.shape
    N, K = x.shape
    wf, xf = w.reshape(-1), x.reshape(-1)  # flat views, made once
    w16 = wf[:len(wf) // 2 * 2].view(np.uint16)  # F16 weights
    nb = U(K // 32)
    i16 = qtype in _I16_TYPES
    nq = len(xf) if i16 else 0
    xq, xd, xsq = np.empty(nq, np.int16), np.empty(nq // 32, F), np.empty(nq // 32, np.int32)
    if i16:
        _quantize_x(xf, xq, xd, xsq)
    for m in prange(M):
        o = U(m) * U(row_bytes)
        if qtype == F16:
            for i in range(N):
                out[i, m] = _dot_f16(w16, o // U(2), xf, U(i) * U(K), U(K))
            continue
        i = 0
        while i + R_ROWS <= N:
            if i16:
                r = _row_dots_r_i16(qtype, wf, o, (xq, xd, xsq), U(i) * U(K), U(K), nb)
            else:
                r = _row_dots_r(qtype, wf, o, (xf,), U(i) * U(K), U(K), nb)
            for j in range(R_ROWS):
                out[i + j, m] = r[j]
            i += R_ROWS
        while i < N:
            if i16:
                out[i, m] = _row_dot1_i16(qtype, wf, o, (xq, xd, xsq), U(i) * U(K), U(K), nb)[0]
            else:
                out[i, m] = _row_dot1(qtype, wf, o, (xf,), U(i) * U(K), U(K), nb)[0]
            i += 1


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


@njit(parallel=True, fastmath=FM, error_model="numpy", **JIT)
def attend_one(q, kb, vb, T, lo, scale, out):
    """Attention for one new position: q (H, hd), one query per head; kb, vb (Hkv, cap, hd)
    KV storage holding T positions, of which keys lo..T-1 are seen; out (H, hd) =
    softmax(scale q k^T) v. Query head h reads KV head h // (H / Hkv). No BLAS: in decode,
    OpenBLAS's threads and the numba kernels' fought over the cores (SmolLM2 at 3,000 tokens
    of context: 9.7 tok/s)."""
    H, hd = q.shape
    Hkv, cap, _ = kb.shape
    G = H // Hkv
    qf, kf, vf, of = q.reshape(-1), kb.reshape(-1), vb.reshape(-1), out.reshape(-1)
    n = T - lo
    for h in prange(H):
        base = (U(h // G) * U(cap) + U(lo)) * U(hd)
        qo = U(h) * U(hd)
        s = np.empty(n, F)
        m = F(-np.inf)
        for j in range(n):
            ko = base + U(j) * U(hd)
            acc = F(0)
            for d in range(U(hd)):
                acc += qf[qo + d] * kf[ko + d]
            acc *= F(scale)
            s[j] = acc
            m = acc if acc > m else m
        tot = F(0)
        for j in range(n):
            e = _exp(s[j] - m)
            s[j] = e
            tot += e
        inv = F(1) / tot
        for d in range(U(hd)):
            of[qo + d] = F(0)
        for j in range(n):
            p = s[j] * inv
            vo = base + U(j) * U(hd)
            for d in range(U(hd)):
                of[qo + d] += p * vf[vo + d]
