"""Engine behaviour on tiny random models: cache paths, sessions, sampling, stops, errors."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from gguf import GGMLQuantizationType as Q

import localai
from localai.errors import ContextOverflow, InvalidRequest, ModelFileError, UnsupportedModel
from tiny import write_tiny


@pytest.fixture(scope="module", params=["llama", "gemma3"])
def tiny(request, tmp_path_factory):
    path = write_tiny(tmp_path_factory.mktemp("m") / f"tiny-{request.param}.gguf", request.param)
    return localai.load(str(path))


def test_decode_steps_match_batch_forward(tiny):
    ids = list(range(3, 40))  # longer than gemma3's window of 8, so local layers slide
    full = tiny.logits(ids)
    s = tiny.new_session()
    rows = [tiny.prefill(s, ids[:5])] + [tiny.decode_one(s, t) for t in ids[5:]]
    # decode steps multiply x rounded to int16 per 32 values, the batch forward does not:
    # ~1e-3 apart; a wrong cache entry moves logits by O(1)
    np.testing.assert_allclose(np.stack(rows), full[4:], atol=5e-3)


def test_chunked_prefill_matches_single_pass(tiny, monkeypatch):
    ids = list(range(3, 60))
    s1 = tiny.new_session()
    one = tiny.prefill(s1, ids)
    monkeypatch.setattr("localai.engine.N_BATCH", 7)
    s2 = tiny.new_session()
    np.testing.assert_allclose(tiny.prefill(s2, ids), one, atol=5e-3)  # 7-token chunks: the int16 path


def test_sliding_window_changes_far_positions(tmp_path):
    narrow = localai.load(str(write_tiny(tmp_path / "a.gguf", "gemma3", window=4)))
    wide = localai.load(str(write_tiny(tmp_path / "b.gguf", "gemma3", window=1000)))
    ids = list(range(3, 30))
    a, b = narrow.logits(ids), wide.logits(ids)
    np.testing.assert_allclose(a[:4], b[:4], atol=1e-5)   # within the window: identical
    assert np.abs(a[-1] - b[-1]).max() > 1e-3               # beyond it: the window matters


@pytest.mark.parametrize("qtype", [Q.F32, Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.Q8_0])
def test_quant_types_run(tmp_path, qtype):
    llm = localai.load(str(write_tiny(tmp_path / "q.gguf", "llama", qtype)))
    out = llm.logits([5, 6, 7])
    assert out.shape == (3, llm.n_vocab) and np.isfinite(out).all()


def test_session_reuses_common_prefix(tiny):
    s = tiny.new_session()
    prompt = list(range(3, 30))
    first = tiny.generate(prompt, max_tokens=5, temperature=0, session=s)
    assert first.timings.cache_n == 0 and first.timings.prompt_n == len(prompt)
    again = tiny.generate(prompt[:20] + [40, 41], max_tokens=5, temperature=0, session=s)
    assert again.timings.cache_n == 20 and again.timings.prompt_n == 2
    fresh = tiny.generate(prompt[:20] + [40, 41], max_tokens=5, temperature=0)
    assert again.tokens == fresh.tokens


def test_same_seed_same_text(tiny):
    kw = dict(max_tokens=20, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0)
    a = tiny.generate("hello there", seed=7, **kw)
    b = tiny.generate("hello there", seed=7, **kw)
    c = tiny.generate("hello there", seed=8, **kw)
    assert a.tokens == b.tokens and a.text == b.text
    assert a.tokens != c.tokens


def test_max_tokens_and_finish_reason(tiny):
    out = tiny.generate("the", max_tokens=7, temperature=0)
    assert out.finish_reason in ("length", "eos")
    assert len(out.tokens) <= 7
    assert tiny.generate("the", max_tokens=0).tokens == []


def test_stop_string_is_not_emitted(tiny):
    base = tiny.generate("the", max_tokens=30, temperature=0)
    text = base.text
    assert len(text) >= 4, text  # the tiny model's greedy text is long enough to cut
    stop = text[2:4]
    out = tiny.generate("the", max_tokens=30, temperature=0, stop=[stop])
    assert out.finish_reason == "stop"
    assert stop not in out.text
    assert out.text == text[: text.index(stop)]
    streamed = "".join(c.text for c in tiny.stream("the", max_tokens=30, temperature=0, stop=[stop]))
    assert streamed == out.text


def test_prompt_longer_than_context(tmp_path):
    llm = localai.load(str(write_tiny(tmp_path / "c.gguf", n_ctx=64)))
    with pytest.raises(ContextOverflow, match="64"):
        llm.generate(list(range(3, 80)))
    out = llm.generate(list(range(3, 60)), max_tokens=100, temperature=0)
    assert out.finish_reason in ("length", "eos") and len(out.tokens) <= 64 - 57 + 1


def test_bad_params_and_ids(tiny):
    with pytest.raises(InvalidRequest):
        tiny.generate([10 ** 7])
    with pytest.raises(InvalidRequest):
        tiny.generate("x", max_tokens=-1)


def test_weights_are_not_copied(tiny):
    import mmap

    raw = tiny.model.layers[0].wq.raw
    assert not raw.flags.owndata and not raw.flags.writeable
    base = raw
    while isinstance(base, np.ndarray):
        base = base.base
    assert isinstance(base, (mmap.mmap, memoryview))  # a view into the memory map, not a copy


def test_truncated_file_is_a_clear_error(tmp_path):
    good = write_tiny(tmp_path / "t.gguf")
    data = good.read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data[: len(data) - 1000])
    with pytest.raises(ModelFileError, match="truncated"):
        localai.load(str(cut))
    head = tmp_path / "head.gguf"
    head.write_bytes(data[:200])
    with pytest.raises(ModelFileError, match="truncated"):
        localai.load(str(head))
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a model at all" * 10)
    with pytest.raises(ModelFileError, match="not a GGUF"):
        localai.load(str(junk))


def test_unsupported_architecture(tmp_path):
    p = write_tiny(tmp_path / "x.gguf")
    data = bytearray(p.read_bytes())
    i = data.index(b"llama")  # general.architecture's value
    data[i:i + 5] = b"xyzzy"
    bad = tmp_path / "xyzzy.gguf"
    bad.write_bytes(bytes(data))
    with pytest.raises(UnsupportedModel, match="xyzzy"):
        localai.load(str(bad))


def test_cli_errors_have_no_traceback(tmp_path):
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"\0" * 100)
    for args in (["generate", "--model", str(junk), "--prompt", "hi"],
                 ["generate", "--model", "no-such-model", "--prompt", "hi"]):
        r = subprocess.run([sys.executable, "-m", "localai", *args], capture_output=True, text=True)
        assert r.returncode != 0
        assert "Traceback" not in r.stderr
        assert r.stderr.startswith("localai: error:"), r.stderr


def test_cli_generate_and_tokenize_json(tmp_path):
    import json

    p = write_tiny(tmp_path / "j.gguf")
    r = subprocess.run([sys.executable, "-m", "localai", "generate", "--model", str(p), "--prompt", "the",
                        "--max-tokens", "5", "--temperature", "0", "--json"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["tokens"] == localai.load(str(p)).generate("the", max_tokens=5, temperature=0).tokens
    r = subprocess.run([sys.executable, "-m", "localai", "tokenize", "--model", str(p), "--json", "the hen"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"tokens": localai.load(str(p)).tokenize("the hen"), "text": "the hen"}
