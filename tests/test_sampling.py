"""The sampler against a line-by-line port of llama.cpp's sampler chain (src/llama-sampling.cpp)."""
from __future__ import annotations


import numpy as np
import pytest

from localai.errors import InvalidRequest
from localai.sampling import SamplingParams, apply_penalties, candidates, make_sampler


# --- the slow, obvious twin: llama.cpp's loops, one token at a time --------------------------

def ref_penalties(logits, history, repeat, last_n, freq, presence):
    out = logits.astype(np.float32).copy()
    if last_n == 0 or (repeat == 1 and freq == 0 and presence == 0):
        return out
    window = list(history)[-last_n:] if last_n > 0 else list(history)
    counts = {}
    for t in window:
        counts[t] = counts.get(t, 0) + 1
    for t, c in counts.items():
        out[t] = out[t] * repeat if out[t] <= 0 else out[t] / repeat
        out[t] -= c * freq + (c > 0) * presence
    return out


def ref_chain(logits, p):
    """(ids, probs) after top_k -> top_p -> min_p -> temperature, as llama.cpp computes them."""
    cur = sorted(((float(l), i) for i, l in enumerate(logits)), key=lambda x: (-x[0], x[1]))
    if p.top_k > 0:
        cur = cur[:p.top_k]
    if p.top_p < 1:
        m = cur[0][0]
        e = [np.exp(l - m) for l, _ in cur]
        s = sum(e)
        cum, last = 0.0, len(cur)
        for i, x in enumerate(e):
            cum += x / s
            if cum >= p.top_p:
                last = i + 1
                break
        cur = cur[:last]
    if p.min_p > 0:
        floor = cur[0][0] + np.log(p.min_p)
        cur = [c for c in cur if c[0] >= floor]
    m = cur[0][0]
    e = np.array([np.exp((l - m) / p.temperature) for l, _ in cur])
    return np.array([i for _, i in cur]), e / e.sum()


def as_dict(ids, probs, n):
    ids = np.arange(n) if ids is None else ids
    return dict(zip(ids.tolist(), probs.tolist()))


CHAINS = [
    dict(),                                                     # llama.cpp defaults
    dict(top_k=0),
    dict(top_k=0, min_p=0),                                     # full sort path
    dict(top_k=0, top_p=1, min_p=0),                            # everything off
    dict(top_k=5, top_p=1, min_p=0, temperature=1.5),
    dict(top_k=100, top_p=0.5, min_p=0.2, temperature=0.3),
    dict(top_k=1000, top_p=0.99, min_p=0.01),                   # top_k > vocab
    dict(top_k=-3, top_p=0.0, min_p=0),                         # top_p 0 keeps one
    dict(top_k=0, top_p=0.7, min_p=0.5),
]


@pytest.mark.parametrize("kw", CHAINS)
def test_candidates_match_llama_cpp_chain(kw):
    p = SamplingParams(**kw)
    rng = np.random.default_rng(0)
    for scale in (0.5, 3.0, 10.0):
        logits = (rng.standard_normal(300) * scale).astype(np.float32)
        got = as_dict(*candidates(logits, p), len(logits))
        want = as_dict(*ref_chain(logits, p), len(logits))
        assert got.keys() == want.keys()
        np.testing.assert_allclose([got[k] for k in want], list(want.values()), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("scale", [0.1, 4.0])      # flat: top_p needs the whole vocab; peaked: a head
def test_top_p_over_a_large_vocabulary(scale):
    logits = (np.random.default_rng(5).standard_normal(6000) * scale).astype(np.float32)
    for top_p in (0.5, 0.95, 0.999):
        p = SamplingParams(top_k=0, min_p=0, top_p=top_p)
        got = as_dict(*candidates(logits, p), len(logits))
        want = as_dict(*ref_chain(logits, p), len(logits))
        assert got.keys() == want.keys()
        np.testing.assert_allclose([got[k] for k in want], list(want.values()), rtol=1e-9, atol=1e-12)


def test_penalties_match_llama_cpp():
    rng = np.random.default_rng(1)
    logits = (rng.standard_normal(50) * 4).astype(np.float32)
    history = rng.integers(0, 50, size=200).tolist()
    for repeat, last_n, freq, presence in [(1.3, 64, 0, 0), (0.8, 10, 0.5, 0.2), (1.1, -1, 0, 1.0),
                                           (1.0, 64, 0.3, 0), (1.5, 0, 1, 1), (1.0, 64, 0, 0)]:
        got = apply_penalties(logits, history, repeat, last_n, freq, presence)
        np.testing.assert_allclose(got, ref_penalties(logits, history, repeat, last_n, freq, presence),
                                   rtol=1e-6)


def test_penalties_never_write_the_callers_logits():
    logits = np.array([2.0, -2.0, 1.0], dtype=np.float32)
    before = logits.copy()
    out = apply_penalties(logits, [0, 1, 1, 7, -1], 2.0, 64, 0.5, 0.25)   # 7, -1: outside the vocab
    np.testing.assert_array_equal(logits, before)
    np.testing.assert_allclose(out, [2 / 2 - 0.75, -2 * 2 - 1.25, 1.0])
    assert apply_penalties(logits, [0], 1.0, 64, 0, 0) is logits          # off: no copy


def test_greedy_is_first_argmax_after_penalties():
    logits = np.array([1.0, 5.0, 5.0, 4.9], dtype=np.float32)
    greedy = make_sampler(temperature=0)
    assert greedy(logits, []) == 1                                        # first index on ties
    assert make_sampler(temperature=-1)(logits, []) == 1
    assert make_sampler(temperature=0, repeat_penalty=1.1)(logits, [1, 2]) == 3
    assert make_sampler(temperature=0, presence_penalty=0.05)(logits, [1]) == 2


def test_same_seed_same_tokens():
    rng = np.random.default_rng(2)
    steps = [(rng.standard_normal(1000) * 2).astype(np.float32) for _ in range(30)]

    def run(seed, **kw):
        s = make_sampler(seed=seed, **kw)
        out = []
        for logits in steps:
            out.append(s(logits, out))
        return out

    assert run(42) == run(42)
    assert run(42, top_k=0, min_p=0) == run(42, top_k=0, min_p=0)
    assert run(42, temperature=2.0) != run(43, temperature=2.0)


def test_random_seed_is_reported_and_replays():
    logits = np.zeros(500, dtype=np.float32)
    a = make_sampler(seed=None, top_k=0, min_p=0, top_p=1)
    b = make_sampler(seed=-1, top_k=0, min_p=0, top_p=1)                  # llama.cpp's "random"
    assert a.seed != b.seed
    replay = make_sampler(seed=a.seed, top_k=0, min_p=0, top_p=1)
    assert [a(logits) for _ in range(10)] == [replay(logits) for _ in range(10)]


def test_draws_follow_the_distribution():
    logits = np.log(np.array([0.5, 0.3, 0.15, 0.05], dtype=np.float32))
    s = make_sampler(seed=7, temperature=1.0, top_k=0, top_p=1, min_p=0)
    n = 20_000
    freq = np.bincount([s(logits) for _ in range(n)], minlength=4) / n
    np.testing.assert_allclose(freq, [0.5, 0.3, 0.15, 0.05], atol=0.015)


def test_filters_never_draw_outside_the_candidates():
    logits = np.array([3.0, 2.9, 0.0, -1.0, 2.95], dtype=np.float32)
    s = make_sampler(seed=3, top_k=2, top_p=1, min_p=0, temperature=5.0)
    assert {s(logits) for _ in range(300)} == {0, 4}


def test_all_minus_inf_but_one():
    logits = np.full(10, -np.inf, dtype=np.float32)
    logits[6] = 0.0
    assert make_sampler(seed=0, top_k=0, min_p=0, top_p=1)(logits) == 6
    assert make_sampler(seed=0)(logits) == 6


@pytest.mark.parametrize("kw, field", [
    (dict(top_p=-0.1), "top_p"), (dict(top_p=1.5), "top_p"), (dict(min_p=2), "min_p"),
    (dict(temperature=float("nan")), "temperature"), (dict(temperature="hot"), "temperature"),
    (dict(top_k=2.5), "top_k"), (dict(top_k=True), "top_k"), (dict(repeat_penalty=0), "repeat_penalty"),
    (dict(repeat_last_n=-2), "repeat_last_n"), (dict(frequency_penalty=float("inf")), "frequency_penalty"),
    (dict(presence_penalty=None), "presence_penalty"), (dict(seed=-5), "seed"), (dict(seed=1.5), "seed"),
])
def test_invalid_params_name_the_field(kw, field):
    with pytest.raises(InvalidRequest, match=rf"^sampling parameter {field}="):
        SamplingParams(**kw)
    with pytest.raises(InvalidRequest):
        make_sampler(**kw)


def test_from_dict():
    assert SamplingParams.from_dict({"temperature": 0, "top_k": 1}) == SamplingParams(temperature=0, top_k=1)
    assert SamplingParams.from_dict({"top_k": np.int64(5), "top_p": np.float32(0.5)}).top_k == 5
    assert SamplingParams.from_dict({"top_p": None, "seed": None}) == SamplingParams()
    with pytest.raises(InvalidRequest, match="unknown sampling parameter.*temp\\b"):
        SamplingParams.from_dict({"temp": 0.5})
