"""The steps of a forward pass besides the weight matmuls: norms, rotary embeddings, gated
activations, the attention softmax, and the whole attention of a decode step.

    rms_norm(x, w, eps)                              x / sqrt(mean(x ** 2) + eps) * w
    rope(x, cos, sin, neox)                          rotary embedding of x (L, H, hd)
    glu(gate, up, "silu")                            gate := silu(gate) * up, in place
    causal_softmax(scores, L, offset, scale, window) scores := softmax(scale * scores), masked
    attend_one(q, k, v, scale, window)               attention of one new position (decode)

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


def _storage(a: np.ndarray) -> np.ndarray:
    """a (Hkv, T, hd) float32 as the first T positions of the C-contiguous (Hkv, cap, hd) array
    it is a view of (a KV cache's storage, read in place), else a contiguous copy."""
    b = a.base
    if (isinstance(b, np.ndarray) and b.ndim == 3 and b.dtype == np.float32 and b.flags.c_contiguous
            and b.shape[0] == a.shape[0] and b.shape[2] == a.shape[2] and a.strides == b.strides
            and a.ctypes.data == b.ctypes.data):
        return b
    return np.ascontiguousarray(a, np.float32)


def attend_one(q: np.ndarray, k: np.ndarray, v: np.ndarray, scale: float, window: int | None) -> np.ndarray:
    """q (H, hd): the new position's queries; k, v (Hkv, T, hd) with the new position last.
    Returns (H, hd) = softmax(scale q k^T) v over the keys it sees (the last `window` if set);
    query head h reads KV head h // (H / Hkv)."""
    H, hd = q.shape
    T = k.shape[1]
    lo = max(0, T - window) if window else 0
    nb = qmatmul.numba_kernels()
    if nb is not None:
        out = np.empty((H, hd), np.float32)
        nb.attend_one(np.ascontiguousarray(q, np.float32), _storage(k), _storage(v), T, lo, float(scale), out)
        return out
    Hkv = k.shape[0]
    qg = q.reshape(Hkv, H // Hkv, hd)
    scores = (qg @ k[:, lo:].transpose(0, 2, 1)) * np.float32(scale)  # (Hkv, G, T - lo)
    scores -= scores.max(axis=-1, keepdims=True)
    np.exp(scores, out=scores)
    scores /= scores.sum(axis=-1, keepdims=True)
    return (scores @ v[:, lo:]).reshape(H, hd)
