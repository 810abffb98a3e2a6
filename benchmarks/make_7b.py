"""Write GGUF files shaped like real models, with random but valid quantized weights.

Shapes (layers, widths, heads, vocabulary, quant mix) are those of the real checkpoints, so
a forward pass costs what it costs on the real model; the text it writes is noise. The
vocabulary is a minimal SentencePiece-style one of the real size (<unk>, <s>, </s>, the 256
byte tokens, then filler pieces). Weights are random codes with small finite f16 scales
(|w| ~ 0.02), so the forward pass is numerically sane. Tensors of one shape and type share
one random buffer to keep this script's memory small; the file still holds every byte.

    python benchmarks/make_7b.py llama-7b /work/cache/bench-models/llama-7b-shape.Q4_0.gguf
    python benchmarks/make_7b.py llama-3.2-3b /work/cache/bench-models/llama-3.2-3b-shape.Q4_K_M.gguf
    python benchmarks/make_7b.py qwen2.5-1.5b /work/cache/bench-models/qwen2.5-1.5b-shape.Q4_K_M.gguf
    python benchmarks/peer.py /work/cache/bench-models/llama-7b-shape.Q4_0.gguf

Shapes:
  llama-7b      LLaMA-7B, Q4_0 (~3.6 GiB): 32 layers, d 4096, 32 heads, FFN 11008, vocab 32000
  llama-3.2-3b  Llama-3.2-3B-Instruct, Q4_K_M (~1.9 GiB): 28 layers, d 3072, 24 heads on 8 KV
                heads, FFN 8192, vocab 128256, tied embeddings, rope base 500000
  qwen2.5-1.5b  Qwen2.5-1.5B-Instruct, Q4_K_M (~1.0 GiB): arch qwen2, 28 layers, d 1536, 12 heads
                on 2 KV heads, FFN 8960, vocab 151936, tied embeddings, Q/K/V biases, rope base 1e6
                (needs the qwen2 architecture in localai.models)
Q4_K_M's mix is llama.cpp's: Q4_K everywhere except Q6_K for the output (or tied embedding)
and for attn_v and ffn_down in the layers llama.cpp's `use_more_bits` picks.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np
from gguf import GGMLQuantizationType as Q
from gguf import GGUFWriter, TokenType


@dataclass(frozen=True)
class Shape:
    arch: str
    n_layers: int
    d: int
    n_heads: int
    n_kv_heads: int
    d_ff: int
    vocab: int
    n_ctx: int
    rope_base: float
    mix: str            # "Q4_0" or "Q4_K_M"
    tied: bool          # no output.weight: the token embedding is the output matrix
    qkv_bias: bool
    file_type: int      # general.file_type: 2 MOSTLY_Q4_0, 15 MOSTLY_Q4_K_M


SHAPES = {
    "llama-7b": Shape("llama", 32, 4096, 32, 32, 11008, 32000, 4096, 10000.0, "Q4_0", False, False, 2),
    "llama-3.2-3b": Shape("llama", 28, 3072, 24, 8, 8192, 128256, 8192, 500000.0, "Q4_K_M", True, False, 15),
    "qwen2.5-1.5b": Shape("qwen2", 28, 1536, 12, 2, 8960, 151936, 8192, 1000000.0, "Q4_K_M", True, True, 15),
}

# type: (weights per block, bytes per block, [(byte offset of an f16 scale, its magnitude)])
# A code q gives |w| up to about scale * q_max: Q4_0 d * 8; Q4_K d * 63 * 15 (dmin alike);
# Q6_K d * 127 * 32.
BLOCKS = {
    Q.Q4_0: (32, 2 + 16, [(0, 0.02 / 8)]),
    Q.Q4_K: (256, 2 + 2 + 12 + 128, [(0, 0.02 / (63 * 15)), (2, 0.01 / (63 * 15))]),
    Q.Q6_K: (256, 128 + 64 + 16 + 2, [(208, 0.02 / (127 * 32))]),
}


def quantized(rng, qtype: Q, rows: int, cols: int) -> np.ndarray:
    """(rows, row_bytes) uint8 of valid blocks of qtype: random codes, small finite scales."""
    qk, size, scales = BLOCKS[qtype]
    nb = cols // qk
    blocks = rng.integers(0, 256, (rows, nb, size), dtype=np.uint8)
    for at, mag in scales:
        d = (rng.uniform(0.5, 1.5, (rows, nb)) * mag).astype(np.float16)
        blocks[:, :, at:at + 2] = d.view(np.uint8).reshape(rows, nb, 2)
    return blocks.reshape(rows, nb * size)


def use_more_bits(i: int, n: int) -> bool:
    """llama.cpp's choice of layers whose attn_v / ffn_down get Q6_K in Q4_K_M."""
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def tensor_types(s: Shape, i: int) -> dict[str, Q]:
    if s.mix == "Q4_0":
        return dict.fromkeys(("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"), Q.Q4_0)
    more = Q.Q6_K if use_more_bits(i, s.n_layers) else Q.Q4_K
    return {"attn_q": Q.Q4_K, "attn_k": Q.Q4_K, "attn_v": more, "attn_output": Q.Q4_K,
            "ffn_gate": Q.Q4_K, "ffn_up": Q.Q4_K, "ffn_down": more}


def vocabulary(n: int) -> tuple[list[str], list[float], list[int]]:
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    types = [TokenType.UNKNOWN, TokenType.CONTROL, TokenType.CONTROL] + [TokenType.BYTE] * 256
    letters = "abcdefghijklmnopqrstuvwxyz"
    pieces = ["▁"] + [f"▁{c}" for c in letters] + list(letters)
    i = 0
    while len(tokens) + len(pieces) < n:
        pieces.append(f"▁{letters[i % 26]}{letters[(i // 26) % 26]}{i}")
        i += 1
    tokens += pieces[: n - len(tokens)]
    types += [TokenType.NORMAL] * (n - len(types))
    scores = [0.0] * 259 + [-float(j) for j in range(n - 259)]
    return tokens, scores, [int(t) for t in types]


def write(name: str, path: str) -> None:
    s = SHAPES[name]
    rng = np.random.default_rng(0)
    hd = s.d // s.n_heads
    w = GGUFWriter(path, s.arch)
    w.add_name(f"{name}-shape-random")
    w.add_block_count(s.n_layers)
    w.add_context_length(s.n_ctx)
    w.add_embedding_length(s.d)
    w.add_feed_forward_length(s.d_ff)
    w.add_head_count(s.n_heads)
    w.add_head_count_kv(s.n_kv_heads)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_rope_dimension_count(hd)
    w.add_rope_freq_base(s.rope_base)
    w.add_file_type(s.file_type)
    tokens, scores, types = vocabulary(s.vocab)
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_bos_token(True)

    shared: dict = {}

    def weights(qtype: Q, rows: int, cols: int) -> np.ndarray:
        key = (qtype, rows, cols)
        if key not in shared:
            shared[key] = quantized(rng, qtype, rows, cols)
        return shared[key]

    emb_type = Q.Q4_0 if s.mix == "Q4_0" else (Q.Q6_K if s.tied else Q.Q4_K)
    norm = np.ones(s.d, np.float32)
    w.add_tensor("token_embd.weight", quantized(rng, emb_type, s.vocab, s.d), raw_dtype=emb_type)
    w.add_tensor("output_norm.weight", norm)
    if not s.tied:
        out_type = Q.Q4_0 if s.mix == "Q4_0" else Q.Q6_K
        w.add_tensor("output.weight", quantized(rng, out_type, s.vocab, s.d), raw_dtype=out_type)
    kv = s.n_kv_heads * hd
    out_rows = {"attn_q": (s.d, s.d), "attn_k": (kv, s.d), "attn_v": (kv, s.d), "attn_output": (s.d, s.d),
                "ffn_gate": (s.d_ff, s.d), "ffn_up": (s.d_ff, s.d), "ffn_down": (s.d, s.d_ff)}
    for i in range(s.n_layers):
        p = f"blk.{i}."
        w.add_tensor(p + "attn_norm.weight", norm)
        w.add_tensor(p + "ffn_norm.weight", norm)
        for t, qtype in tensor_types(s, i).items():
            w.add_tensor(p + t + ".weight", weights(qtype, *out_rows[t]), raw_dtype=qtype)
            if s.qkv_bias and t in ("attn_q", "attn_k", "attn_v"):
                w.add_tensor(p + t + ".bias", np.zeros(out_rows[t][0], np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file(progress=False)
    w.close()
    print(path)


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in SHAPES:
        raise SystemExit(f"usage: python benchmarks/make_7b.py {{{','.join(SHAPES)}}} OUT.gguf")
    write(sys.argv[1], sys.argv[2])
