"""The numpy backend's operations (see localai/ops/__init__.py for the list and shapes).

Matmuls run on the quantized bytes of the memory map (`kernels.QMatrix`); norms, RoPE, the
gated activations and attention call the kernels in `localai.models.layers` / `kernels/`
(numba where it loads, numpy twins otherwise). Arrays are float32.
"""
from __future__ import annotations

import math
import os
import re

import numpy as np

from .. import kernels
from ..config import activation_bits_of
from ..errors import InvalidRequest, ModelFileError
from ..models import layers
from ..models.hparams import tensor  # noqa: F401  (a GGUF tensor by name, ModelFileError if missing)
from ..models.cache import KVCache, make_cache  # noqa: F401  (an op: make_cache(n_layers, n_kv_heads, head_dim, max_len))

NAME = "numpy"
F32 = np.float32


# -- weights ------------------------------------------------------------------------------

def has(g, name: str) -> bool:
    return name in g.tensors


# The weights whose products take int8 x (QMatrix x8) where the kernel has the int8 tile (x86
# AVX2 without AVX-512: 1.4-2.1x the int16 tile's speed): the dense matrices of the layers,
# attention and feed-forward (not a mixture's experts), and the output (`output`, or the tied
# `token_embd`: llama.cpp too rounds its x to 8 bits; KL divergence against int16 x with int8 x
# on the layers 0.0020 / 0.0014, with the output too 0.0027 / 0.0017, on SmolLM2 / Gemma 3 270M
# requantized with a Q5_0 output, benchmarks/x8_kld.py). Which models:
# `activation_bits` (config, $LOCALAI_ACTIVATION_BITS, localai.load): 8, 16, or "auto" (the
# default): 8 for models of X8_AUTO_PARAMS parameters or more, 16 below. The evidence
# (benchmarks/x8_kld.py, benchmarks/x8_fidelity.py, docs/benchmarks.md): int8 x moves the output
# distribution little (KL divergence against int16 x 0.0019 on SmolLM2, 0.0011 on Gemma 3 270M:
# a quarter to two thirds of what already separates int16 x from llama.cpp, whose 8-bit
# rounding this is; perplexity within 0.2 %), but on the 135M default model two greedy
# answers that llama.cpp gives and int16 x keeps change (the capital of France, a rewrite that
# copies its selection), and two tiny random-weight models of tests/test_arch.py leave
# llama.cpp's argmax.
# So the small models keep int16 x, and the sizes where prefill waits longest take int8 x.
_X8_NAMES = re.compile(r"blk\.\d+\.(attn_(q|k|v|qkv|output)|ffn_(gate|up|down))\.weight|output\.weight|token_embd\.weight")
X8_AUTO_PARAMS = 1_000_000_000
ACTIVATION_BITS = 16  # set_activation_bits


def set_activation_bits(bits: int | str | None, n_params: int = 0) -> int:
    """Round x to `bits` for the integer products of the matrices made from now on: 8, 16, or
    "auto" (8 when the model has at least X8_AUTO_PARAMS parameters, `n_params`, else 16);
    None: $LOCALAI_ACTIVATION_BITS, else "auto". Returns activation_bits_in_effect();
    InvalidRequest for any other value."""
    global ACTIVATION_BITS
    if bits is None:
        try:
            bits = activation_bits_of(os.environ.get("LOCALAI_ACTIVATION_BITS", "auto"))
        except ValueError as exc:
            raise InvalidRequest(f"LOCALAI_ACTIVATION_BITS {exc}") from None
    if bits == "auto":
        bits = 8 if n_params >= X8_AUTO_PARAMS else 16
    if isinstance(bits, bool) or bits not in (8, 16):
        raise InvalidRequest(f"activation bits must be 8, 16 or auto, not {bits!r}")
    ACTIVATION_BITS = int(bits)
    return activation_bits_in_effect()


def activation_bits_in_effect() -> int:
    """ACTIVATION_BITS, or 16 where the kernels have no int8 tile (AVX-512, ARM, the numpy twin,
    or numba kernels that failed to compile: kernels.qmatmul.x8_available), whatever was asked."""
    return ACTIVATION_BITS if kernels.qmatmul.x8_available() else 16


def _x8(name: str) -> bool:
    return ACTIVATION_BITS == 8 and _X8_NAMES.fullmatch(name) is not None


def matrix(g, name: str) -> kernels.QMatrix:
    """A 2-D weight (M, K) as a `QMatrix` over the memory map (stays quantized).
    LOCALAI_CHECK_BOUNDS=1 wraps it in a `CheckedMatrix` (a debug mode)."""
    t = tensor(g, name)
    if len(t.shape) != 2:
        raise ModelFileError(f"{g.path}: tensor {name!r} should be 2-D, has shape {t.shape}")
    _check_data(g, t)
    # the token embedding is packed for the matmul kernel only if it is also the output (tied);
    # activation bits 8: the layers' dense weights take x rounded to int8 where the kernel has an
    # int8 tile for their type (_X8_NAMES; kernels/_numba.py, _X8)
    m = kernels.QMatrix(t.data, t.ggml_type, t.shape, pack=name != "token_embd.weight",
                        x8=_x8(name))
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
    """A 1-D float weight (norms, biases) as float32; F32 is a zero-copy view."""
    t = tensor(g, name)
    if t.data.dtype in (np.float32, np.float16):
        return t.data.reshape(-1).astype(F32, copy=False)
    return kernels.dequantize(t.data.reshape(1, -1), t.ggml_type, int(np.prod(t.shape))).reshape(-1)


def experts(g, name: str) -> list[kernels.QMatrix]:
    """A 3-D expert weight, GGUF ne = [K, M, n_expert] -> one `QMatrix` (M, K) per expert."""
    t = tensor(g, name)
    if len(t.shape) != 3:
        raise ModelFileError(f"{g.path}: tensor {name!r} should be 3-D, has shape {t.shape}")
    _check_data(g, t)
    E, M, K = t.shape
    data = t.data.reshape(E, M, -1)   # (E, M, row_bytes) or (E, M, K) floats
    return [kernels.QMatrix(data[e], t.ggml_type, (M, K)) for e in range(E)]


# -- compute ------------------------------------------------------------------------------

def embed(W: kernels.QMatrix, tokens) -> np.ndarray:
    return W.rows(np.asarray(tokens))                 # (L, D)


def linear(x: np.ndarray, W: kernels.QMatrix, b: np.ndarray | None = None) -> np.ndarray:
    y = W.matmul(x)                                   # (L, M)
    if b is not None:
        y += b
    return y


def linears(x: np.ndarray, Ws, bs=None) -> tuple[np.ndarray, ...]:
    """linear(x, W_i, b_i) for each W_i, in one kernel call where the numba kernels cover them
    (kernels.matmul_many: x rounded once, one start of the thread team), bit for bit the same."""
    ys = kernels.matmul_many(Ws, x)                   # [(L, M_i)]
    for y, b in zip(ys, bs or ()):
        if b is not None:
            y += b
    return tuple(ys)


rms_norm = layers.rms_norm


def layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, eps: float) -> np.ndarray:
    x = x - x.mean(axis=-1, keepdims=True)
    y = x * (1.0 / np.sqrt(np.mean(np.square(x), axis=-1, keepdims=True) + F32(eps)))
    y *= w
    if b is not None:
        y += b
    return y


def rope(dims: int, base: float, neox: bool, scale: float = 1.0, freq_factors=None) -> layers.Rope:
    return layers.Rope(dims, base, "neox" if neox else "norm", scale,
                       None if freq_factors is None else np.asarray(freq_factors))


def attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, cache, scale: float,
              window: int | None = None, softcap: float | None = None) -> np.ndarray:
    if hasattr(cache, "parts"):  # several sequences in one pass (localai/batch.py): each its own cache
        if softcap:
            return np.concatenate([attention(q[a:b], k[a:b], v[a:b], c, scale, window, softcap)
                                   for c, a, b in cache.parts])
        el = kernels.elementwise
        if el.ONE_CALL and kernels.qmatmul.numba_kernels() is not None and all(type(c) is KVCache for c, _, _ in cache.parts) \
                and len({c.dtype for c, _, _ in cache.parts}) == 1:  # the storages' table, built here
            rows = []
            for c, a, b in cache.parts:
                offset = c.offset
                c.store(k[a:b].transpose(1, 0, 2), v[a:b].transpose(1, 0, 2))
                kb, _, ka, va = c.kernel_storage()
                rows.append((a, b - a, offset, kb.shape[1], ka, va))
            return el.attend_table(q, kb, rows, scale, window)  # one call; kb: any storage, all one dtype
        seqs = []
        for c, a, b in cache.parts:
            offset = c.offset
            keys, values = c.update_and_fetch(k[a:b].transpose(1, 0, 2), v[a:b].transpose(1, 0, 2))
            seqs.append((keys, values, offset))
        return el.attend_many(q, seqs, scale, window)   # one kernel call for all
    offset = cache.offset
    if type(cache) is KVCache and not softcap and kernels.qmatmul.numba_kernels() is not None:
        cache.store(k.transpose(1, 0, 2), v.transpose(1, 0, 2))
        kb, vb, _, _ = cache.kernel_storage()
        return kernels.elementwise.attend_storage(q.transpose(1, 0, 2), kb, vb, offset, scale, window)
    keys, values = cache.update_and_fetch(k.transpose(1, 0, 2), v.transpose(1, 0, 2))   # (Hkv, T, hd)
    if softcap:
        return _softcapped_attention(q.transpose(1, 0, 2), keys, values, offset, scale, window, softcap)
    return layers.attention(q.transpose(1, 0, 2), keys, values, offset, scale, window)


def _softcapped_attention(q, k, v, offset: int, scale: float, window: int | None, cap: float) -> np.ndarray:
    """Gemma 2's attention: scores cap * tanh(scale q.k / cap), then the causal softmax.
    q (H, L, hd), k, v (Hkv, T, hd) -> (L, H * hd). Plain numpy (no fused kernel has the cap)."""
    H, L, hd = q.shape
    Hkv, T, _ = k.shape
    G = H // Hkv
    s = q.reshape(Hkv, G * L, hd) @ k.transpose(0, 2, 1)          # (Hkv, G*L, T): row r is query r % L
    s = np.tanh(s * F32(scale / cap)) * F32(cap)
    kernels.causal_softmax(s.reshape(Hkv * G * L, T), L, offset, 1.0, window)   # s is a fresh array
    return (s @ v).reshape(H, L, hd).transpose(1, 0, 2).reshape(L, H * hd)


def glu(gate: np.ndarray, up: np.ndarray, act: str) -> np.ndarray:
    return layers.glu(np.ascontiguousarray(gate), np.ascontiguousarray(up), act)


def activation(x: np.ndarray, act: str) -> np.ndarray:
    return ACTIVATIONS[act](x)


def _gelu_tanh(x):
    return (0.5 * x * (1.0 + np.tanh(F32(math.sqrt(2.0 / math.pi)) * (x + F32(0.044715) * x * x * x)))).astype(F32)


def _silu(x):
    return (x / (1.0 + np.exp(-x))).astype(F32)


ACTIVATIONS = {"gelu_tanh": _gelu_tanh, "silu": _silu}


def softcap(x: np.ndarray, cap: float) -> np.ndarray:
    return np.tanh(x * F32(1.0 / cap)) * F32(cap)


def moe(x: np.ndarray, router: kernels.QMatrix, gate: list, up: list, down: list, k: int,
        act: str = "silu") -> np.ndarray:
    """x (L, D): each position goes to the k experts of highest softmax(router x), weighted by
    those probabilities renormalised to sum 1 (llama.cpp's build_moe_ffn, softmax gating, norm_w)."""
    L, D = x.shape
    z = router.matmul(x)                                          # (L, E)
    p = np.exp(z - z.max(axis=-1, keepdims=True))
    p /= p.sum(axis=-1, keepdims=True)
    top = np.argsort(-p, axis=-1, kind="stable")[:, :k]           # (L, k)
    w = np.take_along_axis(p, top, axis=-1)
    w /= w.sum(axis=-1, keepdims=True)
    out = np.zeros((L, D), F32)
    for e in np.unique(top):
        rows, slot = np.nonzero(top == e)
        h = np.ascontiguousarray(x[rows])
        y = down[e].matmul(layers.glu(*kernels.matmul_many((gate[e], up[e]), h), act))
        out[rows] += y * w[rows, slot][:, None]
    return out


def logit_rows(x: np.ndarray, last_only) -> np.ndarray:
    """The rows of the final hidden states x (L, D) that get logits: all (`last_only` False),
    the last (True), or the rows an int index array names (several sequences in one pass,
    each wanting its last position: localai/batch.py) -> (n, D)."""
    if last_only is False or last_only is None:
        return x
    return x[-1:] if last_only is True else x[np.asarray(last_only, dtype=np.intp)]


def result(logits: np.ndarray, cache) -> np.ndarray:
    return logits
