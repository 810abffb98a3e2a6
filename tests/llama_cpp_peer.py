"""llama.cpp as a peer for the tests: `llama-cpp-python[server]` in a venv of its own.

    python tests/llama_cpp_peer.py install   # what .ci/run calls; reuses a finished build
    peer_python()                            # Path to that venv's python, for the tests

The package compiles llama.cpp from source (~8 min on 2 cores), so it lives outside the
project's environment, in `$XDG_CACHE_HOME/localai-test/llamacpp-<version>/` (default
`~/.cache/localai-test/`), and a `.complete` marker says the build finished. The tests use it
for a real OpenAI-compatible server (`python -m llama_cpp.server`), `llama_model_quantize`
and llama.cpp's logits. `LOCALAI_TEST_LLAMACPP_PYTHON` names another python with the package.
A missing peer fails the test that needs it (never a skip): run the install line above.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from llama_cpp_sdist import cache_root  # the tests' one cache folder

VERSION = "0.3.36"
REQUIREMENT = f"llama-cpp-python[server]=={VERSION}"


class PeerMissing(RuntimeError):
    pass


def venv_dir() -> Path:
    return cache_root() / f"llamacpp-{VERSION}"


def peer_python() -> Path:
    """The python of the llama.cpp peer venv. Raises PeerMissing when it was not installed."""
    override = os.environ.get("LOCALAI_TEST_LLAMACPP_PYTHON")
    if override:
        return Path(override)
    root = venv_dir()
    if not (root / ".complete").is_file():
        raise PeerMissing(f"llama.cpp peer not installed at {root}: run "
                          f"`python tests/llama_cpp_peer.py install` (as .ci/run does)")
    return root / "bin" / "python"


def install() -> Path:
    """Build the peer venv unless a finished one is there; returns its python."""
    root = venv_dir()
    if (root / ".complete").is_file():
        return root / "bin" / "python"
    shutil.rmtree(root, ignore_errors=True)
    root.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", str(root)], check=True)
    python = root / "bin" / "python"
    env = dict(os.environ, CMAKE_BUILD_PARALLEL_LEVEL=str(os.cpu_count() or 2))
    print(f"building {REQUIREMENT} into {root} (compiles llama.cpp, several minutes)",
          file=sys.stderr, flush=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-binary", "llama-cpp-python",
                    REQUIREMENT], check=True, env=env)
    subprocess.run([str(python), "-c", "import llama_cpp, llama_cpp.server"], check=True)
    (root / ".complete").write_text(REQUIREMENT + "\n")
    return python


if __name__ == "__main__":
    if sys.argv[1:] != ["install"]:
        sys.exit("usage: python tests/llama_cpp_peer.py install")
    print(install())
