"""Qwen3-MoE (Qwen3-30B-A3B, ...): `general.architecture == "qwen3moe"`.

llama.cpp: src/models/qwen3moe.cpp. qwen3.py's attention (per-head Q/K RMSNorm, NEOX RoPE,
head size from `attention.key_length`); the MLP is a mixture of experts: a router
`ffn_gate_inp` (d_model -> n_expert, F32), softmax over all experts, the top
`expert_used_count`, their weights renormalised to sum 1, each a SwiGLU MLP of width
`expert_feed_forward_length` (else feed_forward_length / expert_used_count, as llama.cpp).
"""
from __future__ import annotations

from ..errors import ModelFileError
from . import qwen3
from .hparams import HParams


class Block(qwen3.Block):
    def __init__(self, ops, g, i: int, args: HParams, rope):
        p = f"blk.{i}."
        self.ops, self.args, self.rope = ops, args, rope
        self.scale = args.head_dim ** -0.5
        self.attn_norm, self.ffn_norm = ops.vector(g, p + "attn_norm.weight"), ops.vector(g, p + "ffn_norm.weight")
        self.q_norm, self.k_norm = ops.vector(g, p + "attn_q_norm.weight"), ops.vector(g, p + "attn_k_norm.weight")
        self.wq, self.wk, self.wv = (ops.matrix(g, p + n) for n in ("attn_q.weight", "attn_k.weight", "attn_v.weight"))
        self.wo = ops.matrix(g, p + "attn_output.weight")
        self.router = ops.matrix(g, p + "ffn_gate_inp.weight")
        self.gate, self.up, self.down = (ops.experts(g, p + f"ffn_{n}_exps.weight") for n in ("gate", "up", "down"))

    def __call__(self, x, cache):
        ops, a = self.ops, self.args
        x = x + self.attention(x, cache)
        h = ops.rms_norm(x, self.ffn_norm, a.norm_eps)
        return x + ops.moe(h, self.router, self.gate, self.up, self.down, a.extra["n_expert_used"], "silu")


class Model(qwen3.Model):
    block = Block

    @staticmethod
    def read_args(g) -> HParams:
        args = HParams.read(g, d_ff_required=False)
        n_expert, k = int(g.get("qwen3moe.expert_count", 0)), int(g.get("qwen3moe.expert_used_count", 0))
        if not 0 < k <= n_expert:
            raise ModelFileError(f"{g.path}: qwen3moe.expert_used_count = {k} must be between 1 and "
                                 f"qwen3moe.expert_count = {n_expert}")
        t = g.tensors.get("blk.0.ffn_gate_exps.weight")
        if t is not None and t.shape[0] != n_expert:
            raise ModelFileError(f"{g.path}: qwen3moe.expert_count = {n_expert} but tensor "
                                 f"'blk.0.ffn_gate_exps.weight' holds {t.shape[0]} experts")
        args.extra.update(n_expert=n_expert, n_expert_used=k)
        return args
