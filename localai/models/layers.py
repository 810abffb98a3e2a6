"""Plain numpy building blocks of the numpy backend's operations (localai/ops/numpy.py):
norms, RoPE, attention.

Arrays are float32. Shapes: L new positions, T cached positions (T >= L), H query heads,
Hkv key/value heads, hd head dim.
"""
from __future__ import annotations

import numpy as np

from .. import kernels


def rms_norm(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    """x: (..., D), w: (D,)."""
    return kernels.rms_norm(x, w, eps)


def glu(gate: np.ndarray, up: np.ndarray, act: str) -> np.ndarray:
    """act(gate) * up for the feed-forward, act "silu" or "gelu_tanh"; overwrites gate."""
    return kernels.glu(gate, up, act)


class Rope:
    """Rotary position embedding over the first `dims` of each head.

    mode "norm": adjacent pairs (x[2i], x[2i+1]) — llama as stored in GGUF (the converter
    permutes Q/K); mode "neox": halves (x[i], x[i + dims/2]) — gemma, qwen, etc.
    `freq_factors` (llama 3's rope_freqs tensor) divide the per-pair frequencies.
    """

    def __init__(self, dims: int, base: float, mode: str, scale: float = 1.0, freq_factors=None):
        self.dims, self.mode = dims, mode
        inv = base ** (-np.arange(0, dims, 2, dtype=np.float64) / dims)  # (dims/2,)
        if freq_factors is not None:
            inv = inv / np.asarray(freq_factors, dtype=np.float64)
        self.inv_freq = inv * scale
        self._cos = self._sin = np.empty((0, dims // 2), np.float32)

    def _tables(self, end: int):
        if end > self._cos.shape[0]:
            n = max(end, 2 * self._cos.shape[0], 256)
            ang = np.arange(n, dtype=np.float64)[:, None] * self.inv_freq[None, :]  # (n, dims/2)
            self._cos, self._sin = np.cos(ang).astype(np.float32), np.sin(ang).astype(np.float32)
        return self._cos, self._sin

    def __call__(self, x: np.ndarray, offset) -> np.ndarray:
        """x: (L, H, hd) -> rotated copy; offset: the first row's position (int), or each
        row's position, int (L,) (several sequences in one pass: localai/batch.py)."""
        L = x.shape[0]
        if isinstance(offset, np.ndarray):
            cos, sin = self._tables(int(offset.max()) + 1)
            return kernels.rope(x, cos[offset], sin[offset], self.mode == "neox")
        cos, sin = self._tables(offset + L)
        return kernels.rope(x, cos[offset:offset + L], sin[offset:offset + L], self.mode == "neox")


def attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, offset: int, scale: float,
              window: int | None = None) -> np.ndarray:
    """Causal grouped-query attention.

    q: (H, L, hd) for positions offset..offset+L-1; k, v: (Hkv, T, hd) with T = offset + L.
    A query at position p sees keys j <= p (and p - j < window for sliding-window layers).
    Returns (L, H * hd). With the numba kernels each query is computed alone by one kernel,
    decode and prefill alike, so the result for a position is bit-identical however the
    prompt was split into batches (kernels.attend).
    """
    return kernels.attend(q, k, v, offset, scale, window)
