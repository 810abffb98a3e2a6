"""Batch invariance on the real models (numba kernels): the logits and the K/V of a position
are the same bits whether the prompt was evaluated in one batch, in chunks split at random
points, or one token at a time, so a prompt-cache hit, a chunked prefill or a speculative
verify step never changes the text."""
from __future__ import annotations

import random

import numpy as np
import pytest

import localai
from localai.kernels import qmatmul

pytestmark = pytest.mark.skipif(qmatmul._nb is None, reason="batch invariance is a property of the numba kernels")

TEXT = ("The history of computing is a story of abstraction layered upon abstraction. Early machines "
        "were programmed by rewiring plugboards; later, stored programs let the same hardware run "
        "arbitrary instructions, and compilers replaced assemblers.")


@pytest.fixture(scope="module", params=["smollm2", "gemma3-270m"])
def llm(request):
    from localai import store

    return localai.load(str(store.resolve(request.param)), backend="numpy", n_ctx=256)


def evaluate(llm, ids, cuts):
    """Logits of every position (len(ids), n_vocab) and the session, ids fed in the chunks
    that the sorted cut points make."""
    s = llm.new_session()
    bounds = [0, *cuts, len(ids)]
    logits = [llm.model(np.asarray(ids[a:b]), s.cache) for a, b in zip(bounds, bounds[1:]) if b > a]
    return np.concatenate(logits), s


def test_logits_and_kv_do_not_depend_on_the_split(llm):
    ids = llm.tokenize(TEXT)[:48]
    L = len(ids)
    whole, s0 = evaluate(llm, ids, [])
    rng = random.Random(13)
    splits = [sorted(rng.sample(range(1, L), k)) for k in (1, 3, 7)] + [list(range(1, L))]  # last: one at a time
    for cuts in splits:
        logits, s = evaluate(llm, ids, cuts)
        assert np.array_equal(logits, whole), f"logits differ for cuts {cuts}"
        for c0, c in zip(s0.cache, s.cache):
            assert np.array_equal(c.keys[:, :L], c0.keys[:, :L]) and np.array_equal(c.values[:, :L], c0.values[:, :L])


def test_greedy_text_is_the_same_cold_and_on_cache_hits(llm):
    prompt = llm.tokenize(TEXT)[:40]
    other = prompt[:25] + llm.tokenize(" Meanwhile, in a different story,", add_bos=False)
    greedy = dict(temperature=0.0, max_tokens=12)
    cold = llm.generate(prompt, **greedy)
    s = llm.new_session()
    first = llm.generate(prompt, session=s, **greedy)
    full_hit = llm.generate(prompt, session=s, **greedy)  # the whole prompt cached (its logits too)
    s2 = llm.new_session()
    llm.generate(other, session=s2, **greedy)
    partial_hit = llm.generate(prompt, session=s2, **greedy)  # the first 25 tokens cached
    assert full_hit.timings.cache_n == len(prompt) and partial_hit.timings.cache_n == 25
    assert cold.text == first.text == full_hit.text == partial_hit.text
    assert cold.tokens == full_hit.tokens == partial_hit.tokens


def test_a_batched_step_equals_each_sequence_alone(llm):
    """One forward pass for three sequences (two decode rows at different context lengths, a
    verify pass of 4 rows, a prompt chunk: localai/batch.py, attention in one kernel call)
    gives each the logits and K/V it gets alone, bit for bit."""
    from localai import batch
    from localai.engine import Eval

    ids = llm.tokenize(TEXT)
    prompts = [ids[:30], ids[5:12], ids[:20], ids[10:19]]
    steps = [[42], [7], ids[20:24], ids[19:30]]
    saves = ["decode", "decode", "verify", "prefill"]

    def sessions():
        out = []
        for p in prompts:
            s = llm.new_session()
            llm.model(np.asarray(p), s.cache)
            s.tokens.extend(p)
            out.append(s)
        return out

    alone = sessions()
    want = [llm.evaluate(Eval(s, n, save)) for s, n, save in zip(alone, steps, saves)]
    together = sessions()
    got = batch.evaluate_batch(llm, [Eval(s, n, save) for s, n, save in zip(together, steps, saves)])
    for w, g, a, t in zip(want, got, alone, together):
        assert np.array_equal(w, g)
        for ca, ct in zip(a.cache, t.cache):
            assert ca.offset == ct.offset
            assert np.array_equal(ca.keys[:, :ca.offset], ct.keys[:, :ct.offset])
            assert np.array_equal(ca.values[:, :ca.offset], ct.values[:, :ct.offset])
