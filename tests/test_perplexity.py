"""`localai perplexity`: llama-perplexity's method, checked against llama.cpp's own logits."""
from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import localai
from localai.errors import InvalidRequest
from localai.perplexity import perplexity

DATA = Path(__file__).parent / "data"
TEXT = (DATA / "ppl_text.txt").read_text(encoding="utf-8")
REF = json.loads((DATA / "ppl_ref_llamacpp.json").read_text())


class _Stub:
    """A model whose logits favour token (position * 7) % V: checks chunking, BOS overwrite, scoring."""

    def __init__(self, add_bos):
        self.n_vocab, self.n_ctx, self.name = 50, 64, "stub"
        self.tokenizer = SimpleNamespace(add_bos=add_bos, bos_id=0)
        self.seen = []
        self.model = self._forward

    def tokenize(self, text):
        return ([0] if self.tokenizer.add_bos else []) + [(ord(c) % 49) + 1 for c in text]

    def new_session(self):
        return SimpleNamespace(cache=[], tokens=[])

    def prefill(self, session, ids):
        self.seen.append(list(ids))
        session.cache.extend(ids)

    def _forward(self, ids, cache, last_only=False):
        cache.extend(ids.tolist())
        out = np.zeros((len(ids), self.n_vocab), np.float32)
        out[:, 1] = 2.0  # token 1 more likely than the rest
        return out


@pytest.mark.parametrize("add_bos", [False, True])
def test_method_matches_llama_perplexity(add_bos):
    m = _Stub(add_bos)
    text = "ab" * 100  # tokens 1 ('a' % 49 + 1 = 48) ... only the counts matter here
    res = perplexity(m, text, 16)
    n_tok = len(m.tokenize(text))
    assert res.n_chunks == n_tok // 16 and res.n_ctx == 16
    assert res.n_scored == res.n_chunks * (16 - 1 - 8)  # second half, last token predicts nothing
    assert all(s[0] == 0 for s in m.seen) == add_bos  # BOS overwrites each chunk's first token
    p1 = math.exp(2) / (math.exp(2) + 49)  # probability of token 1; every other token: 1 / (e^2 + 49)
    targets = [t for c in range(res.n_chunks) for t in m.tokenize(text)[c * 16 + 9:(c + 1) * 16]]
    nll = [-math.log(p1) if t == 1 else -math.log(1 / (math.exp(2) + 49)) for t in targets]
    assert res.ppl == pytest.approx(math.exp(np.mean(nll)), rel=1e-12)
    with pytest.raises(InvalidRequest, match="at least 64"):
        perplexity(m, "short", 32)


@pytest.mark.parametrize("model", ["smollm2", "gemma3-270m"])
def test_close_to_llama_cpp(model, request):
    request.getfixturevalue("smollm2_path" if model == "smollm2" else "gemma3_path")
    ref = REF[model]
    llm = localai.load(model, n_ctx=ref["n_ctx"])
    res = perplexity(llm, TEXT, ref["n_ctx"], n_chunks=4)
    assert res.n_tokens == ref["n_tokens"]
    for ours, theirs in zip(res.chunk_ppl, ref["chunk_ppl"][:4]):
        assert abs(ours / theirs - 1) < 0.03
    assert abs(res.ppl / ref["chunk_ppl"][3] - 1) < 0.01


def test_kl_divergence_on_tiny_models(tmp_path):
    from gguf import GGMLQuantizationType as Q

    from localai.quantize import quantize_file
    from tiny import write_tiny

    src = write_tiny(tmp_path / "f32.gguf", qtype=Q.F32)
    quantize_file(src, tmp_path / "q4.gguf", "Q4_0", pure=True)
    f, q = localai.load(str(src), n_ctx=64), localai.load(str(tmp_path / "q4.gguf"), n_ctx=64)
    text = TEXT[:600]
    same = perplexity(f, text, 32, base=f)
    assert same.kld["kld_mean"] == pytest.approx(0, abs=1e-12) and same.kld["same_top"] == 1.0
    assert same.kld["ppl_q"] == pytest.approx(same.ppl, rel=1e-9) == same.kld["ppl_base"]
    res = perplexity(q, text, 32, base=f)
    k = res.kld
    assert k["count"] == res.n_scored and k["ppl_base"] == pytest.approx(same.ppl, rel=1e-9)
    assert 0 < k["kld_mean"] < 1 and k["kld_max"] >= k["kld_p99"] >= k["kld_median"] >= 0
    assert 0 < k["same_top"] < 1.0 and abs(k["dp_mean"]) < k["dp_rms"] <= k["dp_max"] - k["dp_min"]
