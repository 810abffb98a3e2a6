"""IBM Granite 3.x (dense): `general.architecture == "granite"`.

llama.cpp: src/models/granite.cpp. llama.py's decoder with four multipliers from the file:
`embedding_scale` multiplies the embeddings, `residual_scale` each attention/MLP output
before its residual add, `attention.scale` replaces 1/sqrt(head size), and the logits are
divided by `logit_scale` (required, as in llama.cpp). RoPE on adjacent pairs (NORM), on unless
`rope.scaling.finetuned` is false; optional biases on attn_output and the MLP.
"""
from __future__ import annotations

import math

from .hparams import HParams


def read_args(g) -> HParams:
    args = HParams.read(g)
    a = "granite."
    args.extra.update(
        logit_scale=float(g.require(a + "logit_scale")),
        embedding_scale=float(g.get(a + "embedding_scale", 0.0)) or 1.0,
        residual_scale=float(g.get(a + "residual_scale", 0.0)) or 1.0,
        attn_scale=float(g.get(a + "attention.scale", 0.0)) or 1.0 / math.sqrt(args.head_dim),
        use_rope=bool(g.get(a + "rope.scaling.finetuned", True)),
    )
    return args


def _optional(ops, g, name):
    return ops.vector(g, name) if ops.has(g, name) else None


class Block:
    def __init__(self, ops, g, i: int, args: HParams, rope):
        p = f"blk.{i}."
        self.ops, self.args, self.rope = ops, args, rope
        self.attn_norm, self.ffn_norm = ops.vector(g, p + "attn_norm.weight"), ops.vector(g, p + "ffn_norm.weight")
        self.wq, self.wk, self.wv = (ops.matrix(g, p + n) for n in ("attn_q.weight", "attn_k.weight", "attn_v.weight"))
        self.wo, self.bo = ops.matrix(g, p + "attn_output.weight"), _optional(ops, g, p + "attn_output.bias")
        self.w_gate, self.w_up = ops.matrix(g, p + "ffn_gate.weight"), ops.matrix(g, p + "ffn_up.weight")
        self.w_down = ops.matrix(g, p + "ffn_down.weight")
        self.b_gate, self.b_up, self.b_down = (_optional(ops, g, p + f"ffn_{n}.bias") for n in ("gate", "up", "down"))

    def __call__(self, x, cache):
        ops, a, x_ = self.ops, self.args, self.args.extra
        L = x.shape[0]                                    # x: (L, D)
        h = ops.rms_norm(x, self.attn_norm, a.norm_eps)
        q, k, v = ops.linears(h, (self.wq, self.wk, self.wv))
        q, k, v = (t.reshape(L, n, a.head_dim) for t, n in ((q, a.n_heads), (k, a.n_kv_heads), (v, a.n_kv_heads)))
        if self.rope is not None:
            q, k = self.rope(q, cache.offset), self.rope(k, cache.offset)
        o = ops.linear(ops.attention(q, k, v, cache, x_["attn_scale"]), self.wo, self.bo)
        x = x + o * x_["residual_scale"]
        h = ops.rms_norm(x, self.ffn_norm, a.norm_eps)
        m = ops.glu(*ops.linears(h, (self.w_gate, self.w_up), (self.b_gate, self.b_up)), "silu")
        return x + ops.linear(m, self.w_down, self.b_down) * x_["residual_scale"]


class Model:
    def __init__(self, g, ops):
        self.ops, self.args = ops, (args := read_args(g))
        freq_factors = _optional(ops, g, "rope_freqs.weight")
        rope = ops.rope(args.rope_dims, args.rope_base, False, args.rope_scale, freq_factors) \
            if args.extra["use_rope"] else None
        self.tok_embd = ops.matrix(g, "token_embd.weight")
        self.layers = [Block(ops, g, i, args, rope) for i in range(args.n_layers)]
        self.norm = ops.vector(g, "output_norm.weight")
        self.output = ops.matrix(g, "output.weight") if ops.has(g, "output.weight") else self.tok_embd

    def make_cache(self, max_len: int):
        a = self.args
        return self.ops.make_cache(a.n_layers, a.n_kv_heads, a.head_dim, max_len)

    def __call__(self, tokens, cache, last_only: bool = False):
        """tokens: (L,) ids at positions cache.offset.. -> logits (L, n_vocab), or (1, n_vocab)."""
        ops, x_ = self.ops, self.args.extra
        x = ops.embed(self.tok_embd, tokens) * x_["embedding_scale"]   # (L, D)
        for layer, c in zip(self.layers, cache):
            x = layer(x, c)
        x = ops.logit_rows(x, last_only)
        logits = ops.linear(ops.rms_norm(x, self.norm, self.args.norm_eps), self.output)
        return ops.result(logits * (1.0 / x_["logit_scale"]), cache)
