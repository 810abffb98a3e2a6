"""LLaMA 1/2/3.x, Mistral, SmolLM2, TinyLlama: `general.architecture` "llama" or "mistral".

llama.cpp: src/models/llama.cpp. Pre-norm decoder: x += attn(rms_norm(x));
x += mlp(rms_norm(x)); SwiGLU MLP; RoPE on adjacent pairs (NORM: the GGUF converter permutes
Q/K for it), its frequencies divided by `rope_freqs.weight` when the file has it (Llama 3.1+);
the output tied to `token_embd` when the file has no `output.weight`.
"""
from __future__ import annotations

import math

from ..errors import ModelFileError
from .hparams import HParams


def read_args(g) -> HParams:
    args = HParams.read(g, eps=1e-5)
    if args.rope_dims != args.head_dim:  # llama.cpp: "invalid n_rot"
        raise ModelFileError(f"{g.path}: {args.arch}.rope.dimension_count = {args.rope_dims} must equal the "
                             f"head size {args.head_dim} for {args.arch}")
    return args


class Block:
    def __init__(self, ops, g, i: int, args: HParams, rope):
        p = f"blk.{i}."
        self.ops, self.args, self.rope = ops, args, rope
        self.scale = 1.0 / math.sqrt(args.head_dim)
        self.attn_norm, self.ffn_norm = ops.vector(g, p + "attn_norm.weight"), ops.vector(g, p + "ffn_norm.weight")
        self.wq, self.wk, self.wv = (ops.matrix(g, p + n) for n in ("attn_q.weight", "attn_k.weight", "attn_v.weight"))
        self.wo = ops.matrix(g, p + "attn_output.weight")
        self.w_gate, self.w_up = ops.matrix(g, p + "ffn_gate.weight"), ops.matrix(g, p + "ffn_up.weight")
        self.w_down = ops.matrix(g, p + "ffn_down.weight")

    def __call__(self, x, cache):
        ops, a = self.ops, self.args
        L = x.shape[0]                                    # x: (L, D)
        h = ops.rms_norm(x, self.attn_norm, a.norm_eps)
        q, k, v = ops.linears(h, (self.wq, self.wk, self.wv))
        q, k, v = (t.reshape(L, n, a.head_dim) for t, n in ((q, a.n_heads), (k, a.n_kv_heads), (v, a.n_kv_heads)))
        q, k = self.rope(q, cache.offset), self.rope(k, cache.offset)
        x = x + ops.linear(ops.attention(q, k, v, cache, self.scale), self.wo)
        h = ops.rms_norm(x, self.ffn_norm, a.norm_eps)
        return x + ops.linear(ops.glu(*ops.linears(h, (self.w_gate, self.w_up)), "silu"), self.w_down)


class Model:
    def __init__(self, g, ops):
        self.ops, self.args = ops, (args := read_args(g))
        freq_factors = ops.vector(g, "rope_freqs.weight") if ops.has(g, "rope_freqs.weight") else None
        rope = ops.rope(args.rope_dims, args.rope_base, False, args.rope_scale, freq_factors)
        self.tok_embd = ops.matrix(g, "token_embd.weight")
        self.layers = [Block(ops, g, i, args, rope) for i in range(args.n_layers)]
        self.norm = ops.vector(g, "output_norm.weight")
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
        return ops.result(ops.linear(ops.rms_norm(x, self.norm, self.args.norm_eps), self.output), cache)
