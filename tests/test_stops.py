from __future__ import annotations

import random

import pytest

from localai.stops import StopMatcher


def cut_at_first_stop(text, stops):
    """The slow twin: the full text cut where the first stop string to complete begins."""
    best = None
    for end in range(1, len(text) + 1):
        for s in stops:
            if s and text[:end].endswith(s) and (best is None or end - len(s) < best):
                best = end - len(s)
        if best is not None:
            return text[:best], True
    return text, False


def stream(pieces, stops):
    m = StopMatcher(stops)
    out = []
    for piece in pieces:
        text, stopped = m.push(piece)
        out.append(text)
        if stopped:
            return "".join(out), True, m
    out.append(m.flush())
    return "".join(out), False, m


def random_split(rng, text):
    cuts = sorted(rng.sample(range(len(text) + 1), rng.randint(0, min(len(text), 6))))
    return [text[a:b] for a, b in zip([0] + cuts, cuts + [len(text)])]


def test_stop_inside_one_chunk():
    m = StopMatcher(["###"])
    assert m.push("hello ### world") == ("hello ", True)
    assert m.matched == "###"
    assert m.push("more") == ("", True)
    assert m.flush() == ""


def test_partial_stop_is_held_back_then_released():
    m = StopMatcher(["</s>"])
    assert m.push("a</") == ("a", False)
    assert m.push("b") == ("</b", False)
    assert m.push("<") == ("", False)
    assert m.flush() == "<"


def test_stop_split_over_chunks():
    m = StopMatcher(["\n\n", "User:"])
    assert m.push("Sure. Us") == ("Sure. ", False)
    assert m.push("e") == ("", False)
    assert m.push("r: hi") == ("", True)
    assert m.matched == "User:"


def test_no_stops_passes_through():
    m = StopMatcher(["", ""])
    assert m.push("abc") == ("abc", False)
    assert m.flush() == ""


def test_earliest_completion_wins():
    # "c" completes before "abcd" could: a stream stops at once, not later.
    assert stream(["xabcd"], ["abcd", "c"])[0] == "xab"
    assert stream(["xab", "cd"], ["abcd", "c"])[0] == "xab"
    # both end together: the longer (earlier) one
    out, stopped, m = stream(["xabc"], ["bc", "abc"])
    assert (out, stopped, m.matched) == ("x", True, "abc")


def test_unicode():
    assert stream(["héllo wö", "rld"], ["wörld"])[:2] == ("héllo ", True)


@pytest.mark.parametrize("seed", range(4))
def test_any_split_emits_the_text_cut_at_the_first_stop(seed):
    rng = random.Random(seed)
    for _ in range(400):
        alphabet = "ab\n" if rng.random() < 0.5 else "abc"
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 20)))
        stops = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 4))) for _ in range(rng.randint(0, 3))]
        want = cut_at_first_stop(text, stops)
        for _ in range(3):
            out, stopped, _ = stream(random_split(rng, text), stops)
            assert (out, stopped) == want, (text, stops)
