"""Speculative decoding (localai/speculative.py): drafts from the request's own text or a
draft model, verified in one pass; the output must be exactly the non-speculative greedy
output, and seeded sampling must stay reproducible."""
from __future__ import annotations

import numpy as np
import pytest

from localai import load
from localai.daemon import handlers
from localai.protocol import GenerateParams, RewriteParams
from localai.sampling import SamplingParams, make_sampler

N_CTX = 1024
FUNC = '''def total_price(items, tax_rate):
    subtotal = 0
    for item in items:
        subtotal += item.price * item.quantity
    tax = subtotal * tax_rate
    return subtotal + tax
'''


@pytest.fixture(scope="module")
def smol():
    return load("smollm2", n_ctx=N_CTX)


@pytest.fixture(scope="module")
def gemma():
    return load("gemma3-270m", n_ctx=N_CTX)


def _run(llm, method, params, **over):
    prep = handlers.prepare(llm, method, params, {})
    kw = {**prep.kwargs, **over}
    return llm.generate(prep.prompt, **kw)


def test_rewrite_with_prompt_lookup_equals_plain_greedy(smol):
    p = RewriteParams(text=FUNC, instruction="Rename the variable subtotal to net.", max_tokens=40, temperature=0)
    assert handlers.draft_kwargs("rewrite", p) == {"draft": "lookup", "prediction": None}  # "auto"
    spec = _run(smol, "rewrite", p)
    plain = _run(smol, "rewrite", p, draft="none")
    assert spec.tokens == plain.tokens and spec.text == plain.text
    assert plain.timings.draft_n == 0
    assert spec.timings.draft_accepted_n >= 10, spec.timings  # it did copy from the selection


def test_prediction_equals_plain_greedy(gemma):
    p = GenerateParams(prompt="Here is a Python function:\n\n" + FUNC[:60], max_tokens=32, temperature=0,
                       prediction=FUNC[60:])
    spec = _run(gemma, "generate", p)
    plain = _run(gemma, "generate", p, draft="none", prediction=None)
    assert spec.tokens == plain.tokens
    assert spec.timings.draft_n > 0, spec.timings


def test_draft_model_equals_plain_greedy(smol):
    drafter = load("smollm2", n_ctx=N_CTX)  # SmolLM2 drafting for itself
    prompt = "The three primary colours are"
    spec = smol.generate(prompt, max_tokens=24, temperature=0, draft="model", draft_model=drafter)
    plain = smol.generate(prompt, max_tokens=24, temperature=0)
    assert spec.tokens == plain.tokens
    # the kernels are batch-invariant: a model drafting for itself is right every time it drafts
    # a token before the end (drafts past EOS or max_tokens are not sampled)
    assert spec.timings.draft_n > 0
    assert spec.timings.draft_accepted_n >= spec.timings.draft_n - 16, spec.timings


def test_seeded_sampling_with_speculation_is_reproducible(smol):
    p = RewriteParams(text=FUNC, instruction="Rename the variable subtotal to net.", max_tokens=32,
                      temperature=0.7, seed=11)
    a, b = _run(smol, "rewrite", p), _run(smol, "rewrite", p)
    assert a.tokens == b.tokens
    assert a.timings.draft_accepted_n > 0


def test_draft_errors_are_one_line(smol):
    from localai.errors import InvalidRequest

    with pytest.raises(InvalidRequest, match="draft_model"):
        smol.generate("x", max_tokens=2, draft="model")
    with pytest.raises(InvalidRequest, match="draft must be"):
        smol.generate("x", max_tokens=2, draft="maybe")


def test_rejection_rule_keeps_the_distribution():
    """Sampler.verify with a fixed draft: tokens still follow softmax(logits / T) after
    top-k/top-p/min-p (here all off), whatever the draft."""
    logits = np.log(np.array([0.1, 0.2, 0.3, 0.15, 0.25], dtype=np.float32))
    want = np.array([0.1, 0.2, 0.3, 0.15, 0.25])
    n = 40000
    for draft in (0, 2, 4):
        s = make_sampler(SamplingParams(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, seed=draft))
        got = np.bincount([s.verify(logits, [], draft) for _ in range(n)], minlength=5) / n
        assert np.abs(got - want).max() < 0.012, (draft, got)
    greedy = make_sampler(SamplingParams(temperature=0))
    assert greedy.verify(logits, [], 0) == 2


def test_code_rewrite_copies_the_selection():
    """A code rewrite puts the instruction after the selection (handlers.rewrite_messages):
    SmolLM2 then copies the lines it keeps, so most of its tokens are accepted drafts, and the
    output is still exactly the plain greedy one."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from batching import FUNC as LONG_FUNC  # the 61-line function of the rewrite benchmark

    smol = load("smollm2", n_ctx=2048)  # the function is 1,371 prompt tokens
    p = RewriteParams(text=LONG_FUNC, instruction="Rename the parameter discount_rate to rebate. Change nothing else.",
                      language="python", max_tokens=96, temperature=0)
    spec = _run(smol, "rewrite", p)
    assert spec.tokens == _run(smol, "rewrite", p, draft="none").tokens
    assert "report[0] = (count_0, amount_0" in spec.text and "return {" not in spec.text, spec.text
    assert spec.timings.draft_accepted_n >= 0.7 * spec.timings.predicted_n, spec.timings


def test_failed_drafts_pause_drafting():
    """k falls to 0 while verify passes accept nothing (pauses of 1, 2, 4, ... tokens), and
    comes back after a pass that accepted a draft."""
    from localai import speculative

    a = speculative.Adaptive()
    assert a.next_k() == speculative.K_START
    plain = []
    for _ in range(4):  # four passes in a row that accepted nothing
        a.update(a.k, 0)
        n = 0
        while a.next_k() == 0:
            n += 1
        plain.append(n)
    assert plain == [1, 2, 4, 8]
    a.update(1, 1)  # a pass that accepted its draft: no pause, k doubles
    assert a.next_k() == 2 and a.pause == 0
