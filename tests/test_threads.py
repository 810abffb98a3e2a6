"""Thread count of the numba kernels: the `threads` config key, `serve --threads`, and
set_threads reaching the threads a daemon runs models on."""
from __future__ import annotations

import threading

import pytest

from localai import config, kernels
from localai.kernels import qmatmul


def test_threads_config_key(tmp_path):
    p = tmp_path / "config.toml"
    p.write_text("threads = 1\n")
    assert config.load(str(p)).threads == 1
    assert config.load(str(tmp_path / "missing.toml")).threads is None  # default: physical cores
    p.write_text("threads = 0\n")
    with pytest.raises(config.ConfigError, match="`threads` must be 1 or more"):
        config.load(str(p))
    p.write_text('threads = "two"\n')
    with pytest.raises(config.ConfigError):
        config.load(str(p))
    cfg = config.override(config.load(str(tmp_path / "missing.toml")), threads=3)
    assert cfg.threads == 3
    with pytest.raises(config.ConfigError, match="--threads"):
        config.override(cfg, threads=0)
    assert config.daemon_args(threads=2, n_ctx=None) == ["--threads", "2"]


def test_daemon_main_parses_threads(monkeypatch):
    from localai.daemon import __main__ as dmain

    seen = {}
    monkeypatch.setattr(dmain, "serve", lambda cfg, sock, log_level: seen.update(threads=cfg.threads))
    monkeypatch.setenv("LOCALAI_CONFIG", "/nonexistent/config.toml")
    assert dmain.main(["--threads", "1"]) == 0 and seen["threads"] == 1


@pytest.mark.skipif(qmatmul._nb is None, reason="numba kernels unavailable")
def test_set_threads_reaches_other_threads():
    """numba keeps the count per calling thread: the kernels apply set_threads' value in the
    thread that calls them (the daemon's model thread), not only in the one that loaded."""
    import numpy as np
    import numba

    assert kernels.physical_cores() >= 1
    before = qmatmul._threads
    try:
        assert kernels.set_threads(1) == 1
        seen = []

        def worker():
            kernels.rms_norm(np.ones((1, 32), np.float32), np.ones(32, np.float32), 1e-6)
            from localai.kernels import QMatrix
            QMatrix(np.zeros((2, 34), np.uint8), 8, (2, 32)).matmul(np.ones((1, 32), np.float32))  # Q8_0
            seen.append(numba.get_num_threads())

        t = threading.Thread(target=worker)
        t.start()
        t.join()
        assert seen == [1]
    finally:
        kernels.set_threads(before or None)


# -- the adaptive thread count (kernels/threads.py), driven by injected timings ---------------

from localai.kernels.threads import Tuner  # noqa: E402


def _drive(t: Tuner, rate_of, steps: int, kind: str = "decode", work: float = 1e6) -> list[int]:
    """Feed `steps` calls to the tuner, each taking work / rate_of(threads) seconds;
    returns the thread count each call used."""
    used = []
    for _ in range(steps):
        n = t.threads(kind)
        used.append(n)
        t.record(kind, work, work / rate_of(n))
    return used


IDLE = {1: 1.0e9, 2: 1.9e9}   # work per second: two threads nearly twice as fast
BUSY = {1: 0.9e9, 2: 0.1e9}   # another process on one core: the team waits at every barrier


def test_tuner_follows_the_load():
    t = Tuner(2, calls=16, explore=4, explore_max=32)
    used = _drive(t, IDLE.get, 16 * 100)
    assert t.state()["current"] == 2 and used[-1] == 2
    assert used.count(1) < 0.1 * len(used)  # trials of one thread are a small share when it loses
    used = _drive(t, BUSY.get, 16 * 100)  # load arrives
    assert t.state()["current"] == 1
    first_one = next(i for i, n in enumerate(used) if n == 1 and all(m == 1 for m in used[i:i + 64]))
    assert first_one < 16 * 20, "switched to one thread within 20 windows"
    # a trial of two threads under load is cut short: it costs few calls
    assert used[first_one:].count(2) < 0.05 * len(used[first_one:])
    used = _drive(t, IDLE.get, 16 * 100)  # the load is gone: back to two threads
    assert t.state()["current"] == 2 and used[-1] == 2
    assert t.state()["switches"] == 2


def test_tuner_time_spent_under_load_is_near_the_best():
    """Under load from the start, the tuner's total time is within 25 % of always using the
    best count (the cost of finding it and of re-checking now and then)."""
    t = Tuner(2, calls=16)
    used = _drive(t, BUSY.get, 16 * 200)
    spent = sum(1e6 / BUSY[n] for n in used)
    best = len(used) * 1e6 / BUSY[1]
    assert spent < 1.25 * best


def test_tuner_trials_that_lose_by_a_quarter_cost_few_calls():
    """Decode of a memory-bound model on two idle cores, one thread 1.7x slower (a 7B file):
    the trials of one thread, every 8 to 64 windows, are cut short after a few calls instead
    of each running a whole window (3 % of the calls spent on one thread before, under 0.5 %
    now; a trial that is 1.7x slower costs 0.7 of its calls again)."""
    t = Tuner(2)
    used = _drive(t, {1: 1.1e9, 2: 1.9e9}.get, 128 * 130)
    assert t.state()["current"] == 2 and t.state()["trials"] >= 4
    assert used.count(1) < 0.005 * len(used)


def test_tuner_keeps_a_close_second_out():
    """Noise below the margin never switches: rates 2 % apart stay on the current count."""
    t = Tuner(2, calls=16, explore=2)
    _drive(t, {1: 1.02e9, 2: 1.0e9}.get, 16 * 200)
    assert t.state()["current"] == 2 and t.state()["switches"] == 0 and t.state()["trials"] > 5


def test_tuner_climbs_on_more_cores():
    """On 8 cores with 5 taken the best is 3: reached one neighbour at a time, from 8."""
    rate = lambda n: 1e9 * (n if n <= 3 else 3 / (1 + 0.5 * (n - 3)))
    t = Tuner(8, calls=16, explore=2)
    _drive(t, rate, 16 * 400)
    assert t.state()["current"] == 3


def test_tuner_kinds_are_apart_and_pinned_never_moves():
    t = Tuner(2, calls=16, explore=2)
    _drive(t, BUSY.get, 16 * 50, kind="decode")
    _drive(t, {1: 1.0e9, 2: 1.5e9}.get, 16 * 50, kind="prefill")
    assert t.state("decode")["current"] == 1 and t.state("prefill")["current"] == 2
    p = Tuner(2, pinned=True, calls=16, explore=2)
    assert set(_drive(p, BUSY.get, 16 * 50)) == {2}


def test_set_threads_pins_or_adapts():
    """`threads = N` (a number) pins the count; unset (None) adapts up to the physical cores."""
    if qmatmul._nb is None:
        pytest.skip("numba kernels unavailable")
    before = qmatmul._threads
    try:
        kernels.set_threads(2)
        assert qmatmul.tuner().pinned
        kernels.set_threads(None)
        assert qmatmul.tuner().max_threads == min(kernels.physical_cores(), qmatmul._threads)
        assert qmatmul.tuner().pinned == (qmatmul._threads == 1)
    finally:
        kernels.set_threads(before or None)


def test_attention_follows_the_tuned_count():
    """With the count tuned, attention runs on the count the tuner picked for the matmuls of
    its kind (decode or prefill), not on the most threads: a team of two that waits on a
    descheduled thread at the end of each layer's attention undid the tuner's choice (SmolLM2
    with one core busy: 41 tok/s with attention on two threads, ~120 on one)."""
    import numba
    import numpy as np

    from localai.kernels import elementwise

    if qmatmul.numba_kernels() is None or numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("needs the numba kernels and a pool of two threads")
    before = qmatmul._threads
    try:
        kernels.set_threads(2, adaptive=True)
        t = qmatmul.tuner()
        arm = t._arm("decode")
        arm.current, arm.trial = 1, None  # as after the tuner found one thread faster
        q = np.ones((2, 1, 8), np.float32)
        kv = np.ones((1, 5, 8), np.float32)
        elementwise.attend(q, kv, kv, 4, 0.5)
        assert numba.get_num_threads() == 1
        elementwise.attend_many(np.ones((2, 2, 8), np.float32), [(kv, kv, 4), (kv, kv, 4)], 0.5)
        assert numba.get_num_threads() == 1
        assert t.threads("prefill") == 2  # a long prompt's attention keeps its own count
        elementwise.attend(np.ones((2, 64, 8), np.float32), np.ones((1, 64, 8), np.float32),
                           np.ones((1, 64, 8), np.float32), 0, 0.5)
        assert numba.get_num_threads() == 2
    finally:
        kernels.set_threads(before or None)
