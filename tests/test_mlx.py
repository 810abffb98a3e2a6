"""The MLX backend (localai/mlx) against gguf-py and against the numpy backend.

- every mapped GGUF type dequantizes through `mx.dequantize` to gguf-py's values exactly;
- tiny random models: MLX logits equal numpy's to float32 noise, batch and incremental agree;
- the real models: argmax equal to the numpy backend's wherever numpy's top-1 leads its top-2
  by >= 0.1 (teacher-forced over the reference greedy items), and the same greedy tokens.
LOCALAI_MLX_FULL=1 runs every reference item (a few minutes on a CPU); the default is a subset.
"""
from __future__ import annotations

import os

import numpy as np
import pytest

mx = pytest.importorskip("mlx.core")

from gguf import GGML_QUANT_SIZES, GGMLQuantizationType as T  # noqa: E402
from gguf import quants as gguf_quants  # noqa: E402

from conftest import reference  # noqa: E402
from tiny import write_tiny  # noqa: E402

from localai.mlx.quant import AFFINE, from_gguf, pack  # noqa: E402

MARGIN = 0.1
FULL = os.environ.get("LOCALAI_MLX_FULL") == "1"
# byte offsets of the float16 scales (d, dmin) in each block: random bytes there could be inf/NaN
F16_AT = {T.Q4_0: [0], T.Q4_1: [0, 2], T.Q5_0: [0], T.Q5_1: [0, 2], T.Q8_0: [0], T.Q4_K: [0, 2],
          T.Q5_K: [0, 2], T.Q2_K: [80, 82], T.Q3_K: [108], T.Q6_K: [208]}


def random_blocks(rng, qtype, rows: int, cols: int) -> np.ndarray:
    """(rows, row_bytes) of random blocks with finite scales spanning many exponents."""
    qk, nbytes = GGML_QUANT_SIZES[qtype]
    n = rows * cols // qk
    b = rng.integers(0, 256, (n, nbytes), dtype=np.uint8)
    for at in F16_AT[qtype]:
        d = rng.standard_normal(n) * np.exp(rng.uniform(-12, 4, n))
        b[:, at:at + 2] = d.astype(np.float16).view(np.uint8).reshape(n, 2)
    return b.reshape(rows, -1)


@pytest.mark.parametrize("qtype", list(AFFINE), ids=lambda t: t.name)
def test_dequantize_equals_gguf(qtype):
    rng = np.random.default_rng(int(qtype))
    raw = random_blocks(rng, qtype, 16, 1024)
    ref = gguf_quants.dequantize(raw, qtype)
    ours = np.array(from_gguf(raw, qtype, (16, 1024)).dequantize())
    assert ours.dtype == np.float32 and ours.shape == ref.shape
    assert np.array_equal(ours, ref)
    # bit for bit, but for the sign of zero: s * q + b gives +0 where gguf-py's d * 0 gives -0
    differ = ours.view(np.uint32) != ref.view(np.uint32)
    assert (ref[differ] == 0).all()


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 6, 8])
def test_pack_is_mlx_layout(bits):
    codes = np.random.default_rng(bits).integers(0, 1 << bits, (4, 256), dtype=np.uint8)
    ones, zeros = mx.ones((4, 8)), mx.zeros((4, 8))
    got = mx.dequantize(mx.array(pack(codes, bits)), ones, zeros, group_size=32, bits=bits)
    assert np.array_equal(np.array(got), codes.astype(np.float32))


@pytest.mark.parametrize("qtype", [T.Q4_K, T.Q6_K, T.Q8_0], ids=lambda t: t.name)
def test_quantized_matmul_matches_dequantized(qtype):
    rng = np.random.default_rng(1)
    raw = random_blocks(rng, qtype, 64, 512)
    w = from_gguf(raw, qtype, (64, 512))
    ref = gguf_quants.dequantize(raw, qtype)
    for L in (1, 5):
        x = rng.standard_normal((L, 512)).astype(np.float32)
        y = np.array(w(mx.array(x)))
        expect = x.astype(np.float64) @ ref.T.astype(np.float64)
        np.testing.assert_allclose(y, expect, rtol=1e-4, atol=1e-4 * np.abs(expect).max())
    ids = np.array([3, 0, 63])
    assert np.array_equal(np.array(w.rows(mx.array(ids))), ref[ids])


# -- tiny random models: MLX against numpy ------------------------------------------------

@pytest.fixture(scope="module", params=[("llama", T.Q4_0), ("gemma3", T.Q8_0), ("gemma3", T.Q5_1)],
                ids=lambda p: f"{p[0]}-{p[1].name}")
def tiny_pair(request, tmp_path_factory):
    import localai

    arch, qtype = request.param
    path = write_tiny(tmp_path_factory.mktemp("mlx") / f"{arch}.gguf", arch, qtype, d_model=128,
                      n_heads=4, n_kv_heads=2, d_ff=256, window=8)
    return localai.load(str(path), backend="numpy"), localai.load(str(path), backend="mlx")


def test_tiny_logits_match_numpy(tiny_pair, monkeypatch):
    a, b = tiny_pair
    assert b.backend == "mlx" and b.model.ops.NAME == "mlx"
    ids = list(np.random.default_rng(0).integers(0, a.n_vocab, 40))   # > gemma3's window of 8
    # MLX multiplies in float32 and keeps K/V in float32; the numba kernels round activations
    # to int16 (the integer GEMM) and the numpy cache stores float16 K/V, each ~1e-3 off on some
    # logits: the float twin (dequantize + BLAS) over a float32 cache is the reference
    from localai import kernels
    from localai.models import cache

    monkeypatch.setattr(cache, "DTYPE", np.float32)
    before = kernels.backend()
    kernels.set_backend("numpy")
    try:
        la = a.logits(ids)
    finally:
        kernels.set_backend(before)
    lb = b.logits(ids)
    assert lb.dtype == np.float32 and lb.shape == la.shape
    np.testing.assert_allclose(lb, la, atol=1e-3, rtol=0)


def test_tiny_incremental_and_trim(tiny_pair):
    _, b = tiny_pair
    ids = list(np.random.default_rng(1).integers(0, b.n_vocab, 30))
    full = b.logits(ids)
    s = b.new_session()
    rows = [b.prefill(s, ids[:12])] + [b.decode_one(s, t) for t in ids[12:]]
    np.testing.assert_allclose(np.stack(rows[:-1]), full[11:-1], atol=1e-4, rtol=0)
    assert s.cache[0].offset == 30 and s.nbytes > 0
    s.keep(20)                                           # roll back, then take another path
    np.testing.assert_allclose(b.prefill(s, ids[20:25]), full[24], atol=1e-4, rtol=0)


def test_tiny_cache_grows_in_steps(tiny_pair):
    from localai.mlx.cache import STEP

    _, b = tiny_pair
    cache = b.model.make_cache(2 * STEP)
    b.model(np.arange(5) % b.n_vocab, cache)
    assert cache[0].keys.shape[2] == STEP
    b.model(np.arange(STEP) % b.n_vocab, cache)
    assert cache[0].keys.shape[2] == 2 * STEP and cache[0].offset == STEP + 5
    with pytest.raises(ValueError, match="overflow"):
        b.model(np.arange(STEP - 4) % b.n_vocab, cache)   # 2 * STEP + 1 > max_len


def test_tiny_generate(tiny_pair):
    a, b = tiny_pair
    ga = a.generate([5, 6, 7], max_tokens=12, temperature=0)
    gb = b.generate([5, 6, 7], max_tokens=12, temperature=0)
    assert gb.tokens == ga.tokens


# -- backend choice -------------------------------------------------------------------

def test_backend_choice(monkeypatch, capsys):
    import sys

    import localai.mlx
    from localai.engine import resolve_backend

    if sys.platform != "darwin":
        assert resolve_backend("auto") == "numpy"
    assert resolve_backend("mlx") == "mlx"
    monkeypatch.setattr(localai.mlx, "problem", lambda metal=False: "ImportError: no module named 'mlx'")
    assert resolve_backend("mlx") == "numpy"
    err = capsys.readouterr().err
    assert "MLX backend cannot run here" in err and "no module named" in err and "pip install" in err


# -- the real models: MLX against numpy ------------------------------------------------

@pytest.fixture(scope="module")
def real(smollm2_path, gemma3_path):
    import localai

    paths = {"smollm2": smollm2_path, "gemma3": gemma3_path}
    return {m: {be: localai.load(str(p), backend=be) for be in ("numpy", "mlx")} for m, p in paths.items()}


@pytest.mark.parametrize("model,n_items", [("smollm2", 2), ("gemma3", 1)])
def test_real_teacher_forced_argmax_matches_numpy(real, model, n_items):
    items = reference(model, "greedy")["items"]
    n_checked = 0
    for item in items if FULL else items[:n_items]:
        ids = item["prompt_ids"] + item["generated_ids"]
        la, lb = real[model]["numpy"].logits(ids), real[model]["mlx"].logits(ids)
        top2 = np.sort(la, axis=-1)[:, -2:]
        sure = top2[:, 1] - top2[:, 0] >= MARGIN
        assert (la.argmax(-1) == lb.argmax(-1))[sure].all(), item["id"]
        n_checked += int(sure.sum())
        assert np.abs(la - lb).max() < 0.05, item["id"]
    assert n_checked > 30


@pytest.mark.parametrize("model", ["smollm2", "gemma3"])
def test_real_greedy_continuation_matches_numpy(real, model):
    item = reference(model, "greedy")["items"][1]
    n = 64 if FULL else 12
    ga = real[model]["numpy"].generate(item["prompt_ids"], max_tokens=n, temperature=0)
    gb = real[model]["mlx"].generate(item["prompt_ids"], max_tokens=n, temperature=0)
    assert gb.tokens == ga.tokens
