"""Shared fixtures: the real models (fetched into the store on first use) and the
llama.cpp reference data copied from shared/reference (see tests/data/README.md)."""
from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"

# Every daemon the tests start keeps its history (localai.history) in a directory of the test
# run, never in the user's $XDG_DATA_HOME; the model store stays the user's (a link to it), also
# for tests that clear LOCALAI_* from the environment.
def _private_data_home() -> None:
    from localai import store

    models = store.models_dir()
    models.mkdir(parents=True, exist_ok=True)
    data = Path(tempfile.mkdtemp(prefix="localai-test-data-"))
    (data / "localai").mkdir()
    (data / "localai" / "models").symlink_to(models.resolve(), target_is_directory=True)
    os.environ["XDG_DATA_HOME"] = str(data)
    atexit.register(shutil.rmtree, data, ignore_errors=True)  # removes the link, not the models


_private_data_home()


def pytest_sessionstart(session) -> None:
    """Compile the numba kernels once, before any test starts a daemon: a cold compile takes
    minutes on a 2-core machine, and every daemon and subprocess after it loads them from the
    cache (~/.cache/localai/numba) in well under a second."""
    import sys
    import time

    from localai import kernels

    t0 = time.monotonic()
    backend = kernels.warmup()
    print(f"kernels: {backend}, ready in {time.monotonic() - t0:.1f} s", file=sys.stderr)


def reference(model: str, kind: str) -> dict:
    """tests/data/<model>.<kind>.json: llama.cpp outputs (kind: tokenization, logits, greedy)."""
    return json.loads((DATA / f"{model}.{kind}.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    from localai import store

    return store.resolve("smollm2")


@pytest.fixture(scope="session")
def gemma3_path() -> Path:
    from localai import store

    return store.resolve("gemma3-270m")


@pytest.fixture(scope="session")
def llama_cpp_models() -> Path:
    """llama.cpp's `models/` folder from the llama-cpp-python sdist: ggml-vocab-*.gguf with
    .inp/.out test cases, and templates/*.jinja (tests/llama_cpp_sdist.py). Fetched once into
    the test cache; a failed fetch fails the test (never a skip)."""
    from llama_cpp_sdist import FetchError, llama_cpp_models

    try:
        return llama_cpp_models()
    except FetchError as e:
        error = str(e)
    pytest.fail(error, pytrace=False)


@pytest.fixture(scope="session")
def llama_cpp_python() -> Path:
    """The python of the llama.cpp peer venv (`llama-cpp-python[server]`, tests/llama_cpp_peer.py),
    installed by .ci/run; a missing peer fails the test (never a skip)."""
    from llama_cpp_peer import PeerMissing, peer_python

    try:
        return peer_python()
    except PeerMissing as e:
        error = str(e)
    pytest.fail(error, pytrace=False)
