"""The MLX backend: the architectures of `localai.models`, run over MLX's operations
(`localai.ops.mlx`).

Weights stay quantized: every GGUF quant type maps exactly onto MLX's affine group
quantization (quant.py) and runs through `mx.quantized_matmul`; norms, RoPE and attention are
MLX's fused `mx.fast` kernels. The contract is the numpy backend's: `model(tokens, cache,
last_only) -> float32 numpy logits`, `model.make_cache(max_len)`, `model.args`.

This module imports MLX only when a model is built, so `problem()` can say why MLX cannot
run here without failing on the import.
"""
from __future__ import annotations


def model_class(arch: str):
    from ..models import bind

    return bind(arch, "localai.ops.mlx")


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
