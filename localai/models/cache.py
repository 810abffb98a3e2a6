"""The KV cache: one verb, `update_and_fetch(k, v)`, plus `offset` (as mlx-lm's cache.py).

Storage grows in steps of `STEP` positions so a short chat does not allocate the whole
context. `trim(n)` rolls the cache back to its first n positions, which is how a prompt
cache reuses the longest common prefix of two prompts.
"""
from __future__ import annotations

import numpy as np

STEP = 256


class KVCache:
    def __init__(self, n_kv_heads: int, head_dim: int, max_len: int, dtype=np.float32):
        self.n_kv_heads, self.head_dim, self.max_len = n_kv_heads, head_dim, max_len
        self.dtype = dtype
        self.keys = np.empty((n_kv_heads, 0, head_dim), dtype)    # (Hkv, capacity, hd)
        self.values = np.empty((n_kv_heads, 0, head_dim), dtype)  # (Hkv, capacity, hd)
        self.offset = 0

    def _grow(self, need: int) -> None:
        cap = min(self.max_len, (need + STEP - 1) // STEP * STEP)
        Hkv, _, hd = self.keys.shape
        for name in ("keys", "values"):
            old = getattr(self, name)
            new = np.empty((Hkv, cap, hd), self.dtype)
            new[:, : self.offset] = old[:, : self.offset]
            setattr(self, name, new)

    def update_and_fetch(self, k: np.ndarray, v: np.ndarray):
        """k, v: (Hkv, L, hd) for the new positions -> all cached keys, values (Hkv, offset+L, hd)."""
        L = k.shape[1]
        end = self.offset + L
        if end > self.max_len:
            raise ValueError(f"KV cache overflow: {end} > {self.max_len}")
        if end > self.keys.shape[1]:
            self._grow(end)
        self.keys[:, self.offset:end] = k
        self.values[:, self.offset:end] = v
        self.offset = end
        return self.keys[:, :end], self.values[:, :end]

    def trim(self, n: int) -> None:
        self.offset = min(self.offset, max(0, n))

    @property
    def nbytes(self) -> int:
        return self.keys.nbytes + self.values.nbytes


def make_cache(n_layers: int, n_kv_heads: int, head_dim: int, max_len: int) -> list[KVCache]:
    return [KVCache(n_kv_heads, head_dim, max_len) for _ in range(n_layers)]
