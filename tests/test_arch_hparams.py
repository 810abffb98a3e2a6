"""Hyperparameters checked against the tensors as a model loads (localai/models/hparams.py):
a file whose metadata contradicts its tensors fails with one ModelFileError line naming the
key and both values, on every architecture, before any forward pass."""
from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
import pytest

from localai.errors import ModelFileError, UnsupportedModel
from localai.gguf_file import GGUFFile
from localai.models import ARCHITECTURES, model_class

DATA = Path(__file__).parent / "data" / "arch"


def load(name: str, **changes):
    g = GGUFFile(DATA / f"{name}.gguf")
    for key, value in changes.items():
        if value is None:
            del g.metadata[key]
        else:
            g.metadata[key] = value
    return model_class(g.architecture)(g)


@pytest.mark.parametrize("name, key, value, expect", [
    ("qwen3.q4_k_m", "qwen3.attention.head_count", 8, ["qwen3.attention.head_count", "8 x 128 = 1024", "512 rows"]),
    ("qwen3.q4_k_m", "qwen3.attention.key_length", 64, ["key_length", "4 x 64 = 256", "512 rows"]),
    ("qwen3.q4_k_m", "qwen3.attention.head_count_kv", 1, ["head_count_kv", "1 x 128 = 128", "256 rows"]),
    ("qwen3.q4_k_m", "qwen3.block_count", 3, ["qwen3.block_count = 3", "blk.0..blk.1"]),
    ("qwen3.q4_k_m", "qwen3.rope.dimension_count", 130, ["qwen3.rope.dimension_count = 130", "128"]),
    ("qwen3.q4_k_m", "qwen3.rope.dimension_count", 63, ["rope.dimension_count = 63", "even"]),
    ("qwen3.q4_k_m", "qwen3.embedding_length", 512, ["qwen3.embedding_length = 512", "256 columns"]),
    ("llama_gqa.q4_k_m", "llama.attention.head_count_kv", 3, ["head_count = 4", "head_count_kv = 3"]),
    ("llama_gqa.q4_k_m", "llama.rope.dimension_count", 32, ["llama.rope.dimension_count = 32", "head size 64"]),
    ("llama_gqa.q4_k_m", "llama.feed_forward_length", 700, ["llama.feed_forward_length = 700", "768 columns"]),
    ("phi3.q4_k_m", "phi3.attention.head_count_kv", 2, ["(4 + 2 x 2) x 64 = 512", "768 rows"]),
    ("gemma3.q4_k_m", "gemma3.attention.sliding_window_pattern", np.array([True, False]),
     ["sliding_window_pattern has 2 entries", "block_count = 3"]),
    ("qwen3moe.q4_k_m", "qwen3moe.expert_used_count", 5, ["expert_used_count = 5", "expert_count = 4"]),
    ("granite.q4_k_m", "granite.logit_scale", None, ["granite.logit_scale", "missing"]),
    ("qwen2.q4_k_m", "qwen2.attention.layer_norm_rms_epsilon", None, ["layer_norm_rms_epsilon", "missing"]),
])
def test_metadata_contradicting_tensors_is_one_clear_error(name, key, value, expect):
    with pytest.raises(ModelFileError) as e:
        load(name, **{key: value})
    msg = str(e.value)
    assert "\n" not in msg and str(DATA / name) in msg
    for part in expect:
        assert part in msg, (part, msg)


def test_every_file_loads_as_is():
    for path in sorted(DATA.glob("*.gguf")):
        g = GGUFFile(path)
        model = model_class(g.architecture)(g)
        assert model.args.n_vocab == g.tensors["token_embd.weight"].shape[0]


def test_registry_is_import_paths_and_refuses_unknown():
    for arch, path in ARCHITECTURES.items():
        assert callable(importlib.import_module(path).Model), arch
    with pytest.raises(UnsupportedModel, match="architecture 'mamba' is not supported"):
        model_class("mamba")


def test_gemma3_honours_sliding_window_pattern():
    """The file's pattern is [SWA, SWA, global]; without the key llama.cpp's period 6 makes
    all three layers sliding-window, which changes the logits (README: by up to 6.2)."""
    with_key = load("gemma3.q4_k_m")
    assert with_key.args.extra["swa"] == [True, True, False]
    assert [layer.window for layer in with_key.layers] == [24, 24, None]
    without = load("gemma3.q4_k_m", **{"gemma3.attention.sliding_window_pattern": None})
    assert without.args.extra["swa"] == [True, True, True]
    ids = np.arange(3, 63)
    a = with_key(ids, with_key.make_cache(64))
    b = without(ids, without.make_cache(64))
    assert np.abs(a - b).max() > 1.0


def test_mistral_runs_as_llama():
    """A file that says `mistral` (keys `mistral.*`) is llama's graph: the same logits."""
    g = GGUFFile(DATA / "llama_gqa.q4_k_m.gguf")
    llama = model_class("llama")(g)
    g.metadata = {("mistral." + k[len("llama."):] if k.startswith("llama.") else k): v
                  for k, v in g.metadata.items()}
    g.metadata["general.architecture"] = "mistral"
    mistral = model_class(g.architecture)(g)
    ids = np.arange(3, 40)
    np.testing.assert_array_equal(mistral(ids, mistral.make_cache(64)), llama(ids, llama.make_cache(64)))
