"""Gemma 3 (text) on MLX: `general.architecture == "gemma3"`.

The numpy twin is localai/models/gemma3.py (same ModelArgs); what differs from llama.py:
the embedding scaled by sqrt(d_model) and tied to the output; per-head RMSNorm on Q and K
before NEOX RoPE (`traditional=False`, halves); norms after attention and after the MLP;
GeGLU with the tanh GELU; 5 sliding-window layers (RoPE base 10000) to 1 global layer.
"""
from __future__ import annotations

import math

import mlx.core as mx
import numpy as np

from ..models.gemma3 import SWA_PATTERN, SWA_ROPE_BASE, ModelArgs
from . import matrix, vector
from .cache import attention_mask, make_cache, to_numpy
from .llama import Rope


def gelu_tanh(x: mx.array) -> mx.array:
    return 0.5 * x * (1.0 + mx.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x * x * x)))


class Block:
    def __init__(self, g, i: int, args: ModelArgs, rope: Rope, window: int | None):
        p = f"blk.{i}."
        self.args, self.rope, self.window = args, rope, window
        self.scale = 1.0 / math.sqrt(args.head_dim)
        self.attn_norm, self.ffn_norm = vector(g, p + "attn_norm.weight"), vector(g, p + "ffn_norm.weight")
        self.q_norm, self.k_norm = vector(g, p + "attn_q_norm.weight"), vector(g, p + "attn_k_norm.weight")
        self.post_attn_norm = vector(g, p + "post_attention_norm.weight")
        self.post_ffn_norm = vector(g, p + "post_ffw_norm.weight")
        self.wq, self.wk, self.wv = (matrix(g, p + n) for n in ("attn_q.weight", "attn_k.weight", "attn_v.weight"))
        self.wo = matrix(g, p + "attn_output.weight")
        self.w_gate, self.w_up = matrix(g, p + "ffn_gate.weight"), matrix(g, p + "ffn_up.weight")
        self.w_down = matrix(g, p + "ffn_down.weight")

    def __call__(self, x: mx.array, cache) -> mx.array:
        a = self.args
        L, _ = x.shape                                    # (L, D)
        eps = a.rms_eps
        h = mx.fast.rms_norm(x, self.attn_norm, eps)
        q = mx.fast.rms_norm(self.wq(h).reshape(1, L, a.n_heads, a.head_dim), self.q_norm, eps)
        k = mx.fast.rms_norm(self.wk(h).reshape(1, L, a.n_kv_heads, a.head_dim), self.k_norm, eps)
        v = self.wv(h).reshape(1, L, a.n_kv_heads, a.head_dim).transpose(0, 2, 1, 3)   # (1, Hkv, L, hd)
        offset = cache.offset
        q = self.rope(q.transpose(0, 2, 1, 3), offset)    # (1, H, L, hd)
        k = self.rope(k.transpose(0, 2, 1, 3), offset)    # (1, Hkv, L, hd)
        keys, values = cache.update_and_fetch(k, v)       # (1, Hkv, T, hd)
        o = mx.fast.scaled_dot_product_attention(q, keys, values, scale=self.scale,
                                                 mask=attention_mask(L, offset, self.window))
        x = x + mx.fast.rms_norm(self.wo(o.transpose(0, 2, 1, 3).reshape(L, -1)), self.post_attn_norm, eps)
        h = mx.fast.rms_norm(x, self.ffn_norm, eps)
        m = self.w_down(gelu_tanh(self.w_gate(h)) * self.w_up(h))
        return x + mx.fast.rms_norm(m, self.post_ffn_norm, eps)


class Model:
    def __init__(self, g):
        self.args = args = ModelArgs.from_gguf(g)
        local = Rope(args.head_dim, SWA_ROPE_BASE, False)
        glob = Rope(args.head_dim, args.rope_base, False, args.rope_scale)
        self.tok_embd = matrix(g, "token_embd.weight")
        self.layers = []
        for i in range(args.n_layers):
            is_global = (i + 1) % SWA_PATTERN == 0
            self.layers.append(Block(g, i, args, glob if is_global else local, None if is_global else args.window))
        self.norm = vector(g, "output_norm.weight")
        self.embd_scale = math.sqrt(args.d_model)

    def make_cache(self, max_len: int):
        return make_cache(self.args.n_layers, max_len)

    def __call__(self, tokens: np.ndarray, cache, last_only: bool = False) -> np.ndarray:
        """tokens: (L,) ids at positions cache.offset.. -> logits (L, n_vocab), or (1, n_vocab)."""
        x = self.tok_embd.rows(mx.array(np.asarray(tokens, dtype=np.int32))) * self.embd_scale   # (L, D)
        for layer, c in zip(self.layers, cache):
            x = layer(x, c)
        if last_only:
            x = x[-1:]
        return to_numpy(self.tok_embd(mx.fast.rms_norm(x, self.norm, self.args.rms_eps)), cache)
