"""`localai quantize`: gguf.quants-exact legacy types, llama-quantize's tensor rules, files that load."""
from __future__ import annotations

import numpy as np
import pytest
from gguf import GGMLQuantizationType as Q
from gguf.quants import dequantize, quantize

import localai
from localai.errors import InvalidRequest
from localai.gguf_file import GGUFFile
from localai.quantize import parse_tensor_types, plan_types, quantize_file, quantize_tensor, to_float32

from tiny import write_tiny

LEGACY = ["Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1"]


@pytest.mark.parametrize("typ", LEGACY)
def test_random_tensors_bit_exact_with_gguf_quants(typ):
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((16, 256)) * rng.uniform(0.01, 3, (16, 1))).astype(np.float32)
    x[3, :32] = 0.0  # an all-zero block
    ours = quantize_tensor(x, typ)
    assert ours.dtype == np.uint8
    assert np.array_equal(ours, quantize(x, Q[typ]))
    err = np.abs(dequantize(ours, Q[typ]) - x).max(axis=1) / np.abs(x).max(axis=1)
    assert err.max() < {"Q8_0": 0.01}.get(typ, 0.2)


@pytest.mark.parametrize("typ", LEGACY)
def test_numba_quantizers_equal_gguf_quants_on_many_blocks(typ):
    # quantize_tensor runs the numba kernels; gguf.quants' numpy code is their twin. 8,192 blocks
    # over 10 decades of scale, plus blocks that are constant, one-signed, half-way ties, -0.0
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((64, 4096)) * 10.0 ** rng.uniform(-7, 3, (64, 1))).astype(np.float32)
    x[1, :32] = 0.75
    x[2, :64] = -np.abs(x[2, :64])
    x[3, :32] = np.arange(32, dtype=np.float32) / 2 - 8  # ties for the 4/5-bit grids
    x[4, :32] = np.float32(-0.0)
    x[5, :32] = np.linspace(-127, 127, 32, dtype=np.float32) / 2  # Q8_0 round-half ties
    assert np.array_equal(quantize_tensor(x, typ), quantize(x, Q[typ]))


def test_real_q8_0_tensor_requantizes_to_the_same_bytes(smollm2_path):
    # llama.cpp wrote this Q8_0 tensor; dequantized and quantized again it must come back byte for byte
    g = GGUFFile(smollm2_path)
    q8 = [t for t in g.tensors.values() if t.type_name == "Q8_0"]
    assert q8, "SmolLM2 has Q8_0 tensors"
    t = q8[0]
    rows = np.asarray(t.data)[:512]
    x = dequantize(rows, Q.Q8_0)
    assert np.array_equal(quantize_tensor(x, "Q8_0"), rows)
    # and the 4/5-bit types agree with gguf.quants on real weights
    for typ in LEGACY[1:]:
        assert np.array_equal(quantize_tensor(x, typ), quantize(x, Q[typ]))


def test_tensor_choices_follow_llama_quantize():
    def one(name, ncols, typ="Q4_0", **kw):
        tensors = [(name, 2, ncols), ("output.weight", 2, ncols)] if name != "output.weight" else [(name, 2, ncols)]
        return plan_types(tensors, typ, n_layer=8, **kw)[name]

    assert plan_types([("blk.0.attn_norm.weight", 1, 64)], "Q4_0", n_layer=1)["blk.0.attn_norm.weight"] is None
    assert one("blk.0.attn_q_norm.weight", 64) is None
    assert one("blk.0.ffn_down.weight", 64) == "Q4_0"
    assert one("output.weight", 256) == "Q6_K"
    assert one("output.weight", 64) == "Q8_0"  # Q6_K falls back: rows not in 256-blocks
    assert one("output.weight", 256, pure=True) == "Q4_0"
    assert one("output.weight", 256, leave_output=True) is None
    assert one("blk.0.ffn_down.weight", 48) == "F16"  # rows not in 32-blocks
    assert one("blk.0.ffn_down.weight", 640, "Q4_K_M") == "Q8_0"  # its Q6_K falls back on 640 columns
    assert one("blk.1.ffn_up.weight", 640, "Q4_K_M") == "Q5_0"  # tensor_type_fallback of Q4_K
    ov = parse_tensor_types(["attn_v=Q8_0"])
    assert one("blk.3.attn_v.weight", 64, overrides=ov) == "Q8_0"
    with pytest.raises(InvalidRequest):
        parse_tensor_types(["attn_v"])


def test_mix_layers_follow_use_more_bits():
    # 8 layers: use_more_bits picks layers 0, 3, 6, 7 (first eighth, last eighth, every third)
    names = [f"blk.{i}.{k}.weight" for i in range(8) for k in ("attn_v", "ffn_down", "attn_q")] + ["token_embd.weight"]
    tensors = [(n, 2, 256) for n in names]
    m = plan_types(tensors, "Q4_K_M", n_layer=8)
    assert [m[f"blk.{i}.attn_v.weight"] for i in range(8)] == ["Q6_K" if i in (0, 3, 6, 7) else "Q4_K" for i in range(8)]
    assert [m[f"blk.{i}.ffn_down.weight"] for i in range(8)] == ["Q6_K" if i in (0, 3, 6, 7) else "Q4_K" for i in range(8)]
    assert m["blk.5.attn_q.weight"] == "Q4_K" and m["token_embd.weight"] == "Q6_K"  # tied: the output's type
    s = plan_types(tensors + [("output.weight", 2, 256)], "Q4_K_S", n_layer=8)
    assert [s[f"blk.{i}.attn_v.weight"] for i in range(8)] == ["Q5_K"] * 4 + ["Q4_K"] * 4
    assert [s[f"blk.{i}.ffn_down.weight"] for i in range(8)] == ["Q5_K"] + ["Q4_K"] * 7
    assert s["token_embd.weight"] == "Q4_K" and s["output.weight"] == "Q6_K"
    assert plan_types(tensors, "Q5_K_M", n_layer=8)["blk.3.ffn_down.weight"] == "Q6_K"


def test_quantized_file_loads_and_matches_source(tmp_path):
    src = write_tiny(tmp_path / "f32.gguf", qtype=Q.F32, chat_template="{{ messages }}")
    for typ, tol in (("Q8_0", 0.05), ("Q5_1", 0.5)):
        out = tmp_path / f"{typ}.gguf"
        res = quantize_file(src, out, typ, threads=2)
        # 2 layers x 7 matrices + token_embd; the tied token_embd is the output: Q8_0 (llama-quantize: Q6_K)
        assert res["types"] == ({"Q8_0": 15, "F32": 5} if typ == "Q8_0" else {typ: 14, "Q8_0": 1, "F32": 5})
        g = GGUFFile(out)
        assert g.tensors["blk.0.attn_norm.weight"].type_name == "F32"
        assert g.get("general.file_type") == {"Q8_0": 7, "Q5_1": 9}[typ]
        assert g.get("tokenizer.chat_template") == "{{ messages }}"
        assert g.get("tokenizer.ggml.merges") == GGUFFile(src).get("tokenizer.ggml.merges")
        w = g.tensors["blk.1.ffn_up.weight"]
        assert np.array_equal(np.asarray(w.data), quantize(to_float32(GGUFFile(src).tensors["blk.1.ffn_up.weight"]), Q[typ]))
        ids = [5, 40, 77, 120, 9, 33]
        a, b = localai.load(str(src)).logits(ids), localai.load(str(out)).logits(ids)
        assert np.abs(a - b).max() < tol * np.abs(a).max()


def test_refusals(tmp_path):
    src = write_tiny(tmp_path / "q8.gguf", qtype=Q.Q8_0)
    with pytest.raises(InvalidRequest, match="--allow-requantize"):
        quantize_file(src, tmp_path / "o.gguf", "Q4_0")
    with pytest.raises(InvalidRequest, match="unknown --type"):
        quantize_file(src, tmp_path / "o.gguf", "Q3_X")
    res = quantize_file(src, tmp_path / "o.gguf", "Q4_0", allow_requantize=True, pure=True)
    assert res["types"]["Q4_0"] == 15


def test_unwritable_output_is_one_line(tmp_path):
    src = write_tiny(tmp_path / "f32.gguf", qtype=Q.F32)
    with pytest.raises(InvalidRequest, match="does not exist"):
        quantize_file(src, tmp_path / "missing" / "o.gguf", "Q8_0")


LLAMA_QUANTIZE = """
import ctypes, sys, llama_cpp
p = llama_cpp.llama_model_quantize_default_params()
p.ftype, p.nthread = int(sys.argv[3]), 2
sys.exit(llama_cpp.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(), ctypes.byref(p)))
"""


@pytest.mark.parametrize("typ", ["Q4_K_M", "Q4_K_S", "Q5_K_M", "Q6_K", "Q4_0"])
def test_same_tensors_and_bytes_as_llama_quantize(tmp_path, llama_cpp_python, typ):
    import subprocess

    from localai.quantize import FILE_TYPES

    # 8 layers so use_more_bits picks some; rows of 256 take K-quants, the 128-wide attn_v/attn_k fall back
    src = write_tiny(tmp_path / "f16.gguf", qtype=Q.F16, n_layers=8, d_model=256, n_heads=4, n_kv_heads=2, d_ff=512)
    ours, theirs = tmp_path / "ours.gguf", tmp_path / "llama.gguf"
    quantize_file(src, ours, typ, threads=2)
    subprocess.run([str(llama_cpp_python), "-c", LLAMA_QUANTIZE, str(src), str(theirs), str(FILE_TYPES[typ][1])],
                   check=True, capture_output=True)
    a, b = GGUFFile(ours), GGUFFile(theirs)
    assert list(a.tensors) == list(b.tensors)  # llama.cpp's order
    assert {n: t.type_name for n, t in a.tensors.items()} == {n: t.type_name for n, t in b.tensors.items()}
    for name, t in a.tensors.items():
        assert np.array_equal(np.asarray(t.data), np.asarray(b.tensors[name].data)), name
    assert a.get("general.file_type") == b.get("general.file_type")


def test_cli_progress_summary_and_one_line_errors(tmp_path):
    import os
    import subprocess
    import sys

    src = write_tiny(tmp_path / "f16.gguf", qtype=Q.F16, d_model=256, d_ff=512)
    env = dict(os.environ)

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "localai", "quantize", *args], env=env, capture_output=True,
                              text=True, timeout=300, stdin=subprocess.DEVNULL)

    r = cli(str(src), str(tmp_path / "o.gguf"), "--type", "q4_k", "--tensor-type", "ffn_up=Q8_0")
    assert r.returncode == 0, r.stderr
    assert "Q4_K: " in r.stdout and "Q8_0: 2" in r.stdout  # the two ffn_up
    assert "\r" not in r.stderr  # no progress bar into a log: it is for terminals
    assert GGUFFile(tmp_path / "o.gguf").get("general.file_type") == 15  # Q4_K is Q4_K_M
    r = cli(str(tmp_path / "o.gguf"), str(tmp_path / "p.gguf"), "--type", "Q4_0")
    assert r.returncode == 1 and "requantizing from type Q4_K is disabled" in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = cli(str(tmp_path), str(tmp_path / "p.gguf"), "--type", "Q4_0")  # a folder without config.json
    assert r.returncode == 1 and "not a Hugging Face model directory" in r.stderr and "Traceback" not in r.stderr


def test_cli_warns_of_a_tensor_type_pattern_that_matches_nothing(tmp_path, smollm2_path):
    """SmolLM2 (Q4_1, its token_embd Q8_0) to Q4_1 --pure with token_embd kept at Q8_0: every
    tensor is copied as it is (fast); the pattern naming no tensor gets a one-line warning."""
    import os
    import subprocess
    import sys

    out = tmp_path / "o.gguf"
    r = subprocess.run([sys.executable, "-m", "localai", "quantize", str(smollm2_path), str(out), "--type", "Q4_1",
                        "--pure", "--tensor-type", "token_embd=Q8_0", "--tensor-type", "ffn_upp=Q8_0",
                        "--tensor-type", "attn_norm=Q8_0"], env=dict(os.environ), capture_output=True, text=True,
                       timeout=300, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    warn = [ln for ln in r.stderr.splitlines() if "--tensor-type" in ln]
    assert len(warn) == 1 and "'ffn_upp'" in warn[0] and "'attn_norm'" in warn[0] and "token_embd" not in warn[0]
    assert "Traceback" not in r.stderr
    assert GGUFFile(out).tensors["token_embd.weight"].type_name == "Q8_0"  # the output is still written


def _quantize_cli(*args, preexec=None):
    """`localai quantize ARGS` in a child process. Its SIGINT is set back to the default, as a
    terminal's Ctrl-C finds it: a shell starts a background job with SIGINT ignored, a child
    inherits that, and Python then installs no KeyboardInterrupt handler (run as a background
    job, the suite's Ctrl-C test found the child ignoring the signal and writing OUT)."""
    import os
    import signal
    import subprocess
    import sys

    def child():
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        if preexec is not None:
            preexec()

    return subprocess.Popen([sys.executable, "-m", "localai", "quantize", *args], env=dict(os.environ),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
                            preexec_fn=child)


def test_out_is_whole_or_untouched(tmp_path):
    """OUT is written under a temporary name and renamed once whole: a hard link to IN is
    refused (IN intact), a full disk is one line, Ctrl-C says so, and neither leaves a partial
    file nor touches a file already at OUT."""
    import os
    import resource
    import signal
    import time

    src = write_tiny(tmp_path / "f16.gguf", qtype=Q.F16, n_layers=16, d_model=512, n_heads=8, n_kv_heads=4, d_ff=2048)
    size = src.stat().st_size
    os.link(src, tmp_path / "hard.gguf")
    with pytest.raises(InvalidRequest, match="OUT must differ from IN"):
        quantize_file(src, tmp_path / "hard.gguf", "Q8_0")
    assert src.stat().st_size == size

    keep = tmp_path / "keep.gguf"
    keep.write_bytes(b"an earlier result")

    def small_disk():  # writes past 1 MB fail with EFBIG, as on a full disk
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))

    p = _quantize_cli(str(src), str(keep), "--type", "Q8_0", preexec=small_disk)
    out, err = p.communicate(timeout=300)
    assert p.returncode == 1 and f"cannot write {keep}" in err and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, err

    p = _quantize_cli(str(src), str(keep), "--type", "Q4_K_M")
    deadline = time.monotonic() + 120
    while not any(f.name.endswith(".part") for f in tmp_path.iterdir()) and p.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.005)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 130 and f"{keep} was not written" in err and "Traceback" not in err, err
    for f in tmp_path.iterdir():
        assert not f.name.endswith(".part"), f
    assert keep.read_bytes() == b"an earlier result"
    assert src.stat().st_size == size
