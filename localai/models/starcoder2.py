"""StarCoder2: `general.architecture == "starcoder2"`.

llama.cpp: src/models/starcoder2.cpp. Pre-norm decoder with LayerNorm (weight and bias,
epsilon `attention.layer_norm_epsilon`), biases on Q/K/V (optional) and on attn_output, a
plain MLP down(gelu(up x + b)) + b with the tanh GELU, RoPE on halves (NEOX). The output is
`output.weight`, else the tied `token_embd`.
"""
from __future__ import annotations

import math

from .hparams import HParams


def _optional(ops, g, name):
    return ops.vector(g, name) if ops.has(g, name) else None


class Block:
    def __init__(self, ops, g, i: int, args: HParams, rope):
        p = f"blk.{i}."
        self.ops, self.args, self.rope = ops, args, rope
        self.scale = 1.0 / math.sqrt(args.head_dim)
        self.attn_norm, self.attn_norm_b = ops.vector(g, p + "attn_norm.weight"), ops.vector(g, p + "attn_norm.bias")
        self.ffn_norm, self.ffn_norm_b = ops.vector(g, p + "ffn_norm.weight"), ops.vector(g, p + "ffn_norm.bias")
        self.wq, self.wk, self.wv = (ops.matrix(g, p + f"attn_{n}.weight") for n in "qkv")
        self.bq, self.bk, self.bv = (_optional(ops, g, p + f"attn_{n}.bias") for n in "qkv")
        self.wo, self.bo = ops.matrix(g, p + "attn_output.weight"), ops.vector(g, p + "attn_output.bias")
        self.w_up, self.b_up = ops.matrix(g, p + "ffn_up.weight"), ops.vector(g, p + "ffn_up.bias")
        self.w_down, self.b_down = ops.matrix(g, p + "ffn_down.weight"), ops.vector(g, p + "ffn_down.bias")

    def __call__(self, x, cache):
        ops, a = self.ops, self.args
        L = x.shape[0]                                    # x: (L, D)
        h = ops.layer_norm(x, self.attn_norm, self.attn_norm_b, a.norm_eps)
        q, k, v = ops.linears(h, (self.wq, self.wk, self.wv), (self.bq, self.bk, self.bv))
        q, k, v = (t.reshape(L, n, a.head_dim) for t, n in ((q, a.n_heads), (k, a.n_kv_heads), (v, a.n_kv_heads)))
        q, k = self.rope(q, cache.offset), self.rope(k, cache.offset)
        x = x + ops.linear(ops.attention(q, k, v, cache, self.scale), self.wo, self.bo)
        h = ops.layer_norm(x, self.ffn_norm, self.ffn_norm_b, a.norm_eps)
        m = ops.activation(ops.linear(h, self.w_up, self.b_up), "gelu_tanh")
        return x + ops.linear(m, self.w_down, self.b_down)


class Model:
    def __init__(self, g, ops):
        self.ops, self.args = ops, (args := HParams.read(g, eps_key="attention.layer_norm_epsilon"))
        rope = ops.rope(args.rope_dims, args.rope_base, True, args.rope_scale)
        self.tok_embd = ops.matrix(g, "token_embd.weight")
        self.layers = [Block(ops, g, i, args, rope) for i in range(args.n_layers)]
        self.norm, self.norm_b = ops.vector(g, "output_norm.weight"), ops.vector(g, "output_norm.bias")
        self.output = ops.matrix(g, "output.weight") if ops.has(g, "output.weight") else self.tok_embd

    def make_cache(self, max_len: int):
        a = self.args
        return self.ops.make_cache(a.n_layers, a.n_kv_heads, a.head_dim, max_len)

    def __call__(self, tokens, cache, last_only: bool = False):
        """tokens: (L,) ids at positions cache.offset.. -> logits (L, n_vocab), or (1, n_vocab)."""
        ops = self.ops
        x = ops.embed(self.tok_embd, tokens)              # (L, D)
        for layer, c in zip(self.layers, cache):
            x = layer(x, c)
        x = ops.logit_rows(x, last_only)
        h = ops.layer_norm(x, self.norm, self.norm_b, self.args.norm_eps)
        return ops.result(ops.linear(h, self.output), cache)
