"""The MLX backend: the same architectures and GGUF files as `localai.models`, run by MLX.

Weights stay quantized: every GGUF quant type maps exactly onto MLX's affine group
quantization (quant.py) and runs through `mx.quantized_matmul`; norms, RoPE and attention are
MLX's fused `mx.fast` kernels. The contract is the numpy backend's: `model(tokens, cache,
last_only) -> float32 numpy logits`, `model.make_cache(max_len)`, `model.args`.

This module imports MLX only when a model is built, so `problem()` can say why MLX cannot
run here without failing on the import.
"""
from __future__ import annotations

from ..errors import ModelFileError

ARCHITECTURES = {
    "llama": "localai.mlx.llama",
    "mistral": "localai.mlx.llama",
    "gemma3": "localai.mlx.gemma3",
}


def model_class(arch: str):
    from ..models import model_class as lookup

    return lookup(arch, ARCHITECTURES)


def problem(metal: bool = False) -> str | None:
    """Why MLX cannot run here (not installed, broken, no Metal when `metal`), or None."""
    try:
        import mlx.core as mx

        mx.eval(mx.array([1.0, 2.0]) * 2)
    except Exception as exc:  # ImportError, a missing shared library, a device error, ...
        return f"{type(exc).__name__}: {exc}"
    if metal and not mx.metal.is_available():
        return "Metal is not available"
    return None


def matrix(g, name: str):
    """A 2-D weight, still quantized, as MLX affine codes (`quant.QMatrix`)."""
    from .quant import from_gguf

    t = _tensor(g, name)
    if len(t.shape) != 2:
        raise ModelFileError(f"{g.path}: tensor {name!r} should be 2-D, has shape {t.shape}")
    return from_gguf(t.data, t.ggml_type, t.shape)


def vector(g, name: str):
    """A 1-D float weight (norms) as a float32 MLX array."""
    import mlx.core as mx

    from ..models import vector as np_vector

    _tensor(g, name)
    return mx.array(np_vector(g, name))


from ..models import _tensor, has  # noqa: E402,F401  (the numpy backend's lookups; `has` is re-exported)
