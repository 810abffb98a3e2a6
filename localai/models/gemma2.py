"""Gemma 2: `general.architecture == "gemma2"`.

llama.cpp: src/models/gemma2.cpp. What differs from llama.py:
- the embedding is scaled by sqrt(d_model); the output is always the tied `token_embd`;
- Q scaled by 1/sqrt(head size) (1/sqrt(d_model / n_head) for the 46-layer 27B); attention
  scores soft-capped, cap * tanh(s / cap), cap `attn_logit_softcapping` (default 50);
- norms after attention and after the MLP (`post_attention_norm`, `post_ffw_norm`);
- GeGLU MLP with the tanh GELU; final logits soft-capped by `final_logit_softcapping`
  (default 30);
- sliding window (`attention.sliding_window`, default 4096) on layers 0, 2, 4, ... (period 2
  unless `attention.sliding_window_pattern` says otherwise); RoPE on halves (NEOX), the same
  base for every layer unless `rope.freq_base_swa` is written;
- the norm weights in the GGUF already include Gemma's `+1`.
"""
from __future__ import annotations

import math

from .hparams import HParams

SWA_PERIOD = 2
DEFAULT_WINDOW = 4096


def read_args(g) -> HParams:
    args = HParams.read(g, eps=1e-6)
    if args.window is None:
        args.window = DEFAULT_WINDOW
    x = args.extra
    x["swa"] = args.swa_layers(g, SWA_PERIOD)
    x["swa_rope_base"] = float(g.get("gemma2.rope.freq_base_swa", args.rope_base))
    x["attn_softcap"] = float(g.get("gemma2.attn_logit_softcapping", 50.0))
    x["final_softcap"] = float(g.get("gemma2.final_logit_softcapping", 30.0))
    x["attn_scale"] = 1.0 / math.sqrt(args.d_model / args.n_heads if args.n_layers == 46 else args.head_dim)
    return args


class Block:
    def __init__(self, ops, g, i: int, args: HParams, rope, window: int | None):
        p = f"blk.{i}."
        self.ops, self.args, self.rope, self.window = ops, args, rope, window
        self.attn_norm, self.ffn_norm = ops.vector(g, p + "attn_norm.weight"), ops.vector(g, p + "ffn_norm.weight")
        self.post_attn_norm = ops.vector(g, p + "post_attention_norm.weight")
        self.post_ffn_norm = ops.vector(g, p + "post_ffw_norm.weight")
        self.wq, self.wk, self.wv = (ops.matrix(g, p + n) for n in ("attn_q.weight", "attn_k.weight", "attn_v.weight"))
        self.wo = ops.matrix(g, p + "attn_output.weight")
        self.w_gate, self.w_up = ops.matrix(g, p + "ffn_gate.weight"), ops.matrix(g, p + "ffn_up.weight")
        self.w_down = ops.matrix(g, p + "ffn_down.weight")

    def __call__(self, x, cache):
        ops, a, eps = self.ops, self.args, self.args.norm_eps
        L = x.shape[0]                                    # x: (L, D)
        h = ops.rms_norm(x, self.attn_norm, eps)
        q, k, v = ops.linears(h, (self.wq, self.wk, self.wv))
        q, k, v = (t.reshape(L, n, a.head_dim) for t, n in ((q, a.n_heads), (k, a.n_kv_heads), (v, a.n_kv_heads)))
        q, k = self.rope(q, cache.offset), self.rope(k, cache.offset)
        o = ops.attention(q, k, v, cache, a.extra["attn_scale"], self.window, a.extra["attn_softcap"])
        x = x + ops.rms_norm(ops.linear(o, self.wo), self.post_attn_norm, eps)
        h = ops.rms_norm(x, self.ffn_norm, eps)
        m = ops.linear(ops.glu(*ops.linears(h, (self.w_gate, self.w_up)), "gelu_tanh"), self.w_down)
        return x + ops.rms_norm(m, self.post_ffn_norm, eps)


class Model:
    def __init__(self, g, ops):
        self.ops, self.args = ops, (args := read_args(g))
        local = ops.rope(args.rope_dims, args.extra["swa_rope_base"], True, args.rope_scale)
        glob = ops.rope(args.rope_dims, args.rope_base, True, args.rope_scale)
        self.tok_embd = ops.matrix(g, "token_embd.weight")
        self.layers = [Block(ops, g, i, args, local if swa else glob, args.window if swa else None)
                       for i, swa in enumerate(args.extra["swa"])]
        self.norm = ops.vector(g, "output_norm.weight")
        self.embd_scale = math.sqrt(args.d_model)

    def make_cache(self, max_len: int):
        a = self.args
        return self.ops.make_cache(a.n_layers, a.n_kv_heads, a.head_dim, max_len)

    def __call__(self, tokens, cache, last_only: bool = False):
        """tokens: (L,) ids at positions cache.offset.. -> logits (L, n_vocab), or (1, n_vocab)."""
        ops = self.ops
        x = ops.embed(self.tok_embd, tokens) * self.embd_scale   # (L, D)
        for layer, c in zip(self.layers, cache):
            x = layer(x, c)
        x = ops.logit_rows(x, last_only)
        logits = ops.linear(ops.rms_norm(x, self.norm, self.args.norm_eps), self.tok_embd)
        return ops.result(ops.softcap(logits, self.args.extra["final_softcap"]), cache)
