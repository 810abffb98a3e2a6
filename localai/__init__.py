"""localai: quantized LLaMA-family models on your own computer.

    import localai
    llm = localai.load("smollm2")
    print(llm.generate("The capital of France is", max_tokens=8, temperature=0).text)

This module stays light: the engine (numpy, kernels) is imported only when `load` runs, so
the client side (`localai ask`, the shell and editor plugins) starts fast.
"""
from __future__ import annotations

__version__ = "0.1.0"

from . import _blas

_blas.configure()  # before anything imports numpy


from .errors import (  # noqa: F401  (re-exported)
    ContextOverflow,
    InvalidRequest,
    LocalAIError,
    ModelFileError,
    ModelNotFound,
    UnsupportedModel,
)


def load(model: str = "smollm2", *, backend: str = "auto", n_ctx: int | None = None, **kwargs):
    """Load a model by catalog name or path to a `.gguf` file and return an `LLM`."""
    from .engine import load as _load

    return _load(model, backend=backend, n_ctx=n_ctx, **kwargs)
