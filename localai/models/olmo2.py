"""OLMo 2: `general.architecture == "olmo2"`.

llama.cpp: src/models/olmo2.cpp. No norms before attention or the MLP; instead norms after
them (`post_attention_norm`, `post_ffw_norm`) before each residual add. Q and K go through one
RMSNorm each over the whole projected vector (`attn_q_norm` [n_head x head size],
`attn_k_norm` [n_head_kv x head size]), before the head split and RoPE on halves (NEOX).
SwiGLU MLP; `output.weight` is required. Optional sliding window (OLMo 3): period 4 unless
`attention.sliding_window_pattern` is written; those layers use `rope.freq_base_swa` (else
rope.freq_base) and no RoPE scaling.
"""
from __future__ import annotations

import math

from .hparams import HParams

SWA_PERIOD = 4


class Block:
    def __init__(self, ops, g, i: int, args: HParams, rope, window: int | None):
        p = f"blk.{i}."
        self.ops, self.args, self.rope, self.window = ops, args, rope, window
        self.scale = 1.0 / math.sqrt(args.head_dim)
        self.q_norm, self.k_norm = ops.vector(g, p + "attn_q_norm.weight"), ops.vector(g, p + "attn_k_norm.weight")
        self.post_attn_norm = ops.vector(g, p + "post_attention_norm.weight")
        self.post_ffn_norm = ops.vector(g, p + "post_ffw_norm.weight")
        self.wq, self.wk, self.wv = (ops.matrix(g, p + n) for n in ("attn_q.weight", "attn_k.weight", "attn_v.weight"))
        self.wo = ops.matrix(g, p + "attn_output.weight")
        self.w_gate, self.w_up = ops.matrix(g, p + "ffn_gate.weight"), ops.matrix(g, p + "ffn_up.weight")
        self.w_down = ops.matrix(g, p + "ffn_down.weight")

    def __call__(self, x, cache):
        ops, a, eps = self.ops, self.args, self.args.norm_eps
        L = x.shape[0]                                    # x: (L, D)
        q, k, v = ops.linears(x, (self.wq, self.wk, self.wv))
        q = ops.rms_norm(q, self.q_norm, eps).reshape(L, a.n_heads, a.head_dim)
        k = ops.rms_norm(k, self.k_norm, eps).reshape(L, a.n_kv_heads, a.head_dim)
        v = v.reshape(L, a.n_kv_heads, a.head_dim)
        q, k = self.rope(q, cache.offset), self.rope(k, cache.offset)
        o = ops.attention(q, k, v, cache, self.scale, self.window)
        x = x + ops.rms_norm(ops.linear(o, self.wo), self.post_attn_norm, eps)
        m = ops.linear(ops.glu(*ops.linears(x, (self.w_gate, self.w_up)), "silu"), self.w_down)
        return x + ops.rms_norm(m, self.post_ffn_norm, eps)


class Model:
    def __init__(self, g, ops):
        self.ops, self.args = ops, (args := HParams.read(g))
        swa = args.swa_layers(g, SWA_PERIOD)
        local = ops.rope(args.rope_dims, float(g.get("olmo2.rope.freq_base_swa", args.rope_base)), True)
        glob = ops.rope(args.rope_dims, args.rope_base, True, args.rope_scale)
        self.tok_embd = ops.matrix(g, "token_embd.weight")
        self.layers = [Block(ops, g, i, args, local if s else glob, args.window if s else None)
                       for i, s in enumerate(swa)]
        self.norm = ops.vector(g, "output_norm.weight")
        self.output = ops.matrix(g, "output.weight")

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
