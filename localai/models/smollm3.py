"""SmolLM3: `general.architecture == "smollm3"`.

llama.cpp: src/models/smollm3.cpp. llama.py's decoder (RoPE on adjacent pairs, SwiGLU,
tied output) except that every 4th layer (il + 1) % 4 == 0 has no RoPE: no metadata marks
those layers; llama.cpp hard-codes the step (n_no_rope_layer_step = 4).
"""
from __future__ import annotations

from .hparams import HParams
from .llama import Block   # llama's layer; its `rope` is the identity on the no-RoPE layers

NO_ROPE_STEP = 4


def _no_rope(x, offset):
    return x


class Model:
    def __init__(self, g, ops):
        self.ops, self.args = ops, (args := HParams.read(g))
        rope = ops.rope(args.rope_dims, args.rope_base, False, args.rope_scale)
        self.tok_embd = ops.matrix(g, "token_embd.weight")
        self.layers = [Block(ops, g, i, args, rope if (i + 1) % NO_ROPE_STEP else _no_rope)
                       for i in range(args.n_layers)]
        scale = g.get("smollm3.attention.scale")
        if scale:
            for layer in self.layers:
                layer.scale = float(scale)
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

