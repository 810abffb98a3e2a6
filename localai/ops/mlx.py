"""The MLX backend's operations (see localai/ops/__init__.py for the list and shapes).

Weights stay quantized as MLX affine codes (localai/mlx/quant.py) and multiply through
`mx.quantized_matmul`; norms, RoPE and attention are MLX's fused `mx.fast` kernels, except
soft-capped attention (Gemma 2), which no fused kernel has. Activations are float32, as in
the numpy backend. Everything stays lazy until `result`, the step's one `mx.eval`.
"""
from __future__ import annotations

import math

import mlx.core as mx
import numpy as np

from ..errors import ModelFileError
from ..mlx.cache import attention_mask, to_numpy
from ..mlx.cache import make_cache as _make_cache
from ..mlx.quant import from_gguf
from . import numpy as _np_ops

NAME = "mlx"
has = _np_ops.has


# -- weights ------------------------------------------------------------------------------

def matrix(g, name: str):
    """A 2-D weight, still quantized, as MLX affine codes (`quant.QMatrix`) or float32."""
    t = _np_ops.tensor(g, name)
    if len(t.shape) != 2:
        raise ModelFileError(f"{g.path}: tensor {name!r} should be 2-D, has shape {t.shape}")
    return from_gguf(t.data, t.ggml_type, t.shape)


def vector(g, name: str) -> mx.array:
    return mx.array(_np_ops.vector(g, name))


def experts(g, name: str) -> list:
    t = _np_ops.tensor(g, name)
    if len(t.shape) != 3:
        raise ModelFileError(f"{g.path}: tensor {name!r} should be 3-D, has shape {t.shape}")
    E, M, K = t.shape
    data = t.data.reshape(E, M, -1)
    return [from_gguf(data[e], t.ggml_type, (M, K)) for e in range(E)]


# -- compute ------------------------------------------------------------------------------

def embed(W, tokens) -> mx.array:
    return W.rows(mx.array(np.asarray(tokens, dtype=np.int32)))    # (L, D)


def linear(x: mx.array, W, b: mx.array | None = None) -> mx.array:
    y = W(x)
    return y if b is None else y + b


def linears(x: mx.array, Ws, bs=None) -> tuple:
    """linear(x, W_i, b_i) for each W_i (MLX fuses the graph itself)."""
    return tuple(linear(x, W, b) for W, b in zip(Ws, bs or [None] * len(Ws)))


def rms_norm(x: mx.array, w: mx.array, eps: float) -> mx.array:
    return mx.fast.rms_norm(x, w, eps)


def layer_norm(x: mx.array, w: mx.array, b: mx.array | None, eps: float) -> mx.array:
    return mx.fast.layer_norm(x, w, b, eps)


class Rope:
    """mx.fast.rope over the first `dims` of each head; frequency factors (llama 3's
    `rope_freqs`) divide the per-pair frequencies (MLX takes the periods as `freqs`)."""

    def __init__(self, dims: int, base: float, neox: bool, scale: float = 1.0, freq_factors=None):
        self.dims, self.traditional, self.scale = dims, not neox, scale
        self.base, self.freqs = base, None
        if freq_factors is not None:
            periods = base ** (np.arange(0, dims, 2, dtype=np.float64) / dims) * np.asarray(freq_factors, np.float64)
            self.base, self.freqs = None, mx.array(periods.astype(np.float32))

    def __call__(self, x: mx.array, offset: int) -> mx.array:
        """x (L, H, hd) at positions offset.. -> rotated (L, H, hd)."""
        y = mx.fast.rope(x.transpose(1, 0, 2), self.dims, traditional=self.traditional, base=self.base,
                         scale=self.scale, offset=offset, freqs=self.freqs)
        return y.transpose(1, 0, 2)


rope = Rope


def attention(q: mx.array, k: mx.array, v: mx.array, cache, scale: float,
              window: int | None = None, softcap: float | None = None) -> mx.array:
    L, H, hd = q.shape
    offset = cache.offset
    keys, values = cache.update_and_fetch(k.transpose(1, 0, 2)[None], v.transpose(1, 0, 2)[None])  # (1, Hkv, T, hd)
    q = q.transpose(1, 0, 2)[None]                                  # (1, H, L, hd)
    if softcap:
        o = _softcapped_attention(q, keys, values, offset, scale, window, softcap)
    else:
        o = mx.fast.scaled_dot_product_attention(q, keys, values, scale=scale,
                                                 mask=attention_mask(L, offset, window))
    return o[0].transpose(1, 0, 2).reshape(L, H * hd)


def _softcapped_attention(q, k, v, offset: int, scale: float, window: int | None, cap: float):
    """q (1, H, L, hd), k, v (1, Hkv, T, hd) -> (1, H, L, hd); scores cap * tanh(scale q.k / cap)."""
    _, H, L, hd = q.shape
    Hkv, T = k.shape[1], k.shape[2]
    G = H // Hkv
    s = q.reshape(Hkv, G * L, hd) @ k[0].transpose(0, 2, 1)       # (Hkv, G*L, T): row r is query r % L
    s = mx.tanh(s * (scale / cap)) * cap
    pos = mx.arange(offset, offset + L)[:, None]                  # (L, 1)
    key = mx.arange(T)[None, :]                                   # (1, T)
    seen = key <= pos
    if window:
        seen = seen & (pos - key < window)
    s = mx.where(mx.tile(seen, (G, 1))[None], s, -mx.inf)
    p = mx.softmax(s, axis=-1)
    return (p @ v[0]).reshape(1, H, L, hd)


def gelu_tanh(x: mx.array) -> mx.array:
    return 0.5 * x * (1.0 + mx.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x * x * x)))


ACTIVATIONS = {"silu": lambda x: x * mx.sigmoid(x), "gelu_tanh": gelu_tanh}


def activation(x: mx.array, act: str) -> mx.array:
    return ACTIVATIONS[act](x)


def glu(gate: mx.array, up: mx.array, act: str) -> mx.array:
    return ACTIVATIONS[act](gate) * up


def softcap(x: mx.array, cap: float) -> mx.array:
    return mx.tanh(x * (1.0 / cap)) * cap


def moe(x: mx.array, router, gate: list, up: list, down: list, k: int, act: str = "silu") -> mx.array:
    """As the numpy backend's `moe`; every expert runs on every position, weighted by its
    routing weight (0 where not chosen): simple, and exact for the few experts of a small model."""
    p = mx.softmax(router(x), axis=-1)                            # (L, E)
    top = mx.argsort(-p, axis=-1)[:, :k]                          # (L, k)
    w = mx.take_along_axis(p, top, axis=-1)
    w = w / w.sum(axis=-1, keepdims=True)
    out = None
    for e in range(len(gate)):
        we = ((top == e) * w).sum(axis=-1, keepdims=True)         # (L, 1)
        y = down[e](glu(gate[e](x), up[e](x), act)) * we
        out = y if out is None else out + y
    return out


def make_cache(n_layers: int, n_kv_heads: int, head_dim: int, max_len: int):
    return _make_cache(n_layers, max_len)


def logit_rows(x: mx.array, last_only) -> mx.array:
    """As localai/ops/numpy.py's: all rows, the last (True), or an int index array's."""
    if last_only is False or last_only is None:
        return x
    return x[-1:] if last_only is True else x[mx.array(np.asarray(last_only, dtype=np.int32))]


def result(logits: mx.array, cache):
    return to_numpy(logits, cache)
