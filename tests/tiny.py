"""Tiny random GGUF models, written with gguf-py's writer, for fast shape and cache tests.

The vocabulary is GPT-2 byte-level BPE: the 256 byte symbols, a few merges and the ChatML
control tokens, so the real tokenizer, chat template and detokenizer run on them too.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType as Q
from gguf import GGUFWriter, TokenType
from gguf.quants import quantize

from localai.tokenizer.bpe import BYTE_TO_CHAR

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
MERGES = ["Ġ t", "h e", "Ġt he", "i n", "Ġ a", "e r", "o n", "Ġ s"]


def vocabulary() -> tuple[list[str], list[int], list[str]]:
    tokens = SPECIALS + list(BYTE_TO_CHAR) + [m.replace(" ", "") for m in MERGES]
    types = [TokenType.CONTROL] * len(SPECIALS) + [TokenType.NORMAL] * (len(tokens) - len(SPECIALS))
    return tokens, [int(t) for t in types], MERGES


def _weight(rng, shape, qtype) -> tuple[np.ndarray, Q]:
    w = (rng.standard_normal(shape) * 0.2).astype(np.float32)
    if qtype == Q.F32:
        return w, Q.F32
    return quantize(w, qtype), qtype


def write_tiny(path: str | Path, arch: str = "llama", qtype: Q = Q.Q8_0, *, n_layers: int = 2,
               d_model: int = 64, n_heads: int = 4, n_kv_heads: int = 2, d_ff: int = 128,
               n_ctx: int = 256, window: int = 8, seed: int = 0, chat_template: str | None = None,
               name: str = "tiny-instruct") -> Path:
    """Write a random model of `arch` ("llama" or "gemma3"); `window` is gemma3's sliding window.
    `name` (general.name) says "instruct", so chat requests take it (store.model_kind)."""
    rng = np.random.default_rng(seed)
    tokens, types, merges = vocabulary()
    V, hd = len(tokens), d_model // n_heads
    w = GGUFWriter(str(path), arch)
    w.add_name(name)
    w.add_block_count(n_layers)
    w.add_context_length(n_ctx)
    w.add_embedding_length(d_model)
    w.add_feed_forward_length(d_ff)
    w.add_head_count(n_heads)
    w.add_head_count_kv(n_kv_heads)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    if arch == "gemma3":
        w.add_key_length(hd)
        w.add_value_length(hd)
        w.add_sliding_window(window)
    else:
        w.add_rope_dimension_count(hd)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_add_bos_token(False)
    if chat_template:
        w.add_chat_template(chat_template)

    def add(name, shape, q=qtype):
        data, dtype = _weight(rng, shape, q)
        w.add_tensor(name, data, raw_dtype=dtype)

    def add_norm(name, n):
        w.add_tensor(name, (1.0 + 0.1 * rng.standard_normal(n)).astype(np.float32))

    add("token_embd.weight", (V, d_model))
    add_norm("output_norm.weight", d_model)
    for i in range(n_layers):
        p = f"blk.{i}."
        add_norm(p + "attn_norm.weight", d_model)
        add_norm(p + "ffn_norm.weight", d_model)
        add(p + "attn_q.weight", (n_heads * hd, d_model))
        add(p + "attn_k.weight", (n_kv_heads * hd, d_model))
        add(p + "attn_v.weight", (n_kv_heads * hd, d_model))
        add(p + "attn_output.weight", (d_model, n_heads * hd))
        add(p + "ffn_gate.weight", (d_ff, d_model))
        add(p + "ffn_up.weight", (d_ff, d_model))
        add(p + "ffn_down.weight", (d_model, d_ff))
        if arch == "gemma3":
            add_norm(p + "attn_q_norm.weight", hd)
            add_norm(p + "attn_k_norm.weight", hd)
            add_norm(p + "post_attention_norm.weight", d_model)
            add_norm(p + "post_ffw_norm.weight", d_model)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return Path(path)
