"""Architectures, one file each, named after GGUF `general.architecture`.

The registry is a table of import paths; each module defines `Model(gguf_file)` with
`model(tokens, cache) -> logits` and `model.make_cache(max_len)`.
"""
from __future__ import annotations

import importlib
import os

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
    _check_data(g, t)
    m = QMatrix(t.data, t.ggml_type, t.shape)
    return CheckedMatrix(m, name) if os.environ.get("LOCALAI_CHECK_BOUNDS") == "1" else m


def _check_data(g, t) -> None:
    """The bounds a kernel trusts: the view holds exactly rows x bytes-per-row of this type
    (the loader checked the file; this holds the models to it)."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(t.ggml_type)]
    rows = 1
    for n in t.shape[:-1]:
        rows *= int(n)
    cols = int(t.shape[-1])
    if cols % block or t.data.nbytes != rows * (cols // block) * type_size:
        raise ModelFileError(f"{g.path}: tensor {t.name!r} holds {t.data.nbytes} bytes, not what a "
                             f"{t.type_name} tensor of shape {t.shape} needs; the file is corrupt")


class CheckedMatrix:
    """LOCALAI_CHECK_BOUNDS=1 (a debug mode): a QMatrix whose every call checks what the kernel
    is handed and what it returns: x (N, K) finite float32, ids in [0, M), out (N, M) finite."""

    def __init__(self, m, name: str):
        self.m, self.name, self.shape = m, name, m.shape

    def __getattr__(self, attr):
        return getattr(self.m, attr)

    def _fail(self, what: str):
        raise AssertionError(f"LOCALAI_CHECK_BOUNDS: {self.name} {self.shape}: {what}")

    def matmul(self, x: np.ndarray) -> np.ndarray:
        M, K = self.shape
        if x.shape[-1] != K or x.ndim not in (1, 2):
            self._fail(f"x has shape {x.shape}, expected (N, {K})")
        if not np.isfinite(x).all():
            self._fail("x is not finite")
        out = self.m.matmul(x)
        if out.shape != x.shape[:-1] + (M,) or not np.isfinite(out).all():
            self._fail(f"out has shape {out.shape} or is not finite")
        return out

    def rows(self, ids) -> np.ndarray:
        ids = np.asarray(ids).reshape(-1)
        if ids.size and (ids.min() < 0 or ids.max() >= self.shape[0]):
            self._fail(f"row ids {ids.min()}..{ids.max()} outside [0, {self.shape[0]})")
        out = self.m.rows(ids)
        if out.shape != (ids.size, self.shape[1]):
            self._fail(f"rows gave shape {out.shape}")
        return out


def vector(g, name: str) -> np.ndarray:
    """A 1-D float weight (norms); F32 is a zero-copy view."""
    t = _tensor(g, name)
    from ..kernels import dequantize

    if t.data.dtype in (np.float32, np.float16):
        return t.data.reshape(-1).astype(np.float32, copy=False)
    return dequantize(t.data.reshape(1, -1), t.ggml_type, int(np.prod(t.shape))).reshape(-1)


def check_hparams(g, checks: list) -> None:
    """Each (ok, key, what) must hold: the model's hyperparameters agree with each other
    before any buffer is sized by them (ModelFileError naming the key otherwise)."""
    for ok, key, what in checks:
        if not ok:
            raise ModelFileError(f"{g.path}: {g.architecture}.{key} {what}; the file is corrupt or not a "
                                 f"{g.architecture} model localai understands")


def check_shapes(g, shapes: dict) -> None:
    """Every tensor present among `shapes` (name -> numpy-order shape) has that shape, so the
    kernels are handed weights whose sizes agree with the hyperparameters they are run with."""
    for name, want in shapes.items():
        t = g.tensors.get(name)
        if t is not None and tuple(int(n) for n in t.shape) != tuple(want):
            raise ModelFileError(f"{g.path}: tensor {name!r} has shape {tuple(t.shape)}, but the "
                                 f"hyperparameters say {tuple(want)}; the file is corrupt")


def has(g, name: str) -> bool:
    return name in g.tensors


def _tensor(g, name: str):
    try:
        return g.tensors[name]
    except KeyError:
        raise ModelFileError(f"{g.path}: tensor {name!r} is missing; the file is not a complete "
                             f"{g.architecture} model") from None
