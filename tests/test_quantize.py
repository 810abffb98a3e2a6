"""`localai quantize`: gguf.quants-exact legacy types, llama-quantize's tensor rules, files that load."""
from __future__ import annotations

import numpy as np
import pytest
from gguf import GGMLQuantizationType as Q
from gguf.quants import dequantize, quantize

import localai
from localai.errors import InvalidRequest, UnsupportedModel
from localai.gguf_file import GGUFFile
from localai.quantize import choose_type, parse_tensor_types, quantize_file, quantize_tensor, to_float32

from tiny import write_tiny

LEGACY = ["Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1"]


@pytest.mark.parametrize("typ", LEGACY)
def test_random_tensors_bit_exact_with_gguf_quants(typ):
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((16, 256)) * rng.uniform(0.01, 3, (16, 1))).astype(np.float32)
    x[3, :32] = 0.0  # an all-zero block
    ours = quantize_tensor(x, typ)
    assert ours.dtype == np.uint8
    assert np.array_equal(ours, quantize(x, Q[typ]))
    err = np.abs(dequantize(ours, Q[typ]) - x).max(axis=1) / np.abs(x).max(axis=1)
    assert err.max() < {"Q8_0": 0.01}.get(typ, 0.2)


def test_real_q8_0_tensor_requantizes_to_the_same_bytes(smollm2_path):
    # llama.cpp wrote this Q8_0 tensor; dequantized and quantized again it must come back byte for byte
    g = GGUFFile(smollm2_path)
    q8 = [t for t in g.tensors.values() if t.type_name == "Q8_0"]
    assert q8, "SmolLM2 has Q8_0 tensors"
    t = q8[0]
    rows = np.asarray(t.data)[:512]
    x = dequantize(rows, Q.Q8_0)
    assert np.array_equal(quantize_tensor(x, "Q8_0"), rows)
    # and the 4/5-bit types agree with gguf.quants on real weights
    for typ in LEGACY[1:]:
        assert np.array_equal(quantize_tensor(x, typ), quantize(x, Q[typ]))


def test_tensor_choices_follow_llama_quantize():
    kw = dict(pure=False, leave_output=False, overrides=[], has_output=True)
    assert choose_type("blk.0.attn_norm.weight", 1, 64, "Q4_0", **kw) is None
    assert choose_type("blk.0.attn_q_norm.weight", 2, 64, "Q4_0", **kw) is None
    assert choose_type("blk.0.ffn_down.weight", 2, 64, "Q4_0", **kw) == "Q4_0"
    assert choose_type("output.weight", 2, 64, "Q4_0", **kw) == "Q8_0"  # Q6_K in llama-quantize
    assert choose_type("output.weight", 2, 64, "Q4_0", **{**kw, "pure": True}) == "Q4_0"
    assert choose_type("output.weight", 2, 64, "Q4_0", **{**kw, "leave_output": True}) is None
    assert choose_type("blk.0.ffn_down.weight", 2, 48, "Q4_0", **kw) == "F16"  # rows not in 32-blocks
    ov = parse_tensor_types(["attn_v=Q8_0"])
    assert choose_type("blk.3.attn_v.weight", 2, 64, "Q4_0", **{**kw, "overrides": ov}) == "Q8_0"
    with pytest.raises(InvalidRequest):
        parse_tensor_types(["attn_v"])


def test_quantized_file_loads_and_matches_source(tmp_path):
    src = write_tiny(tmp_path / "f32.gguf", qtype=Q.F32, chat_template="{{ messages }}")
    for typ, tol in (("Q8_0", 0.05), ("Q5_1", 0.5)):
        out = tmp_path / f"{typ}.gguf"
        res = quantize_file(src, out, typ, threads=2)
        # 2 layers x 7 matrices + token_embd; the tied token_embd is the output: Q8_0 (llama-quantize: Q6_K)
        assert res["types"] == ({"Q8_0": 15, "F32": 5} if typ == "Q8_0" else {typ: 14, "Q8_0": 1, "F32": 5})
        g = GGUFFile(out)
        assert g.tensors["blk.0.attn_norm.weight"].type_name == "F32"
        assert g.get("general.file_type") == {"Q8_0": 7, "Q5_1": 9}[typ]
        assert g.get("tokenizer.chat_template") == "{{ messages }}"
        assert g.get("tokenizer.ggml.merges") == GGUFFile(src).get("tokenizer.ggml.merges")
        w = g.tensors["blk.1.ffn_up.weight"]
        assert np.array_equal(np.asarray(w.data), quantize(to_float32(GGUFFile(src).tensors["blk.1.ffn_up.weight"]), Q[typ]))
        ids = [5, 40, 77, 120, 9, 33]
        a, b = localai.load(str(src)).logits(ids), localai.load(str(out)).logits(ids)
        assert np.abs(a - b).max() < tol * np.abs(a).max()


def test_refusals(tmp_path):
    src = write_tiny(tmp_path / "q8.gguf", qtype=Q.Q8_0)
    with pytest.raises(InvalidRequest, match="--allow-requantize"):
        quantize_file(src, tmp_path / "o.gguf", "Q4_0")
    with pytest.raises(UnsupportedModel, match="not implemented"):
        quantize_file(src, tmp_path / "o.gguf", "Q4_K_M")
    with pytest.raises(InvalidRequest, match="unknown --type"):
        quantize_file(src, tmp_path / "o.gguf", "Q3_X")
    res = quantize_file(src, tmp_path / "o.gguf", "Q4_0", allow_requantize=True, pure=True)
    assert res["types"]["Q4_0"] == 15


def test_unwritable_output_is_one_line(tmp_path):
    src = write_tiny(tmp_path / "f32.gguf", qtype=Q.F32)
    with pytest.raises(InvalidRequest, match="does not exist"):
        quantize_file(src, tmp_path / "missing" / "o.gguf", "Q8_0")
