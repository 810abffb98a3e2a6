"""Qwen3 (dense): `general.architecture == "qwen3"`.

llama.cpp: src/models/qwen3.cpp. llama.py's decoder with: the head size from
`attention.key_length` (Qwen3's Q is n_head x 128 wide whatever d_model is), a per-head
RMSNorm on Q and K (`attn_q_norm`, `attn_k_norm`, [head size]) before RoPE, RoPE on halves
(NEOX), no biases. The output is `output.weight`, else the tied `token_embd`.
"""
from __future__ import annotations

import math

from .hparams import HParams


class Block:
    def __init__(self, ops, g, i: int, args: HParams, rope):
        p = f"blk.{i}."
        self.ops, self.args, self.rope = ops, args, rope
        self.scale = 1.0 / math.sqrt(args.head_dim)
        self.attn_norm, self.ffn_norm = ops.vector(g, p + "attn_norm.weight"), ops.vector(g, p + "ffn_norm.weight")
        self.q_norm, self.k_norm = ops.vector(g, p + "attn_q_norm.weight"), ops.vector(g, p + "attn_k_norm.weight")
        self.wq, self.wk, self.wv = (ops.matrix(g, p + n) for n in ("attn_q.weight", "attn_k.weight", "attn_v.weight"))
        self.wo = ops.matrix(g, p + "attn_output.weight")
        self.w_gate, self.w_up = ops.matrix(g, p + "ffn_gate.weight"), ops.matrix(g, p + "ffn_up.weight")
        self.w_down = ops.matrix(g, p + "ffn_down.weight")

    def attention(self, x, cache):
        ops, a, eps = self.ops, self.args, self.args.norm_eps
        L = x.shape[0]                                    # x: (L, D)
        h = ops.rms_norm(x, self.attn_norm, eps)
        q, k, v = ops.linears(h, (self.wq, self.wk, self.wv))
        q = ops.rms_norm(q.reshape(L, a.n_heads, a.head_dim), self.q_norm, eps)
        k = ops.rms_norm(k.reshape(L, a.n_kv_heads, a.head_dim), self.k_norm, eps)
        v = v.reshape(L, a.n_kv_heads, a.head_dim)
        q, k = self.rope(q, cache.offset), self.rope(k, cache.offset)
        return ops.linear(ops.attention(q, k, v, cache, self.scale), self.wo)

    def __call__(self, x, cache):
        ops = self.ops
        x = x + self.attention(x, cache)
        h = ops.rms_norm(x, self.ffn_norm, self.args.norm_eps)
        return x + ops.linear(ops.glu(*ops.linears(h, (self.w_gate, self.w_up)), "silu"), self.w_down)


class Model:
    block = Block

    def __init__(self, g, ops):
        self.ops, self.args = ops, (args := self.read_args(g))
        rope = ops.rope(args.rope_dims, args.rope_base, True, args.rope_scale)
        self.tok_embd = ops.matrix(g, "token_embd.weight")
        self.layers = [self.block(ops, g, i, args, rope) for i in range(args.n_layers)]
        self.norm = ops.vector(g, "output_norm.weight")
        self.output = ops.matrix(g, "output.weight") if ops.has(g, "output.weight") else self.tok_embd

    @staticmethod
    def read_args(g) -> HParams:
        return HParams.read(g)

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
        return ops.result(ops.linear(ops.rms_norm(x, self.norm, self.args.norm_eps), self.output), cache)
