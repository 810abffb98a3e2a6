"""Architectures, one file each, named after GGUF `general.architecture`, each written once
over the backend operations of `localai.ops` and run by every backend.

The registry is one table of import paths. An architecture module defines
`Model(g, ops)`: `model(tokens, cache, last_only) -> logits` (float32 numpy) and
`model.make_cache(max_len)`, `model.args` (`n_vocab`, `n_ctx_train`, ...). A backend
(this package for numpy, `localai.mlx` for MLX) binds its ops with `model_class(arch)`.
"""
from __future__ import annotations

import functools
import importlib

from ..errors import UnsupportedModel

ARCHITECTURES = {
    "llama": "localai.models.llama",
    "mistral": "localai.models.llama",
    "granite": "localai.models.granite",
    "smollm3": "localai.models.smollm3",
    "qwen2": "localai.models.qwen2",
    "qwen3": "localai.models.qwen3",
    "qwen3moe": "localai.models.qwen3moe",
    "phi3": "localai.models.phi3",
    "gemma2": "localai.models.gemma2",
    "gemma3": "localai.models.gemma3",
    "olmo2": "localai.models.olmo2",
    "starcoder2": "localai.models.starcoder2",
}


def architecture(arch: str):
    """The module that defines `arch`."""
    try:
        path = ARCHITECTURES[arch]
    except KeyError:
        raise UnsupportedModel(
            f"architecture {arch!r} is not supported (supported: {', '.join(sorted(ARCHITECTURES))})"
        ) from None
    return importlib.import_module(path)


def bind(arch: str, ops_module: str):
    """`Model` of `arch` bound to a backend's ops module: a callable g -> model."""
    return functools.partial(architecture(arch).Model, ops=importlib.import_module(ops_module))


def model_class(arch: str):
    """The numpy backend's `Model` for `arch` (a callable taking a GGUFFile)."""
    return bind(arch, "localai.ops.numpy")
