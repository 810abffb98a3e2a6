"""K-quants (Q4_K, Q5_K, Q6_K): bit-exact with llama.cpp's reference quantizer, the C library
itself (libggml-base of the llama.cpp peer, `quantize_row_q*_K_ref` called through ctypes).
Both implementations are held to it: the numba kernels (the default) and their numpy twin."""
from __future__ import annotations

import ctypes

import numpy as np
import pytest
from gguf import GGMLQuantizationType as Q
from gguf.quants import dequantize

from localai.gguf_file import GGUFFile
from localai.kquants import BLOCK_BYTES, quantize_k
from localai.quantize import to_float32

KTYPES = ["Q4_K", "Q5_K", "Q6_K"]
IMPLS = ["numba", "numpy"]


@pytest.fixture(scope="module")
def ggml(llama_cpp_python):
    venv = llama_cpp_python.parent.parent
    libs = sorted(venv.glob("lib/python3*/site-packages/llama_cpp/lib/libggml-base.so"))
    assert libs, f"no libggml-base.so in the llama.cpp peer at {venv}"
    return ctypes.CDLL(str(libs[0]))


def c_reference(lib, x: np.ndarray, typ: str) -> np.ndarray:
    fn = getattr(lib, f"quantize_row_{typ[:2].lower()}_K_ref")
    x = np.ascontiguousarray(x, np.float32)
    out = np.zeros((x.shape[0], x.shape[1] // 256 * BLOCK_BYTES[typ]), np.uint8)
    fn(x.ctypes.data_as(ctypes.c_void_p), out.ctypes.data_as(ctypes.c_void_p), ctypes.c_int64(x.size))
    return out


def awkward_rows() -> np.ndarray:
    rng = np.random.default_rng(7)
    x = (rng.standard_normal((24, 512)) * rng.uniform(1e-3, 4, (24, 1))).astype(np.float32)
    x[1, :256] = 0.0  # an all-zero super-block
    x[2, :32] = 0.0  # an all-zero group
    x[3] = np.abs(x[3])  # no negative value: min clamps to 0
    x[4, :100] = 1e-20  # groups far below the block's scale: 6-bit scale rounds to 0
    x[5, 40:48] = 25.0  # an outlier
    x[6] = -np.abs(x[6])
    x[7, ::2] = 0.5  # ties
    return x


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("typ", KTYPES)
def test_bit_exact_with_llama_cpp_reference(ggml, typ, impl):
    x = awkward_rows()
    ours = quantize_k(x, typ, impl)
    assert ours.shape == (24, 2 * BLOCK_BYTES[typ])
    assert np.array_equal(ours, c_reference(ggml, x, typ))
    # and gguf-py's dequantizer reads them back close to x
    err = np.abs(dequantize(ours, Q[typ]) - x).max(axis=1) / np.abs(x).max(axis=1)
    assert err[8:].max() < {"Q4_K": 0.1, "Q5_K": 0.05, "Q6_K": 0.03}[typ]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("typ", KTYPES)
def test_real_weights_bit_exact(ggml, gemma3_path, typ, impl):
    # a few rows of a real model's tensors (Gemma 3 rows are 640 or 2048 wide: 2048 splits into 256s)
    g = GGUFFile(gemma3_path)
    x = to_float32(g.tensors["blk.2.ffn_down.weight"])[:48]
    assert np.array_equal(quantize_k(x, typ, impl), c_reference(ggml, x, typ))


@pytest.mark.parametrize("typ", KTYPES)
def test_numba_equals_numpy_and_c_on_many_blocks(ggml, typ):
    # 2,048 super-blocks over 10 decades of scale (down to half-subnormal d, up to scales whose
    # d still fits a half, as the C needs), with zero and constant groups sprinkled in
    rng = np.random.default_rng(11)
    x = (rng.standard_normal((64, 8192)) * 10.0 ** rng.uniform(-7, 3, (64, 1))).astype(np.float32)
    x[5, 256:512] = 0.0
    x[9, 64:96] = 0.25
    x[13, 1000:1016] = -3e-7
    a, b = quantize_k(x, typ, "numba"), quantize_k(x, typ, "numpy")
    assert np.array_equal(a, b)
    assert np.array_equal(a, c_reference(ggml, x, typ))


def test_half_rounding_is_round_to_nearest_even():
    # the d / dmin fields: float32 -> IEEE half as GGML_FP32_TO_FP16 (numpy's astype rounds the same)
    from numba import njit

    from localai.quantizers_numba import _half_bits, _half_value

    @njit
    def both(v, bits, back):
        for i in range(v.size):
            bits[i] = _half_bits(v[i])
            back[i] = _half_value(bits[i])

    rng = np.random.default_rng(3)
    v = (rng.standard_normal(200_000) * 10.0 ** rng.integers(-9, 5, 200_000)).astype(np.float32)
    edges = [6.1035156e-05, 6.097555e-05, 2.0 ** -24, 1.5 * 2.0 ** -24, 2.0 ** -25, 65504.0, 65519.0, 0.0, -0.0]
    v = np.concatenate([v[np.abs(v) < 65504], np.array(edges, np.float32)])
    bits, back = np.empty(v.size, np.int64), np.empty(v.size, np.float32)
    both(v, bits, back)
    ref = v.astype(np.float16)
    assert np.array_equal(bits, ref.view(np.uint16).astype(np.int64))
    assert np.array_equal(back, ref.astype(np.float32))


def test_rows_must_split_into_super_blocks():
    with pytest.raises(ValueError, match="multiple of 256"):
        quantize_k(np.zeros((2, 576), np.float32), "Q4_K")


def test_without_numba_the_numpy_twins_answer(monkeypatch):
    # numba is optional for the kernels; a missing numba must not break `localai quantize`
    import sys

    from localai.quantize import quantize_tensor

    x = awkward_rows()
    want = {t: quantize_tensor(x, t) for t in ["Q4_K", "Q6_K", "Q4_0", "Q8_0"]}
    monkeypatch.setitem(sys.modules, "localai.quantizers_numba", None)  # import raises ImportError
    with pytest.raises(ImportError):
        import localai.quantizers_numba  # noqa: F401
    for t, w in want.items():
        assert np.array_equal(quantize_tensor(x, t), w)
