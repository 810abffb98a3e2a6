"""The steps of a forward pass besides the weight matmuls: norms, rotary embeddings, gated
activations, the attention softmax, and the whole attention of a decode step.

    rms_norm(x, w, eps)                              x / sqrt(mean(x ** 2) + eps) * w
    rope(x, cos, sin, neox)                          rotary embedding of x (L, H, hd)
    glu(gate, up, "silu")                            gate := silu(gate) * up, in place
    causal_softmax(scores, L, offset, scale, window) scores := softmax(scale * scores), masked
    attend(q, k, v, offset, scale, window)           causal attention of L new positions
    attend_one(q, k, v, scale, window)               attention of one new position (decode)
    attend_many(q, [(k, v, offset), ...], scale, window)  several sequences' attention, one call

Numba's one-pass vectorized kernels (kernels/_numba.py) where they load, these numpy twins
otherwise; tests/test_kernels.py holds the two together.
"""
from __future__ import annotations

import math

import numpy as np

from . import qmatmul

ACTIVATIONS = ("silu", "gelu_tanh")


def rms_norm(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    """x (..., D), w (D,) -> a new float32 array like x."""
    nb = qmatmul.numba_kernels()
    if nb is not None:
        x2 = np.ascontiguousarray(x, np.float32).reshape(-1, x.shape[-1])
        out = np.empty_like(x2)
        nb.rms_norm(x2, np.ascontiguousarray(w, np.float32), float(eps), out)
        return out.reshape(x.shape)
    ms = np.mean(np.square(x, dtype=np.float32), axis=-1, keepdims=True)
    return (x * (1.0 / np.sqrt(ms + eps))).astype(np.float32, copy=False) * w


def rope(x: np.ndarray, cos: np.ndarray, sin: np.ndarray, neox: bool) -> np.ndarray:
    """x (L, H, hd) -> a rotated copy: position l turns by cos[l], sin[l] ((L, n) float32) over
    the first 2n dims of each head, pairs (i, i + n) if neox else (2i, 2i + 1)."""
    nb = qmatmul.numba_kernels()
    if nb is not None:
        x = np.ascontiguousarray(x, np.float32)
        out = np.empty_like(x)
        nb.rope(x, np.ascontiguousarray(cos), np.ascontiguousarray(sin), bool(neox), out)
        return out
    c, s = cos[:, None, :], sin[:, None, :]  # (L, 1, n)
    out = x.copy()
    n = cos.shape[1]
    if neox:
        x0, x1 = x[..., :n], x[..., n:2 * n]
        out[..., :n] = x0 * c - x1 * s
        out[..., n:2 * n] = x0 * s + x1 * c
    else:
        x0, x1 = x[..., 0:2 * n:2], x[..., 1:2 * n:2]
        out[..., 0:2 * n:2] = x0 * c - x1 * s
        out[..., 1:2 * n:2] = x0 * s + x1 * c
    return out


def glu(gate: np.ndarray, up: np.ndarray, act: str) -> np.ndarray:
    """gate, up (N, F) float32 C-contiguous: gate := act(gate) * up, in place; returns gate."""
    if act not in ACTIVATIONS:
        raise ValueError(f"unknown activation {act!r}")
    nb = qmatmul.numba_kernels()
    if nb is not None:
        nb.glu(gate, up, act == "gelu_tanh")
        return gate
    g = gate
    if act == "silu":
        a = g / (1.0 + np.exp(-g))
    else:
        a = 0.5 * g * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (g + 0.044715 * g * g * g)))
    np.multiply(a, up, out=gate)
    return gate


def causal_softmax(scores: np.ndarray, L: int, offset: int, scale: float, window: int | None) -> np.ndarray:
    """scores (R, T) float32 C-contiguous, R = heads * L: row r is the query at position
    offset + r % L. In place: softmax(scale * scores) over the keys j <= that position (and
    within `window` of it), 0 elsewhere. Returns scores."""
    nb = qmatmul.numba_kernels()
    if nb is not None:
        nb.causal_softmax(scores, int(L), int(offset), float(scale), int(window or 0))
        return scores
    R, T = scores.shape
    pos = offset + np.arange(R)[:, None] % L   # (R, 1)
    key = np.arange(T)[None, :]                # (1, T)
    masked = key > pos
    if window:
        masked |= (pos - key) >= window
    scores *= np.float32(scale)
    if masked.any():
        np.copyto(scores, np.float32(-np.inf), where=masked)
    scores -= scores.max(axis=-1, keepdims=True)
    np.exp(scores, out=scores)
    scores /= scores.sum(axis=-1, keepdims=True)
    return scores


KV_DTYPES = (np.dtype(np.float16), np.dtype(np.float32))  # what attend reads in place


def _storage(a: np.ndarray) -> np.ndarray:
    """a (Hkv, T, hd) float16 or float32 as the first T positions of the C-contiguous
    (Hkv, cap, hd) array it is a view of (a KV cache's storage, read in place), else a
    contiguous copy (float32 unless a is float16)."""
    b = a.base
    if (isinstance(b, np.ndarray) and b.ndim == 3 and b.dtype == a.dtype and b.dtype in KV_DTYPES
            and b.flags.c_contiguous and b.shape[0] == a.shape[0] and b.shape[2] == a.shape[2]
            and a.strides == b.strides and a.ctypes.data == b.ctypes.data):
        return b
    return np.ascontiguousarray(a, a.dtype if a.dtype in KV_DTYPES else np.float32)


def kv_store(storage: np.ndarray, offset: int, x: np.ndarray) -> None:
    """storage[:, offset:offset + L] = x: a KV cache's (Hkv, cap, hd) float16 or float32
    storage, x (Hkv, L, hd) float32 (any strides), rounded to float16 to nearest even as
    numpy's assignment does (numba: one pass, vcvtps2ph; numpy's own float16 cast took 15 us
    for a LLaMA-7B decode step's 4,096 values, 8.3 ms for a 512-token prefill's)."""
    nb = qmatmul.numba_kernels()
    if nb is not None and storage.dtype == np.float16 and x.dtype == np.float32:
        nb.kv_store(storage.view(np.uint16), int(offset), x)
    else:
        storage[:, offset:offset + x.shape[1]] = x


def kv_bits(a: np.ndarray) -> np.ndarray:
    """KV storage as the numba kernels take it: float32 as is, float16 as its uint16 bits."""
    return a.view(np.uint16) if a.dtype == np.float16 else a


Q_BLOCK = 128  # numpy twin: prefill queries per block; a block only scores the keys it can see


def attend(q: np.ndarray, k: np.ndarray, v: np.ndarray, offset: int, scale: float,
           window: int | None = None) -> np.ndarray:
    """Causal grouped-query attention of L new positions.

    q (H, L, hd) for positions offset..offset+L-1; k, v (Hkv, T, hd) float16 or float32 with
    T = offset + L (a KV cache's storage is read in place; float16 goes to float32 exactly
    as it is read). A query at position p sees keys j <= p (and
    p - j < window if set); query head h reads KV head h // (H / Hkv). Returns (L, H * hd).

    Numba: tiles of up to four query rows of one KV head sharing each key and value load,
    each row's arithmetic fixed whatever shares its tile, so a position's output is
    bit-identical whether its prompt came in one batch, in chunks or token by token. Numpy
    twin: blocks of Q_BLOCK queries through BLAS, each scored only against the keys up to its
    last position (and from its window's start), converting only those keys and values to
    float32."""
    H, L, hd = q.shape
    T = k.shape[1]
    if T != offset + L:
        raise ValueError(f"attend: {L} queries at offset {offset} need {offset + L} keys, got {T}")
    if qmatmul.numba_kernels() is not None:
        return attend_storage(q, kv_bits(_storage(k)), kv_bits(_storage(v)), offset, scale, window)
    out = np.empty((L, H * hd), np.float32)
    for i in range(0, L, Q_BLOCK):
        j = min(L, i + Q_BLOCK)
        lo = 0 if window is None else max(0, offset + i - window + 1)
        out[i:j] = _attend_block(q[:, i:j], k[:, lo:offset + j], v[:, lo:offset + j], offset + i - lo, scale, window)
    return out


def attend_storage(q: np.ndarray, kb: np.ndarray, vb: np.ndarray, offset: int, scale: float,
                   window: int | None = None) -> np.ndarray:
    """attend() with the numba kernel on a KV cache's storage as it is: kb, vb (Hkv, cap, hd)
    C-contiguous float32, or float16 as its uint16 bits (kv_bits), whose first offset + L
    positions are the keys and values; q (H, L, hd). Returns (L, H * hd). For a caller that
    holds the storage (models.cache.KVCache.kernel_storage): no view to trace back to it,
    which costs a decode step ~7 us a layer."""
    H, L, hd = q.shape
    out = np.empty((L, H, hd), np.float32)
    qc = np.ascontiguousarray(np.asarray(q, np.float32).transpose(1, 0, 2))  # (L, H, hd)
    qmatmul._apply_threads(rows=L)
    qmatmul.numba_kernels().attend(qc, kb, vb, int(offset), int(window or 0), float(scale), out)
    return out.reshape(L, H * hd)


def _attend_block(q, k, v, offset: int, scale: float, window: int | None) -> np.ndarray:
    """q: (H, L, hd) at positions offset.. relative to k, v: (Hkv, T, hd) -> (L, H * hd)."""
    H, L, hd = q.shape
    Hkv, T, _ = k.shape
    G = H // Hkv
    qg = q.reshape(Hkv, G * L, hd)
    k, v = np.asarray(k, np.float32), np.asarray(v, np.float32)  # float16 storage: this block's keys
    scores = qg @ k.transpose(0, 2, 1)  # (Hkv, G*L, T): row r is query r % L
    causal_softmax(scores.reshape(Hkv * G * L, T), L, offset, scale, window)
    out = scores @ v  # (Hkv, G*L, hd)
    return out.reshape(H, L, hd).transpose(1, 0, 2).reshape(L, H * hd)


def attend_one(q: np.ndarray, k: np.ndarray, v: np.ndarray, scale: float, window: int | None) -> np.ndarray:
    """q (H, hd): the new position's queries; k, v (Hkv, T, hd) with the new position last.
    Returns (H, hd) = softmax(scale q k^T) v over the keys it sees (the last `window` if set):
    attend() for one position."""
    H, hd = q.shape
    return attend(q.reshape(H, 1, hd), k, v, k.shape[1] - 1, scale, window).reshape(H, hd)


ONE_CALL = True  # attend_many: one kernel call per step (False: attend per sequence, the A/B of benchmarks/batching.py)


def attend_many(q: np.ndarray, seqs: list, scale: float, window: int | None = None) -> np.ndarray:
    """Causal attention of several sequences' new positions (a batched step, localai/batch.py).

    q (R, H, hd): the new rows of every sequence, in order; seqs [(k, v, offset)]: sequence
    i's n_i rows are at positions offset.., k, v (Hkv, offset + n_i, hd) its keys and values
    (a KV cache's storage is read in place), sum n_i = R. Returns (R, H * hd): each
    sequence's rows exactly what `attend` gives that sequence alone. Numba: one kernel call
    for all of them (attend_many in _numba.py) where their storages share a dtype; else
    `attend` per sequence."""
    R, H, hd = q.shape
    ns = [k.shape[1] - off for k, _, off in seqs]
    if sum(ns) != R or min(ns, default=0) < 0:
        raise ValueError(f"attend_many: the sequences have {sum(ns)} new positions, q has {R} rows")
    nb = qmatmul.numba_kernels()
    stores = [(kv_bits(_storage(k)), kv_bits(_storage(v))) for k, v, _ in seqs]
    if nb is None or not ONE_CALL or len(stores) < 2 or len({(kb.dtype, vb.dtype) for kb, vb in stores}) > 1:
        out, a = [], 0
        for (k, v, off), n in zip(seqs, ns):
            out.append(attend(q[a:a + n].transpose(1, 0, 2), k, v, off, scale, window))
            a += n
        return np.concatenate(out) if out else np.empty((0, H * hd), np.float32)
    rows, a = [], 0  # rows start, rows, offset, capacity, K, V address
    for i, ((_, _, off), n, (kb, vb)) in enumerate(zip(seqs, ns, stores)):
        if kb.shape != vb.shape or kb.shape[0] != stores[0][0].shape[0] or kb.shape[2] != hd:
            raise ValueError(f"attend_many: sequence {i} has K {kb.shape}, V {vb.shape}, queries of {hd}")
        rows.append((a, n, off, kb.shape[1], kb.ctypes.data, vb.ctypes.data))
        a += n
    return attend_table(q, stores[0][0], rows, scale, window)


def attend_table(q: np.ndarray, proto: np.ndarray, rows: list, scale: float, window: int | None = None) -> np.ndarray:
    """attend_many for callers that hold their sequences' KV storages (a batched step over KV
    caches: localai/ops/numpy.py), without attend_many's checks. q (R, H, hd); rows
    [(first row, rows, offset, capacity, K address, V address)] in q's order, each storage a
    C-contiguous (Hkv, capacity, hd) array of proto's dtype and shape[0], hd (float32, or
    float16 as its uint16 bits: `kv_bits`) that stays alive during the call and holds its
    sequence's keys and values up to offset + rows. Returns (R, H * hd). Numba only."""
    R, H, hd = q.shape
    nb = qmatmul.numba_kernels()
    out = np.empty((R, H, hd), np.float32)
    qmatmul._apply_threads(rows=R)
    nb.attend_many(np.ascontiguousarray(q, np.float32), proto, np.array(rows, np.int64), int(window or 0),
                   float(scale), out)
    return out.reshape(R, H * hd)
