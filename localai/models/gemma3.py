"""Gemma 3 (text): `general.architecture == "gemma3"`.

Differences from llama.py, as llama.cpp computes it:
- the embedding is scaled by sqrt(d_model); the output layer is the tied `token_embd`;
- per-head RMSNorm on Q and K (`attn_q_norm`, `attn_k_norm`) before RoPE, NEOX RoPE (halves);
- Q scaled by 1/sqrt(head_dim); extra norms after attention and after the MLP;
- GeGLU MLP with the tanh GELU;
- layers alternate 5 sliding-window (RoPE base 10000, window from the file) : 1 global
  (the file's RoPE base and scaling), so layers 5, 11, 17, ... are global;
- the norm weights in the GGUF already include Gemma's `+1`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import ModelFileError
from . import check_hparams, check_shapes, matrix, vector
from .cache import make_cache
from .layers import Rope, attention, glu, rms_norm

SWA_PATTERN = 6          # every 6th layer is global
SWA_ROPE_BASE = 10000.0  # local layers' RoPE base (llama.cpp hard-codes it for gemma3)


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
    rope_scale: float
    window: int
    n_ctx_train: int

    @classmethod
    def from_gguf(cls, g) -> "ModelArgs":
        a = g.arch_get
        d, H = g.arch_int("embedding_length"), g.arch_int("attention.head_count", lo=1, hi=4096)
        factor = float(a("rope.scaling.factor", 1.0) or 1.0)
        if "token_embd.weight" not in g.tensors:
            raise ModelFileError(f"{g.path}: tensor 'token_embd.weight' is missing")
        args = cls(
            n_layers=g.arch_int("block_count", lo=1, hi=4096),
            d_model=d,
            n_heads=H,
            n_kv_heads=g.arch_int("attention.head_count_kv", H, lo=1, hi=4096),
            head_dim=g.arch_int("attention.key_length", d // H if d >= H else 1),
            d_ff=g.arch_int("feed_forward_length"),
            n_vocab=g.tensors["token_embd.weight"].shape[0],
            rms_eps=float(a("attention.layer_norm_rms_epsilon", 1e-6)),
            rope_base=float(a("rope.freq_base", 1e6)),
            rope_scale=1.0 / factor if a("rope.scaling.type", "linear") == "linear" else 1.0,
            window=g.arch_int("attention.sliding_window", 512, hi=1 << 24),
            n_ctx_train=g.arch_int("context_length", 32768, hi=1 << 24),
        )
        args.check(g)
        return args

    def check(self, g) -> None:
        """Hyperparameters against each other and against the tensors' shapes."""
        D, H, Hkv, hd, F, V = self.d_model, self.n_heads, self.n_kv_heads, self.head_dim, self.d_ff, self.n_vocab
        check_hparams(g, [
            (H % Hkv == 0, "attention.head_count_kv", f"is {Hkv}, which does not divide head_count {H}"),
            (hd % 2 == 0, "attention.key_length", f"is {hd}: RoPE needs an even head size"),
            (g.arch_get("attention.value_length", hd) == hd, "attention.value_length",
             f"is {g.arch_get('attention.value_length')}, not the key length {hd}"),
            (f"blk.{self.n_layers - 1}.attn_q.weight" in g.tensors and f"blk.{self.n_layers}.attn_q.weight"
             not in g.tensors, "block_count", f"is {self.n_layers}, not the number of blocks in the file"),
        ])
        shapes = {"token_embd.weight": (V, D), "output_norm.weight": (D,)}
        for i in range(self.n_layers):
            p = f"blk.{i}."
            shapes.update({p + "attn_norm.weight": (D,), p + "ffn_norm.weight": (D,),
                           p + "post_attention_norm.weight": (D,), p + "post_ffw_norm.weight": (D,),
                           p + "attn_q_norm.weight": (hd,), p + "attn_k_norm.weight": (hd,),
                           p + "attn_q.weight": (H * hd, D), p + "attn_k.weight": (Hkv * hd, D),
                           p + "attn_v.weight": (Hkv * hd, D), p + "attn_output.weight": (D, H * hd),
                           p + "ffn_gate.weight": (F, D), p + "ffn_up.weight": (F, D), p + "ffn_down.weight": (D, F)})
        check_shapes(g, shapes)


class Block:
    def __init__(self, g, i: int, args: ModelArgs, rope: Rope, window: int | None):
        p = f"blk.{i}."
        self.args, self.rope, self.window = args, rope, window
        self.attn_norm, self.ffn_norm = vector(g, p + "attn_norm.weight"), vector(g, p + "ffn_norm.weight")
        self.q_norm, self.k_norm = vector(g, p + "attn_q_norm.weight"), vector(g, p + "attn_k_norm.weight")
        self.post_attn_norm = vector(g, p + "post_attention_norm.weight")
        self.post_ffn_norm = vector(g, p + "post_ffw_norm.weight")
        self.wq, self.wk, self.wv = (matrix(g, p + n) for n in ("attn_q.weight", "attn_k.weight", "attn_v.weight"))
        self.wo = matrix(g, p + "attn_output.weight")
        self.w_gate, self.w_up = matrix(g, p + "ffn_gate.weight"), matrix(g, p + "ffn_up.weight")
        self.w_down = matrix(g, p + "ffn_down.weight")

    def __call__(self, x: np.ndarray, cache) -> np.ndarray:
        a = self.args
        L, _ = x.shape                                    # (L, D)
        h = rms_norm(x, self.attn_norm, a.rms_eps)
        q = rms_norm(self.wq.matmul(h).reshape(L, a.n_heads, a.head_dim), self.q_norm, a.rms_eps)
        k = rms_norm(self.wk.matmul(h).reshape(L, a.n_kv_heads, a.head_dim), self.k_norm, a.rms_eps)
        v = self.wv.matmul(h).reshape(L, a.n_kv_heads, a.head_dim)
        offset = cache.offset
        q, k = self.rope(q, offset), self.rope(k, offset)
        keys, values = cache.update_and_fetch(k.transpose(1, 0, 2), v.transpose(1, 0, 2))
        o = attention(q.transpose(1, 0, 2), keys, values, offset, 1.0 / math.sqrt(a.head_dim), self.window)
        x = x + rms_norm(self.wo.matmul(o), self.post_attn_norm, a.rms_eps)
        h = rms_norm(x, self.ffn_norm, a.rms_eps)
        m = self.w_down.matmul(glu(self.w_gate.matmul(h), self.w_up.matmul(h), "gelu_tanh"))
        return x + rms_norm(m, self.post_ffn_norm, a.rms_eps)


class Model:
    def __init__(self, g):
        self.args = args = ModelArgs.from_gguf(g)
        local = Rope(args.head_dim, SWA_ROPE_BASE, "neox")
        glob = Rope(args.head_dim, args.rope_base, "neox", args.rope_scale)
        self.tok_embd = matrix(g, "token_embd.weight")
        self.layers = []
        for i in range(args.n_layers):
            is_global = (i + 1) % SWA_PATTERN == 0
            self.layers.append(Block(g, i, args, glob if is_global else local, None if is_global else args.window))
        self.norm = vector(g, "output_norm.weight")
        self.embd_scale = np.float32(math.sqrt(args.d_model))

    def make_cache(self, max_len: int):
        a = self.args
        return make_cache(a.n_layers, a.n_kv_heads, a.head_dim, max_len)

    def __call__(self, tokens: np.ndarray, cache, last_only: bool = False) -> np.ndarray:
        """tokens: (L,) ids at positions cache.offset.. -> logits (L, n_vocab), or (1, n_vocab)."""
        x = self.tok_embd.rows(np.asarray(tokens)) * self.embd_scale   # (L, D)
        for layer, c in zip(self.layers, cache):
            x = layer(x, c)
        if last_only:
            x = x[-1:]
        return self.tok_embd.matmul(np.ascontiguousarray(rms_norm(x, self.norm, self.args.rms_eps)))
