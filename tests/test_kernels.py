"""Quantized-weight kernels, held to independent implementations:
- numpy dequantizers (kernels/quants.py) bit-exact with gguf-py's `gguf.quants.dequantize`;
- numba dequantizers bit-exact with the numpy ones;
- QMatrix.matmul on both backends equal to dequantize-then-matmul to float32 rounding;
- the same on one real tensor of each type from the two model files.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest
from gguf import GGMLQuantizationType as T
from gguf import quants as gguf_quants

from localai import kernels
from localai.kernels import QMatrix, dequantize, qmatmul, quants

NATIVE = [T.F32, T.F16, T.BF16, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0, T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K]
FALLBACK = [t for t in gguf_quants._type_traits if t not in NATIVE]  # IQ*, TQ*, MXFP4, ... via gguf-py
SCALES = {  # byte offsets of the float16 scales in a block of each type
    T.Q4_0: [0], T.Q4_1: [0, 2], T.Q5_0: [0], T.Q5_1: [0, 2], T.Q8_0: [0],
    T.Q2_K: [80, 82], T.Q3_K: [108], T.Q4_K: [0, 2], T.Q5_K: [0, 2], T.Q6_K: [208], T.IQ4_NL: [0],
}
NUMBA = pytest.mark.skipif(qmatmul._nb is None, reason="numba kernels unavailable")


def random_rows(qtype: T, rows: int, cols: int, seed: int = 0) -> np.ndarray:
    """Random weights in the file's layout: uint8 (rows, row_bytes), or float32/float16
    (rows, cols) for F32/F16. Scales are random finite float16s (no NaN, Inf or subnormals)."""
    rng = np.random.default_rng(seed)
    if qtype == T.F32:
        return rng.standard_normal((rows, cols)).astype(np.float32)
    if qtype == T.F16:
        return rng.standard_normal((rows, cols)).astype(np.float16)
    if qtype == T.BF16:
        f = rng.standard_normal((rows, cols)).astype(np.float32)
        return (f.view(np.uint32) >> 16).astype(np.uint16).view(np.uint8)
    qk, nbytes = quants.block_size(qtype)
    blocks = rng.integers(0, 256, (rows * cols // qk, nbytes), dtype=np.uint8)
    for at in SCALES.get(qtype, []):
        d = rng.uniform(1e-3, 1e-1, len(blocks)) * rng.choice([-1, 1], len(blocks))
        blocks[:, at:at + 2] = d.astype(np.float16).view(np.uint8).reshape(-1, 2)
    return blocks.reshape(rows, -1)


def reference(raw: np.ndarray, qtype: T) -> np.ndarray:
    return np.asarray(gguf_quants.dequantize(raw.view(np.uint8) if qtype == T.BF16 else raw, qtype), np.float32)


@pytest.fixture(params=["numpy", pytest.param("numba", marks=NUMBA)])
def backend(request):
    before = qmatmul.backend()
    assert qmatmul.set_backend(request.param) == request.param
    yield request.param
    qmatmul.set_backend(before)


def group_amax(x: np.ndarray) -> np.ndarray:
    """(N, K) -> (N, K / 32): for each 32-value block, the largest |x| of its int16 scale's
    group (XG blocks, 256 values; the row's last group may be shorter)."""
    g = qmatmul._nb.XG if qmatmul._nb else 8
    blocks = np.abs(x).reshape(x.shape[0], -1, 32).max(-1)  # (N, K / 32)
    out = np.empty_like(blocks)
    for g0 in range(0, blocks.shape[1], g):
        out[:, g0:g0 + g] = blocks[:, g0:g0 + g].max(1, keepdims=True)
    return out


def assert_close(y: np.ndarray, x: np.ndarray, w: np.ndarray, qtype=None):
    """y == x @ w.T to float32 rounding: |error| <= 4 K u sum_k |x_k w_k|, u = 2^-24, the
    textbook bound for a K-term float32 dot product with room for the scale/min split.
    Where matmul took the fused kernels on x rounded to int16 (`qtype` in INT_TYPE_IDS), plus
    what that rounding can move: each x_k by at most amax(its group of 256 values) / 65534."""
    ref = x.astype(np.float64) @ w.T.astype(np.float64)
    bound = 4 * x.shape[1] * 2.0**-24 * (np.abs(x).astype(np.float64) @ np.abs(w).T) + 1e-30
    if (qtype is not None and qmatmul.backend() == "numba" and int(qtype) in qmatmul._nb.INT_TYPE_IDS
            and not 0 < qmatmul.BLAS_MIN_N <= x.shape[0]):
        amax = group_amax(x).astype(np.float64)  # (N, K / 32)
        bound = bound * 2 + 1.001 * (amax / 65534) @ np.abs(w).reshape(w.shape[0], -1, 32).sum(-1).T
    assert np.all(np.abs(y - ref) <= bound), f"max error {np.abs(y - ref).max():.3g}"


# -- dequantization, bit for bit ----------------------------------------------------------------

@pytest.mark.parametrize("qtype", NATIVE + FALLBACK, ids=lambda t: t.name)
def test_dequantize_matches_gguf(qtype):
    raw = random_rows(qtype, 3, 512)
    ref = reference(raw, qtype)
    got = dequantize(raw, qtype, 512)
    assert got.dtype == np.float32 and got.shape == (3, 512)
    if qtype in NATIVE:
        assert np.isfinite(ref).all()
    np.testing.assert_array_equal(got, ref)  # NaN-aware for the exotic types' random scales


@NUMBA
@pytest.mark.parametrize("qtype", qmatmul._nb.TYPES if qmatmul._nb else [], ids=lambda t: t.name)
def test_numba_dequantize_matches_numpy(qtype):
    raw = random_rows(qtype, 5, 1024, seed=1)
    W = QMatrix(raw, qtype, (5, 1024))
    out = np.empty((5, 1024), np.float32)
    qmatmul._nb.dequantize_rows(int(qtype), W.raw, out, qmatmul._nb.FULL)
    np.testing.assert_array_equal(out, quants.dequantize(raw, qtype, 1024))


@NUMBA
def test_numba_f16_all_bit_patterns():
    """Every half, including subnormals, infinities and NaNs, converts exactly as numpy does."""
    halves = np.arange(1 << 16, dtype=np.uint16).view(np.float16).reshape(64, 1024)
    W = QMatrix(halves, T.F16, halves.shape)
    np.testing.assert_array_equal(W.dequantize(), halves.astype(np.float32))


# -- matmul and rows on both backends ------------------------------------------------------------

@pytest.mark.parametrize("qtype", NATIVE + [T.IQ4_NL], ids=lambda t: t.name)
@pytest.mark.parametrize("N", [1, 3, 6, 37])  # 6: one 4-row tile of the fused kernels, then 2 rows alone
def test_matmul(backend, qtype, N):
    # M odd: no tile or thread split divides it; an odd number of blocks (17 of 32 weights, 3
    # super-blocks) takes the decode kernels' one-block tail after their two-block steps
    M, K = 67, 768 if quants.block_size(qtype)[0] == 256 else 544
    raw = random_rows(qtype, M, K, seed=N)
    w = reference(raw, qtype)
    x = np.random.default_rng(N).standard_normal((N, K)).astype(np.float32)
    y = QMatrix(raw, qtype, (M, K)).matmul(x)
    assert y.dtype == np.float32 and y.shape == (N, M) and y.flags.c_contiguous
    assert_close(y, x, w, qtype)


@pytest.mark.parametrize("qtype", [T.F32, T.F16, T.BF16], ids=lambda t: t.name)
def test_float_types_any_width(backend, qtype):
    raw = random_rows(qtype, 7, 100)  # K = 100: not a multiple of any block
    x = np.random.default_rng(1).standard_normal((2, 100)).astype(np.float32)
    W = QMatrix(raw, qtype, (7, 100))
    np.testing.assert_array_equal(W.dequantize(), reference(raw, qtype))
    assert_close(W.matmul(x[:1]), x[:1], reference(raw, qtype), qtype)
    assert_close(W.matmul(x), x, reference(raw, qtype), qtype)


def test_matmul_tiles(backend, monkeypatch):
    """The dequantize + BLAS path with many tiles, the last one partial."""
    monkeypatch.setattr(qmatmul, "TILE_BYTES", 10 * 256 * 4)  # 10 rows of K = 256
    monkeypatch.setattr(qmatmul, "BLAS_MIN_N", 8)
    raw = random_rows(T.Q4_K, 93, 256)
    x = np.random.default_rng(0).standard_normal((30, 256)).astype(np.float32)
    assert_close(QMatrix(raw, T.Q4_K, (93, 256)).matmul(x), x, reference(raw, T.Q4_K))


def test_matmul_1d(backend):
    raw = random_rows(T.Q8_0, 9, 64)
    W = QMatrix(raw, T.Q8_0, (9, 64))
    x = np.ones(64, np.float32)
    np.testing.assert_array_equal(W.matmul(x), W.matmul(x[None])[0])


def _one_buffer(parts):
    """The raw rows of several matrices copied into one uint8 buffer (as a model file holds
    them, each at a 32-byte aligned offset), read back as views of it."""
    offs, at = [], 0
    for raw in parts:
        offs.append(at)
        at += (raw.nbytes + 31) // 32 * 32
    buf = np.zeros(at, np.uint8)
    for raw, o in zip(parts, offs):
        buf[o:o + raw.nbytes] = raw.reshape(-1).view(np.uint8)
    buf.flags.writeable = False
    return [buf[o:o + raw.nbytes].view(raw.dtype).reshape(raw.shape) for raw, o in zip(parts, offs)]


@pytest.mark.parametrize("N", [1, 5, 70])  # 70: more rows than one pass over W (NC = 64) takes
def test_matmul_many(backend, N):
    """Several matrices of one K by one x (a layer's Q, K, V: Q4_K, Q4_K, Q6_K in a Q4_K_M file;
    gate and up; F16 among them): bit for bit each matrix's own matmul, and one kernel call
    where the numba kernels run them (the matrices lie in one buffer)."""
    K = 512
    types = [T.Q4_K, T.Q4_K, T.Q6_K, T.F16, T.Q4_0, T.Q8_0]
    Ms = [67, 19, 19, 33, 130, 16]
    raws = _one_buffer([random_rows(t, M, K, seed=i) for i, (t, M) in enumerate(zip(types, Ms))])
    mats = [QMatrix(r, t, (M, K)) for r, t, M in zip(raws, types, Ms)]
    x = np.random.default_rng(N).standard_normal((N, K)).astype(np.float32)
    ys = kernels.matmul_many(mats, x)
    for y, W, M in zip(ys, mats, Ms):
        assert y.shape == (N, M) and y.dtype == np.float32 and y.flags.c_contiguous
        np.testing.assert_array_equal(y, W.matmul(x))
    if qmatmul.backend() == "numba":
        g = qmatmul._group(mats)  # one call: the segments of one buffer, or packed copies
        nb = qmatmul._nb
        assert g.segs[:, 3].tolist() == Ms
        assert g.segs[:, 0].tolist() == [int(t) + (nb.PACK if int(t) in nb.PACKED_TYPE_IDS else 0) for t in types]
    np.testing.assert_array_equal(kernels.matmul_many(mats[:2], x[0])[1], mats[1].matmul(x[0]))  # a 1-D x


def test_matmul_many_apart(backend):
    """Matrices in different buffers (or F32 ones, BLAS's) are multiplied one by one, the same;
    packed ones (each its own buffer) still go in one call."""
    K = 256
    a, b = (QMatrix(random_rows(T.F16, 9, K, seed=s), T.F16, (9, K)) for s in (1, 2))  # F16: not packed
    f = QMatrix(random_rows(T.F32, 5, K), T.F32, (5, K))
    assert qmatmul._group([a, b]) is None and qmatmul._group([a, f]) is None
    x = np.random.default_rng(0).standard_normal((3, K)).astype(np.float32)
    for y, W in zip(kernels.matmul_many([a, b, f], x), (a, b, f)):
        np.testing.assert_array_equal(y, W.matmul(x))
    if qmatmul.backend() == "numba":
        p, q = (QMatrix(random_rows(T.Q4_0, 9, K, seed=s), T.Q4_0, (9, K)) for s in (1, 2))
        assert qmatmul._group([p, q]).segs.shape == (2, 4)
        for y, W in zip(kernels.matmul_many([p, q], x), (p, q)):
            np.testing.assert_array_equal(y, W.matmul(x))


@pytest.mark.parametrize("qtype", [T.F32, T.F16, T.Q4_1, T.Q8_0, T.Q6_K], ids=lambda t: t.name)
def test_rows(backend, qtype):
    raw = random_rows(qtype, 40, 256)
    W = QMatrix(raw, qtype, (40, 256))
    ids = np.array([39, 0, 7, 7])
    np.testing.assert_array_equal(W.rows(ids), W.dequantize()[ids])
    np.testing.assert_array_equal(W.dequantize(), reference(raw, qtype))
    assert W.rows(3).shape == (1, 256)


def test_bad_row_size():
    with pytest.raises(ValueError, match="bytes per row"):
        QMatrix(np.zeros((4, 20), np.uint8), T.Q4_0, (4, 32))


# -- the real model files -----------------------------------------------------------------------

def _real_tensors(path, names):
    from localai.gguf_file import GGUFFile

    g = GGUFFile(path)
    return [g.tensors[n] for n in names]


@pytest.mark.parametrize("model,names", [
    ("smollm2", ["blk.0.ffn_down.weight", "token_embd.weight"]),                       # Q4_1, Q8_0
    ("gemma3", ["blk.0.attn_q.weight", "blk.0.attn_output.weight", "blk.0.ffn_down.weight",
                "blk.0.attn_v.weight"]),                                               # Q5_0, Q4_K, Q6_K, Q8_0
])
def test_real_tensors(backend, model, names, request):
    path = request.getfixturevalue(f"{model}_path")
    for t in _real_tensors(path, names):
        rows = t.data[:300]  # a slice keeps the 262144-row embedding cheap
        M, K = rows.shape[0], t.shape[1]
        ref = reference(np.ascontiguousarray(rows), T(t.ggml_type))
        W = QMatrix(rows, t.ggml_type, (M, K))
        np.testing.assert_array_equal(W.dequantize(), ref)
        x = np.random.default_rng(0).standard_normal((3, K)).astype(np.float32)
        assert_close(W.matmul(x[:1]), x[:1], ref, t.ggml_type)
        assert_close(W.matmul(x), x, ref, t.ggml_type)


def test_memory_stays_bounded(smollm2_path):
    """Neither a prefill matmul nor an embedding lookup expands the 113 MB float embedding."""
    (t,) = _real_tensors(smollm2_path, ["token_embd.weight"])
    W = QMatrix(t.data, t.ggml_type, t.shape)  # (49152, 576) Q8_0
    N = 32
    x = np.random.default_rng(0).standard_normal((N, 576)).astype(np.float32)
    tracemalloc.start()
    try:
        y = W.matmul(x)
        e = W.rows([5, 49151])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert y.shape == (N, 49152) and e.shape == (2, 576)
    # the output, one float tile, and numpy's temporaries of a few quants.TILE_BYTES steps
    assert peak < y.nbytes + qmatmul.TILE_BYTES + 4 * quants.TILE_BYTES, f"peak {peak / 1e6:.0f} MB"
    np.testing.assert_array_equal(e, reference(np.ascontiguousarray(t.data[[5, 49151]]), T.Q8_0))


# -- elementwise steps on both backends ---------------------------------------------------------

@pytest.mark.parametrize("act", ["silu", "gelu_tanh"])
def test_glu(backend, act):
    rng = np.random.default_rng(1)
    g = (rng.standard_normal((5, 333)) * 8).astype(np.float32)  # 333: not a multiple of a vector
    u = rng.standard_normal((5, 333)).astype(np.float32)
    x = g.astype(np.float64)
    if act == "silu":
        ref = x / (1 + np.exp(-x)) * u
    else:
        ref = 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3))) * u
    got = kernels.glu(g.copy(), u, act)
    np.testing.assert_allclose(got, ref, rtol=2e-6, atol=1e-6)
    with pytest.raises(ValueError):
        kernels.glu(g, u, "relu")


@pytest.mark.parametrize("window", [None, 3])
def test_causal_softmax(backend, window):
    H, L, offset, T, scale = 3, 5, 4, 9, 0.3  # queries at positions 4..8 over keys 0..8
    rng = np.random.default_rng(2)
    s = (rng.standard_normal((H * L, T)) * 20).astype(np.float32)
    ref = np.zeros((H * L, T))
    for r in range(H * L):
        p = offset + r % L
        lo = max(0, p - window + 1) if window else 0
        e = np.exp(scale * (s[r, lo:p + 1].astype(np.float64) - s[r, lo:p + 1].max()))
        ref[r, lo:p + 1] = e / e.sum()
    got = kernels.causal_softmax(s.copy(), L, offset, scale, window)
    np.testing.assert_allclose(got, ref, rtol=2e-6, atol=1e-9)
    assert np.array_equal(got == 0, ref == 0)  # masked keys exactly 0, and only those


def test_rms_norm(backend):
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((2, 3, 333)) * 5).astype(np.float32)
    w = rng.standard_normal(333).astype(np.float32)
    x64 = x.astype(np.float64)
    ref = x64 / np.sqrt(np.mean(x64 * x64, axis=-1, keepdims=True) + 1e-6) * w
    got = kernels.rms_norm(x, w, 1e-6)
    assert got.shape == x.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, ref, rtol=2e-6, atol=1e-6)


@pytest.mark.parametrize("neox", [False, True])
def test_rope(backend, neox):
    L, H, hd, n = 3, 2, 20, 8  # rotates the first 16 of 20 dims
    rng = np.random.default_rng(4)
    x = rng.standard_normal((L, H, hd)).astype(np.float32)
    ang = rng.uniform(-3, 3, (L, n))
    cos, sin = np.cos(ang).astype(np.float32), np.sin(ang).astype(np.float32)
    ref = x.astype(np.float64).copy()
    for i in range(n):
        a, b = (i, i + n) if neox else (2 * i, 2 * i + 1)
        c, s = cos[:, None, i].astype(np.float64), sin[:, None, i].astype(np.float64)
        ref[..., a] = x[..., a] * c - x[..., b] * s
        ref[..., b] = x[..., a] * s + x[..., b] * c
    got = kernels.rope(x, cos, sin, neox)
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-6)
    assert np.array_equal(got[..., 2 * n:], x[..., 2 * n:])


@pytest.mark.parametrize("window", [None, 5])
def test_attend_one(backend, window):
    """Decode attention, reading a KV cache's storage in place: GQA (6 query heads on 2 KV
    heads), 9 positions of a capacity-16 cache, optionally a window of the last 5."""
    from localai.models.cache import KVCache

    rng = np.random.default_rng(6)
    H, Hkv, hd, T = 6, 2, 40, 9
    cache = KVCache(Hkv, hd, 16)
    k, v = cache.update_and_fetch(*(rng.standard_normal((2, Hkv, T, hd)).astype(np.float32)))
    assert k.base is cache.keys and cache.keys.shape[1] > T  # a view into larger storage
    q = rng.standard_normal((H, hd)).astype(np.float32)
    lo = T - window if window else 0
    ref = np.empty((H, hd))
    for h in range(H):
        kh, vh = k[h // 3, lo:].astype(np.float64), v[h // 3, lo:].astype(np.float64)
        p = np.exp(0.3 * kh @ q[h] - (0.3 * kh @ q[h]).max())
        ref[h] = p / p.sum() @ vh
    got = kernels.attend_one(q, k, v, 0.3, window)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(kernels.attend_one(q, k.copy(), v.copy(), 0.3, window), got, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("hd", [40, 64])
@pytest.mark.parametrize("window", [None, 4])
def test_attend(backend, window, hd):
    """Prefill attention of L = 7 new positions after 5 cached ones, GQA, a cache's storage
    read in place; each query against a float64 reference of its own causal (windowed) row.
    (Numba: head dims a multiple of the vector width take the tiles, the others one query at
    a time.)"""
    from localai.models.cache import KVCache

    rng = np.random.default_rng(8)
    H, Hkv, offset, L = 6, 2, 5, 7
    cache = KVCache(Hkv, hd, 32)
    cache.update_and_fetch(*(rng.standard_normal((2, Hkv, offset, hd)).astype(np.float32)))
    k, v = cache.update_and_fetch(*(rng.standard_normal((2, Hkv, L, hd)).astype(np.float32)))
    q = rng.standard_normal((H, L, hd)).astype(np.float32)
    got = kernels.attend(q, k, v, offset, 0.3, window)
    assert got.shape == (L, H * hd)
    for i in range(L):
        p = offset + i
        lo = max(0, p - window + 1) if window else 0
        for h in range(H):
            kh, vh = k[h // 3, lo:p + 1].astype(np.float64), v[h // 3, lo:p + 1].astype(np.float64)
            s = 0.3 * kh @ q[h, i]
            w = np.exp(s - s.max())
            np.testing.assert_allclose(got[i, h * hd:(h + 1) * hd], w / w.sum() @ vh, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("window", [None, 6])
def test_attend_reads_float16_storage_as_its_float32_values(backend, window):
    """A float16 KV cache (the numpy backend's) gives the very bits that float32 storage
    holding the same values gives: prefill and decode, GQA, storage read in place."""
    from localai.models.cache import KVCache

    rng = np.random.default_rng(10)
    H, Hkv, hd, offset, L = 6, 2, 64, 11, 9
    c16, c32 = KVCache(Hkv, hd, 32), KVCache(Hkv, hd, 32, dtype=np.float32)
    for n in (offset, L):
        kv = (rng.standard_normal((2, Hkv, n, hd)) * 3).astype(np.float32)
        k16, v16 = c16.update_and_fetch(*kv)
        k32, v32 = c32.update_and_fetch(*kv.astype(np.float16).astype(np.float32))
    assert k16.dtype == np.float16 and k16.base is c16.keys
    q = rng.standard_normal((H, L, hd)).astype(np.float32)
    np.testing.assert_array_equal(kernels.attend(q, k16, v16, offset, 0.125, window),
                                  kernels.attend(q, k32, v32, offset, 0.125, window))
    np.testing.assert_array_equal(kernels.attend_one(q[:, -1], k16, v16, 0.125, window),
                                  kernels.attend_one(q[:, -1], k32, v32, 0.125, window))


@NUMBA
def test_attend_rows_equal_decode_bit_for_bit():
    """A prefill query's output is exactly what decode computes for that position: query rows
    that share a tile (two heads of two queries; four queries of one head) with keys of their
    own, partly shared (a window of 9) or not at all (a window of 2)."""
    from localai.models.cache import KVCache

    for H, Hkv, hd, window in [(4, 2, 32, None), (4, 2, 32, 9), (3, 3, 48, 9), (3, 3, 48, 2), (4, 2, 40, 9)]:
        _prefill_rows_equal_decode(H, Hkv, hd, window, KVCache)


def _prefill_rows_equal_decode(H, Hkv, hd, window, KVCache):
    """attend of 37 positions at once against decode of one and prefill of a tail."""
    rng = np.random.default_rng(9)
    L = 37
    cache = KVCache(Hkv, hd, 64)
    k, v = cache.update_and_fetch(*(rng.standard_normal((2, Hkv, L, hd)).astype(np.float32)))
    q = rng.standard_normal((H, L, hd)).astype(np.float32)
    full = kernels.attend(q, k, v, 0, 0.2, window)
    for p in (0, 8, 20, 36):
        one = kernels.attend_one(q[:, p], k[:, :p + 1], v[:, :p + 1], 0.2, window)
        np.testing.assert_array_equal(one.reshape(-1), full[p])
        tail = kernels.attend(q[:, p:], k, v, p, 0.2, window)
        np.testing.assert_array_equal(tail, full[p:])


@pytest.mark.parametrize("hd", [48, 40])
@pytest.mark.parametrize("dtype", [np.float16, np.float32])
@pytest.mark.parametrize("window", [None, 7])
def test_attend_many_equals_attend_per_sequence_bit_for_bit(backend, dtype, window, hd):
    """A batched step's attention in one call: decode rows and prompt chunks of sequences
    with different contexts and cache capacities, each sequence's rows exactly what attend
    gives it alone (numba: the tiles, and one query at a time for a head size off the vector
    width)."""
    from localai.kernels import elementwise
    from localai.models.cache import KVCache

    rng = np.random.default_rng(11)
    H, Hkv = 6, 2
    shapes = [(300, 1), (5, 1), (0, 4), (40, 9), (1, 1)]  # (cached positions, new rows)
    seqs, qs, want = [], [], []
    for cached, n in shapes:
        c = KVCache(Hkv, hd, 512, dtype=dtype)
        if cached:
            c.update_and_fetch(*(rng.standard_normal((2, Hkv, cached, hd)).astype(np.float32)))
        k, v = c.update_and_fetch(*(rng.standard_normal((2, Hkv, n, hd)).astype(np.float32)))
        q = rng.standard_normal((n, H, hd)).astype(np.float32)
        seqs.append((k, v, cached))
        qs.append(q)
        want.append(kernels.attend(q.transpose(1, 0, 2), k, v, cached, 0.2, window))
    got = elementwise.attend_many(np.concatenate(qs), seqs, 0.2, window)
    np.testing.assert_array_equal(got, np.concatenate(want))
    with pytest.raises(ValueError, match="q has"):
        elementwise.attend_many(np.concatenate(qs)[1:], seqs, 0.2, window)


@NUMBA
def test_numba_exp():
    import numba

    from localai.kernels import _numba

    exp = numba.njit(lambda x: _numba._exp(x))
    x = np.concatenate([np.linspace(-87.3, 88, 20001), [-np.inf, -1e4, -87.4, 0.0]]).astype(np.float32)
    got = np.array([exp(v) for v in x])
    ref = np.exp(x.astype(np.float64))
    big = ref > 1e-37
    assert np.max(np.abs(got[big] - ref[big]) / ref[big]) < 3e-7
    assert np.all(got[x < -87.3] == 0)


def rounded_x(x: np.ndarray) -> np.ndarray:
    """x as the integer dots see it: per group of 256 values, scale amax / 32767, codes
    rint(x * 32767 / amax)."""
    x2 = x.reshape(-1, x.shape[-1])
    xb = x2.reshape(x2.shape[0], -1, 32)
    amax = group_amax(x2)[..., None]  # (N, K / 32, 1)
    inv = np.float32(32767) / np.where(amax > 0, amax, 1)
    return (np.rint(xb * inv) * (amax / np.float32(32767))).reshape(x.shape)


INT_TYPES = [T.Q8_0, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q4_K, T.Q5_K, T.Q6_K]


@NUMBA
@pytest.mark.parametrize("qtype", INT_TYPES, ids=lambda t: t.name)
@pytest.mark.parametrize("N", [1, 7, 130])  # 130: three passes of NC = 64 rows of x, 2 rows alone
def test_integer_gemm_is_the_rounded_x_times_w(qtype, N):
    """The integer GEMM computes exactly rounded_x @ W.T (to float32 rounding), the mins'
    terms too, on odd shapes: M = 37 (a tile of W rows left alone, a last parallel item of
    5 rows), an odd number of blocks. Real-looking x: one block carries an outlier, as LLM
    activations do."""
    assert int(qtype) in qmatmul._nb.INT_TYPE_IDS
    M, K = 37, 768 if quants.block_size(qtype)[0] == 256 else 544
    raw = random_rows(qtype, M, K, seed=7)
    w = reference(raw, qtype)
    x = np.random.default_rng(N).standard_normal((N, K)).astype(np.float32) * 0.05 + 0.02
    x[:, 70] = 9.0
    y = QMatrix(raw, qtype, (M, K)).matmul(x)
    assert_close(y, rounded_x(x), w)


@NUMBA
@pytest.mark.parametrize("qtype", INT_TYPES + [T.F16], ids=lambda t: t.name)
def test_integer_gemm_rows_are_batch_invariant(qtype):
    """A row of the result is the same bits whether its row of x came alone, in a 4-row tile,
    or in the middle of a long batch (the property that keeps chunked prefill exact)."""
    M, K = 37, 768 if qtype in (T.Q4_K, T.Q5_K, T.Q6_K) else 544
    raw = random_rows(qtype, M, K, seed=3)
    W = QMatrix(raw, qtype, (M, K))
    x = np.random.default_rng(3).standard_normal((70, K)).astype(np.float32)
    full = W.matmul(x)
    for lo, hi in ((0, 1), (5, 6), (3, 10), (1, 70), (66, 70)):
        np.testing.assert_array_equal(W.matmul(x[lo:hi]), full[lo:hi])


def rounded_x8(x: np.ndarray) -> np.ndarray:
    """x as the int8 tiles see it (QMatrix(x8=True)): per block of 32 values, scale amax / 127,
    codes rint(x * 127 / amax) (llama.cpp's Q8_0 rounding)."""
    xb = x.reshape(x.shape[0], -1, 32)
    amax = np.abs(xb).max(-1, keepdims=True)
    inv = np.float32(127) / np.where(amax > 0, amax, 1)
    return (np.rint(xb * inv) * (amax / np.float32(127))).reshape(x.shape)


def assert_int8_close(y: np.ndarray, x: np.ndarray, w: np.ndarray):
    """y == rounded_x8(x) @ w.T to float32 rounding: twice assert_close's textbook bound (room
    for the scale/min split and the per-block scales)."""
    ref = rounded_x8(x).astype(np.float64) @ w.T.astype(np.float64)
    bound = 4 * x.shape[1] * 2.0**-24 * (np.abs(x).astype(np.float64) @ np.abs(w).T) + 1e-30
    assert np.all(np.abs(y - ref) <= 2 * bound), f"max error {np.abs(y - ref).max():.3g}"


X8_TYPES = [T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q4_K, T.Q5_K, T.Q6_K]


@NUMBA
@pytest.mark.parametrize("qtype", X8_TYPES, ids=lambda t: t.name)
@pytest.mark.parametrize("N", [1, 7, 130])
def test_int8_x_gemm_is_the_rounded_x_times_w(qtype, N):
    """With x8=True, on a CPU whose kernel has the int8 tile (x86 AVX2 without AVX-512), the
    product is exactly rounded_x8(x) @ W.T to float32 rounding (elsewhere int16 x, as every
    matrix); each row the same bits alone or in any batch; a matrix without x8 in the same
    call keeps int16 x."""
    M, K = 37, 768 if quants.block_size(qtype)[0] == 256 else 544
    raw = random_rows(qtype, M, K, seed=9)
    w = reference(raw, qtype)
    x = np.random.default_rng(N).standard_normal((N, K)).astype(np.float32) * 0.05 + 0.02
    x[:, 70] = 9.0
    W8, W16 = QMatrix(raw, qtype, (M, K), x8=True), QMatrix(raw, qtype, (M, K))
    assert W8.x8_active == (int(qtype) in qmatmul._nb.X8_TYPE_IDS)
    assert W8.x8_active == qmatmul._nb._X8
    y8, y16 = kernels.matmul_many([W8, W16], x)
    if W8.x8_active:
        assert_int8_close(y8, x, w)
    else:
        np.testing.assert_array_equal(y8, y16)
    assert_close(y16, x, w, qtype)
    np.testing.assert_array_equal(W8.matmul(x), y8)
    for lo, hi in ((0, 1), (N // 2, N // 2 + 1), (1, N)):
        if lo < hi <= N:
            np.testing.assert_array_equal(W8.matmul(x[lo:hi]), y8[lo:hi])


def test_activation_bits_config_key(tmp_path, monkeypatch):
    from localai import config

    monkeypatch.delenv("LOCALAI_ACTIVATION_BITS", raising=False)
    p = tmp_path / "config.toml"
    for value, expect in (("8", 8), ("16", 16), ('"auto"', "auto")):
        p.write_text(f"activation_bits = {value}\n")
        assert config.load(str(p)).activation_bits == expect
    for bad, shown in (("4", "4"), ('"8"', "'8'"), ("true", "true")):  # as the file spells it
        p.write_text(f"activation_bits = {bad}\n")
        with pytest.raises(config.ConfigError, match=f'`activation_bits` must be 8, 16 or "auto", not {shown}$'):
            config.load(str(p))
    p.write_text("activation_bits = 16\n")  # $LOCALAI_ACTIVATION_BITS overrides the file
    monkeypatch.setenv("LOCALAI_ACTIVATION_BITS", "8")
    assert config.load(str(p)).activation_bits == 8
    monkeypatch.setenv("LOCALAI_ACTIVATION_BITS", "auto")
    assert config.load(str(p)).activation_bits == "auto"
    monkeypatch.setenv("LOCALAI_ACTIVATION_BITS", "x")  # a daemon never starts with it
    with pytest.raises(config.ConfigError, match="^LOCALAI_ACTIVATION_BITS must be 8, 16 or auto, not 'x'$"):
        config.load(str(p))


def test_activation_bits_auto_goes_by_the_model_size(monkeypatch):
    """"auto" (the default, also from $LOCALAI_ACTIVATION_BITS): 8 from 1B parameters, 16 below;
    16 in effect whatever was asked where the kernels have no int8 tile."""
    from localai.errors import InvalidRequest
    from localai.ops import numpy as ops

    e8 = 8 if qmatmul.x8_available() else 16
    assert qmatmul.x8_available() == (qmatmul._nb is not None and qmatmul._nb._X8)
    monkeypatch.delenv("LOCALAI_ACTIVATION_BITS", raising=False)
    assert ops.X8_AUTO_PARAMS == 1_000_000_000
    assert ops.set_activation_bits(None, 1_543_714_304) == e8  # Qwen2.5-1.5B
    assert ops.set_activation_bits(None, 134_515_008) == 16  # SmolLM2-135M
    assert ops.set_activation_bits("auto", 10**9) == e8
    assert ops.set_activation_bits(16, 7 * 10**9) == 16
    assert ops.set_activation_bits(8, 10**8) == e8
    monkeypatch.setenv("LOCALAI_ACTIVATION_BITS", "16")
    assert ops.set_activation_bits(None, 7 * 10**9) == 16
    monkeypatch.setenv("LOCALAI_ACTIVATION_BITS", "auto")
    assert ops.set_activation_bits(None, 7 * 10**9) == e8
    # which weights: the layers' dense matrices and the output, tied or not
    assert all(ops._X8_NAMES.fullmatch(n) for n in ("blk.0.attn_q.weight", "blk.31.ffn_down.weight",
                                                    "blk.2.attn_qkv.weight", "output.weight", "token_embd.weight"))
    assert not any(ops._X8_NAMES.fullmatch(n) for n in ("blk.0.ffn_down_exps.weight", "blk.0.attn_norm.weight",
                                                        "blk.0.ffn_gate_inp.weight", "output_norm.weight"))
    ops.set_activation_bits(16)
    assert not ops._x8("output.weight")
    for bad in (4, True, "8"):
        with pytest.raises(InvalidRequest, match="must be 8, 16 or auto"):
            ops.set_activation_bits(bad, 10**9)
    monkeypatch.setenv("LOCALAI_ACTIVATION_BITS", "x")
    with pytest.raises(InvalidRequest, match="LOCALAI_ACTIVATION_BITS must be 8, 16 or auto, not 'x'"):
        ops.set_activation_bits(None, 10**9)


# SmolLM2's layer matrices, all Q4_1: attention q and output (576 x 576), k and v (192 x 576),
# feed-forward gate and up (1536 x 576), down (576 x 1536)
SMOLLM2_X8 = {((576, 576), "Q4_1"), ((192, 576), "Q4_1"), ((1536, 576), "Q4_1"), ((576, 1536), "Q4_1")}


def _int8_matrices():  # of every live model
    import gc
    return {(m.shape, m.type.name) for m in gc.get_objects() if type(m) is QMatrix and m.x8_active}


@NUMBA
def test_activation_bits_8_rounds_the_layers_x_to_int8(smollm2_path, monkeypatch):
    """A model loaded with activation bits 8 (config, $LOCALAI_ACTIVATION_BITS, or "auto" on a
    model of 1B parameters or more) takes int8 x in its layers' attention and feed-forward
    matrices where the kernel has the int8 tile, and nowhere else; SmolLM2 by default ("auto",
    135M parameters) keeps int16 x everywhere; the greedy next token stays; a bad value is one error."""
    import gc

    import localai
    from localai.errors import InvalidRequest
    from localai.ops import numpy as ops

    monkeypatch.setenv("LOCALAI_ACTIVATION_BITS", "8")
    llm8 = localai.load(str(smollm2_path), backend="numpy")
    assert llm8.activation_bits == (8 if qmatmul.x8_available() else 16)
    ids = llm8.tokenize("The capital of France is")
    logits8 = llm8.logits(ids)[-1]
    x8 = _int8_matrices()
    del llm8
    gc.collect()
    monkeypatch.delenv("LOCALAI_ACTIVATION_BITS")
    llm16 = localai.load(str(smollm2_path), backend="numpy")
    assert (llm16.n_params, llm16.activation_bits) == (134_515_008, 16)
    assert _int8_matrices() == set()
    logits16 = llm16.logits(ids)[-1]
    if qmatmul._nb._X8:
        assert x8 == SMOLLM2_X8
        assert not np.array_equal(logits8, logits16)
    else:
        assert x8 == set()
        np.testing.assert_array_equal(logits8, logits16)
    assert int(logits8.argmax()) == int(logits16.argmax())
    del llm16
    gc.collect()
    # "auto" goes by the parameter count the loader read from the file: with the bound at
    # SmolLM2's own size, the default load takes int8 x as a 1B model does
    monkeypatch.setattr(ops, "X8_AUTO_PARAMS", 134_515_008)
    llm = localai.load(str(smollm2_path), backend="numpy")
    assert llm.activation_bits == 8
    assert _int8_matrices() == (SMOLLM2_X8 if qmatmul._nb._X8 else set())
    monkeypatch.setenv("LOCALAI_ACTIVATION_BITS", "4")
    with pytest.raises(InvalidRequest, match="must be 8, 16 or auto"):
        localai.load(str(smollm2_path), backend="numpy")


PACKED_TYPES = INT_TYPES  # every type of the integer kernels


@NUMBA
@pytest.mark.parametrize("qtype", PACKED_TYPES, ids=lambda t: t.name)
def test_packed_weights_match_the_row_kernel(qtype, monkeypatch):
    """The packed layout (16 rows interleaved; kernels/_numba.py `pack`) is what QMatrix
    multiplies for these types, it is within 3 % of the file's bytes, and it computes the
    same integer dots as the row-at-a-time kernel on the file's bytes: equal up to the order
    of the float sums. M = 37: a last group of 5 real rows and 11 zero ones; K = 544: two
    x groups of 8 blocks and one block after them."""
    M, K = 37, 768 if quants.block_size(qtype)[0] == 256 else 544
    raw = random_rows(qtype, M, K, seed=11)
    W = QMatrix(raw, qtype, (M, K))
    assert W._segs[0, 0] == qmatmul._nb.PACK + int(qtype)
    assert raw.nbytes <= W._packed.nbytes <= 1.03 * raw.nbytes * 48 / M  # 48: M padded to 16s
    monkeypatch.setattr(qmatmul, "PACK", False)
    rows = QMatrix(raw, qtype, (M, K))
    assert rows._packed is None
    x = np.random.default_rng(2).standard_normal((9, K)).astype(np.float32)
    y, y0 = W.matmul(x), rows.matmul(x)
    np.testing.assert_allclose(y, y0, rtol=1e-5, atol=1e-5 * np.abs(y0).max())


@NUMBA
def test_packed_kernel_same_bits_with_and_without_vnni():
    """Where numba compiles for AVX-512 VNNI, the packed tile sums its pair products with
    vpdpwssd; compiled for the same CPU less VNNI (NUMBA_CPU_FEATURES), with plain IR (pmaddwd
    and adds). Both are exact integer sums, so every result is the same bits. (On a CPU
    without VNNI both runs take plain IR.)"""
    from numba.core.codegen import get_host_cpu_features

    code = """if True:
        import sys
        import numpy as np
        from gguf import GGMLQuantizationType as T
        from localai.kernels import QMatrix
        from localai.kernels import _numba
        d, tag = sys.argv[1], sys.argv[2]
        print(_numba._VNNI)
        x = np.random.default_rng(1).standard_normal((6, 768)).astype(np.float32)
        for name in sys.argv[3:]:
            raw = np.load(f"{d}/{name}.npy")
            np.save(f"{d}/{name}.{tag}.npy", QMatrix(raw, T[name], (raw.shape[0], 768)).matmul(x))
    """
    import tempfile
    feats = get_host_cpu_features()
    without = ",".join("-avx512vnni" if f == "+avx512vnni" else f for f in feats.split(","))
    with tempfile.TemporaryDirectory() as d:
        for t in PACKED_TYPES:
            np.save(f"{d}/{t.name}.npy", random_rows(t, 21, 768, seed=int(t)))
        used = []
        for tag, env_feats in (("host", None), ("novnni", without)):
            env = dict(os.environ)
            if env_feats is not None:
                env["NUMBA_CPU_FEATURES"] = env_feats
            out = subprocess.run([sys.executable, "-c", code, d, tag, *[t.name for t in PACKED_TYPES]],
                                 env=env, check=True, capture_output=True, text=True)
            used.append(out.stdout.split()[-1])
        assert used[1] == "False" and used[0] == str("+avx512vnni" in feats.split(",") and "+avx512bw" in feats.split(","))
        for t in PACKED_TYPES:
            np.testing.assert_array_equal(np.load(f"{d}/{t.name}.host.npy"), np.load(f"{d}/{t.name}.novnni.npy"))


# Haswell's features, named (the kernels read NUMBA_CPU_FEATURES to pick their tiles; with it
# empty, LLVM would take the CPU name's but the kernels would see none)
HASWELL = ",".join("+" + f for f in ("64bit avx avx2 bmi bmi2 cmov cx16 f16c fma fsgsbase fxsr lzcnt mmx movbe "
                                     "pclmul popcnt rdrnd sahf sse sse2 sse3 sse4.1 sse4.2 ssse3 xsave xsaveopt").split())


@NUMBA
def test_integer_gemm_on_an_avx2_target():
    """The integer GEMM compiled for a Haswell-class CPU (AVX2 + FMA, no AVX-512, no VNNI: LLVM
    picks other instructions for the same IR) in a fresh process; numba compiles and caches
    it apart."""
    code = """if True:
        import sys
        import numpy as np
        from gguf import GGMLQuantizationType as T
        from localai.kernels import QMatrix
        rng, d = np.random.default_rng(5), sys.argv[1]
        for name in sys.argv[2:]:
            raw = np.load(f"{d}/{name}.npy")
            x = rng.standard_normal((9, 768)).astype(np.float32)
            np.save(f"{d}/{name}.y.npy", QMatrix(raw, T[name], (raw.shape[0], 768)).matmul(x))
            W8 = QMatrix(raw, T[name], (raw.shape[0], 768), x8=True)
            np.save(f"{d}/{name}.y8.npy", W8.matmul(x))
            print(name, W8.x8_active)
            np.save(f"{d}/{name}.x.npy", x)
    """
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        for t in INT_TYPES:
            np.save(f"{d}/{t.name}.npy", random_rows(t, 11, 768, seed=int(t)))
        env = dict(os.environ, NUMBA_CPU_NAME="haswell", NUMBA_CPU_FEATURES=HASWELL)
        out = subprocess.run([sys.executable, "-c", code, d, *[t.name for t in INT_TYPES]], env=env, check=True,
                             capture_output=True, text=True).stdout
        assert out.split() == [v for t in INT_TYPES for v in (t.name, str(t in X8_TYPES))]  # int8 x on AVX2
        for t in INT_TYPES:
            x, w = np.load(f"{d}/{t.name}.x.npy"), reference(np.load(f"{d}/{t.name}.npy"), t)
            assert_close(np.load(f"{d}/{t.name}.y.npy"), x, w, t)
            if t in X8_TYPES:
                assert_int8_close(np.load(f"{d}/{t.name}.y8.npy"), x, w)


@NUMBA
def test_attention_tiles_on_an_avx2_target():
    """The attention tiles compiled for a Haswell-class CPU (8 lanes, two keys per score tile)
    in a fresh process: a float64 reference, and each position's row the same bits whether
    the prompt came at once or one token at a time."""
    code = """if True:
        import numpy as np
        from localai.kernels import _numba as nb, elementwise
        rng = np.random.default_rng(4)
        H, Hkv, hd, L = 6, 2, 64, 21
        q = rng.standard_normal((H, L, hd)).astype(np.float32)
        k, v = rng.standard_normal((2, Hkv, L, hd)).astype(np.float16)
        full = elementwise.attend(q, k, v, 0, 0.3, None).reshape(L, H, hd)
        for p in range(L):
            one = elementwise.attend(q[:, p:p + 1], k[:, :p + 1], v[:, :p + 1], p, 0.3, None)
            assert np.array_equal(one.reshape(H, hd), full[p]), p
            for h in range(H):
                s = 0.3 * k[h // 3, :p + 1].astype(np.float64) @ q[h, p]
                w = np.exp(s - s.max())
                np.testing.assert_allclose(full[p, h], w / w.sum() @ v[h // 3, :p + 1].astype(np.float64),
                                           rtol=1e-5, atol=1e-6)
        print(nb.AL, nb.AKB)
    """
    env = dict(os.environ, NUMBA_CPU_NAME="haswell", NUMBA_CPU_FEATURES="")
    out = subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True)
    assert out.stdout.split()[-2:] == ["8", "2"]


@NUMBA
def test_packed_tile_compiles_for_an_avx512_vnni_target():
    """The AVX-512 VNNI variant of the packed tile (8 rows of x, 16 lanes, vpdpwssd in inline
    assembly) compiled, not run, in a fresh process for an Ice Lake server target: a machine
    without AVX-512 can still check that this path builds and emits vpdpwssd on zmm registers.
    Its cache goes to a temporary folder."""
    code = """if True:
        import numba
        import numpy as np
        from gguf import GGMLQuantizationType as T
        from localai.kernels import _numba as nb
        M, K = 32, 256
        buf = np.empty(nb.packed_bytes(int(T.Q4_0), M, K), np.uint8)
        buf.flags.writeable = False
        args = (buf, np.zeros((1, 4), np.int64), np.zeros((5, K), np.float32), np.empty(5 * M, np.float32), nb.FULL)
        sig = tuple(numba.typeof(a) for a in args)
        nb.matmul.compile(sig)
        asm = nb.matmul.inspect_asm(sig)
        print(nb._VNNI, nb.PRX, nb.CHAINS, sum("vpdpwssd" in line and "zmm" in line for line in asm.splitlines()))
    """
    import tempfile
    feats = ("+64bit,+sse,+sse2,+sse3,+ssse3,+sse4.1,+sse4.2,+popcnt,+cx16,+avx,+avx2,+fma,+f16c,+bmi,+bmi2,"
             "+lzcnt,+movbe,+avx512f,+avx512bw,+avx512dq,+avx512vl,+avx512cd,+avx512vnni")
    with tempfile.TemporaryDirectory() as d:
        env = dict(os.environ, NUMBA_CPU_NAME="icelake-server", NUMBA_CPU_FEATURES=feats, NUMBA_CACHE_DIR=d)
        out = subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True)
    vnni, prx, chains, n = out.stdout.split()[-4:]
    assert (vnni, prx, chains) == ("True", "8", "2")
    assert int(n) > 0


# -- backend selection --------------------------------------------------------------------------

def test_env_forces_numpy():
    code = "from localai.kernels import KERNEL_BACKEND; print(KERNEL_BACKEND)"
    env = dict(os.environ, LOCALAI_KERNELS="numpy")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "numpy"


def test_interface():
    assert kernels.KERNEL_BACKEND in ("numba", "numpy")
    assert kernels.warmup() == kernels.KERNEL_BACKEND
    kernels.set_threads(1)
    kernels.set_threads(os.cpu_count() or 1)


def test_compile_failure_falls_back_to_numpy(monkeypatch):
    class Broken:
        TYPE_IDS = frozenset([int(T.Q8_0)])
        FULL = 0

        @staticmethod
        def matmul(*args):
            raise RuntimeError("LLVM says no")

    monkeypatch.setattr(qmatmul, "_nb", Broken)
    monkeypatch.setattr(qmatmul, "_compiled", False)
    raw = random_rows(T.Q8_0, 3, 64)
    y = QMatrix(raw, T.Q8_0, (3, 64)).matmul(np.ones((1, 64), np.float32))
    assert kernels.KERNEL_BACKEND == "numpy"
    assert_close(y, np.ones((1, 64), np.float32), reference(raw, T.Q8_0))


def test_kv_store_rounds_as_numpy_does():
    """The numba KV store (float32 -> float16 bits, vcvtps2ph) gives numpy's float16 bits for
    every magnitude: subnormal, normal, the largest half, overflow to infinity; from a
    transposed (strided) source, as a decode step passes k."""
    from localai.kernels import elementwise

    rng = np.random.default_rng(7)
    for scale in (1e-9, 1e-6, 1e-3, 1.0, 1e3, 7e4, 1e6):
        x = (rng.standard_normal((40, 3, 64)) * scale).astype(np.float32)
        x[0, 0, :4] = [np.inf, -np.inf, 65519.0, -65520.0]
        src = x.transpose(1, 0, 2)                                   # (Hkv, L, hd), strided
        ours = np.zeros((3, 100, 64), np.float16)
        ref = ours.copy()
        elementwise.kv_store(ours, 7, src)
        with np.errstate(over="ignore"):
            ref[:, 7:47] = src
        assert (ours.view(np.uint16) == ref.view(np.uint16)).all(), scale
