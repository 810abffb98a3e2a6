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


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
@pytest.mark.parametrize("window", [None, 5])
def test_attention_on_the_cache_storage_equals_attention_on_its_views(dtype, window):
    """ops.numpy.attention hands the kernel a KVCache's storage itself (KVCache.kernel_storage);
    its result is the generic path's (the cache's views, traced back to the storage), bit for
    bit, across the storage growing past its first capacity, in prefill and in decode."""
    from localai import kernels
    from localai.models import layers
    from localai.ops import numpy as ops

    if kernels.qmatmul.numba_kernels() is None:
        pytest.skip("the numba kernels did not compile here: both paths are the numpy twin")
    rng = np.random.default_rng(7)
    H, Hkv, hd = 6, 2, 16
    fast, plain = kv.KVCache(Hkv, hd, 4 * kv.STEP, dtype), kv.KVCache(Hkv, hd, 4 * kv.STEP, dtype)
    for L in (13, 1, 1, kv.STEP, 3, 1):  # the last steps past the first STEP of capacity
        q = rng.standard_normal((L, H, hd)).astype(np.float32)
        k, v = (rng.standard_normal((L, Hkv, hd)).astype(np.float32) for _ in range(2))
        offset = plain.offset
        got = ops.attention(q, k, v, fast, 0.25, window)
        keys, values = plain.update_and_fetch(k.transpose(1, 0, 2), v.transpose(1, 0, 2))
        want = layers.attention(q.transpose(1, 0, 2), keys, values, offset, 0.25, window)
        assert fast.offset == plain.offset
        np.testing.assert_array_equal(got, want)
