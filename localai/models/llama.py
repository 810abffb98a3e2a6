"""LLaMA (1/2/3), Mistral-style GQA, SmolLM2, TinyLlama: `general.architecture == "llama"`.

Pre-norm decoder: x += attn(rms_norm(x)); x += mlp(rms_norm(x)); SwiGLU MLP; RoPE on
adjacent pairs (the GGUF converter permutes Q/K for that); tied output when the file has
no `output.weight`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import ModelFileError
from . import check_hparams, check_shapes, has, matrix, vector
from .cache import make_cache
from .layers import Rope, attention, glu, rms_norm


@dataclass
class ModelArgs:
    n_layers: int
    d_model: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    d_ff: int
    n_vocab: int
    rms_eps: float
    rope_base: float
    rope_dims: int
    rope_scale: float     # linear position scaling (1 / factor)
    n_ctx_train: int

    @classmethod
    def from_gguf(cls, g) -> "ModelArgs":
        a = g.arch_get
        d, H = g.arch_int("embedding_length"), g.arch_int("attention.head_count", lo=1, hi=4096)
        hd = g.arch_int("attention.key_length", d // H if d >= H else 1)
        scaling = a("rope.scaling.type", "none")
        factor = float(a("rope.scaling.factor", 1.0) or 1.0)
        if "token_embd.weight" not in g.tensors:
            raise ModelFileError(f"{g.path}: tensor 'token_embd.weight' is missing")
        args = cls(
            n_layers=g.arch_int("block_count", lo=1, hi=4096),
            d_model=d,
            n_heads=H,
            n_kv_heads=g.arch_int("attention.head_count_kv", H, lo=1, hi=4096),
            head_dim=hd,
            d_ff=g.arch_int("feed_forward_length"),
            n_vocab=g.tensors["token_embd.weight"].shape[0],
            rms_eps=float(a("attention.layer_norm_rms_epsilon", 1e-5)),
            rope_base=float(a("rope.freq_base", 10000.0)),
            rope_dims=g.arch_int("rope.dimension_count", hd),
            rope_scale=1.0 / factor if scaling == "linear" else 1.0,
            n_ctx_train=g.arch_int("context_length", 2048, hi=1 << 24),
        )
        args.check(g)
        return args

    def check(self, g) -> None:
        """Hyperparameters against each other and against the tensors' shapes (a rope over
        more dims than a head has once wrote past the kernels' buffers)."""
        D, H, Hkv, hd, F, V = self.d_model, self.n_heads, self.n_kv_heads, self.head_dim, self.d_ff, self.n_vocab
        check_hparams(g, [
            (H % Hkv == 0, "attention.head_count_kv", f"is {Hkv}, which does not divide head_count {H}"),
            (self.rope_dims % 2 == 0 and self.rope_dims <= hd, "rope.dimension_count",
             f"is {self.rope_dims}: it must be even and at most the head size {hd}"),
            (f"blk.{self.n_layers - 1}.attn_q.weight" in g.tensors and f"blk.{self.n_layers}.attn_q.weight"
             not in g.tensors, "block_count", f"is {self.n_layers}, not the number of blocks in the file"),
        ])
        shapes = {"token_embd.weight": (V, D), "output.weight": (V, D), "output_norm.weight": (D,)}
        for i in range(self.n_layers):
            p = f"blk.{i}."
            shapes.update({p + "attn_norm.weight": (D,), p + "ffn_norm.weight": (D,),
                           p + "attn_q.weight": (H * hd, D), p + "attn_k.weight": (Hkv * hd, D),
                           p + "attn_v.weight": (Hkv * hd, D), p + "attn_output.weight": (D, H * hd),
                           p + "ffn_gate.weight": (F, D), p + "ffn_up.weight": (F, D), p + "ffn_down.weight": (D, F)})
        check_shapes(g, shapes)


class Block:
    def __init__(self, g, i: int, args: ModelArgs, rope: Rope):
        p = f"blk.{i}."
        self.args, self.rope = args, rope
        self.attn_norm, self.ffn_norm = vector(g, p + "attn_norm.weight"), vector(g, p + "ffn_norm.weight")
        self.wq, self.wk, self.wv = (matrix(g, p + n) for n in ("attn_q.weight", "attn_k.weight", "attn_v.weight"))
        self.wo = matrix(g, p + "attn_output.weight")
        self.w_gate, self.w_up = matrix(g, p + "ffn_gate.weight"), matrix(g, p + "ffn_up.weight")
        self.w_down = matrix(g, p + "ffn_down.weight")

    def __call__(self, x: np.ndarray, cache) -> np.ndarray:
        a = self.args
        L, _ = x.shape                                    # (L, D)
        h = rms_norm(x, self.attn_norm, a.rms_eps)
        q = self.wq.matmul(h).reshape(L, a.n_heads, a.head_dim)
        k = self.wk.matmul(h).reshape(L, a.n_kv_heads, a.head_dim)
        v = self.wv.matmul(h).reshape(L, a.n_kv_heads, a.head_dim)
        offset = cache.offset
        q, k = self.rope(q, offset), self.rope(k, offset)
        keys, values = cache.update_and_fetch(k.transpose(1, 0, 2), v.transpose(1, 0, 2))
        o = attention(q.transpose(1, 0, 2), keys, values, offset, 1.0 / math.sqrt(a.head_dim))
        x = x + self.wo.matmul(o)
        h = rms_norm(x, self.ffn_norm, a.rms_eps)
        return x + self.w_down.matmul(glu(self.w_gate.matmul(h), self.w_up.matmul(h), "silu"))


class Model:
    def __init__(self, g):
        self.args = args = ModelArgs.from_gguf(g)
        freq_factors = vector(g, "rope_freqs.weight") if has(g, "rope_freqs.weight") else None
        rope = Rope(args.rope_dims, args.rope_base, "norm", args.rope_scale, freq_factors)
        self.tok_embd = matrix(g, "token_embd.weight")
        self.layers = [Block(g, i, args, rope) for i in range(args.n_layers)]
        self.norm = vector(g, "output_norm.weight")
        self.output = matrix(g, "output.weight") if has(g, "output.weight") else self.tok_embd

    def make_cache(self, max_len: int):
        a = self.args
        return make_cache(a.n_layers, a.n_kv_heads, a.head_dim, max_len)

    def __call__(self, tokens: np.ndarray, cache, last_only: bool = False) -> np.ndarray:
        """tokens: (L,) ids at positions cache.offset.. -> logits (L, n_vocab), or (1, n_vocab)."""
        x = self.tok_embd.rows(np.asarray(tokens))        # (L, D)
        for layer, c in zip(self.layers, cache):
            x = layer(x, c)
        if last_only:
            x = x[-1:]
        return self.output.matmul(np.ascontiguousarray(rms_norm(x, self.norm, self.args.rms_eps)))
