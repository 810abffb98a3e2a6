"""The MLX KV cache (as mlx-lm's cache.py), the attention mask, and the one `mx.eval` per step.

The cache has one verb, `update_and_fetch(k, v)`, plus `offset`; its storage grows in steps
of `STEP` positions. `trim(n)` keeps the first n positions (the engine's prompt-cache reuse:
note that mlx-lm's `trim(n)` drops n from the end instead).
"""
from __future__ import annotations

import mlx.core as mx
import numpy as np

STEP = 256


class KVCache:
    def __init__(self, max_len: int):
        self.max_len = max_len
        self.keys = self.values = None   # (1, Hkv, capacity, hd) each
        self.offset = 0

    def update_and_fetch(self, k: mx.array, v: mx.array):
        """k, v: (1, Hkv, L, hd) for the new positions -> all cached keys, values (1, Hkv, offset+L, hd)."""
        prev, L = self.offset, k.shape[2]
        end = prev + L
        if end > self.max_len:
            raise ValueError(f"KV cache overflow: {end} > {self.max_len}")
        if self.keys is None or end > self.keys.shape[2]:
            B, Hkv, _, hd = k.shape
            cap = min(self.max_len, (end + STEP - 1) // STEP * STEP)
            grow = (B, Hkv, cap - prev, hd)
            if self.keys is None:  # two arrays: slice assignment below updates each in place
                self.keys, self.values = mx.zeros(grow, k.dtype), mx.zeros(grow, v.dtype)
            else:
                self.keys = mx.concatenate([self.keys[..., :prev, :], mx.zeros(grow, k.dtype)], axis=2)
                self.values = mx.concatenate([self.values[..., :prev, :], mx.zeros(grow, v.dtype)], axis=2)
        self.keys[..., prev:end, :] = k
        self.values[..., prev:end, :] = v
        self.offset = end
        return self.keys[..., :end, :], self.values[..., :end, :]

    def trim(self, n: int) -> None:
        self.offset = min(self.offset, max(0, n))

    @property
    def state(self) -> list:
        return [] if self.keys is None else [self.keys, self.values]

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.state)


def make_cache(n_layers: int, max_len: int) -> list[KVCache]:
    return [KVCache(max_len) for _ in range(n_layers)]


def attention_mask(L: int, offset: int, window: int | None = None):
    """Mask for L queries at positions offset.. over offset + L keys: a query at p sees keys
    j <= p (and p - j < window). None where each sees them all, "causal" (MLX aligns it to
    the last query) where the window cuts nothing, else a bool (L, T) array."""
    T = offset + L
    if window is None or T <= window:
        return None if L == 1 else "causal"
    pos = mx.arange(offset, T)[:, None]   # (L, 1)
    key = mx.arange(T)[None, :]           # (1, T)
    return (key <= pos) & (pos - key < window)


def to_numpy(logits: mx.array, cache: list[KVCache]) -> np.ndarray:
    """The step's one `mx.eval` (logits and every layer's cache together) -> float32 numpy."""
    mx.eval(logits, *(a for c in cache for a in c.state))
    return np.array(logits, dtype=np.float32, copy=False)
