"""HF import: a tiny random LLaMA / Qwen2 Hugging Face directory (safetensors, config.json,
tokenizer.json from a real vocabulary) -> F16 and Q8_0 GGUF whose logits equal a float64 numpy
forward of the HF weights (HF's rotate-half RoPE, no Q/K permutation)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from gguf import GGMLQuantizationType as Q
from gguf import TokenType
from gguf.quants import dequantize, quantize
from safetensors.numpy import save_file

import localai
from localai.errors import InvalidRequest, UnsupportedModel
from localai.gguf_file import GGUFFile
from localai.quantize import quantize_file

TEMPLATE = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"


def tokenizer_json(vocab_gguf: Path, pre_tokenizer: dict) -> tuple[dict, list[str], list[int]]:
    """tokenizer.json of a real vocabulary (tokens, merges, control tokens) read from a GGUF."""
    g = GGUFFile(vocab_gguf)
    tokens, types, merges = g.get("tokenizer.ggml.tokens"), g.get("tokenizer.ggml.token_type"), g.get("tokenizer.ggml.merges")
    vocab, added = {}, []
    for i, (tok, typ) in enumerate(zip(tokens, types)):
        if typ == TokenType.CONTROL:
            added.append({"id": i, "content": tok, "single_word": False, "lstrip": False, "rstrip": False,
                          "normalized": False, "special": True})
        elif typ == TokenType.NORMAL:
            vocab[tok] = i
    tj = {"version": "1.0", "added_tokens": added, "normalizer": None, "pre_tokenizer": pre_tokenizer,
          "model": {"type": "BPE", "vocab": vocab, "merges": merges, "byte_fallback": False}}
    return tj, list(tokens), [int(t) for t in types]


SMOLLM_PRE = {"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": True},
              {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}]}
QWEN2_PRE = {"type": "Sequence", "pretokenizers": [
    {"type": "Split", "pattern": {"Regex": r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"},
     "behavior": "Isolated", "invert": False},
    {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}]}


def write_hf(d: Path, arch: str, tj: dict, n_vocab: int, bos: str, eos: str, *, bf16: bool = False) -> dict:
    """A random 2-layer model in HF layout; returns its float32 weights by HF name."""
    rng = np.random.default_rng(3)
    D, H, KV, F, L = 256, 4, 2, 512, 2
    hd = D // H
    w = {"model.embed_tokens.weight": rng.standard_normal((n_vocab, D)) * 0.5,
         "model.norm.weight": 1 + 0.1 * rng.standard_normal(D)}
    for i in range(L):
        p = f"model.layers.{i}."
        w[p + "input_layernorm.weight"] = 1 + 0.1 * rng.standard_normal(D)
        w[p + "post_attention_layernorm.weight"] = 1 + 0.1 * rng.standard_normal(D)
        for name, shape in (("self_attn.q_proj", (H * hd, D)), ("self_attn.k_proj", (KV * hd, D)),
                            ("self_attn.v_proj", (KV * hd, D)), ("self_attn.o_proj", (D, H * hd)),
                            ("mlp.gate_proj", (F, D)), ("mlp.up_proj", (F, D)), ("mlp.down_proj", (D, F))):
            w[p + name + ".weight"] = rng.standard_normal(shape) * 0.08
        if arch == "qwen2":
            for name, n in (("q_proj", H * hd), ("k_proj", KV * hd), ("v_proj", KV * hd)):
                w[p + f"self_attn.{name}.bias"] = rng.standard_normal(n) * 0.1
    w = {k: v.astype(np.float32) for k, v in w.items()}
    if arch == "llama":
        w["lm_head.weight"] = (rng.standard_normal((n_vocab, D)) * 0.5).astype(np.float32)
    if bf16:  # store BF16 by hand (numpy has no bfloat16); the weights become the BF16 values
        stored = {}
        for k, v in w.items():
            bits = (v.view(np.uint32) + 0x8000) >> 16
            w[k] = (bits << 16).astype(np.uint32).view(np.float32)
            stored[k] = bits.astype(np.uint16)
        _save_bf16(stored, d / "model.safetensors")
    else:
        w = {k: v.astype(np.float16).astype(np.float32) for k, v in w.items()}
        half = sorted(w)[: len(w) // 2]  # two shards
        save_file({k: w[k].astype(np.float16) for k in half}, str(d / "model-00001-of-00002.safetensors"))
        save_file({k: w[k].astype(np.float16) for k in w if k not in half}, str(d / "model-00002-of-00002.safetensors"))
    cfg = {"architectures": ["LlamaForCausalLM" if arch == "llama" else "Qwen2ForCausalLM"], "model_type": arch,
           "hidden_size": D, "intermediate_size": F, "num_attention_heads": H, "num_key_value_heads": KV,
           "num_hidden_layers": L, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "vocab_size": n_vocab,
           "max_position_embeddings": 512, "tie_word_embeddings": arch != "llama"}
    (d / "config.json").write_text(json.dumps(cfg))
    (d / "tokenizer.json").write_text(json.dumps(tj))
    (d / "tokenizer_config.json").write_text(json.dumps({"bos_token": bos, "eos_token": eos, "chat_template": TEMPLATE,
                                                         "add_bos_token": False}))
    return w


def _save_bf16(tensors: dict, path: Path) -> None:
    header, blobs, at = {}, [], 0
    for k, v in tensors.items():
        b = v.tobytes()
        header[k] = {"dtype": "BF16", "shape": list(v.shape), "data_offsets": [at, at + len(b)]}
        blobs.append(b)
        at += len(b)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    path.write_bytes(len(h).to_bytes(8, "little") + h + b"".join(blobs))


def forward(w: dict, ids: list[int], arch: str, D=256, H=4, KV=2, L=2, eps=1e-5, base=10000.0) -> np.ndarray:
    """float64 reference forward in HF's layout: rotate-half RoPE, (T, vocab) logits."""
    w = {k: v.astype(np.float64) for k, v in w.items()}
    hd, T = D // H, len(ids)
    x = w["model.embed_tokens.weight"][ids]
    inv = 1.0 / base ** (np.arange(0, hd, 2) / hd)
    ang = np.arange(T)[:, None] * inv[None]
    cos, sin = np.cos(np.concatenate([ang, ang], 1)), np.sin(np.concatenate([ang, ang], 1))

    def norm(v, g):
        return v / np.sqrt((v * v).mean(-1, keepdims=True) + eps) * g

    def rope(v):  # (T, heads, hd)
        rot = np.concatenate([-v[..., hd // 2:], v[..., :hd // 2]], -1)
        return v * cos[:, None] + rot * sin[:, None]

    mask = np.triu(np.full((T, T), -np.inf), 1)
    for i in range(L):
        p = f"model.layers.{i}."
        h = norm(x, w[p + "input_layernorm.weight"])
        q, k, v = (h @ w[p + f"self_attn.{n}_proj.weight"].T + w.get(p + f"self_attn.{n}_proj.bias", 0) for n in "qkv")
        q, k, v = rope(q.reshape(T, H, hd)), rope(k.reshape(T, KV, hd)), v.reshape(T, KV, hd)
        k, v = np.repeat(k, H // KV, 1), np.repeat(v, H // KV, 1)
        s = np.einsum("thd,shd->hts", q, k) / np.sqrt(hd) + mask
        a = np.exp(s - s.max(-1, keepdims=True))
        a /= a.sum(-1, keepdims=True)
        x = x + np.einsum("hts,shd->thd", a, v).reshape(T, D) @ w[p + "self_attn.o_proj.weight"].T
        h = norm(x, w[p + "post_attention_layernorm.weight"])
        g = h @ w[p + "mlp.gate_proj.weight"].T
        x = x + (g / (1 + np.exp(-g)) * (h @ w[p + "mlp.up_proj.weight"].T)) @ w[p + "mlp.down_proj.weight"].T
    out = w.get("lm_head.weight", w["model.embed_tokens.weight"])
    return norm(x, w["model.norm.weight"]) @ out.T


def q8_0_rounded(w: dict) -> dict:
    """The HF weights as a Q8_0 file holds them: matrices through Q8_0 (row-wise blocks, so the
    Q/K row permutation does not change them), 1-D tensors as they are."""
    return {k: dequantize(quantize(v, Q.Q8_0), Q.Q8_0) if v.ndim == 2 else v for k, v in w.items()}


CASES = {
    "llama": ("smollm2", SMOLLM_PRE, "<|im_start|>", "<|im_end|>", "smollm"),
    "qwen2": ("qwen2", QWEN2_PRE, "<|endoftext|>", "<|im_end|>", "qwen2"),
}


@pytest.fixture
def float32_kv(monkeypatch):
    """The numpy backend's KV cache in float32 (it stores float16, as llama.cpp does): these
    tests hold the imported weights to a float64 forward at 1e-5, finer than float16 K/V."""
    from localai.models import cache

    monkeypatch.setattr(cache, "DTYPE", np.float32)


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_hf_directory_converts_and_matches_float64_forward(tmp_path, arch, smollm2_path, llama_cpp_models, float32_kv):
    src_name, pre, bos, eos, pre_name = CASES[arch]
    vocab_gguf = smollm2_path if src_name == "smollm2" else llama_cpp_models / "ggml-vocab-qwen2.gguf"
    tj, tokens, types = tokenizer_json(vocab_gguf, pre)
    hf = tmp_path / "hf"
    hf.mkdir()
    w = write_hf(hf, arch, tj, len(tokens), bos, eos)
    ids = [tokens.index(bos), 400, 1200, 77, 3000, 15, 9021, 64]
    for typ, weights, tol in (("F16", w, 1e-5), ("Q8_0", q8_0_rounded(w), 1e-3)):  # measured 4e-7, 9e-5
        out = tmp_path / f"{arch}.{typ}.gguf"
        res = quantize_file(hf, out, typ, threads=2)
        g = GGUFFile(out)
        assert g.architecture == arch
        # tokenizer as llama.cpp's converter writes it
        assert g.get("tokenizer.ggml.model") == "gpt2" and g.get("tokenizer.ggml.pre") == pre_name
        assert g.get("tokenizer.ggml.tokens")[: len(tj["model"]["vocab"])] == tokens[: len(tj["model"]["vocab"])]
        assert g.get("tokenizer.ggml.merges") == GGUFFile(vocab_gguf).get("tokenizer.ggml.merges")
        assert g.get("tokenizer.ggml.bos_token_id") == tokens.index(bos)
        assert g.get("tokenizer.ggml.eos_token_id") == tokens.index(eos)
        assert g.get("tokenizer.chat_template") == TEMPLATE
        assert g.get(f"{arch}.rope.freq_base") == 10000.0 and g.get(f"{arch}.block_count") == 2
        if typ == "Q8_0":
            assert res["types"]["Q8_0"] == 14 + (arch == "llama") + 1
        ref = forward(weights, ids, arch)
        got = localai.load(str(out)).logits(ids).astype(np.float64)  # (T, vocab)
        assert np.abs(got - ref).max() < tol * np.abs(ref).max(), (typ, np.abs(got - ref).max(), np.abs(ref).max())


def test_bf16_safetensors_and_no_permutation_would_fail(tmp_path, smollm2_path, float32_kv):
    tj, tokens, _ = tokenizer_json(smollm2_path, SMOLLM_PRE)
    hf = tmp_path / "hf"
    hf.mkdir()
    w = write_hf(hf, "llama", tj, len(tokens), "<|im_start|>", "<|im_end|>", bf16=True)
    out = tmp_path / "bf16.gguf"
    res = quantize_file(hf, out, "F16")
    assert res["types"] == {"F16": 16, "F32": 5}  # 14 layer matrices, embedding, lm_head
    ids = [1, 400, 1200, 77, 3000, 15]
    ref = forward(w, ids, "llama")
    got = localai.load(str(out)).logits(ids).astype(np.float64)
    assert np.abs(got - ref).max() < 1e-5 * np.abs(ref).max()
    # the Q/K permutation is what makes it agree: HF's layout read as GGUF's is far off
    from localai import hf_import
    saved = hf_import.ARCHITECTURES["LlamaForCausalLM"]
    hf_import.ARCHITECTURES["LlamaForCausalLM"] = ("llama", False)
    try:
        quantize_file(hf, tmp_path / "unpermuted.gguf", "F16")
    finally:
        hf_import.ARCHITECTURES["LlamaForCausalLM"] = saved
    bad = localai.load(str(tmp_path / "unpermuted.gguf")).logits(ids).astype(np.float64)
    assert np.abs(bad - ref).max() > 20 * np.abs(got - ref).max()


def test_bad_hf_directories_are_one_line(tmp_path):
    d = tmp_path / "m"
    d.mkdir()
    with pytest.raises(InvalidRequest, match="no config.json"):
        quantize_file(d, tmp_path / "o.gguf", "F16")
    (d / "config.json").write_text(json.dumps({"architectures": ["GPTNeoXForCausalLM"]}))
    with pytest.raises(UnsupportedModel, match="not imported"):
        quantize_file(d, tmp_path / "o.gguf", "F16")
    (d / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"], "num_attention_heads": 4,
                                               "hidden_size": 64, "num_hidden_layers": 1}))
    with pytest.raises(InvalidRequest, match="no \\*.safetensors"):
        quantize_file(d, tmp_path / "o.gguf", "F16")
