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
import platform
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
    if platform.machine().lower() in ("x86_64", "amd64"):
        # Built for this CPU (GGML_NATIVE), llama.cpp 0.3.36 compiles its AMX kernels where the CPU
        # has AMX, and on a 2-core Xeon (Emerald Rapids) VM here they die at once of an illegal
        # instruction (`tilezero` in ggml::cpu::amx, before any tile configuration), although the
        # OS grants AMX. The flags keep everything else native (AVX-512, VNNI).
        flags = "-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
        env["CFLAGS"] = f"{env.get('CFLAGS', '')} {flags}".strip()
        env["CXXFLAGS"] = f"{env.get('CXXFLAGS', '')} {flags}".strip()
    print(f"building {REQUIREMENT} into {root} (compiles llama.cpp, several minutes)",
          file=sys.stderr, flush=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-cache-dir", "--no-binary", "llama-cpp-python",
                    REQUIREMENT], check=True, env=env)
    subprocess.run([str(python), "-c", "import llama_cpp, llama_cpp.server"], check=True)
    # and it runs on this CPU: logits of a tiny model (tests/data/arch)
    tiny = Path(__file__).parent / "data" / "arch" / "llama_mha.q4_k_m.gguf"
    subprocess.run([str(python), "-c", "import sys, llama_cpp; m = llama_cpp.Llama(sys.argv[1], verbose=False); "
                    "m.eval([1, 2, 3])", str(tiny)], check=True)
    (root / ".complete").write_text(REQUIREMENT + "\n")
    return python


if __name__ == "__main__":
    if sys.argv[1:] != ["install"]:
        sys.exit("usage: python tests/llama_cpp_peer.py install")
    print(install())
