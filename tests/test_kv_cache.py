"""The numpy backend's KV cache holds float16 keys and values (llama.cpp's default cache
type): half the bytes of float32 per position, each key and value the float32 one rounded
to nearest, and attention over it within the fidelity bars (tests/test_reference.py)."""
from __future__ import annotations

import numpy as np
import pytest

import localai
from localai.models import cache as kv


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


@pytest.fixture(scope="module")
def llm(smollm2_path):
    return localai.load(str(smollm2_path), backend="numpy", n_ctx=64)


def test_the_cache_is_float16_and_half_the_bytes_of_float32(llm, monkeypatch):
    ids = llm.tokenize("The quick brown fox jumps over the lazy dog.")
    s = llm.new_session()
    logits16 = llm.model(np.asarray(ids), s.cache)
    a = llm.model.args
    assert len(s.cache) == a.n_layers
    for c in s.cache:
        assert c.keys.dtype == np.float16 and c.values.dtype == np.float16
        assert c.offset == len(ids)
    cap = s.cache[0].keys.shape[1]  # one STEP of positions, capped at n_ctx
    assert cap == min(kv.STEP, 64)
    per_layer = 2 * a.n_kv_heads * cap * a.head_dim * 2  # K and V, float16
    assert sum(c.nbytes for c in s.cache) == a.n_layers * per_layer

    monkeypatch.setattr(kv, "DTYPE", np.float32)  # the cache as it was: float32
    s32 = llm.new_session()
    logits32 = llm.model(np.asarray(ids), s32.cache)
    assert s32.cache[0].keys.dtype == np.float32
    assert sum(c.nbytes for c in s32.cache) == 2 * sum(c.nbytes for c in s.cache)
    # layer 0's K/V come from the same embeddings: float16 is float32 rounded to nearest
    n = len(ids)
    assert np.array_equal(s.cache[0].keys[:, :n], s32.cache[0].keys[:, :n].astype(np.float16))
    assert np.array_equal(s.cache[0].values[:, :n], s32.cache[0].values[:, :n].astype(np.float16))
    # later layers see the rounding only through attention: the same next tokens, close log-probs
    lp16, lp32 = log_softmax(logits16), log_softmax(logits32)
    top = np.argsort(-logits32, axis=-1)[:, :20]
    diff = np.abs(np.take_along_axis(lp16, top, -1) - np.take_along_axis(lp32, top, -1))
    assert (logits16.argmax(-1) == logits32.argmax(-1)).mean() >= 0.9
    print(f"\nfloat16 vs float32 KV cache: top-20 log-prob |diff| max {diff.max():.4f} mean {diff.mean():.5f}")
    assert diff.max() < 0.05, diff.max()


def test_admission_counts_what_the_cache_holds(llm, smollm2_path):
    """The daemon's memory admission sizes a context by the cache's real bytes per position."""
    from localai.daemon import admission
    from localai.gguf_file import GGUFFile

    s = llm.new_session()
    llm.model(np.asarray(llm.tokenize("Hello there")), s.cache)
    per_position = sum(c.nbytes for c in s.cache) // s.cache[0].keys.shape[1]
    g = GGUFFile(str(smollm2_path))
    assert admission.kv_bytes_per_token(g, "numpy") == per_position
    assert admission.kv_bytes_per_token(g, "mlx") == 2 * per_position  # MLX's cache is float32


def test_kernel_storage_follows_the_storage():
    """kernel_storage (the batched step's attention table: localai/ops/numpy.py) gives the
    addresses of this cache's storage, also after the storage grows and in a copied cache,
    which must never read the original's memory."""
    import copy

    c = kv.KVCache(2, 8, 1024)
    c.store(np.ones((2, 3, 8), np.float32), np.ones((2, 3, 8), np.float32))
    kb, vb, ka, va = c.kernel_storage()
    assert (ka, va) == (c.keys.ctypes.data, c.values.ctypes.data) and kb.dtype == np.uint16
    assert kb.shape == c.keys.shape and kb.base is c.keys
    c.store(np.ones((2, kv.STEP, 8), np.float32), np.ones((2, kv.STEP, 8), np.float32))  # grows
    assert c.kernel_storage()[2:] == (c.keys.ctypes.data, c.values.ctypes.data) != (ka, va)
    d = copy.deepcopy(c)
    assert d.kernel_storage()[2:] == (d.keys.ctypes.data, d.values.ctypes.data)
    assert d.kernel_storage()[2] != c.kernel_storage()[2]
