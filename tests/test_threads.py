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
