"""The KV cache: one verb, `update_and_fetch(k, v)`, plus `offset` (as mlx-lm's cache.py).

Keys and values are stored as float16, as llama.cpp stores them (its default cache type
`f16`): half the memory of float32 (a 7B model: 0.5 MiB per position instead of 1 MiB) and
half the bytes a decode step reads. They are rounded once, when stored (round to nearest
even), so a position's K/V, and everything computed from them, are the same however the
prompt was split into batches. Attention reads them as float32 (kernels.attend).

Storage grows in steps of `STEP` positions so a short chat does not allocate the whole
context. `trim(n)` rolls the cache back to its first n positions, which is how a prompt
cache reuses the longest common prefix of two prompts.
"""
from __future__ import annotations

import numpy as np

from ..kernels import elementwise

STEP = 256
DTYPE = np.float16  # what make_cache stores; kernels.attend reads float16 and float32


class KVCache:
    def __init__(self, n_kv_heads: int, head_dim: int, max_len: int, dtype=None):
        self.n_kv_heads, self.head_dim, self.max_len = n_kv_heads, head_dim, max_len
        self.dtype = np.dtype(DTYPE if dtype is None else dtype)
        self.keys = np.empty((n_kv_heads, 0, head_dim), self.dtype)    # (Hkv, capacity, hd)
        self.values = np.empty((n_kv_heads, 0, head_dim), self.dtype)  # (Hkv, capacity, hd)
        self.offset = 0
        self._table = None  # kernel_storage's

    def _grow(self, need: int) -> None:
        cap = min(self.max_len, (need + STEP - 1) // STEP * STEP)
        Hkv, _, hd = self.keys.shape
        for name in ("keys", "values"):
            old = getattr(self, name)
            new = np.empty((Hkv, cap, hd), self.dtype)
            new[:, : self.offset] = old[:, : self.offset]
            setattr(self, name, new)
        self._table = None

    def store(self, k: np.ndarray, v: np.ndarray) -> None:
        """k, v: (Hkv, L, hd) float32 for the new positions, stored rounded to the cache's
        dtype; offset moves on by L."""
        end = self.offset + k.shape[1]
        if end > self.max_len:
            raise ValueError(f"KV cache overflow: {end} > {self.max_len}")
        if end > self.keys.shape[1]:
            self._grow(end)
        elementwise.kv_store(self.keys, self.offset, k)
        elementwise.kv_store(self.values, self.offset, v)
        self.offset = end

    def update_and_fetch(self, k: np.ndarray, v: np.ndarray):
        """store(k, v) -> all cached keys, values (Hkv, offset+L, hd), views of the storage."""
        self.store(k, v)
        return self.keys[:, :self.offset], self.values[:, :self.offset]

    def kernel_storage(self) -> tuple:
        """(K bits, V bits, K address, V address) as kernels.elementwise.attend_table takes
        them (the storage, float16 as uint16 bits), kept while the storage is the same array
        (checked by identity, so a copied cache never reads another's addresses)."""
        t = self._table
        if t is None or t[0] != id(self.keys) or t[1] != id(self.values):
            kb, vb = elementwise.kv_bits(self.keys), elementwise.kv_bits(self.values)
            self._table = (id(self.keys), id(self.values), (kb, vb, kb.ctypes.data, vb.ctypes.data), self.keys, self.values)
            t = self._table
        return t[2]

    def trim(self, n: int) -> None:
        self.offset = min(self.offset, max(0, n))

    @property
    def nbytes(self) -> int:
        """Bytes of storage held (the allocated capacity, not only `offset` positions)."""
        return self.keys.nbytes + self.values.nbytes


def make_cache(n_layers: int, n_kv_heads: int, head_dim: int, max_len: int) -> list[KVCache]:
    """One float16 KVCache per layer."""
    return [KVCache(n_kv_heads, head_dim, max_len) for _ in range(n_layers)]
