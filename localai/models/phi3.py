"""Phi-3, Phi-3.5-mini, Phi-4-mini: `general.architecture == "phi3"`.

llama.cpp: src/models/phi3.cpp. llama.py's decoder with fused projections: `attn_qkv` holds
the rows [q; k; v] (or separate attn_q/k/v when the file has them), and `ffn_up` holds
2 x d_ff rows, gate first: silu(first half) * second half, no `ffn_gate`. RoPE on halves
(NEOX). `phi3.attention.sliding_window` is ignored, as llama.cpp does ("Phi SWA is currently
disabled"). Not yet: the LongRoPE factors `rope_factors_long/short` of 128k-context files.
"""
from __future__ import annotations

import math

from ..errors import UnsupportedModel
from .hparams import HParams


class Block:
    def __init__(self, ops, g, i: int, args: HParams, rope):
        p = f"blk.{i}."
        self.ops, self.args, self.rope = ops, args, rope
        self.scale = 1.0 / math.sqrt(args.head_dim)
        self.attn_norm, self.ffn_norm = ops.vector(g, p + "attn_norm.weight"), ops.vector(g, p + "ffn_norm.weight")
        self.fused = ops.has(g, p + "attn_qkv.weight")
        if self.fused:
            self.wqkv = ops.matrix(g, p + "attn_qkv.weight")
        else:
            self.wq, self.wk, self.wv = (ops.matrix(g, p + n) for n in ("attn_q.weight", "attn_k.weight", "attn_v.weight"))
        self.wo = ops.matrix(g, p + "attn_output.weight")
        self.w_up = ops.matrix(g, p + "ffn_up.weight")     # (2 d_ff, D): [gate; up]
        self.w_down = ops.matrix(g, p + "ffn_down.weight")

    def __call__(self, x, cache):
        ops, a = self.ops, self.args
        L = x.shape[0]                                    # x: (L, D)
        h = ops.rms_norm(x, self.attn_norm, a.norm_eps)
        nq, nk = a.n_heads * a.head_dim, a.n_kv_heads * a.head_dim
        if self.fused:
            qkv = ops.linear(h, self.wqkv)                # (L, nq + 2 nk)
            q, k, v = qkv[:, :nq], qkv[:, nq:nq + nk], qkv[:, nq + nk:]
        else:
            q, k, v = ops.linears(h, (self.wq, self.wk, self.wv))
        q = self.rope(q.reshape(L, a.n_heads, a.head_dim), cache.offset)
        k = self.rope(k.reshape(L, a.n_kv_heads, a.head_dim), cache.offset)
        v = v.reshape(L, a.n_kv_heads, a.head_dim)
        x = x + ops.linear(ops.attention(q, k, v, cache, self.scale), self.wo)
        h = ops.rms_norm(x, self.ffn_norm, a.norm_eps)
        gu = ops.linear(h, self.w_up)                     # (L, 2 d_ff)
        return x + ops.linear(ops.glu(gu[:, :a.d_ff], gu[:, a.d_ff:], "silu"), self.w_down)


class Model:
    def __init__(self, g, ops):
        self.ops, self.args = ops, (args := HParams.read(g))
        if ops.has(g, "rope_factors_long.weight"):
            raise UnsupportedModel(f"{g.path}: LongRoPE (rope_factors_long/short, 128k-context Phi-3 files) "
                                   "is not supported yet; use a 4k-context Phi-3 file")
        rope = ops.rope(args.rope_dims, args.rope_base, True, args.rope_scale)
        self.tok_embd = ops.matrix(g, "token_embd.weight")
        self.layers = [Block(ops, g, i, args, rope) for i in range(args.n_layers)]
        self.norm = ops.vector(g, "output_norm.weight")
        self.output = ops.matrix(g, "output.weight") if ops.has(g, "output.weight") else self.tok_embd
        self.output_b = ops.vector(g, "output.bias") if ops.has(g, "output.bias") else None

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
        h = ops.rms_norm(x, self.norm, self.args.norm_eps)
        return ops.result(ops.linear(h, self.output, self.output_b), cache)
