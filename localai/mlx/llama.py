"""LLaMA (1/2/3), Mistral-style GQA, SmolLM2, TinyLlama on MLX: `general.architecture == "llama"`.

The numpy twin is localai/models/llama.py (same ModelArgs): pre-norm decoder, SwiGLU MLP,
RoPE on adjacent pairs (`traditional=True`: the GGUF converter permutes Q/K for that), tied
output when the file has no `output.weight`. Activations are float32, as in the numpy backend.
"""
from __future__ import annotations

import math

import mlx.core as mx
import numpy as np

from ..models.llama import ModelArgs
from . import has, matrix, vector
from .cache import attention_mask, make_cache, to_numpy


class Rope:
    """mx.fast.rope over the first `dims` of each head; llama 3's `rope_freqs` divide the
    per-pair frequencies (MLX takes their inverses, the periods, as `freqs`)."""

    def __init__(self, dims: int, base: float, traditional: bool, scale: float = 1.0, freq_factors=None):
        self.dims, self.traditional, self.scale = dims, traditional, scale
        self.base, self.freqs = base, None
        if freq_factors is not None:
            periods = base ** (np.arange(0, dims, 2, dtype=np.float64) / dims) * np.asarray(freq_factors, np.float64)
            self.base, self.freqs = None, mx.array(periods.astype(np.float32))

    def __call__(self, x: mx.array, offset: int) -> mx.array:
        """x: (1, H, L, hd) at positions offset.. -> rotated."""
        return mx.fast.rope(x, self.dims, traditional=self.traditional, base=self.base,
                            scale=self.scale, offset=offset, freqs=self.freqs)


class Block:
    def __init__(self, g, i: int, args: ModelArgs, rope: Rope):
        p = f"blk.{i}."
        self.args, self.rope, self.scale = args, rope, 1.0 / math.sqrt(args.head_dim)
        self.attn_norm, self.ffn_norm = vector(g, p + "attn_norm.weight"), vector(g, p + "ffn_norm.weight")
        self.wq, self.wk, self.wv = (matrix(g, p + n) for n in ("attn_q.weight", "attn_k.weight", "attn_v.weight"))
        self.wo = matrix(g, p + "attn_output.weight")
        self.w_gate, self.w_up = matrix(g, p + "ffn_gate.weight"), matrix(g, p + "ffn_up.weight")
        self.w_down = matrix(g, p + "ffn_down.weight")

    def __call__(self, x: mx.array, cache) -> mx.array:
        a = self.args
        L, _ = x.shape                                    # (L, D)
        h = mx.fast.rms_norm(x, self.attn_norm, a.rms_eps)
        q = self.wq(h).reshape(1, L, a.n_heads, a.head_dim).transpose(0, 2, 1, 3)      # (1, H, L, hd)
        k = self.wk(h).reshape(1, L, a.n_kv_heads, a.head_dim).transpose(0, 2, 1, 3)   # (1, Hkv, L, hd)
        v = self.wv(h).reshape(1, L, a.n_kv_heads, a.head_dim).transpose(0, 2, 1, 3)
        offset = cache.offset
        q, k = self.rope(q, offset), self.rope(k, offset)
        keys, values = cache.update_and_fetch(k, v)       # (1, Hkv, T, hd)
        o = mx.fast.scaled_dot_product_attention(q, keys, values, scale=self.scale,
                                                 mask=attention_mask(L, offset))
        x = x + self.wo(o.transpose(0, 2, 1, 3).reshape(L, -1))
        h = mx.fast.rms_norm(x, self.ffn_norm, a.rms_eps)
        gate = self.w_gate(h)
        return x + self.w_down(gate * mx.sigmoid(gate) * self.w_up(h))


class Model:
    def __init__(self, g):
        self.args = args = ModelArgs.from_gguf(g)
        freq_factors = np.array(vector(g, "rope_freqs.weight")) if has(g, "rope_freqs.weight") else None
        rope = Rope(args.rope_dims, args.rope_base, True, args.rope_scale, freq_factors)
        self.tok_embd = matrix(g, "token_embd.weight")
        self.layers = [Block(g, i, args, rope) for i in range(args.n_layers)]
        self.norm = vector(g, "output_norm.weight")
        self.output = matrix(g, "output.weight") if has(g, "output.weight") else self.tok_embd

    def make_cache(self, max_len: int):
        return make_cache(self.args.n_layers, max_len)

    def __call__(self, tokens: np.ndarray, cache, last_only: bool = False) -> np.ndarray:
        """tokens: (L,) ids at positions cache.offset.. -> logits (L, n_vocab), or (1, n_vocab)."""
        x = self.tok_embd.rows(mx.array(np.asarray(tokens, dtype=np.int32)))   # (L, D)
        for layer, c in zip(self.layers, cache):
            x = layer(x, c)
        if last_only:
            x = x[-1:]
        return to_numpy(self.output(mx.fast.rms_norm(x, self.norm, self.args.rms_eps)), cache)
