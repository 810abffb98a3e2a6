"""Write a LLaMA-7B-shaped GGUF with random but valid Q4_0 weights (~3.6 GiB).

32 layers, d_model 4096, 32 heads, FFN 11008, vocab 32000, a minimal SentencePiece-style
vocabulary (<unk>, <s>, </s>, the 256 byte tokens, then filler pieces). The weights are
random nibbles with small finite f16 scales, so the forward pass is numerically sane;
the text it writes is noise. Tensors of one shape share one random buffer to keep this
script's own memory small; the file still holds every byte, so reading it costs what a
real 7B Q4_0 file costs.

    python benchmarks/make_7b.py /tmp/llama-7b-shape.Q4_0.gguf
    localai bench --model /tmp/llama-7b-shape.Q4_0.gguf --n-prompt 64 --n-gen 16 --repeats 1
"""
from __future__ import annotations

import sys

import numpy as np
from gguf import GGMLQuantizationType as Q
from gguf import GGUFWriter, TokenType

N_LAYERS, D, N_HEADS, D_FF, VOCAB, N_CTX = 32, 4096, 32, 11008, 32000, 4096
Q4_0_BLOCK = (32, 2 + 16)  # 32 weights: f16 scale + 16 bytes of nibbles


def q4_0(rng, rows: int, cols: int) -> np.ndarray:
    """(rows, cols/32*18) uint8 of valid Q4_0 blocks."""
    nb = cols // Q4_0_BLOCK[0]
    blocks = np.empty((rows, nb, Q4_0_BLOCK[1]), np.uint8)
    scale = (rng.uniform(0.5, 1.5, (rows, nb)) * (0.02 / 8)).astype(np.float16)  # |w| <~ 0.02
    blocks[:, :, :2] = scale.view(np.uint8).reshape(rows, nb, 2)
    blocks[:, :, 2:] = rng.integers(0, 256, (rows, nb, 16), dtype=np.uint8)
    return blocks.reshape(rows, nb * Q4_0_BLOCK[1])


def vocabulary() -> tuple[list[str], list[float], list[int]]:
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    types = [TokenType.UNKNOWN, TokenType.CONTROL, TokenType.CONTROL] + [TokenType.BYTE] * 256
    letters = "abcdefghijklmnopqrstuvwxyz"
    pieces = ["▁"] + [f"▁{c}" for c in letters] + list(letters)
    i = 0
    while len(tokens) + len(pieces) < VOCAB:
        pieces.append(f"▁{letters[i % 26]}{letters[(i // 26) % 26]}{i}")
        i += 1
    tokens += pieces[: VOCAB - len(tokens)]
    types += [TokenType.NORMAL] * (VOCAB - len(types))
    scores = [0.0] * 259 + [-float(j) for j in range(VOCAB - 259)]
    return tokens, scores, [int(t) for t in types]


def main(path: str) -> None:
    rng = np.random.default_rng(0)
    w = GGUFWriter(path, "llama")
    w.add_name("llama-7b-shape-random")
    w.add_block_count(N_LAYERS)
    w.add_context_length(N_CTX)
    w.add_embedding_length(D)
    w.add_feed_forward_length(D_FF)
    w.add_head_count(N_HEADS)
    w.add_head_count_kv(N_HEADS)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_rope_dimension_count(D // N_HEADS)
    w.add_file_type(2)  # MOSTLY_Q4_0
    tokens, scores, types = vocabulary()
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_bos_token(True)

    square, up, down = q4_0(rng, D, D), q4_0(rng, D_FF, D), q4_0(rng, D, D_FF)
    norm = np.ones(D, np.float32)
    w.add_tensor("token_embd.weight", q4_0(rng, VOCAB, D), raw_dtype=Q.Q4_0)
    w.add_tensor("output_norm.weight", norm)
    w.add_tensor("output.weight", q4_0(rng, VOCAB, D), raw_dtype=Q.Q4_0)
    for i in range(N_LAYERS):
        p = f"blk.{i}."
        w.add_tensor(p + "attn_norm.weight", norm)
        w.add_tensor(p + "ffn_norm.weight", norm)
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            w.add_tensor(p + name + ".weight", square, raw_dtype=Q.Q4_0)
        w.add_tensor(p + "ffn_gate.weight", up, raw_dtype=Q.Q4_0)
        w.add_tensor(p + "ffn_up.weight", up, raw_dtype=Q.Q4_0)
        w.add_tensor(p + "ffn_down.weight", down, raw_dtype=Q.Q4_0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file(progress=False)
    w.close()
    print(path)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "llama-7b-shape.Q4_0.gguf")
