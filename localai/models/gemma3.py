"""Gemma 3 (text): `general.architecture == "gemma3"`.

llama.cpp: src/models/gemma3.cpp. What differs from llama.py:
- the embedding is scaled by sqrt(d_model); the output is `output.weight`, else `token_embd`;
- per-head RMSNorm on Q and K (`attn_q_norm`, `attn_k_norm`) before NEOX RoPE (halves);
- Q scaled by 1/sqrt(head size) (1/sqrt(d_model / n_head) for the 62-layer 27B);
- norms after attention and after the MLP (`post_attention_norm`, `post_ffw_norm`);
- GeGLU MLP with the tanh GELU; final logit soft-capping only if the file has the key;
- sliding-window layers from `attention.sliding_window_pattern` (bool array or period),
  period 6 when absent (layers 5, 11, ... global), none without `attention.sliding_window`;
  those layers use `rope.freq_base_swa` (10000 when absent) and no RoPE scaling, the global
  ones `rope.freq_base` and `rope.scaling.factor`;
- the norm weights in the GGUF already include Gemma's `+1`.
"""
from __future__ import annotations

import math

from .hparams import HParams

SWA_PERIOD = 6           # llama.cpp's default when sliding_window_pattern is absent
SWA_ROPE_BASE = 10000.0  # llama.cpp's default rope.freq_base_swa for gemma3


def read_args(g) -> HParams:
    args = HParams.read(g, eps=1e-6)
    x = args.extra
    x["swa"] = args.swa_layers(g, SWA_PERIOD)
    x["swa_rope_base"] = float(g.get("gemma3.rope.freq_base_swa", SWA_ROPE_BASE))
    x["final_softcap"] = g.get("gemma3.final_logit_softcapping")
    x["attn_scale"] = 1.0 / math.sqrt(args.d_model / args.n_heads if args.n_layers == 62 else args.head_dim)
    return args


class Block:
    def __init__(self, ops, g, i: int, args: HParams, rope, window: int | None):
        p = f"blk.{i}."
        self.ops, self.args, self.rope, self.window = ops, args, rope, window
        self.attn_norm, self.ffn_norm = ops.vector(g, p + "attn_norm.weight"), ops.vector(g, p + "ffn_norm.weight")
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
        h = ops.rms_norm(x, self.attn_norm, eps)
        q, k, v = ops.linears(h, (self.wq, self.wk, self.wv))
        q = ops.rms_norm(q.reshape(L, a.n_heads, a.head_dim), self.q_norm, eps)
        k = ops.rms_norm(k.reshape(L, a.n_kv_heads, a.head_dim), self.k_norm, eps)
        v = v.reshape(L, a.n_kv_heads, a.head_dim)
        q, k = self.rope(q, cache.offset), self.rope(k, cache.offset)
        o = ops.attention(q, k, v, cache, a.extra["attn_scale"], self.window)
        x = x + ops.rms_norm(ops.linear(o, self.wo), self.post_attn_norm, eps)
        h = ops.rms_norm(x, self.ffn_norm, eps)
        m = ops.linear(ops.glu(*ops.linears(h, (self.w_gate, self.w_up)), "gelu_tanh"), self.w_down)
        return x + ops.rms_norm(m, self.post_ffn_norm, eps)


class Model:
    def __init__(self, g, ops):
        self.ops, self.args = ops, (args := read_args(g))
        local = ops.rope(args.rope_dims, args.extra["swa_rope_base"], True)
        glob = ops.rope(args.rope_dims, args.rope_base, True, args.rope_scale)
        self.tok_embd = ops.matrix(g, "token_embd.weight")
        self.layers = [Block(ops, g, i, args, local if swa else glob, args.window if swa else None)
                       for i, swa in enumerate(args.extra["swa"])]
        self.norm = ops.vector(g, "output_norm.weight")
        self.output = ops.matrix(g, "output.weight") if ops.has(g, "output.weight") else self.tok_embd
        self.embd_scale = math.sqrt(args.d_model)

    def make_cache(self, max_len: int):
        a = self.args
        return self.ops.make_cache(a.n_layers, a.n_kv_heads, a.head_dim, max_len)

    def __call__(self, tokens, cache, last_only: bool = False):
        """tokens: (L,) ids at positions cache.offset.. -> logits (L, n_vocab), or (1, n_vocab)."""
        ops, cap = self.ops, self.args.extra["final_softcap"]
        x = ops.embed(self.tok_embd, tokens) * self.embd_scale   # (L, D)
        for layer, c in zip(self.layers, cache):
            x = layer(x, c)
        x = ops.logit_rows(x, last_only)
        logits = ops.linear(ops.rms_norm(x, self.norm, self.args.norm_eps), self.output)
        return ops.result(ops.softcap(logits, cap) if cap else logits, cache)
