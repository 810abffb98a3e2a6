"""Architectures, one file each, named after GGUF `general.architecture`.

The registry is a table of import paths; each module defines `Model(gguf_file)` with
`model(tokens, cache) -> logits` and `model.make_cache(max_len)`.
"""
from __future__ import annotations

import importlib

import numpy as np

from ..errors import ModelFileError, UnsupportedModel

ARCHITECTURES = {
    "llama": "localai.models.llama",
    "mistral": "localai.models.llama",
    "gemma3": "localai.models.gemma3",
}


def model_class(arch: str, table: dict = ARCHITECTURES):
    """The `Model` class for `arch` from a registry table (this backend's by default)."""
    try:
        return importlib.import_module(table[arch]).Model
    except KeyError:
        raise UnsupportedModel(
            f"architecture {arch!r} is not supported (supported: {', '.join(sorted(table))})"
        ) from None


def matrix(g, name: str):
    """A 2-D weight as a `QMatrix` over the memory map (stays quantized)."""
    from ..kernels import QMatrix

    t = _tensor(g, name)
    if len(t.shape) != 2:
        raise ModelFileError(f"{g.path}: tensor {name!r} should be 2-D, has shape {t.shape}")
    return QMatrix(t.data, t.ggml_type, t.shape)


def vector(g, name: str) -> np.ndarray:
    """A 1-D float weight (norms); F32 is a zero-copy view."""
    t = _tensor(g, name)
    from ..kernels import dequantize

    if t.data.dtype in (np.float32, np.float16):
        return t.data.reshape(-1).astype(np.float32, copy=False)
    return dequantize(t.data.reshape(1, -1), t.ggml_type, int(np.prod(t.shape))).reshape(-1)


def has(g, name: str) -> bool:
    return name in g.tensors


def _tensor(g, name: str):
    try:
        return g.tensors[name]
    except KeyError:
        raise ModelFileError(f"{g.path}: tensor {name!r} is missing; the file is not a complete "
                             f"{g.architecture} model") from None
